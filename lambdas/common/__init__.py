"""Shared building blocks for the kit's Lambda handlers (error contract, HTTP helpers, settings, retries)."""

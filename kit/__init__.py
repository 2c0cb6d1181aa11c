"""The kit's operator CLI (`kit`, or `python -m kit`): idle cost and architecture diagrams from the templates."""

from __future__ import annotations

import click

__all__ = ["KitError"]


class KitError(click.ClickException):
    """A failure the user can act on: click prints ``Error: <message>`` as one line and exits with 1."""

"""The kit's operator CLI (`kit`, or `python -m kit`): idle cost and architecture diagrams from the templates."""

from __future__ import annotations

import click

__all__ = ["KitError", "KitUsageError"]


class KitError(click.ClickException):
    """A failure the user can act on: click prints ``Error: <message>`` as one line and exits with 1."""


class KitUsageError(click.ClickException):
    """A bad option or configuration value; exits with 2 like click's own usage errors."""

    exit_code = 2

"""Sub-commands of `twin` for this area (mounted by twin.cli)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""

"""Text-side commands: count and trim."""

import typer


def register(app: typer.Typer) -> None:
    """Add the text-side commands to the app."""

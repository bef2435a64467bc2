"""The `hepatica` command: one sub-command per job a radiology-IT user does."""

from plugin.cli.main import main

__all__ = ["main"]

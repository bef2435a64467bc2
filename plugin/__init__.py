"""The deployable: CLI, configuration, job queue and the pipeline composing the rooms."""

__version__ = "0.2.0"

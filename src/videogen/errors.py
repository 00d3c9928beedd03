"""Errors that mean "the user asked for something wrong": reported as one sentence, no traceback."""


class VideogenError(Exception):
    """Base class of the errors the command-line entry points report as a single sentence."""


class ConfigError(VideogenError, ValueError):
    """A configuration value is invalid (wrong type, out of range, inconsistent).

    Also a ValueError: code that builds models directly and catches ValueError keeps working.
    """


class CheckpointError(VideogenError):
    """A checkpoint file is missing, unreadable, or belongs to another task."""


class IncompatibleDataError(VideogenError):
    """The datamodule does not provide the batch keys the task requires."""


class DataError(VideogenError):
    """The dataset on disk cannot be used as configured (too many unreadable files, wrong layout)."""

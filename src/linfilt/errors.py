"""The project's exceptions: one base class so callers (and the CLI) can catch bad input at once.

Each is raised where the bad input enters, with a message that says what was wrong and what to do.
"""


class LinfiltError(ValueError):
    """Bad input or state that the user can fix; the message says how."""


class IllConditionedError(LinfiltError):
    """The mean-logit matrix A is singular or too ill-conditioned to invert reliably."""


class DataNotFoundError(LinfiltError, FileNotFoundError):
    """A data set's files were not found (and could not be downloaded)."""


class CorruptFileError(LinfiltError):
    """A file exists but is truncated, corrupt or of the wrong format."""


class ModelFormatError(LinfiltError):
    """A model file is not of the project's format (or would need unpickling)."""

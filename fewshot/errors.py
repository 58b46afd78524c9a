"""User-facing error families.

Every failure a user can cause (a bad path, a photo with no face, missing model weights...) raises a
subclass of :class:`FewshotError` whose message is one line naming the input and the remedy. The CLI
prints that line on stderr and exits with code 2; library callers can catch the family they care about.
"""

from __future__ import annotations


class FewshotError(Exception):
    """Base class of all user-facing errors (one-line message, CLI exit code 2)."""

    exit_code = 2


class InputError(FewshotError):
    """A missing, unreadable, corrupt or empty input file or folder."""


class NoFaceError(FewshotError):
    """No face was found where one is required."""


class MultipleFacesError(FewshotError):
    """Several faces were found where exactly one is required."""


class MissingWeightsError(FewshotError):
    """A backend needs model weights that are not on disk (we never download them)."""


class BackendUnavailableError(FewshotError):
    """An optional backend's package is not installed."""


class ConfigError(FewshotError):
    """An invalid option, configuration field or dataset layout."""


class DatasetFormatError(FewshotError):
    """A dataset file does not match its documented format (message names file and line)."""


class CheckpointError(FewshotError):
    """A model checkpoint is missing, corrupt or incompatible."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, re-raised by a stage that keeps partial work: the message says what was kept and how to
    resume (the CLI prints it instead of its generic line, exit code 130)."""

"""User-facing errors.

A ``UserError`` is a mistake the user can fix (bad flag, unknown key, missing file). The CLI prints its
message as one line and exits with code 2, without a traceback. Messages name the problem and the fix.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input. ``str(err)`` is the one line shown to the user."""

    exit_code = 2


class ConfigError(UserError):
    """A recipe, override or cross-field check failed."""


class RunFolderError(UserError):
    """A run or sweep folder is missing, unreadable or corrupt."""


class BackendUnavailable(UserError):
    """A real backend (HTTP server, Slurm, MLflow) could not be reached within the bounded retries."""


class RankFailed(UserError):
    """A rank of a multi-rank job died or hung; the message names it and its log. Not a user mistake."""

    exit_code = 1

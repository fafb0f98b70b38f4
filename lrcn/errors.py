"""The one exception type a user can cause, so the command line prints a sentence, not a traceback."""

from __future__ import annotations


class LrcnError(Exception):
    """A problem the user can fix (bad path, corrupt file, unknown config key, wrong checkpoint).

    The message is one sentence that names the file (and line, where there is one) and the fix.
    `lrcn.cli` prints it and exits with status 2.
    """

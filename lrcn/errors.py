"""The one exception type a user can cause, so the command line prints a sentence, not a traceback."""

from __future__ import annotations

_WORKER_PREFIX = "Caught LrcnError in DataLoader worker"
_ORIGINAL = "LrcnError: "


class LrcnError(Exception):
    """A problem the user can fix (bad path, corrupt file, unknown config key, wrong checkpoint).

    The message is one sentence that names the file (and line, where there is one) and the fix.
    `lrcn.cli` prints it and exits with status 2.

    A DataLoader worker that raises one is re-raised in the main process as
    ``LrcnError("Caught LrcnError in DataLoader worker N.\\nOriginal Traceback ...")``; that
    message is cut back to the worker's own sentence, so ``data.num_workers > 0`` still reports a
    corrupt file in one line.
    """

    def __init__(self, *args: object) -> None:
        if args and isinstance(args[0], str) and args[0].startswith(_WORKER_PREFIX):
            message = args[0].rstrip()
            if _ORIGINAL in message:
                args = (message.rsplit(_ORIGINAL, 1)[1], *args[1:])
        super().__init__(*args)

"""Crash-safe file writes and the run-directory lock.

Writes go to a temporary name in the same folder, then a rename: a crash (or SIGKILL) mid-write
leaves the previous file, never a truncated one under the real name. A temporary file a kill left
behind (``.<name>.<random>.tmp``) is removed by :func:`remove_stale_temps` at the next start.
The machine's failures (disk full, read-only folder, permission denied) become one
:class:`~lrcn.errors.LrcnError` sentence naming the path and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lrcn.errors import LrcnError

KILL_ENV = "LRCN_TEST_KILL_AT"
PAUSE_ENV = "LRCN_TEST_PAUSE_AT"
_kill_counts: dict[str, int] = {}
_pause_counts: dict[str, int] = {}
_kill_pid = 0


def kill_point(name: str) -> None:
    """Test hook: SIGKILL this process at the ``n``-th ``name`` when ``LRCN_TEST_KILL_AT=name:n``.

    ``name`` may be ``*`` (any point). The kill harness (tests/test_crash_harness.py) uses it to
    die inside each write; unset, it costs one dictionary lookup.
    """
    if os.environ.get(PAUSE_ENV):
        _pause_point(name)
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    global _kill_pid
    if _kill_pid != os.getpid():  # a forked child counts its own points
        _kill_counts.clear()
        _pause_counts.clear()
        _kill_pid = os.getpid()
    wanted, _, count = spec.rpartition(":")
    if wanted not in (name, "*"):
        return
    _kill_counts[wanted] = _kill_counts.get(wanted, 0) + 1
    if _kill_counts[wanted] == int(count):
        trace = os.environ.get(KILL_ENV + "_TRACE")
        if trace:
            with open(trace, "a", encoding="utf-8") as f:
                f.write(name + "\n")
        os.kill(os.getpid(), signal.SIGKILL)


def _pause_point(name: str) -> None:
    """Test hook: wait at the ``n``-th ``name`` of ``LRCN_TEST_PAUSE_AT=name:n[,name:n...]``.

    The process writes ``<LRCN_TEST_PAUSE_AT_DIR>/<name>.paused`` and waits (up to 10 minutes) for
    ``<name>.resume`` there, so a test can act while a writer is provably at that point.
    """
    folder = Path(os.environ.get(PAUSE_ENV + "_DIR", "."))
    for entry in os.environ[PAUSE_ENV].split(","):
        wanted, _, count = entry.rpartition(":")
        if wanted != name:
            continue
        _pause_counts[name] = _pause_counts.get(name, 0) + 1
        if _pause_counts[name] != int(count):
            continue
        (folder / f"{name}.paused").write_text(f"{os.getpid()}\n", encoding="ascii")
        deadline = time.monotonic() + 600
        while not (folder / f"{name}.resume").exists() and time.monotonic() < deadline:
            time.sleep(0.01)


_FIXES = {
    errno.ENOSPC: "no space left on the device; free some space (or write elsewhere) and run the command again",
    errno.EDQUOT: "the disk quota is exhausted; free some space (or write elsewhere) and run the command again",
    errno.EROFS: "the file system is read-only; write to a writable folder instead",
    errno.EACCES: "permission denied; make the folder writable for this user or write elsewhere",
    errno.EPERM: "permission denied; make the folder writable for this user or write elsewhere",
    errno.EEXIST: "cannot be written: a file stands where its folder should be; choose another folder",
    errno.ENOTDIR: "cannot be written: a file stands where its folder should be; choose another folder",
}


def machine_error(path: str | os.PathLike, exc: OSError) -> LrcnError:
    """One sentence for an OSError while writing ``path``: what failed and the fix."""
    fix = _FIXES.get(exc.errno or 0)
    if fix is None:
        fix = f"could not be written ({exc.strerror or exc}); check the folder and the disk"
    return LrcnError(f"{path}: {fix} (nothing was overwritten).")


def _umask() -> int:
    """The process umask, read without changing it where /proc allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    The file gets the mode an ordinary ``open`` would (0o666 less the umask), not mkstemp's 0o600.

    Raises:
        LrcnError: the folder cannot be created or written (disk full, read-only, permissions);
            the previous ``path`` is left as it was and no temporary file remains.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise machine_error(path, exc) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        os.close(fd)
        yield Path(tmp)
        kill_point(f"{path.name}:written")
        os.replace(tmp, path)
        kill_point(f"{path.name}:renamed")
    except OSError as exc:
        raise machine_error(path, exc) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) so that readers see the old file or the new one, never half."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike, data: Any, indent: int | None = 2) -> None:
    """Write ``data`` as JSON atomically (non-ASCII kept as is)."""
    write_text_atomic(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


def check_writable(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and prove a file can be created in it, before any long work.

    Raises:
        LrcnError: read-only file system, permission denied or disk full, naming ``folder``.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise machine_error(folder, exc) from None
    return folder


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the ``.<name>.<random>.tmp`` files a killed writer left in ``folder``.

    Call it only while holding the folder's lock (:func:`hold_lock`): a live writer's temporary
    file looks the same.
    """
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        if tmp.is_file() and tmp.name.count(".") >= 3:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


@contextlib.contextmanager
def hold_lock(lock_file: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` (the holder's PID written inside).

    The OS drops the lock when its holder dies, even by SIGKILL, so a killed run never blocks
    the next one.

    Raises:
        LrcnError: another live process holds it (its PID named), or the file cannot be created.
    """
    lock_file = Path(lock_file)
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise machine_error(lock_file.parent, exc) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LrcnError(
                f"{lock_file.parent} is in use by {what} (process {_holder(fd)}); wait for it to "
                "finish or stop it, or choose another folder."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    """The PID the lock holder wrote (it writes it just after locking: wait a moment for it)."""
    for _ in range(20):
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text:
            return text
        time.sleep(0.01)
    return "unknown"


def read_json(path: str | os.PathLike, fix: str) -> Any:
    """Parse a UTF-8 JSON file; a missing, unreadable or invalid file is one sentence ending in ``fix``.

    Raises:
        LrcnError: naming ``path`` (and the line of invalid JSON).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LrcnError(f"{path}: no such file; {fix}.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise LrcnError(f"{path} could not be read ({err}); {fix}.") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise LrcnError(f"{path} line {err.lineno}: not valid JSON ({err.msg}); {fix}.") from None

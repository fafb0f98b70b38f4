"""`lrcn serve`'s options and start-up: the stack checked, the checkpoint loaded, a socket bound."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import socket
import sys
from pathlib import Path

from lrcn.errors import LrcnError
from lrcn.serve.limits import MEGABYTE, Limits

log = logging.getLogger(__name__)
NEEDED = {"starlette": "starlette", "uvicorn": "uvicorn", "multipart": "python-multipart"}


def check_installed() -> None:
    """Raise the one sentence that says what to install when the serving stack is missing."""
    missing = [pip for module, pip in NEEDED.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise LrcnError(
            f"lrcn serve needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
            "not installed; run `pip install 'lrcn[serve]'`."
        )


def serve(
    checkpoint: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    overrides: list[str] | None = None,
    limits: Limits | None = None,
    wait_ms: float = 5.0,
) -> None:
    """Load ``checkpoint`` and serve it until Ctrl-C (or SIGTERM), which stops it cleanly.

    Raises:
        LrcnError: the serving stack is not installed, the checkpoint cannot be served, or the
            port is not one to listen on.
    """
    check_installed()
    if not 0 <= port <= 65535:
        raise LrcnError(
            f"--port {port}: a port is a number from 0 to 65535 (0: any free one, printed at start); pass one of them."
        )
    import uvicorn

    from lrcn.serve.app import make_app
    from lrcn.serve.captioner import ServedModel

    limits = limits or Limits()
    sock = _listen(host, port)  # first: a taken port is said in a second, not after loading
    try:
        served = ServedModel(checkpoint, overrides)
    except BaseException:
        sock.close()
        raise
    app = make_app(served, limits, wait_ms=wait_ms)
    log.info(
        "serving %s (%s, batches of up to %d, uploads up to %g MB)",
        served.path,
        served.task,
        served.batch_size,
        limits.max_bytes / MEGABYTE,
    )
    if not _loopback(host):
        log.warning("listening on %s: anyone who can reach this machine can send it uploads", host)
    shown = f"[{host}]" if ":" in host else host
    print(f"lrcn serve: http://{shown}:{sock.getsockname()[1]}/ (Ctrl-C stops)", flush=True)
    # uvicorn closes a keep-alive connection idle for 5 s by default; a client that picks it from
    # its pool just then reads EOF (the load test lost 1 request in 3,227 so): idle for longer
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_keep_alive=75)
    try:
        uvicorn.Server(config).run(sockets=[sock])  # shuts down gracefully, then re-raises Ctrl-C
    except KeyboardInterrupt:
        pass  # (not re-raised where SIGINT was ignored, as in a shell's background job)
    print("lrcn serve: stopped.", file=sys.stderr, flush=True)


def _loopback(host: str) -> bool:
    """Whether ``host`` is this machine alone (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (here, so a taken port is one sentence, not uvicorn's exit)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:  # unknown host, port taken, no permission
        raise LrcnError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); pass another --port, or a "
            "--host this machine has (127.0.0.1 by default)."
        ) from None
    return sock


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``lrcn serve``'s options (defaults from `Limits`)."""
    defaults = Limits()
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="a captioner, as `lrcn caption --checkpoint` takes it (.pt file or run folder)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")  # fmt: skip
    parser.add_argument("--port", type=int, default=8000, help="default 8000; 0 picks a free one")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="e.g. eval.batch_size=16 (the most requests one decode gathers)")  # fmt: skip
    parser.add_argument("--max-upload-mb", type=float, default=defaults.max_bytes / MEGABYTE, help="largest request body (default %(default)g)")  # fmt: skip
    parser.add_argument("--max-pixels", type=int, default=defaults.max_pixels, help="largest image, width x height, checked before decoding (default %(default)d)")  # fmt: skip
    parser.add_argument("--max-beam", type=int, default=defaults.max_beam, help="largest beam size a caller may ask for (default %(default)d)")  # fmt: skip
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long a request waits for others to share its decode (default %(default)g)")  # fmt: skip


def limits_of(args: argparse.Namespace) -> Limits:
    """The `Limits` the options ask for.

    Raises:
        LrcnError: a limit below what any request needs.
    """
    if (
        args.max_upload_mb <= 0
        or args.max_pixels < 1
        or args.max_beam < 1
        or args.batch_wait_ms < 0
    ):
        raise LrcnError(
            "--max-upload-mb, --max-pixels and --max-beam must be above 0 and --batch-wait-ms "
            "at least 0; pass positive limits, or leave them out for the defaults."
        )
    return Limits(int(args.max_upload_mb * MEGABYTE), args.max_pixels, args.max_beam)

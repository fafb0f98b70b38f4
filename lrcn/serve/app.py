"""The ASGI application of `lrcn serve` (Starlette): the page, ``POST /caption`` and ``/info``.

``POST /caption`` takes multipart/form-data: ``file`` (the image, or the video for a video model),
optional ``beam_size`` (1 to the server's ``--max-beam``; default the checkpoint's
``eval.beam_size``) and ``attention=1`` (attention models: also the per-word maps, as a PNG data
URL). It answers ``{"name", "caption", "words", "beam_size"[, "attention_png"]}``, or a 4xx
``{"error": sentence}`` for anything the caller can fix; the server keeps serving either way.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lrcn.serve.batching import Batcher
from lrcn.serve.captioner import Job, ServedModel
from lrcn.serve.limits import MEGABYTE, Limits
from lrcn.serve.uploads import BadUpload

log = logging.getLogger(__name__)
TRUE = frozenset({"1", "true", "yes", "on"})
USAGE = "send multipart/form-data with the image (or video) in the field `file`, e.g. `curl -F file=@photo.png URL/caption`"


class _BodyTooLarge(Exception):
    """Raised from ``receive`` once the body passes the limit (caught by the caption handler)."""


class BodyLimit:
    """Refuse a body over ``max_bytes`` (413): at once from its Content-Length, or while reading
    a body sent without one; the caption handler answers the second case."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with a counting ``receive``, or answer 413 for it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _too_large(self.max_bytes)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _BodyTooLarge()
            return message

        await self.app(scope, counted, send)


def _too_large(max_bytes: int) -> JSONResponse:
    return _error(
        f"the request body is over this server's limit of {max_bytes / MEGABYTE:g} MB; send a "
        "smaller file, or start lrcn serve with a larger --max-upload-mb.",
        413,
    )


def _error(sentence: str, status: int) -> JSONResponse:
    return JSONResponse({"error": sentence}, status_code=status)


def make_app(
    served: ServedModel, limits: Limits, wait_ms: float = 5.0, max_batch: int | None = None
) -> Starlette:
    """The application for one loaded model; the batcher runs while the app's lifespan does."""
    batcher: Batcher[Job, Any] = Batcher(
        served.caption, max_batch or served.batch_size, wait_ms / 1000
    )
    page = resources.files("lrcn.serve").joinpath("page.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        batcher.start()
        yield
        await batcher.stop()

    async def index(request: Request) -> Response:
        return HTMLResponse(page)

    async def info(request: Request) -> Response:
        limits_json = {"max_beam": limits.max_beam, "max_bytes": limits.max_bytes, "max_pixels": limits.max_pixels}  # fmt: skip
        served_json = {"decodes": batcher.calls, "captioned": batcher.items}
        return JSONResponse({**served.info(), **limits_json, **served_json})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def caption(request: Request) -> Response:
        try:
            name, job = await _read_job(request, served, limits)
        except BadUpload as exc:
            return _error(str(exc), exc.status)
        except _BodyTooLarge:
            return _too_large(limits.max_bytes)
        outcome = await batcher.submit(job)
        return JSONResponse({"name": name, "beam_size": job.beam_size, **outcome.to_json()})

    routes = [
        Route("/", index),
        Route("/info", info),
        Route("/health", health),
        Route("/caption", caption, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )
    app.state.batcher = batcher
    app.add_middleware(BodyLimit, max_bytes=limits.max_bytes)
    return app


async def _read_job(request: Request, served: ServedModel, limits: Limits) -> tuple[str, Job]:
    """The upload's name and the model's input, or `BadUpload` with the sentence to answer."""
    kind = request.headers.get("content-type", "")
    if request.headers.get("content-length") == "0" or (not kind and not await request.body()):
        raise BadUpload(f"the request body is empty; {USAGE}.")
    if not kind.startswith("multipart/form-data"):
        raise BadUpload(
            f"the request is {kind.split(';')[0] or 'of no content type'}, which carries no file upload; {USAGE}.",
            415,
        )
    try:
        async with request.form(max_files=1, max_fields=8, max_part_size=64 * 1024) as form:
            upload = form.get("file")
            if upload is None:
                fields = ", ".join(f"`{key}`" for key in form.keys()) or "none"
                raise BadUpload(f"the form has no field `file` (its fields: {fields}); {USAGE}.")
            if not isinstance(upload, UploadFile):
                raise BadUpload(f"the form's field `file` is text, not a file; {USAGE}.")
            name = upload.filename or "file"
            data = await upload.read()
            beam = _beam_size(form.get("beam_size"), served.default_beam, limits)
            attention = str(form.get("attention", "")).strip().lower() in TRUE
    except (MultiPartException, HTTPException) as exc:  # Starlette raises the second for the first
        detail = str(getattr(exc, "detail", exc)).rstrip(".")
        raise BadUpload(f"the form cannot be parsed ({detail}); {USAGE}.") from None
    job = await run_in_threadpool(served.prepare, data, name, beam, attention, limits)
    return name, job


def _beam_size(value: Any, default: int, limits: Limits) -> int:
    """The form's ``beam_size`` as an int in 1..``limits.max_beam`` (absent or empty: ``default``)."""
    if value is None or str(value).strip() == "":
        return default
    text = str(value).strip()
    if (
        not re.fullmatch(r"[0-9]{1,4}", text) or not 1 <= int(text) <= limits.max_beam
    ):  # not isdigit: '¹'
        raise BadUpload(
            f"beam_size {text[:20]!r} is not a whole number from 1 to {limits.max_beam}; send "
            "1 (greedy) or more, or leave it out for the checkpoint's eval.beam_size."
        )
    return int(text)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    if status == 404:
        sentence = (
            f"there is nothing at {request.url.path}; the page is / and scripts POST to /caption."
        )
    elif status == 405:
        sentence = f"{request.method} is not accepted at {request.url.path}; POST the form to /caption (GET / is the page)."
    else:
        sentence = f"{getattr(exc, 'detail', 'the request was refused')}."
    return _error(sentence, status)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("lrcn serve: %s %s failed", request.method, request.url.path, exc_info=exc)
    return _error(
        "the server failed on this request (its log has the details); the upload was fine to "
        "send, so report the failure with the log.",
        500,
    )

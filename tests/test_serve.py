"""`lrcn serve` in-process (Starlette's TestClient, httpx's ASGI transport): captions equal `lrcn
caption`'s, concurrent callers share one decode in the model thread, every bad upload is a 4xx
sentence and the server keeps serving (issue 30).

Exact by construction: captions are compared as strings with `lrcn.predict.iter_captions`'s of the
same files, decoded one at a time (eval.batch_size=1)."""

from __future__ import annotations

import asyncio
import io
import struct
import threading
import zlib
from pathlib import Path

import pytest
from conftest import REPO, TINY_SHAPES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

pytest.importorskip("starlette", reason="lrcn[serve] is not installed")
import httpx  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from lrcn.cli import main  # noqa: E402
from lrcn.data.synthetic.shapes import ShapesCaptions  # noqa: E402
from lrcn.predict import iter_captions  # noqa: E402
from lrcn.serve.app import make_app  # noqa: E402
from lrcn.serve.captioner import ServedModel  # noqa: E402
from lrcn.serve.limits import Limits  # noqa: E402

# near-random weights (lr 1e-9): its captions differ from image to image far more than a briefly
# trained model's, so equal captions say the served pixels and decoding are the command's
UNTRAINED = [o for o in TINY_SHAPES if not o.startswith(("data.train_size", "train.epochs"))]
UNTRAINED += ["data.train_size=32", "data.val_size=8", "data.test_size=8", "train.epochs=1", "train.lr=1e-9"]  # fmt: skip


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory) -> Path:
    from lrcn.config import load_config
    from lrcn.engine import fit

    run = tmp_path_factory.mktemp("untrained")
    fit(load_config(REPO / "configs" / "shapes.yaml", UNTRAINED), run)
    return run


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Eight shapes test images as PNG files, and the first again as a JPEG."""
    folder = tmp_path_factory.mktemp("images")
    data, paths = ShapesCaptions("test", 8), []
    for index in range(8):
        paths.append(folder / f"scene{index}.png")
        data.item(index)[0].save(paths[-1])
    data.item(0)[0].resize((200, 200)).save(folder / "scene0.jpg", quality=90)
    return [*paths, folder / "scene0.jpg"]


def one_at_a_time(run: Path, paths: list[Path], beam_size: int = 1) -> dict[str, str]:
    results = iter_captions(run, [str(p) for p in paths], beam_size, ["eval.batch_size=1"])
    return {Path(path).name: caption for path, caption, _ in results}


def form(path: Path, **fields: str) -> dict:
    return {"files": {"file": (path.name, path.read_bytes())}, "data": fields}


def test_a_model_folder_is_served_as_its_run(untrained_run, images, tmp_path):
    """`lrcn export`'s folder behind `lrcn serve`: the captions of the run it came from."""
    from lrcn.export import export_model

    folder = export_model(untrained_run, tmp_path / "model")
    expected = one_at_a_time(untrained_run, images)
    with TestClient(make_app(ServedModel(folder), Limits())) as client:
        for path in images:
            answer = client.post("/caption", **form(path))
            assert answer.status_code == 200, answer.text
            assert answer.json()["caption"] == expected[path.name]


def test_served_captions_are_lrcn_captions_of_the_same_files(untrained_run, images):
    app = make_app(ServedModel(untrained_run), Limits())
    with TestClient(app) as client:
        for beam in (1, 3):
            expected = one_at_a_time(untrained_run, images, beam)
            assert len(set(expected.values())) >= 3  # the model tells the images apart
            for path in images:
                answer = client.post("/caption", **form(path, beam_size=str(beam)))
                assert answer.status_code == 200, answer.text
                body = answer.json()
                assert body["caption"] == expected[path.name], path.name
                assert (body["name"], body["beam_size"]) == (path.name, beam)
                assert body["words"] == body["caption"].split()
        info = client.get("/info").json()
        assert (info["input"], info["attention"], info["beam_size"]) == ("image", False, 1)
        page = client.get("/")
        assert page.status_code == 200 and 'id="files"' in page.text


def test_served_captions_apply_the_decoding_controls_as_lrcn_caption(untrained_run, images):
    controls = ["eval.no_repeat_ngram=1", "eval.beam_size=2", "eval.beam_groups=2"]
    app = make_app(ServedModel(untrained_run, controls), Limits())
    results = iter_captions(untrained_run, [str(p) for p in images], None, controls)
    expected = {Path(path).name: caption for path, caption, _ in results}
    with TestClient(app) as client:
        for path in images:
            body = client.post("/caption", **form(path)).json()
            assert body["caption"] == expected[path.name], path.name
            assert len(body["words"]) == len(set(body["words"]))  # no word twice (n = 1)
        answer = client.post("/caption", **form(images[0], beam_size="3"))
        assert answer.status_code == 400 and "eval.beam_groups 2" in answer.json()["error"]


def test_concurrent_callers_share_one_decode_in_the_model_thread(untrained_run, images):
    served = ServedModel(untrained_run)
    threads: list[str] = []
    decode = served.caption

    def recording(jobs):
        threads.append(threading.current_thread().name)
        return decode(jobs)

    served.caption = recording
    # a window far longer than the 16 requests take to arrive on any machine that runs the suite
    # (each 64-px PNG decodes in about a millisecond); it is waited once, for the first batch
    app = make_app(served, Limits(), wait_ms=1500)

    async def callers() -> list[httpx.Response]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
                posts = [client.post("/caption", **form(p)) for p in images + images[:7]]
                return await asyncio.gather(*posts)

    answers = asyncio.run(callers())
    expected = one_at_a_time(untrained_run, images)
    assert [a.json()["caption"] for a in answers] == [expected[p.name] for p in images + images[:7]]
    sizes = list(app.state.batcher.batch_sizes)
    assert sum(sizes) == 16 and max(sizes) > 1, sizes  # gathered, not one decode per caller
    assert set(threads) == {"lrcn-model_0"}  # never on the event loop's thread


def test_a_batch_never_exceeds_eval_batch_size(untrained_run, images):
    # as above: the batches of 4 fill at once, only the last one (of 1) waits out the window
    app = make_app(ServedModel(untrained_run, ["eval.batch_size=4"]), Limits(), wait_ms=1500)

    async def callers() -> None:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
                answers = await asyncio.gather(
                    *[client.post("/caption", **form(p)) for p in images]
                )
        assert all(a.status_code == 200 for a in answers)

    asyncio.run(callers())
    sizes = list(app.state.batcher.batch_sizes)
    assert sum(sizes) == len(images) and max(sizes) == 4 and len(sizes) == 3, sizes


def huge_png(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (a few hundred bytes: a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    pixels = zlib.compress(b"\0" * 4096)  # the first rows; a bomb need not be complete
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


FILE_PART = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'


MULTIPART = {"content-type": "multipart/form-data; boundary=b"}


def bad_files(images: list[Path]) -> dict[str, tuple[int, dict, str]]:
    """Uploads that are not a readable picture: name -> (status, post arguments, a phrase)."""
    jpeg, png = images[-1].read_bytes(), images[0].read_bytes()
    # fmt: off
    return {
        "text named .png": (400, {"files": {"file": ("notes.png", b"not a picture\n" * 20)}}, "not an image"),
        "truncated JPEG": (400, {"files": {"file": ("cut.jpg", jpeg[: len(jpeg) // 2])}}, "truncated"),
        "30000x30000 PNG": (413, {"files": {"file": ("bomb.png", huge_png(30000, 30000))}}, "900000000 pixels"),
        "under PIL's limit, over ours": (413, {"files": {"file": ("big.png", huge_png(8000, 8000))}}, "8000x8000"),
        "empty file": (400, {"files": {"file": ("none.png", b"")}}, "empty (0 bytes)"),
        "too large a body": (413, {"files": {"file": ("large.png", png + b"\0" * 300_000)}}, "over this server's limit"),
        "too large, no Content-Length": (413, {"content": iter([FILE_PART] + [b"\0" * 100_000] * 4), "headers": MULTIPART}, "over this server's limit"),
    }
    # fmt: on


def bad_forms(images: list[Path]) -> dict[str, tuple[int, dict, str]]:
    """Requests that do not carry one upload as asked: name -> (status, post arguments, a phrase)."""
    png = images[0].read_bytes()
    # fmt: off
    return {
        "empty body": (400, {"content": b""}, "body is empty"),
        "wrong field": (400, {"files": {"image": ("scene.png", png)}}, "no field `file`"),
        "text field": (400, {"data": {"file": "scene.png"}, "files": {"other": ("o.txt", b"o")}}, "is text, not a file"),
        "not a form": (415, {"json": {"file": "scene.png"}}, "application/json, which carries no file"),
        "a urlencoded form": (415, {"data": {"file": "scene.png"}}, "carries no file upload"),
        "beam size 0": (400, {**form(images[0]), "data": {"beam_size": "0"}}, "beam_size '0'"),
        "beam size text": (400, {**form(images[0]), "data": {"beam_size": "wide"}}, "whole number"),
        "maps of a model without attention": (400, {**form(images[0]), "data": {"attention": "1"}}, "does not attend"),
        "broken form": (400, {"content": b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n", "headers": MULTIPART}, "cannot be parsed"),
    }
    # fmt: on


def test_bad_uploads_get_a_4xx_sentence_and_the_server_keeps_serving(tiny_shapes_run, images):
    limits = Limits(max_bytes=256 * 1024, max_pixels=10_000_000)
    app = make_app(ServedModel(tiny_shapes_run), limits)
    expected = one_at_a_time(tiny_shapes_run, images[:1])["scene0.png"]
    with TestClient(app) as client:
        for name, (status, request, phrase) in {**bad_files(images), **bad_forms(images)}.items():
            answer = client.post("/caption", **request)
            assert answer.status_code == status, (name, answer.text)
            body = answer.json()
            assert list(body) == ["error"], name
            sentence = body["error"]
            assert phrase in sentence and sentence.endswith("."), (name, sentence)
            assert "Traceback" not in sentence and "\n" not in sentence, name
        assert client.post("/caption", **form(images[0])).json()["caption"] == expected
        assert client.get("/nowhere").json() == {
            "error": "there is nothing at /nowhere; the page is / and scripts POST to /caption."
        }
        assert "POST the form to /caption" in client.get("/caption").json()["error"]
    assert app.state.batcher.batch_sizes == type(app.state.batcher.batch_sizes)([1])


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=2048), name=st.text(max_size=40), beam=st.text(max_size=6))
def test_any_bytes_name_or_beam_size_is_a_caption_or_a_4xx_sentence(
    tiny_shapes_run, data, name, beam
):
    app = _shared_app(tiny_shapes_run)
    with TestClient(app) as client:
        answer = client.post("/caption", files={"file": (name, data)}, data={"beam_size": beam})
    assert answer.status_code in (200, 400, 413, 415), answer.text
    if answer.status_code != 200:
        assert list(answer.json()) == ["error"] and answer.json()["error"].endswith(".")


_APPS: dict[Path, object] = {}


def _shared_app(run: Path):
    if run not in _APPS:
        _APPS[run] = make_app(ServedModel(run), Limits())
    return _APPS[run]


def test_attention_maps_are_the_strips_lrcn_caption_saves(attention_run, images, tmp_path):
    import base64

    app = make_app(ServedModel(attention_run), Limits())
    with TestClient(app) as client:
        assert client.get("/info").json()["attention"] is True
        answer = client.post("/caption", **form(images[1], attention="1")).json()
        plain = client.post("/caption", **form(images[1])).json()
    out = tmp_path / "strips"
    [(_, caption, _)] = iter_captions(attention_run, [str(images[1])], attention_dir=out)
    assert answer["caption"] == plain["caption"] == caption and "attention_png" not in plain
    encoded = answer["attention_png"].removeprefix("data:image/png;base64,")
    served = Image.open(io.BytesIO(base64.b64decode(encoded)))
    saved = Image.open(out / "scene1.png")
    assert served.size == saved.size and served.tobytes() == saved.tobytes()


def test_a_video_model_captions_an_uploaded_video_and_refuses_an_image(tmp_path_factory, images):
    pytest.importorskip("av", reason="PyAV (lrcn[video]) is not installed")
    from test_video_captioning import TINY_VIDEO

    from lrcn.config import load_config
    from lrcn.data.media import write_video
    from lrcn.data.synthetic.moving_shapes import MovingShapesCaptions
    from lrcn.engine import fit

    run = tmp_path_factory.mktemp("video")
    fit(load_config(REPO / "configs" / "moving_shapes.yaml", TINY_VIDEO), run)
    clip = write_video(tmp_path_factory.mktemp("clips") / "clip.avi", MovingShapesCaptions("test", 1).item(0)[0])  # fmt: skip
    [(_, expected, _)] = iter_captions(run, [str(clip)])
    with TestClient(make_app(ServedModel(run), Limits())) as client:
        assert client.get("/info").json()["input"] == "video"
        assert client.post("/caption", **form(clip)).json()["caption"] == expected
        refused = client.post("/caption", **form(images[0]))
        assert refused.status_code == 400 and "send a video file" in refused.json()["error"]


def test_an_activity_checkpoint_is_refused_in_one_sentence(tmp_path, capsys):
    from test_activity import TINY_LINE

    run = tmp_path / "line"
    assert main(["train", "-c", "moving_line", *TINY_LINE, "train.epochs=1", "--no-test", "--run-dir", str(run)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["serve", "--checkpoint", str(run), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "classifies; use `lrcn classify`" in err[0], err


def test_without_the_serving_stack_lrcn_serve_says_what_to_install(
    tiny_shapes_run, monkeypatch, capsys
):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))  # fmt: skip
    assert main(["serve", "--checkpoint", str(tiny_shapes_run)]) == 2
    err = capsys.readouterr().err
    assert err == "lrcn serve: error: lrcn serve needs uvicorn, which is not installed; run `pip install 'lrcn[serve]'`.\n"  # fmt: skip


def test_serve_listens_on_this_machine_only_unless_told(monkeypatch):
    from lrcn.cli import _parse

    args = _parse(["serve", "--checkpoint", "runs/quick"])
    assert (args.host, args.port) == ("127.0.0.1", 8000)
    assert _parse(["serve", "--checkpoint", "r", "--host", "0.0.0.0"]).host == "0.0.0.0"


@pytest.mark.parametrize("option", ["--max-upload-mb=0", "--max-pixels=0", "--max-beam=0", "--batch-wait-ms=-1"])  # fmt: skip
def test_a_limit_that_no_request_could_meet_is_one_sentence(option, capsys):
    assert main(["serve", "--checkpoint", "runs/quick", option]) == 2
    assert "pass positive limits" in capsys.readouterr().err


def test_a_port_out_of_range_is_one_sentence(capsys):
    assert main(["serve", "--checkpoint", "runs/quick", "--port", "70000"]) == 2
    assert "--port 70000: a port is a number from 0 to 65535" in capsys.readouterr().err

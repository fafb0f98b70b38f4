"""`lrcn serve` as a person and a script meet it: one real uvicorn process on a free port, a
caption over HTTP, the page driven in headless Chromium (DevTools protocol: the file picker is
given a PNG, the caption appears, a screenshot is saved), a taken port, and Ctrl-C (issue 30).

Exact by construction: captions are compared as strings with `lrcn caption`'s of the same file."""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO
from PIL import Image

pytest.importorskip("starlette", reason="lrcn[serve] is not installed")
import httpx  # noqa: E402

from lrcn.data.synthetic.shapes import ShapesCaptions  # noqa: E402
from lrcn.predict import iter_captions  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def start_server(checkpoint: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """``lrcn serve`` on a free port (``--port 0``), stderr into ``log``; its process and base
    URL once it answers."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "lrcn.cli", "serve", "--checkpoint", str(checkpoint), "--port", "0"]  # fmt: skip
    with log.open("w") as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True, env=env)  # fmt: skip
    line = process.stdout.readline()  # "lrcn serve: http://127.0.0.1:PORT/ (Ctrl-C stops)"
    if not line.startswith("lrcn serve: http://"):
        process.kill()
        raise AssertionError(f"lrcn serve did not start: {line}{log.read_text()}")
    url = line.split()[2]
    for _ in range(200):
        try:
            if httpx.get(url + "health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError(f"{url} never answered: {log.read_text()}")


@pytest.fixture(scope="module")
def server(tiny_shapes_run: Path, tmp_path_factory) -> Iterator[tuple[subprocess.Popen, str, Path]]:
    log = tmp_path_factory.mktemp("server") / "stderr.txt"
    process, url = start_server(tiny_shapes_run, log)
    yield process, url, log
    if process.poll() is None:
        process.kill()


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scene") / "scene.png"
    ShapesCaptions("test", 1).item(0)[0].save(path)
    return path


def test_a_script_gets_the_caption_lrcn_caption_gives(server, scene, tiny_shapes_run):
    _, url, _ = server
    assert url.startswith("http://127.0.0.1:")  # this machine only, unless --host says otherwise
    [(_, expected, _)] = iter_captions(tiny_shapes_run, [str(scene)])
    answer = httpx.post(url + "caption", files={"file": ("scene.png", scene.read_bytes())}, timeout=60)  # fmt: skip
    assert answer.status_code == 200 and answer.json()["caption"] == expected
    bad = httpx.post(url + "caption", files={"file": ("scene.png", b"text")}, timeout=60)
    assert bad.status_code == 400 and "not an image" in bad.json()["error"]


def test_a_taken_port_is_one_sentence(server, tiny_shapes_run):
    _, url, _ = server
    port = url.rstrip("/").rsplit(":", 1)[1]
    command = [sys.executable, "-m", "lrcn.cli", "serve", "--checkpoint", str(tiny_shapes_run), "--port", port]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith(f"lrcn serve: error: cannot listen on 127.0.0.1:{port} (")
    assert "pass another --port" in done.stderr and "Traceback" not in done.stderr


class DevTools:
    """The few DevTools protocol calls the page test needs, over one page's websocket."""

    def __init__(self, websocket_url: str) -> None:
        from websockets.sync.client import connect

        self.socket = connect(websocket_url, max_size=64 * 1024 * 1024)
        self.ids = itertools.count(1)

    def call(self, method: str, **params) -> dict:
        ident = next(self.ids)
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == ident:
                assert "error" not in message, message
                return message["result"]

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")  # fmt: skip

    def wait_for(self, expression: str, seconds: float = 60):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"the page never showed {expression}")


def open_chromium(profile: Path) -> tuple[subprocess.Popen, str]:
    """Headless Chromium with DevTools on a free port; the process and its first page's websocket."""
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={profile}",
        "--window-size=1000,700", "about:blank",
    ]  # fmt: skip
    browser = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port_file = profile / "DevToolsActivePort"
    for _ in range(300):
        if port_file.is_file() and port_file.read_text().strip():
            break
        time.sleep(0.1)
    port = port_file.read_text().split()[0]
    pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
    return browser, next(p for p in pages if p["type"] == "page")["webSocketDebuggerUrl"]


def test_the_page_shows_the_caption_of_a_picked_png(server, scene, tiny_shapes_run, tmp_path):
    if CHROMIUM is None:
        if os.environ.get("LRCN_REQUIRE_BROWSER"):  # CI installs it: never skip there
            pytest.fail("LRCN_REQUIRE_BROWSER is set but no chromium is on PATH")
        pytest.skip("chromium not installed (apt-get install chromium) to drive the page")
    _, url, _ = server
    [(_, expected, _)] = iter_captions(tiny_shapes_run, [str(scene)])
    browser, websocket_url = open_chromium(tmp_path / "profile")
    try:
        page = DevTools(websocket_url)
        page.call("Page.enable")
        page.call("Emulation.setDeviceMetricsOverride", width=1000, height=700, deviceScaleFactor=1, mobile=False)  # fmt: skip
        page.call("Page.navigate", url=url)
        page.wait_for("document.getElementById('model').textContent.includes('caption')")
        root = page.call("DOM.getDocument")["root"]["nodeId"]
        picker = page.call("DOM.querySelector", nodeId=root, selector="#files")["nodeId"]
        page.call("DOM.setFileInputFiles", nodeId=picker, files=[str(scene)])
        shown = page.wait_for("document.querySelector('.caption.done')?.textContent")
        assert shown == expected
        assert page.evaluate("document.querySelector('.name').textContent") == "scene.png"
        shot = tmp_path / "serve_page.png"
        shot.write_bytes(base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"]))  # fmt: skip
        print(f"\nscreenshot of the page: {shot}")
        with Image.open(shot) as picture:
            assert picture.size == (1000, 700)
    finally:
        browser.kill()
        browser.wait(timeout=30)


def test_ctrl_c_stops_the_server_cleanly(server):
    process, url, log = server  # the module's server: this test stops it, so it comes last
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0, log.read_text()
    assert log.read_text().strip().endswith("lrcn serve: stopped.")
    with socket.socket() as probe:  # the port is free again
        probe.bind(("127.0.0.1", int(url.rstrip("/").rsplit(":", 1)[1])))


@pytest.mark.slow
def test_the_load_script_checks_every_answer_and_writes_its_result_file(tiny_shapes_run, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("serve_load", REPO / "scripts" / "benchmarks" / "serve_load.py")  # fmt: skip
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "serve_load.json"
    argv = ["--checkpoint", str(tiny_shapes_run), "--clients", "4", "--seconds", "1", "--warmup", "0.5", "--images", "3", "--out", str(out)]  # fmt: skip
    assert script.main(argv) == 0
    result = json.loads(out.read_text())
    for side in ("batched", "one_per_decode"):
        assert result[side]["failures"] == 0 and result[side]["requests"] > 0, result[side]
    assert result["one_per_decode"]["mean_batch"] == 1.0  # eval.batch_size=1: never gathered
    assert {"commit", "cpu", "threads", "batched_over_one_per_decode"} <= result.keys()

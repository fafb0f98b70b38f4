"""`lrcn serve` under load: concurrent clients on localhost, requests/s and latency, captions checked.

    .venv/bin/python scripts/benchmarks/serve_load.py --checkpoint runs/quick    # ~75 s
    .venv/bin/python scripts/benchmarks/serve_load.py --checkpoint RUN --clients 4 --seconds 2 --out X.json

Makes ``--images`` shapes test scenes as PNG files and captions them one at a time in-process
(`lrcn.predict.iter_captions`, ``eval.batch_size=1``): the reference. Then, side by side in one
run, it starts ``lrcn serve`` twice on a free 127.0.0.1 port — gathering requests into batches (the
checkpoint's ``eval.batch_size``), and one request per decode (``--set eval.batch_size=1``) — and
lets ``--clients`` asyncio clients (httpx) POST the scenes round-robin for ``--warmup`` seconds
(not timed: connections opened, each batch size's first call) and then ``--seconds`` measured. A
request fails unless it is answered 200 with the reference's caption of its scene. It writes
``docs/results/serve_load.json`` (commit, CPU, threads, both runs' requests/s and p50/p99
latency, and their ratio), which `scripts/results.py render` turns into BENCHMARKS.md's section,
and exits 1 if any request failed. Only loopback addresses are used; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
OUT = REPO / "docs" / "results" / "serve_load.json"
MAX_REQUESTS = 200_000  # a bound on any one run, whatever the machine's speed


def scenes(count: int, folder: Path) -> list[Path]:
    """``count`` shapes test scenes as PNG files in ``folder``."""
    from lrcn.data.synthetic.shapes import ShapesCaptions

    data, paths = ShapesCaptions("test", count), []
    for index in range(count):
        buffer = io.BytesIO()
        data.item(index)[0].save(buffer, format="PNG")
        paths.append(folder / f"scene{index}.png")
        paths[-1].write_bytes(buffer.getvalue())
    return paths


def start_server(checkpoint: str, threads: int, log: Path, *options: str) -> tuple[subprocess.Popen, str]:  # fmt: skip
    """``lrcn serve`` on a free loopback port, its stderr into ``log`` (a pipe nobody reads
    would stall it once full); its process and URL once it answers."""
    import httpx

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "lrcn.cli", "serve", "--checkpoint", checkpoint, "--port", "0", *options]  # fmt: skip
    with log.open("w") as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True, env=env)  # fmt: skip
    line = process.stdout.readline()
    if not line.startswith("lrcn serve: http://127.0.0.1:"):
        process.kill()
        raise SystemExit(f"lrcn serve did not start: {line}{log.read_text()}")
    url = line.split()[2]
    for _ in range(600):
        try:
            if httpx.get(url + "health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit(f"{url} never answered")


async def phase(http: Any, url: str, images: list[tuple[str, bytes, str]], clients: int, seconds: float) -> tuple[list[float], list[str], float]:  # fmt: skip
    """``clients`` callers POSTing round-robin for ``seconds``: latencies, failures, wall time."""
    import httpx

    latencies: list[float] = []
    failures: list[str] = []
    deadline = time.perf_counter() + seconds

    async def client(number: int) -> None:
        turn = number
        while time.perf_counter() < deadline and len(latencies) + len(failures) < MAX_REQUESTS:
            name, data, expected = images[turn % len(images)]
            turn += clients
            start = time.perf_counter()
            try:
                answer = await http.post(url + "caption", files={"file": (name, data)})
                ok = answer.status_code == 200 and answer.json()["caption"] == expected
                problem = "" if ok else f"{name}: {answer.status_code} {answer.text[:200]}"
            except httpx.HTTPError as exc:
                problem = f"{name}: {exc!r}"
            if problem:
                failures.append(problem)
            else:
                latencies.append(time.perf_counter() - start)

    began = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    return sorted(latencies), failures, time.perf_counter() - began


async def load(url: str, images: list[tuple[str, bytes, str]], clients: int, seconds: float, warmup: float) -> dict[str, Any]:  # fmt: skip
    """``warmup`` seconds of the same load, not timed (connections opened, each batch size's
    first call), then ``seconds`` measured: counts, failures, latency quantiles, batch size."""
    import httpx

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:
        _, warmup_failures, _ = await phase(http, url, images, clients, warmup)
        before = (await http.get(url + "info")).json()
        latencies, failures, wall = await phase(http, url, images, clients, seconds)
        after = (await http.get(url + "info")).json()

    def quantile(q: float) -> float:
        return round(1000 * latencies[min(int(q * len(latencies)), len(latencies) - 1)], 1) if latencies else 0.0  # fmt: skip

    decodes = max(after["decodes"] - before["decodes"], 1)
    return {
        "warmup_seconds": warmup,
        "warmup_failures": len(warmup_failures),
        "requests": len(latencies) + len(failures),
        "failures": len(failures) + len(warmup_failures),
        "failure_examples": (warmup_failures + failures)[:5],
        "seconds": round(wall, 2),
        "requests_per_second": round(len(latencies) / wall, 2),
        "p50_ms": quantile(0.50),
        "p99_ms": quantile(0.99),
        "mean_batch": round((after["captioned"] - before["captioned"]) / decodes, 2),
    }


def run_side(checkpoint: str, threads: int, images: list, clients: int, seconds: tuple[float, float], *options: str) -> dict[str, Any]:  # fmt: skip
    """One server, loaded, then stopped with Ctrl-C; its log's last lines where a request failed."""
    with tempfile.TemporaryDirectory(prefix="serve-log-") as folder:
        log = Path(folder) / "stderr.txt"
        process, url = start_server(checkpoint, threads, log, *options)
        try:
            result = asyncio.run(load(url, images, clients, *seconds))
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        if result["failures"]:
            result["server_log_tail"] = log.read_text()[-2000:]
        return result


def machine(threads: int) -> dict[str, Any]:
    """Commit, CPU, threads and load: where the figures came from."""
    import platform

    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:  # fmt: skip
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()  # fmt: skip
    return {"commit": commit, "cpu": cpu, "cores": os.cpu_count(), "threads": threads, "load_average": round(os.getloadavg()[0], 2)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Measure both sides, write the result file; status 1 if any request failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="runs/quick", help="a captioner (README's Quickstart makes runs/quick)")  # fmt: skip
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0, help="measured, each server")
    parser.add_argument("--warmup", type=float, default=3.0, help="the same load first, not timed")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="the server's OMP_NUM_THREADS")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.clients < 1 or args.seconds <= 0 or args.images < 1 or args.warmup < 0:
        raise SystemExit("--clients, --seconds and --images must be above 0, --warmup at least 0.")
    from lrcn.io import write_json_atomic
    from lrcn.predict import iter_captions

    before = machine(args.threads)
    with tempfile.TemporaryDirectory(prefix="serve-load-") as folder:
        paths = scenes(args.images, Path(folder))
        start = time.perf_counter()
        reference = list(iter_captions(args.checkpoint, [str(p) for p in paths], overrides=["eval.batch_size=1"]))  # fmt: skip
        in_process = len(paths) / (time.perf_counter() - start)
        images = [(Path(p).name, Path(p).read_bytes(), caption) for p, caption, _ in reference]
    timing = (args.seconds, args.warmup)
    one = ("--set", "eval.batch_size=1")
    sides = {
        "batched": run_side(args.checkpoint, args.threads, images, args.clients, timing),
        "one_per_decode": run_side(
            args.checkpoint, args.threads, images, args.clients, timing, *one
        ),
    }
    result = {
        "benchmark": "serve_load",
        "command": "python scripts/benchmarks/serve_load.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),  # fmt: skip
        "date": time.strftime("%Y-%m-%d"),
        **before,
        "load_average_end": round(os.getloadavg()[0], 2),
        "checkpoint": Path(args.checkpoint).name,
        "clients": args.clients,
        "seconds_each": args.seconds,
        "warmup_seconds_each": args.warmup,
        "images": args.images,
        "distinct_captions": len({caption for _, _, caption in images}),
        "reference_captions_per_second_in_process": round(in_process, 2),
        **sides,
        "batched_over_one_per_decode": round(
            sides["batched"]["requests_per_second"]
            / max(sides["one_per_decode"]["requests_per_second"], 1e-9),
            2,
        ),  # fmt: skip
    }
    write_json_atomic(args.out, result, indent=1)
    print(json.dumps(result, indent=1))
    return 1 if any(side["failures"] for side in sides.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

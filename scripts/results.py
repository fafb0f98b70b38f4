"""Record a recipe's results over seeds and kernel sets, and render the docs' tables from them.

    python scripts/results.py record demo --seeds 0 1 2 3 4 [--capability avx2] [--threads 2]
    python scripts/results.py render          # rewrite the tables in README.md and BENCHMARKS.md
    python scripts/results.py check           # exit 1 when a table in the docs differs from its render

``record`` runs the recipe's commands once per seed (``train.seed``; the data's own seed is the
recipe's, so every run is scored on the same test split) with PyTorch's kernels limited to
``--capability`` (``ATEN_CPU_CAPABILITY``; ``native`` leaves it unset) and ``--threads`` OpenMP
threads, and adds each run to ``docs/results/<recipe>.json`` (a run of the same seed, kernel set,
threads and commit replaces the older one). The file then holds every metric's mean, min, max and
run count over all its runs, the command, the commits and the machines (``lrcn.results``).

``render`` writes each table between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->`` in
README.md and BENCHMARKS.md; ``tests/test_results.py`` fails when the committed docs differ from
what it renders, so a number edited by hand is caught.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lrcn.results import RESULTS_DIR, summarize  # noqa: E402

LRCN = [sys.executable, "-m", "lrcn.cli"]


@dataclass(frozen=True)
class Recipe:
    """What ``record`` runs for one seed, in a work folder of its own (``{work}``), and where the
    metrics land. ``{demo}`` / ``{video}``: the work folder of the same seed's ``demo`` /
    ``video_demo`` run (its stage-1 encoder and feature store), which must be recorded first."""

    description: str
    commands: tuple[tuple[str, ...], ...]
    metrics: str  # eval/<split>_metrics.json of the run, under {work}
    extra: dict[str, str] = field(default_factory=dict)  # other metrics files: name -> path
    needs: str | None = None  # the recipe whose work folder {demo} / {video} names
    attention_on_object: str | None = None  # a run to score with scripts/attention_on_object.py


_ATT = ("encoder.weights={demo}/1-pretrain/encoder.pt", "data.features={work}/grid-store")
_VIDEO_ATT = ("encoder.weights={video}/1-pretrain/encoder.pt", "data.features={video}/features")


def _train(recipe: str, *overrides: str) -> tuple[str, ...]:
    """``lrcn train`` of a recipe for one seed into ``{work}/run``."""
    return ("train", "-c", recipe, *overrides, "train.seed={seed}", "train.progress=false", "--run-dir", "{work}/run")  # fmt: skip


RECIPES: dict[str, Recipe] = {
    "demo": Recipe(
        "`make demo` (`lrcn demo`): `shapes_pretrain` then `shapes_two_stage`, Show and Tell on "
        "the frozen pretrained CNN from the feature store",
        (("demo", "--root", "{work}", "train.seed={seed}", "train.progress=false"),),
        "2-caption/eval/test_metrics.json",
        extra={"pretrain": "1-pretrain/eval/test_metrics.json"},
    ),
    "shapes_attention": Recipe(
        "`shapes_attention` (Show, Attend and Tell, 4 epochs from a store of the demo CNN's grids)",
        (
            ("extract-features", "-c", "shapes_attention", *_ATT, "train.seed={seed}"),
            _train("shapes_attention", *_ATT),
        ),
        "run/eval/test_metrics.json",
        needs="demo",
        attention_on_object="run",
    ),
    "video_demo": Recipe(
        "`lrcn demo --video`: `moving_shapes_pretrain` then `moving_shapes_two_stage` (temporal "
        "LSTM, LRCN2f, from the store of every frame's features)",
        (("demo", "--video", "--root", "{work}", "train.seed={seed}", "train.progress=false"),),
        "2-caption/eval/test_metrics.json",
        extra={"pretrain": "1-pretrain/eval/test_metrics.json"},
    ),
    "moving_shapes_attention": Recipe(
        "`moving_shapes_attention` (temporal attention over the temporal LSTM's every frame, from "
        "the video demo's store)",
        (_train("moving_shapes_attention", *_VIDEO_ATT),),
        "run/eval/test_metrics.json",
        needs="video_demo",
    ),
    "moving_line": Recipe(
        "`moving_line` (the Keras seed, activity recognition)",
        (_train("moving_line"),),
        "run/eval/test_metrics.json",
    ),
}


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _environment(capability: str, threads: int) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability != "native":
        env["ATEN_CPU_CAPABILITY"] = capability
    return env


def _kernel_set(env: dict[str, str]) -> str:
    probe = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    return subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def _scalars(path: Path) -> dict[str, float]:
    metrics = json.loads(path.read_text(encoding="utf-8"))
    return {
        k: v
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k != "items"
    }


def work_folder(root: Path, recipe: str, capability: str, threads: int, seed: int) -> Path:
    """Where ``record`` runs one seed of a recipe (kept, so a later recipe can read it)."""
    return root / recipe / f"{capability}-t{threads}-s{seed}"


def record_one(
    name: str, seed: int, capability: str, threads: int, root: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    """Run one seed of a recipe; its entry for the result file."""
    recipe = RECIPES[name]
    work = work_folder(root, name, capability, threads, seed)
    fill = {"work": str(work), "seed": str(seed)}
    if recipe.needs:
        needed = work_folder(root, recipe.needs, capability, threads, seed)
        if not (needed / RECIPES[recipe.needs].metrics).is_file():
            raise SystemExit(
                f"{needed}: record `{recipe.needs}` for seed {seed} (--capability {capability} "
                f"--threads {threads}) first; `{name}` reads its stage-1 encoder."
            )
        fill["demo" if recipe.needs == "demo" else "video"] = str(needed)
    env = _environment(capability, threads)
    start = time.perf_counter()
    commands = []
    for template in recipe.commands:
        args = [part.format(**fill) for part in template]
        commands.append("lrcn " + " ".join(args))
        log(f"[{name} seed {seed} {capability} t{threads}] lrcn {' '.join(args)}")
        done = subprocess.run([*LRCN, *args], cwd=REPO, env=env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")  # fmt: skip
    entry: dict[str, Any] = {
        "seed": seed,
        "capability": _kernel_set(env),
        "threads": threads,
        "cpu": _cpu_model(),
        "commit": _git("rev-parse", "--short=12", "HEAD"),
        "seconds": round(time.perf_counter() - start, 1),
        "commands": commands,
        "metrics": _scalars(work / recipe.metrics),
    }
    for key, path in recipe.extra.items():
        entry[key] = _scalars(work / path)
    if recipe.attention_on_object:
        script = [sys.executable, str(REPO / "scripts" / "attention_on_object.py")]
        out = subprocess.run([*script, str(work / recipe.attention_on_object)], cwd=REPO, env=env, capture_output=True, text=True, check=True)  # fmt: skip
        entry["attention_on_object"] = json.loads(out.stdout)
    return entry


def result_file(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole result file of a recipe from its runs (``lrcn.results`` documents the keys)."""
    recipe = RECIPES[name]
    machines: dict[tuple[str, str, int], int] = {}
    for run in runs:
        key = (run["cpu"], run["capability"], run["threads"])
        machines[key] = machines.get(key, 0) + 1
    record: dict[str, Any] = {
        "recipe": name,
        "description": recipe.description,
        "command": " && ".join("lrcn " + " ".join(c) for c in recipe.commands),
        "commit": sorted({run["commit"] for run in runs}),
        "machines": [
            {"cpu": c, "capability": k, "threads": t, "runs": n}
            for (c, k, t), n in sorted(machines.items())
        ],
        **summarize([run["metrics"] for run in runs]),
    }
    for key in (*recipe.extra, "attention_on_object"):
        if any(key in run for run in runs):
            record[key] = summarize([run[key] for run in runs if key in run])
    record["each_run"] = runs
    return record


def _read_runs(name: str) -> list[dict[str, Any]]:
    path = RESULTS_DIR / f"{name}.json"
    if not path.is_file():
        return []
    return json.loads(path.read_text(encoding="utf-8")).get("each_run", [])


def record(name: str, seeds: list[int], capability: str, threads: int, root: Path) -> None:
    """Record the seeds and rewrite the recipe's result file after each."""
    for seed in seeds:
        entry = record_one(name, seed, capability, threads, root, print)
        same = ("seed", "capability", "threads", "commit")
        runs = [r for r in _read_runs(name) if any(r[k] != entry[k] for k in same)] + [entry]
        runs.sort(key=lambda r: (r["capability"], r["threads"], r["seed"], r["commit"]))
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"{name}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result_file(name, runs), indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)
        print(f"{path}: {len(runs)} runs ({entry['seconds']:.0f} s for seed {seed})")


# --- rendering ------------------------------------------------------------------------------


def load(name: str) -> dict[str, Any] | None:
    """A committed result file, or None where the recipe has not been recorded (rendering never
    runs anything)."""
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _missing(name: str, columns: int) -> str:
    return f"| `{name}`: not recorded yet (`python scripts/results.py record {name}`) |" + " |" * (columns - 1)  # fmt: skip


def spread(stats: dict[str, Any] | None, digits: int = 3) -> str:
    """``mean [min-max]``, the mean alone when every run gave it, ``—`` when not recorded."""
    if not stats:
        return "—"
    mean, lo, hi = (f"{stats[k]:.{digits}f}" for k in ("mean", "min", "max"))
    return mean if lo == hi else f"{mean} [{lo}-{hi}]"


def _machines(record: dict[str, Any]) -> str:
    parts = [f"{m['runs']} x {m['capability']}, {m['threads']} thr" for m in record["machines"]]
    cpus = sorted({m["cpu"] for m in record["machines"]})
    return f"{'; '.join(parts)} ({', '.join(cpus)})"


def _seconds(record: dict[str, Any]) -> str:
    times = [run["seconds"] for run in record["each_run"]]
    return f"{min(times):.0f}-{max(times):.0f} s"


def _scene(record: dict[str, Any], key: str | None = None) -> list[str]:
    """Scene accuracy over all scenes, then of the one-, two- and three-object scenes."""
    part = record if key is None else record.get(key, {})
    names = ["scene_accuracy", *(f"scene_accuracy_{n}" for n in (1, 2, 3))]
    return [spread(part.get(name)) for name in names]


Cells = Callable[[dict[str, Any]], list[str]]


def _table(columns: list[str], rows: list[tuple[str, str | None, Cells]]) -> list[str]:
    """A markdown table: per row a recipe, its runs and machines, then ``cells(record)``; a recipe
    with no result file yet gets a row that says how to record it."""
    header = ["recipe", "runs (kernel set, threads)", *columns]
    lines = [f"| {' | '.join(header)} |", "|" + "---|" * len(header)]
    for name, label, cells in rows:
        r = load(name)
        if r is None:
            lines.append(_missing(name, len(header)))
            continue
        row = [label or r["description"], f"{len(r['each_run'])}: {_machines(r)}", *cells(r)]
        lines.append(f"| {' | '.join(row)} |")
    return lines


WALL = "wall time a run (shared 2-core CPU)"


def table_captions() -> str:
    """README: the caption recipes on the embedded data, each figure as mean [min-max] over runs."""

    def cells(r: dict[str, Any]) -> list[str]:
        keys = ("Bleu_4", "CIDEr", "METEOR", "reference_loo_Bleu_4")
        return [*_scene(r), *(spread(r.get(k), 2 if k == "CIDEr" else 3) for k in keys), _seconds(r)]  # fmt: skip

    scenes = ["scene accuracy", "1 object", "2 objects", "3 objects"]
    columns = [*scenes, "BLEU-4", "CIDEr", "METEOR", "leave-one-out BLEU-4", WALL]
    lines = _table(columns, [("demo", None, cells), ("shapes_attention", None, cells)])
    demo, att = load("demo") or {}, load("shapes_attention") or {}
    on_object = att.get("attention_on_object", {})
    heads = _scene(demo, "pretrain")
    lines += [
        "",
        f"Each figure is the mean [min-max] over the runs. The demo's stage 1 alone (its heads on "
        f"the same test images) gets every object's colour and shape right in {heads[0]} of the "
        f"scenes (one / two / three objects: {' / '.join(heads[1:])}). Attention's most attended "
        f"cell lies on the object a colour or shape word names for "
        f"{spread(on_object.get('on_object_all'))} of those words (a random cell: "
        f"{spread(on_object.get('chance_all'))}).",
    ]
    return "\n".join(lines)


def table_video() -> str:
    """README: video description and activity recognition on the embedded clips."""

    def cells(r: dict[str, Any]) -> list[str]:
        keys = ("motion_accuracy", "motion_colour_accuracy", "Bleu_4", "CIDEr")
        return [*(spread(r.get(k), 2 if k == "CIDEr" else 3) for k in keys), _seconds(r)]

    def activity(r: dict[str, Any]) -> list[str]:
        return [f"test accuracy {spread(r.get('accuracy'))}", "", "", "", _seconds(r)]

    columns = ["motion named right", "with colours", "BLEU-4", "CIDEr", WALL]
    rows = [("video_demo", None, cells), ("moving_shapes_attention", None, cells)]
    return "\n".join(_table(columns, [*rows, ("moving_line", None, activity)]))


def table_quality() -> str:
    """BENCHMARKS.md: the test quality of the recipes whose speed it measures."""

    def quality(label: str, key: str) -> Cells:
        return lambda r: [f"{label} {spread(r.get(key))}"]

    rows = [
        ("moving_line", "`moving_line`", quality("accuracy", "accuracy")),
        ("demo", "`demo`", quality("scene accuracy", "scene_accuracy")),
        ("video_demo", "`video_demo`", quality("motion named right", "motion_accuracy")),
    ]
    return "\n".join(_table(["test quality"], rows))


def table_onnx() -> str:
    """BENCHMARKS.md: onnxruntime's captions against lrcn's (scripts/benchmarks/onnx_runtime.py),
    both runtimes timed side by side in one run."""
    r = load("onnx_runtime")
    if r is None:
        return "Not recorded yet: `python scripts/benchmarks/onnx_runtime.py --run NAME=RUN`."
    header = ["model (run)", "beam", "captions equal", "lrcn captions/s", "onnxruntime captions/s", "speed-up"]  # fmt: skip
    lines = [f"| {' | '.join(header)} |", "|" + "---|" * len(header)]
    for name, run in r["runs"].items():
        stage = "two-stage, feature store" if run["two_stage"] else "end to end"
        label = (f"{name}: {run['encoder']} + {run['wiring']} ({stage}; {run['train_items']} "
                 f"training images, {run['epochs']} epochs)")  # fmt: skip
        for beam, b in run["beams"].items():
            lines.append(
                f"| {label} | {beam} | {b['equal']} / {run['items']} | "
                f"{b['lrcn_captions_per_s']:.0f} | {b['onnxruntime_captions_per_s']:.0f} | "
                f"{b['ratio']:.2f}x |"
            )
            label = ""
    lines += [
        "",
        f"`{r['command']}` at commit {r['commit']}: {r['cpu']}, {r['threads']} thread(s) for both "
        f"runtimes, torch {r['torch']}, onnxruntime {r['onnxruntime']}, batches of {r['batch']} "
        "test images captioned from pixels, the best of three passes each; load average "
        f"{r['load_average_start']} at the start, {r['load_average_end']} at the end (2 cores).",
    ]
    return "\n".join(lines)


def table_serve_load() -> str:
    """BENCHMARKS.md: `lrcn serve` under concurrent load (scripts/benchmarks/serve_load.py)."""
    r = load("serve_load")
    if r is None:
        return "`serve_load`: not recorded yet (`python scripts/benchmarks/serve_load.py`)."
    sides = (r["batched"], r["one_per_decode"])
    rows = [
        ("requests/s", "requests_per_second", "{:.1f}"),
        ("p50 latency", "p50_ms", "{:.0f} ms"),
        ("p99 latency", "p99_ms", "{:.0f} ms"),
        ("requests (failed)", None, ""),
        ("requests per decode (mean)", "mean_batch", "{:.2f}"),
    ]
    lines = [
        "| | batched (up to `eval.batch_size` a decode) | one request a decode |",
        "|---|---|---|",
    ]
    for label, key, form in rows:
        cells = [
            f"{s['requests']} ({s['failures']})" if key is None else form.format(s[key])
            for s in sides
        ]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    lines += [
        "",
        f"`{r['command']}`, {r['date']}, commit {r['commit']}: {r['clients']} clients for "
        f"{r['seconds_each']:g} s against each server (after {r.get('warmup_seconds_each', 0):g} s "
        f"of the same load, not timed), on {r['cpu']} ({r['cores']} cores, server "
        f"threads {r['threads']}, load average {r['load_average']} at the start, "
        f"{r['load_average_end']} at the end), checkpoint `{r['checkpoint']}`. Batched serves "
        f"**{r['batched_over_one_per_decode']:.2f}x** the requests a second of one request a "
        f"decode. Every answer was checked against the one-at-a-time caption of its scene "
        f"(`lrcn caption` with `eval.batch_size=1`; {r['images']} scenes, "
        f"{r['distinct_captions']} distinct captions).",
    ]
    return "\n".join(lines)


TABLES: dict[str, Callable[[], str]] = {
    "captions": table_captions,
    "video": table_video,
    "quality": table_quality,
    "onnx": table_onnx,
    "serve_load": table_serve_load,
}
DOCS = ("README.md", "BENCHMARKS.md")
_BLOCK = re.compile(r"(<!-- results:(\w+) -->\n)(.*?)(<!-- /results:\2 -->)", re.S)


def rendered(text: str) -> str:
    """``text`` with every results block replaced by its render."""

    def fill(match: re.Match[str]) -> str:
        if match.group(2) not in TABLES:
            raise SystemExit(f"unknown results block `{match.group(2)}`; known: {sorted(TABLES)}")
        return f"{match.group(1)}{TABLES[match.group(2)]()}\n{match.group(4)}"

    return _BLOCK.sub(fill, text)


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="run a recipe's seeds and add them to its result file")
    rec.add_argument("recipe", choices=sorted(RECIPES))
    rec.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    rec.add_argument("--capability", default="native", choices=["native", "default", "avx2", "avx512"])  # fmt: skip
    rec.add_argument("--threads", type=int, default=2)
    rec.add_argument("--work", type=Path, default=REPO / "runs" / "results")
    sub.add_parser("render", help="rewrite the results tables in README.md and BENCHMARKS.md")
    sub.add_parser("check", help="exit 1 when a results table in the docs differs from its render")
    args = parser.parse_args(argv)
    if args.command == "record":
        record(args.recipe, args.seeds, args.capability, args.threads, args.work)
        return 0
    stale = []
    for doc in DOCS:
        path = REPO / doc
        text = path.read_text(encoding="utf-8")
        new = rendered(text)
        if new != text:
            stale.append(doc)
            if args.command == "render":
                path.write_text(new, encoding="utf-8")
    if args.command == "check" and stale:
        print(f"{', '.join(stale)}: results tables differ from docs/results/; run `python scripts/results.py render`")  # fmt: skip
        return 1
    print(f"{'rewrote' if stale else 'up to date:'} {', '.join(stale) or ', '.join(DOCS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Golden digests: prove a refactor kept every recipe's behaviour bit for bit.

    python scripts/golden.py run [--recipes a,b] [--out FILE] [--work DIR] [--threads N]
    python scripts/golden.py compare --base REF [--recipes a,b] [--work DIR] [--threads N]
    python scripts/golden.py compare A.json B.json [--recipes a,b]
    make golden BASE=<ref>            # compare --base <ref> (default HEAD)

When to use it: before and after a change that must not change what the code computes (a
refactor, a speed-up, a move of code between modules). ``compare --base REF`` checks out REF in a
temporary ``git worktree`` (removed afterwards), runs a short version of every recipe there and in
the working tree under the same environment, and prints ``same`` or ``DIFFERS`` for each recipe
and artifact; it exits 1 when anything differs or a run failed. ``run`` writes the digests of the
working tree to a JSON file, so two saved files can be compared later with ``compare A B`` (e.g.
one made before a rebase, or on another machine).

What runs: every recipe of ``configs/`` whose resolved config reads an embedded (synthetic) dataset
(``data.dataset`` registered in ``lrcn.data.synthetic``: shapes, moving_shapes, moving_line); the
recipes that need a downloaded dataset (coco, flickr, msvd, msrvtt, ucf101, own_*) are listed as
skipped. Each run is tiny (64 training items, 16 validation and test items, one epoch, small images
and layers: `TINY`, scripts/golden_runs.py), trains with ``lrcn train`` and evaluates the test
split as train does at its end. A recipe that reads an earlier stage's output (``encoder.weights: runs/demo/1-pretrain/...``,
``data.features: runs/video/features``, ``train.init_from: runs/shapes/...``) is chained: the
recipe that makes it (``lrcn demo``'s stages: ``runs/demo`` is shapes_pretrain then
shapes_two_stage, ``runs/video`` the moving_shapes ones; ``runs/<recipe>`` is that recipe) runs
first, tiny, with ``lrcn extract-features`` for a feature store, and the path is pointed at its
output inside the work folder.

What is digested (sha256), per recipe: ``checkpoints/last.pt`` and ``best.pt`` loaded with
``torch.load(weights_only=True)``: the model's tensors in key order (name, dtype, shape, bytes) and,
separately, the optimizer state and the training state (its history without the epoch times) --
never the files' bytes, which hold paths; a pretraining run's ``encoder.pt``; the feature store a
recipe trained from (its arrays); ``eval/test_captions.json``, ``test_per_item.json``,
``test_predictions.json`` (activity) and ``test_metrics.json``, read as JSON with any field that
legitimately varies removed (`VARYING`: paths, times, run folders; the metrics files of this
version hold none, but a path that names the work folder is written as ``<work>``).

Kernel sets and threads: PyTorch picks its CPU kernels by the machine's instruction set
(``torch.backends.cpu.get_cpu_capability()``: default, avx2, avx512 ...; ``ATEN_CPU_CAPABILITY``
lowers it) and splits reductions by thread count, and each rounds floating point differently. So
digests from another kernel set or thread count differ by design, not because of a change: the
JSON is keyed first by ``<kernel set>/t<threads>`` (``avx2/t1``), then by recipe, then by artifact,
and ``compare`` only compares entries of the same key. Child runs get ``OMP_NUM_THREADS``
(``--threads``, default 1) and a fixed ``PYTHONHASHSEED``; set ``ATEN_CPU_CAPABILITY`` in the
environment to pin the kernel set. Each entry also records the commit (and whether the tree was
dirty) and the torch version; ``run --out`` into an existing file replaces only its own entry.

A failed run is reported per recipe with the tail of its log; the other recipes still run (a
recipe chained after it is reported as failed too). A full ``run`` is 16 child runs of about
5 s each at 1 thread (some 80 s on an idle machine); ``compare --base`` twice that.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from golden_digests import run_digests  # noqa: E402  (scripts/golden_digests.py)
from golden_runs import Product, Side, make, plan  # noqa: E402  (scripts/golden_runs.py)

REPO = Path(__file__).resolve().parent.parent
FORMAT = "lrcn-golden/1"

# Run with the side's own lrcn: its recipes, their resolved configs, and the process's kernels.
_PROBE = r"""
import json, sys, torch, lrcn
from lrcn.config import load_config
from lrcn.recipes import available_recipes
try:
    from lrcn.data.synthetic import find_dataset
    synthetic = lambda name, task: find_dataset(name, task) is not None
except ImportError:  # an older lrcn
    synthetic = lambda name, task: name in ("shapes", "moving_shapes", "moving_line")
try:
    from lrcn.demo import RECIPES as demo
except ImportError:
    demo = {"shapes": ("shapes_pretrain", "shapes_two_stage")}
recipes = {}
for name, path in available_recipes().items():
    try:
        cfg = load_config(path, [])
    except Exception as exc:
        recipes[name] = {"error": f"{type(exc).__name__}: {exc}"}
        continue
    recipes[name] = {
        "path": str(path), "task": cfg.task, "dataset": cfg.data.dataset,
        "synthetic": synthetic(cfg.data.dataset, cfg.task),
        "inputs": {"encoder.weights": cfg.encoder.weights, "data.features": cfg.data.features,
                   "train.init_from": cfg.train.init_from},
    }
json.dump({"kernel_set": torch.backends.cpu.get_cpu_capability(),
           "threads": torch.get_num_threads(), "torch": torch.__version__,
           "lrcn": lrcn.__file__, "demo": {k: list(v) for k, v in demo.items()},
           "recipes": recipes}, sys.stdout)
"""


# --- running a side -----------------------------------------------------------------------------


def child_environment(repo: Path, threads: int) -> dict[str, str]:
    """The child runs' environment: ``repo``'s lrcn first on the path, pinned threads and hashing
    (``ATEN_CPU_CAPABILITY``, when set, is passed on)."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env.update(
        PYTHONPATH=str(repo) + (os.pathsep + path if path else ""),
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        PYTHONHASHSEED="0",
        PYTHONUNBUFFERED="1",
        OMP_WAIT_POLICY="PASSIVE",
    )
    return env


def probe(repo: Path, env: dict[str, str]) -> dict[str, Any]:
    """The side's recipes (resolved) and its processes' kernel set, threads, torch and lrcn."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=repo, env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"golden.py: cannot read the recipes in {repo}:\n{done.stderr[-3000:]}")
    found = json.loads(done.stdout)
    lrcn = Path(found["lrcn"]).resolve()
    if not lrcn.is_relative_to(repo.resolve()):
        raise SystemExit(f"golden.py: the runs in {repo} would import another lrcn ({lrcn}).")
    return found


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    return done.stdout.strip()


def select(
    recipes: dict[str, Any], wanted: Sequence[str] | None
) -> tuple[list[str], dict[str, str]]:
    """The recipes to run (embedded data), and those skipped with why."""
    skipped = {}
    chosen = []
    for name, info in recipes.items():
        if wanted is not None and name not in wanted:
            continue
        if "error" in info:
            skipped[name] = f"its config does not load ({info['error']})"
        elif not info["synthetic"]:
            skipped[name] = (
                f"needs external data (data.dataset: {info['dataset']}, not an embedded dataset)"
            )
        else:
            chosen.append(name)
    return chosen, skipped


def kernel_key(kernel_set: str, threads: int) -> str:
    """The key digests are filed under: ``<kernel set>/t<threads>``."""
    return f"{kernel_set}/t{threads}"


def run_side(
    repo: Path,
    work: Path,
    threads: int,
    wanted: Sequence[str] | None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the short recipes in ``repo`` (folders under ``work``); its file entry (`FORMAT`)."""
    env = child_environment(repo, threads)
    side = Side(repo, work, env, probe(repo, env))
    chosen, skipped = select(side.probe["recipes"], wanted)
    if wanted is not None:
        for name in wanted:
            if name not in side.probe["recipes"]:
                skipped[name] = "no such recipe here"
    log(f"{repo}: {len(chosen)} recipes ({side.probe['kernel_set']}, {threads} thread(s))")
    start = time.perf_counter()
    recipes: dict[str, Any] = {}
    failed: dict[str, str] = {}
    for name in chosen:
        product = Product("train", name)
        error = make(product, side, log)
        if error is not None:
            failed[name] = error
            continue
        try:
            overrides, _ = plan(product, side)
            stores = [o.split("=", 1)[1] for o in overrides if o.startswith("data.features=")]
            store = Path(stores[0]) if stores else None
            recipes[name] = run_digests(side.folder(product), work, store)
        except Exception as exc:  # a run that finished but left unreadable files
            failed[name] = f"digesting {side.folder(product)}: {type(exc).__name__}: {exc}"
    status = _git(repo, "status", "--porcelain", "--untracked-files=no")
    return {
        "format": FORMAT,
        "kernel_set": side.probe["kernel_set"],
        "threads": side.probe["threads"],
        "torch": side.probe["torch"],
        "commit": _git(repo, "rev-parse", "HEAD"),
        "dirty": bool(status),
        "seconds": round(time.perf_counter() - start, 1),
        "recipes": recipes,
        "failed": failed,
        "skipped": skipped,
    }


# --- comparing ----------------------------------------------------------------------------------


def compare_entries(
    a: dict[str, Any],
    b: dict[str, Any],
    wanted: Sequence[str] | None = None,
    names: tuple[str, str] = ("A", "B"),
    echo: Callable[[str], None] = print,
) -> bool:
    """Print ``same`` / ``DIFFERS`` for every recipe and artifact; True when all are the same."""
    ok = True
    recipes = sorted(
        set(a.get("recipes", {})) | set(b.get("recipes", {}))
        | set(a.get("failed", {})) | set(b.get("failed", {}))
    )  # fmt: skip
    if wanted is not None:
        recipes = [r for r in recipes if r in wanted]
    for recipe in recipes:
        failures = [(n, e.get("failed", {}).get(recipe)) for n, e in zip(names, (a, b))]
        failures = [(n, error) for n, error in failures if error]
        if failures:
            ok = False
            for name, error in failures:
                echo(f"{recipe}: FAILED in {name}:")
                echo("    " + error.replace("\n", "\n    "))
            continue
        left, right = a.get("recipes", {}).get(recipe), b.get("recipes", {}).get(recipe)
        if left is None or right is None:
            ok = False
            echo(f"{recipe}: DIFFERS (only in {names[0] if right is None else names[1]})")
            continue
        for artifact in sorted(set(left) | set(right)):
            one, two = left.get(artifact), right.get(artifact)
            if one == two:
                word = "same"
            else:
                ok = False
                missing = f" (missing in {names[0] if one is None else names[1]})"
                word = "DIFFERS" + (missing if one is None or two is None else "")
            echo(f"{recipe:<26} {artifact:<28} {word}")
    return ok


def _describe(entry: dict[str, Any]) -> str:
    dirty = " (dirty tree)" if entry.get("dirty") else ""
    return f"{entry.get('commit', '?')[:12]}{dirty}, torch {entry.get('torch', '?')}"


def compare_files(a: dict[str, Any], b: dict[str, Any], wanted: Sequence[str] | None,
                  names: tuple[str, str], echo: Callable[[str], None] = print) -> int:  # fmt: skip
    """Compare the entries of two golden files with the same kernel set and threads; exit status:
    0 all same, 1 something differs or failed, 2 nothing comparable."""
    da, db = a.get("digests", {}), b.get("digests", {})
    common = sorted(set(da) & set(db))
    if not common:
        echo(
            f"nothing to compare: {names[0]} has {', '.join(sorted(da)) or 'no entries'}, "
            f"{names[1]} has {', '.join(sorted(db)) or 'no entries'}; digests are comparable "
            "only at the same kernel set and thread count."
        )
        return 2
    ok = True
    for key in common:
        echo(f"== {key}: {names[0]} {_describe(da[key])} vs {names[1]} {_describe(db[key])}")
        ok = compare_entries(da[key], db[key], wanted, names, echo) and ok
    only = sorted(set(da) ^ set(db))
    if only:
        echo(f"(not compared, in one file only: {', '.join(only)})")
    echo("all same" if ok else "DIFFERENCES found")
    return 0 if ok else 1


# --- the command line ---------------------------------------------------------------------------


def _recipes(text: str | None) -> list[str] | None:
    return [r.strip() for r in text.split(",") if r.strip()] if text else None


def _work(path: str | None, prefix: str) -> tuple[Path, bool]:
    """The work folder and whether it is temporary (removed at the end)."""
    if path:
        Path(path).mkdir(parents=True, exist_ok=True)
        return Path(path).resolve(), False
    return Path(tempfile.mkdtemp(prefix=prefix)), True


def _print_side(entry: dict[str, Any], echo: Callable[[str], None] = print) -> None:
    for name, why in sorted(entry["skipped"].items()):
        echo(f"skipped {name}: {why}")
    for name, error in sorted(entry["failed"].items()):
        echo(f"FAILED {name}:\n    " + error.replace("\n", "\n    "))


def cmd_run(args: argparse.Namespace) -> int:
    """``run``: the working tree's digests into ``--out``."""
    work, temporary = _work(args.work, "golden-run-")
    try:
        entry = run_side(REPO, work, args.threads, _recipes(args.recipes))
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    out = Path(args.out)
    data: dict[str, Any] = {"format": FORMAT, "digests": {}}
    if out.is_file():
        try:
            previous = json.loads(out.read_text(encoding="utf-8"))
            if previous.get("format") == FORMAT:
                data = previous
        except (OSError, ValueError):
            pass
    key = kernel_key(entry["kernel_set"], entry["threads"])
    data["digests"][key] = entry
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    _print_side(entry)
    count = sum(len(v) for v in entry["recipes"].values())
    print(f"{out}: {key}, {len(entry['recipes'])} recipes, {count} digests in {entry['seconds']} s")
    return 1 if entry["failed"] else 0


def cmd_compare(args: argparse.Namespace) -> int:
    """``compare``: two saved files, or REF's short runs against the working tree's."""
    wanted = _recipes(args.recipes)
    if args.files:
        if len(args.files) != 2 or args.base:
            raise SystemExit("golden.py compare: pass two files A B, or --base REF (not both).")
        loaded = [json.loads(Path(f).read_text(encoding="utf-8")) for f in args.files]
        return compare_files(*loaded, wanted, (args.files[0], args.files[1]))
    if not args.base:
        raise SystemExit("golden.py compare: pass --base REF or two files A B.")
    commit = _git(REPO, "rev-parse", "--verify", "--quiet", f"{args.base}^{{commit}}")
    if not commit:
        raise SystemExit(f"golden.py compare: {args.base}: no such commit here.")
    work, temporary = _work(args.work, "golden-compare-")
    tree = Path(tempfile.mkdtemp(prefix="golden-base-")) / "tree"
    added = subprocess.run(
        ["git", "worktree", "add", "--detach", str(tree), commit],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    if added.returncode:
        raise SystemExit(f"golden.py compare: git worktree add failed:\n{added.stderr}")
    try:
        print(f"== base {args.base} ({commit[:12]}) in {tree}")
        base = run_side(tree, work / "base", args.threads, wanted)
        print("== working tree")
        new = run_side(REPO, work / "new", args.threads, wanted)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO,
                       capture_output=True)  # fmt: skip
        shutil.rmtree(tree.parent, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=REPO, capture_output=True)
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    for name, why in sorted(new["skipped"].items()):
        print(f"skipped {name}: {why}")
    names = (f"base {args.base}", "working tree")
    files = [{"digests": {kernel_key(e["kernel_set"], e["threads"]): e}} for e in (base, new)]
    return compare_files(*files, wanted, names)


def main(argv: Iterable[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="golden.py", description=__doc__.split("\n\n", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="digest the short runs of every recipe into a JSON file")
    p.add_argument(
        "--out",
        default="runs/golden.json",
        help="JSON file (default runs/golden.json, git-ignored)",
    )
    p.set_defaults(func=cmd_run)
    q = sub.add_parser("compare", help="REF against the working tree, or two saved files")
    q.add_argument("files", nargs="*", metavar="FILE", help="two files written by `run`")
    q.add_argument("--base", metavar="REF", help="commit, branch or tag to compare with")
    q.set_defaults(func=cmd_compare)
    for each in (p, q):
        each.add_argument("--recipes", metavar="A,B", help="only these recipes (default: all)")
        each.add_argument("--work", metavar="DIR", help="keep the runs here (default: a temp dir)")
        each.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the runs")
    args = parser.parse_args(None if argv is None else list(argv))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

"""The ``lrcn`` commands that need no model: ``score``, ``prepare``, ``recipes``, ``make-example``,
``compare`` and ``report``. They read and write files, and never import torch (``lrcn.cli``'s
``TENSOR_COMMANDS`` are the others).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lrcn.errors import LrcnError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """score, prepare, recipes, make-example, compare and report: the commands that need no model."""
    _score_parser(sub)
    p = sub.add_parser("prepare", help="turn a dataset's native files into manifests")
    p.add_argument("dataset")
    p.add_argument("--root", required=True, help="the dataset's folder")
    p.add_argument("--out", required=True, help="manifest folder to write")
    p.add_argument(
        "options",
        nargs="*",
        metavar="KEY=VALUE",
        help="reader options, e.g. split=1 check_files=true",
    )

    sub.add_parser("recipes", help="list the recipes -c NAME accepts, with their descriptions")

    p = sub.add_parser(
        "make-example", help="write the worked examples' files (docs/your-own-data.md)"
    )
    p.add_argument("kind", choices=("images", "videos"))
    p.add_argument("--out", required=True, help="folder to write into")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser(
        "compare", help="paired test of two evaluations of the same items (intervals, p-values)"
    )
    p.add_argument("run_a", nargs="?", help="run folder, eval folder or metrics file")
    p.add_argument("run_b", nargs="?")
    p.add_argument("--split", default="test")
    p.add_argument("--a", dest="runs_a", metavar="RUN,RUN", help="several runs for side A (seeds)")
    p.add_argument("--b", dest="runs_b", metavar="RUN,RUN", help="several runs for side B")
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="default: <A>/eval/compare_<B>_<split>.json")

    p = sub.add_parser("report", help="an HTML page of an evaluation: images, captions, scores")
    p.add_argument("run_dir")
    p.add_argument("--split", default="test")
    p.add_argument("--out", help="default: <run>/eval/<split>_report.html")


def _score_parser(sub: argparse._SubParsersAction) -> None:
    """``lrcn score``: its metrics, tokenizer, per-item file and bootstrap options."""
    from lrcn.config import DEFAULT_METRICS, TOKENIZERS

    p = sub.add_parser("score", help="coco-caption metrics of a results file")
    p.add_argument("--annotations", required=True, help="COCO captions JSON (images, annotations)")
    p.add_argument(
        "--results", required=True, help='COCO results JSON: [{"image_id": ..., "caption": ...}]'
    )
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS))
    p.add_argument("--tokenizer", default="auto", choices=TOKENIZERS)
    p.add_argument(
        "--per-item",
        metavar="OUT.json",
        help="also write every item's scores (imgToEval as a list)",
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        metavar="N",
        help="resamples for the 95%% intervals (<metric>_ci95); 0: none",
    )


def cmd_score(args: argparse.Namespace) -> int:
    """``lrcn score``: coco-caption metrics of a results file, as JSON."""
    from lrcn.metrics import score_files

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if args.bootstrap < 0:
        raise LrcnError(f"--bootstrap {args.bootstrap}: pass 0 (no intervals) or more resamples.")
    result = score_files(
        args.annotations,
        args.results,
        metrics=metrics,
        tokenizer=args.tokenizer,
        bootstrap=args.bootstrap,
        per_item_path=args.per_item,
    )
    print(json.dumps(result, indent=2))
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    """``lrcn prepare``: a dataset's native files -> manifests."""
    from lrcn.config import parse_override
    from lrcn.data.manifest import CHECKS_FILE, prepare_with_checks

    options = dict(parse_override(o) for o in args.options)
    counts, checks = prepare_with_checks(args.dataset, args.root, args.out, **options)
    print(" ".join(f"{split}: {n}" for split, n in counts.items()) + f"  -> {args.out}")
    if counts.get("val") == 0:
        print(_empty_val_hint(args.dataset))
    if checks is not None:
        print(f"{checks}\n(every file the checks found: {Path(args.out) / CHECKS_FILE})")
    return 0


def _empty_val_hint(dataset: str) -> str:
    """What an empty val split means for training, and the reader's option that makes one."""
    import inspect

    from lrcn.data.readers import get_reader

    line = "note: no val split, so training will run without validation or early stopping"
    if "val_fraction" in inspect.signature(get_reader(dataset)).parameters:
        line += (
            "; `val_fraction=0.1` holds out a tenth of the training items as val (groups, such "
            "as UCF101's gGG actors and scenes, kept together)"
        )
    return line + "."


def cmd_recipes(args: argparse.Namespace) -> int:
    """``lrcn recipes``: the recipe names ``-c`` accepts, one line each."""
    from lrcn.recipes import available_recipes, describe_recipe, recipes_dir

    recipes = available_recipes()
    if not recipes:
        raise LrcnError("no recipes found: this lrcn was installed without its configs folder.")
    width = max(len(name) for name in recipes)
    for name, path in recipes.items():
        print(f"{name:<{width}}  {describe_recipe(path)}")
    print(f"(from {recipes_dir()}; use: lrcn train -c NAME [key=value ...])")
    return 0


def cmd_make_example(args: argparse.Namespace) -> int:
    """``lrcn make-example``: the worked examples' photos or videos and captions file."""
    from lrcn.data.examples import make_example

    made = make_example(args.kind, args.out, seed=args.seed)
    print(f"{made['root']}  {made['captions']}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """``lrcn compare``: A vs B on the same items: differences, intervals, p-values."""
    from lrcn.compare import compare, format_table

    # positional runs fill the sides that --a / --b leave open, A first
    positional = [r for r in (args.run_a, args.run_b) if r]
    sides = []
    for listed in (args.runs_a, args.runs_b):
        if listed:
            sides.append([r for r in listed.split(",") if r])
        else:
            sides.append([positional.pop(0)] if positional else [])
    if positional:
        raise LrcnError(
            f"lrcn compare got {positional[0]} besides --a and --b; pass RUN_A RUN_B or --a/--b."
        )
    runs_a, runs_b = sides
    result = compare(runs_a, runs_b, args.split, args.resamples, args.seed, args.out)
    print(format_table(result))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``lrcn report``: one self-contained HTML page of an evaluation."""
    from lrcn.report import write_report

    path = write_report(args.run_dir, split=args.split, out=args.out)
    print(path)
    return 0

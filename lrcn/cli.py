"""``lrcn <command>``: parse arguments, load config, call the library. Nothing else lives here.

Errors a user can cause print one sentence (no traceback) and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from collections.abc import Iterable
from pathlib import Path

# OpenMP threads that spin while waiting make a busy CPU many times slower (measured 4x-7x on a
# loaded 2-core machine); passive waiting costs little when the machine is idle. Must precede torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from lrcn.cli_files import (
    add_parsers,
    cmd_compare,
    cmd_make_example,
    cmd_prepare,
    cmd_recipes,
    cmd_report,
    cmd_score,
)
from lrcn.errors import LrcnError


def _predict_arguments(p: argparse.ArgumentParser, set_example: str) -> None:
    """PATH..., --checkpoint and repeatable --set KEY=VALUE, shared by caption and classify."""
    p.add_argument("paths", nargs="+")
    p.add_argument(
        "--checkpoint",
        required=True,
        action="append",
        help="caption: repeat it to caption with an ensemble of the checkpoints",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=set_example,
    )


def _parser() -> argparse.ArgumentParser:
    from lrcn.plugins import add_plugin_option

    parser = argparse.ArgumentParser(
        prog="lrcn", description="CNN + LSTM: activity recognition, image and video description."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _training_parsers(sub)
    _model_parsers(sub)
    add_parsers(sub)  # score, prepare, recipes, make-example, compare, report: no model
    for command in PLUGIN_COMMANDS:
        add_plugin_option(sub.choices[command])
    for command_parser in sub.choices.values():
        _add_set_option(command_parser)
    return parser


def _training_parsers(sub: argparse._SubParsersAction) -> None:
    """train and demo: the commands that train, from a config, into run folders."""
    p = sub.add_parser("train", help="train a model from a config")
    p.add_argument("-c", "--config", help="YAML config file, or a recipe name (lrcn recipes)")
    p.add_argument("--run-dir", help="output folder (default: runs/<config>-<time>)")
    p.add_argument(
        "--resume", metavar="RUN", help="continue the run in this folder from checkpoints/last.pt"
    )
    p.add_argument(
        "--no-test",
        action="store_true",
        help="do not evaluate best.pt on the test split at the end",
    )
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.epochs=2")

    p = sub.add_parser(
        "demo",
        help="Show and Tell in two stages on the shapes data (make demo); reuses finished stages",
    )
    p.add_argument("--root", help="folder of the stages' folders (default runs/demo, runs/video)")
    p.add_argument(
        "--video", action="store_true", help="video description on moving shapes instead"
    )
    p.add_argument("overrides", nargs="*", help="key=value overrides for every stage's config")


def _model_parsers(sub: argparse._SubParsersAction) -> None:
    """evaluate, caption, classify and extract-features: the commands that run a model without
    training it."""
    p = sub.add_parser("evaluate", help="score a checkpoint on a split")
    p.add_argument(
        "--checkpoint",
        required=True,
        action="append",
        help=".pt file, run folder or model folder; repeat it to evaluate an ensemble",
    )
    p.add_argument("--split", default="test")
    p.add_argument("--beam-size", type=int)
    p.add_argument("--out-dir", help="default: <run>/eval")
    p.add_argument(
        "overrides", nargs="*", help="key=value overrides of the saved config (eval.*, data.*)"
    )

    p = sub.add_parser(
        "caption", help="caption images (or folders of them), videos or frame folders"
    )
    _predict_arguments(p, "e.g. eval.batch_size=64 or data.num_workers=4")
    p.add_argument("--beam-size", type=int)
    p.add_argument(
        "--attention",
        metavar="OUT_DIR",
        help="attention checkpoints: also save each input's word-by-word attention maps as "
        "OUT_DIR/<stem>.png",
    )

    p = sub.add_parser("classify", help="label videos or frame folders with an activity model")
    _predict_arguments(p, "e.g. data.frame_sampling=clips")

    p = sub.add_parser(
        "extract-features", help="fill the feature store with a frozen encoder's features"
    )
    p.add_argument(
        "-c", "--config", required=True, help="YAML config file, or a recipe name (lrcn recipes)"
    )
    p.add_argument(
        "--split", action="append", help="split(s) to extract (default: train, val, test)"
    )
    p.add_argument("overrides", nargs="*")

    p = sub.add_parser("export", help="a run as a model folder others load (safetensors + JSON)")
    p.add_argument("run", help="run folder or .pt checkpoint")
    p.add_argument("--out", required=True, help="the model folder to write (new or empty)")
    p.add_argument("--onnx", action="store_true", help="also the ONNX graphs (onnx/)")

    from lrcn.serve.command import add_arguments as add_serve_arguments

    add_serve_arguments(
        sub.add_parser("serve", help="a web page and POST /caption for a captioner")
    )


def _add_set_option(p: argparse.ArgumentParser) -> None:
    """``--set KEY=VALUE`` beside a command's ``KEY=VALUE`` positionals, the form caption and
    classify take (their positionals are paths): every command takes overrides the same way, and
    `_parse` joins the two lists for one rule (`lrcn.config.apply_overrides`)."""
    if any(a.dest == "overrides" and not a.option_strings for a in p._actions):
        p.add_argument(
            "--set",
            dest="set_overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="a config override, as a KEY=VALUE positional (repeatable)",
        )


def _print_metrics(metrics: dict) -> None:
    from lrcn.metrics import METRIC_ORDER  # lazy: lrcn.metrics loads numpy and nltk (0.5 s)

    rows = [(k, metrics[k]) for k in METRIC_ORDER if isinstance(metrics.get(k), float)]
    for prefix in ("reference_loo_", "baseline_"):
        rows += [
            (f"{prefix}{k}", metrics[f"{prefix}{k}"])
            for k in METRIC_ORDER
            if isinstance(metrics.get(f"{prefix}{k}"), float)
        ]
    if not rows:  # not a captioner (e.g. a pretraining run): its own accuracies
        rows = [(k, v) for k, v in sorted(metrics.items()) if isinstance(v, float)]
    width = max((len(k) for k, _ in rows), default=0)
    for key, value in rows:
        interval = metrics.get(f"{key}_ci95")
        bounds = f" [{interval[0]:.4f}, {interval[1]:.4f}]" if isinstance(interval, list) else ""
        print(f"{key:<{width}}  {value:.4f}{bounds}")
    if metrics.get("bootstrap_note"):
        print(f"({metrics['bootstrap_note']})")


def cmd_train(args: argparse.Namespace) -> int:
    """``lrcn train``: train from a config or continue a run, then evaluate on test."""
    from lrcn.config import load_config
    from lrcn.engine import fit
    from lrcn.predict import evaluate

    if args.resume:
        if args.config:
            raise LrcnError(
                "--resume continues a run with its saved config; drop -c (key=value overrides of "
                "epochs, learning rate, logging and evaluation are accepted)."
            )
        run_dir = Path(args.resume)
        summary = fit(None, run_dir, resume=True, overrides=args.overrides)
    else:
        if not args.config:
            raise LrcnError(
                "lrcn train needs -c CONFIG (e.g. configs/shapes.yaml) or --resume RUN."
            )
        cfg = load_config(args.config, args.overrides)
        run_dir = Path(
            args.run_dir or f"runs/{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        )
        if (run_dir / "checkpoints" / "last.pt").exists():
            raise LrcnError(
                f"{run_dir}: already holds a run; pass --resume {run_dir} or another --run-dir."
            )
        args.run_dir = str(run_dir)  # for the stop sentence: `lrcn train --resume RUN_DIR`
        summary = fit(cfg, run_dir)
    print(
        f"run: {run_dir}  epochs: {summary['epochs']}  best val {summary['monitor']}: {summary['best']}"
    )
    from lrcn import distributed

    distributed.cleanup()
    if not args.no_test and distributed.is_main():
        metrics = evaluate(run_dir)
        print(f"test ({metrics['items']} items, written to {run_dir / 'eval'}):")
        _print_metrics(metrics)
    return 0


def _check_beam_size(beam_size: int | None) -> None:
    """``--beam-size`` below 1 cannot decode; refuse it rather than fall back to the config's."""
    if beam_size is not None and beam_size < 1:
        raise LrcnError(
            f"--beam-size {beam_size}: a beam holds at least 1 caption; pass --beam-size 1 "
            "(greedy) or more, or leave it out to use the checkpoint's eval.beam_size."
        )


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``lrcn evaluate``: score a checkpoint on a split and print the metrics."""
    from lrcn.predict import evaluate

    _check_beam_size(args.beam_size)
    metrics = evaluate(
        args.checkpoint,
        split=args.split,
        beam_size=args.beam_size,
        overrides=args.overrides,
        out_dir=args.out_dir,
    )
    _print_metrics(metrics)
    return 0


def _print_results(command: str, results: Iterable[tuple[str, str | None]]) -> int:
    """Print each result line as it comes and each error on stderr; status 2 if any failed."""
    failed = 0
    for line, error in results:
        if error is not None:
            print(f"lrcn {command}: error: {error}", file=sys.stderr, flush=True)
            failed += 1
        else:
            print(line, flush=True)
    return 2 if failed else 0


def cmd_caption(args: argparse.Namespace) -> int:
    """``lrcn caption``: one caption per image, video or frame folder."""
    from lrcn.predict import iter_captions

    _check_beam_size(args.beam_size)
    results = iter_captions(
        args.checkpoint, args.paths, args.beam_size, args.overrides, args.attention
    )
    return _print_results("caption", ((f"{p}\t{c}", e) for p, c, e in results))


def cmd_classify(args: argparse.Namespace) -> int:
    """``lrcn classify``: label and probability per video or frame folder."""
    from lrcn.predict import iter_classifications

    if len(args.checkpoint) > 1:
        raise LrcnError(
            f"lrcn classify takes one --checkpoint, not {len(args.checkpoint)}: ensembles are "
            "of captioners (lrcn evaluate, lrcn caption); pass one checkpoint."
        )
    results = iter_classifications(args.checkpoint[0], args.paths, args.overrides)
    return _print_results("classify", ((f"{p}\t{lab}\t{pr:.4f}", e) for p, lab, pr, e in results))


def cmd_extract_features(args: argparse.Namespace) -> int:
    """``lrcn extract-features``: fill the feature store split by split."""
    from lrcn.config import load_config
    from lrcn.extract import extract_features

    cfg = load_config(args.config, args.overrides)
    for split in args.split or ["train", "val", "test"]:
        info = extract_features(cfg, split)
        print(f"{split}: {info['rows']} rows ({info['new']} new) in {info['path']}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``lrcn export``: write the run's model folder and say what is in it."""
    from lrcn.export import export_model

    folder = export_model(args.run, args.out, onnx=args.onnx)
    print(f"wrote {folder}: " + ", ".join(sorted(p.name for p in folder.iterdir())))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``lrcn demo``: pretrain, extract features, caption; finished stages are reused."""
    from lrcn.demo import run_demo

    data = "moving_shapes" if args.video else "shapes"
    run_demo(args.root or ("runs/video" if args.video else "runs/demo"), args.overrides, data=data)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """``lrcn serve``: the checkpoint behind a web page and ``POST /caption`` until Ctrl-C."""
    from lrcn.serve.command import limits_of, serve

    serve(
        args.checkpoint, args.host, args.port, args.overrides, limits_of(args), args.batch_wait_ms
    )
    return 0


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "caption": cmd_caption,
    "classify": cmd_classify,
    "extract-features": cmd_extract_features,
    "export": cmd_export,
    "score": cmd_score,
    "prepare": cmd_prepare,
    "report": cmd_report,
    "demo": cmd_demo,
    "recipes": cmd_recipes,
    "make-example": cmd_make_example,
    "compare": cmd_compare,
    "serve": cmd_serve,
}


# Commands that build models, data or metrics: they take --plugin and import the installed plug-ins.
PLUGIN_COMMANDS = frozenset(COMMANDS) - {"recipes", "make-example"}

# Commands that compute with torch; the others (score, prepare, report) never import it, which
# saves about 1.8 s of start-up (`lrcn score` is then as fast as pycocoevalcap's own scorers).
TENSOR_COMMANDS = frozenset(
    {"train", "evaluate", "caption", "classify", "extract-features", "export", "demo", "serve"}
)


def _run_with_tensors(args: argparse.Namespace) -> int:
    """Run a command that computes with torch: a tuned CPU allocator, and Ctrl-C/SIGTERM as a
    checkpoint saved and a sentence."""
    from lrcn.runtime import StopRequested, tune_cpu_allocator

    tune_cpu_allocator()
    try:
        return COMMANDS[args.command](args)
    except StopRequested as exc:
        print(f"lrcn {args.command}: stopped by {exc}; {_how_to_continue(args)}", file=sys.stderr)
        return 130


def _how_to_continue(args: argparse.Namespace) -> str:
    """What continues a stopped run: the same `lrcn demo` again (finished stages are reused, the
    stopped one resumes from its checkpoint), or `lrcn train --resume` of the run's folder."""
    if args.command == "demo":
        rerun = ["lrcn", "demo", *(["--video"] if args.video else [])]
        rerun += [*(["--root", args.root] if args.root else []), *args.overrides]
        return (
            "the finished stages and the stopped one's checkpoint are kept — rerun "
            f"`{shlex.join(rerun)}` to reuse them and continue."
        )
    run = getattr(args, "resume", None) or getattr(args, "run_dir", None)
    return (
        "a checkpoint was saved — continue with "
        f"`lrcn train --resume {shlex.quote(str(run)) if run else 'RUN'}`."
    )


def _parse(argv: list[str]) -> argparse.Namespace:
    """Parse ``argv`` with each command's options and ``key=value`` overrides in any order.

    argparse alone stops collecting positionals at the first option, so ``train a=1 --run-dir D
    b=2`` would be refused; each command's parser therefore parses its own arguments intermixed.
    """
    parser = _parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    position = next((i for i, arg in enumerate(argv) if arg in commands.choices), None)
    if position is None:
        return parser.parse_args(argv)  # usage, --help or the error naming the missing command
    args = commands.choices[argv[position]].parse_intermixed_args(argv[position + 1 :])
    verbose = [a for a in argv[:position] if a in ("-v", "--verbose")]
    if len(verbose) != position:
        parser.parse_args(argv)  # an unknown option before the command: argparse's own error
    args.command, args.verbose = argv[position], bool(verbose)
    if hasattr(args, "set_overrides"):  # KEY=VALUE positionals first, then the --set ones
        args.overrides = [*args.overrides, *args.set_overrides]
        del args.set_overrides
    return args


# The status of a process that wrote to a pipe its reader had closed (128 + SIGPIPE), as a shell
# reports for `yes | head -1`: the output was cut short, which 0 would hide from `set -o pipefail`.
STATUS_READER_GONE = 141


def _reader_went_away() -> int:
    """stdout's reader closed the pipe (``lrcn recipes | head -1``): the rest of the output is
    dropped without a traceback. stdout is pointed at devnull (Python's documented recipe) so the
    interpreter's flush at exit has somewhere to write what is still buffered."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file (e.g. replaced in-process)
        pass
    return STATUS_READER_GONE


def main(argv: list[str] | None = None) -> int:
    """Run one ``lrcn`` command; returns the exit status (2 for an error a user can fix, 141 when
    stdout's reader closed the pipe, 130 when stopped)."""
    args = _parse(sys.argv[1:] if argv is None else list(argv))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        if args.command in PLUGIN_COMMANDS:
            from lrcn.plugins import load_command_plugins

            load_command_plugins(args.plugins)
        if args.command in TENSOR_COMMANDS:
            status = _run_with_tensors(args)
        else:
            status = COMMANDS[args.command](args)
        sys.stdout.flush()  # a reader that went away shows here, not in the exit's own flush
        return status
    except BrokenPipeError:
        return _reader_went_away()
    except LrcnError as exc:
        print(f"lrcn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lrcn {args.command}: interrupted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

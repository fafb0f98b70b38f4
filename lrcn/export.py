"""``lrcn export``: a trained run as a self-contained model folder others can load.

The folder has the Hugging Face Hub layout (`lrcn.model_folder` reads it): ``model.safetensors``
(the weights: the loaded model's state_dict), ``config.json`` (task, encoder, wiring, sizes,
preprocessing, labels, lrcn's own config so the model rebuilds exactly, the lrcn version and the
recorded plug-ins), ``vocab.json`` for captioners, and a model card ``README.md`` with the recipe,
the data and the test evaluation's metrics with their 95% intervals, read from the run's
``eval/`` through `lrcn.evaluation_files.read_evaluation` (so a half-written evaluation is
refused, never published). ``--onnx`` adds the ONNX graphs of `lrcn.onnx_export`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lrcn import build
from lrcn.checkpoint import resolve_checkpoint_path
from lrcn.config import Config
from lrcn.decoding_controls import Controls
from lrcn.errors import LrcnError
from lrcn.evaluation_files import read_evaluation
from lrcn.io import atomic_path, check_writable, write_json_atomic, write_text_atomic
from lrcn.model_folder import CARD, CONFIG, FILES, FORMAT, VOCAB, WEIGHTS, is_model_folder
from lrcn.models.encoders import encoder_spec
from lrcn.onnx_export import ONNX_FILES, export_onnx
from lrcn.predict import load_model, run_dir_of
from lrcn.task import get_task
from lrcn.version import __version__

__all__ = ["export_model", "folder_config", "model_card"]

SPLIT = "test"  # the evaluation the model card reports


def export_model(run: str | os.PathLike, out: str | os.PathLike, onnx: bool = False) -> Path:
    """Write the model folder of ``run`` (a run folder or a ``.pt`` checkpoint) into ``out``.

    The weights are loaded into the rebuilt model first (so a folder is only written for a
    checkpoint that loads), the evaluation is read before anything is written, and every file is
    written atomically, ``config.json`` last: a folder without it was not finished.

    Args:
        onnx: also write ``onnx/`` (`lrcn.onnx_export.export_onnx`).

    Returns:
        The folder.

    Raises:
        LrcnError: an unreadable checkpoint or evaluation, or ``out`` holds other files (a run
            folder, anything that is not a model folder).
    """
    path = _checkpoint_of(run)
    model, cfg, payload = load_model(path, device="cpu")
    if onnx and not Controls.from_config(cfg.eval).off:
        raise LrcnError(
            f"{path}: its config sets decoding controls (eval.no_repeat_ngram, "
            "eval.repetition_penalty or eval.beam_groups), which the ONNX decoding loop does not "
            "apply; export without --onnx (config.json records them) or export a run trained with "
            "them off (0, 1.0, 1) and pass them to lrcn evaluate or caption instead."
        )
    evaluation = _evaluation(run_dir_of(path) / "eval", path)
    folder = _output_folder(Path(out))
    # an existing model folder is replaced: without config.json until every other file is new,
    # so an interrupted export leaves a folder that says it is unfinished, never a mixed one
    (folder / CONFIG).unlink(missing_ok=True)
    # the loaded model's own keys (a checkpoint of an older key layout is remapped by the loader,
    # which reads the folder back too)
    _write_weights(folder / WEIGHTS, model.state_dict())
    if payload.get("vocab") is not None:
        write_json_atomic(folder / VOCAB, payload["vocab"], indent=None)
    write_text_atomic(folder / CARD, model_card(cfg, payload, evaluation, folder))
    if onnx:
        export_onnx(model, cfg, payload, folder / "onnx")
    else:  # graphs of the weights replaced would contradict them
        for name in ONNX_FILES:
            (folder / "onnx" / name).unlink(missing_ok=True)
    write_json_atomic(folder / CONFIG, folder_config(cfg, payload))
    return folder


def _checkpoint_of(run: str | os.PathLike) -> Path:
    """The checkpoint file a run folder (or ``.pt`` path) exports, or one sentence saying why
    there is none."""
    run_folder = Path(run)
    if (
        run_folder.is_dir()
        and not is_model_folder(run_folder)
        and not any(
            (run_folder / name).is_file()
            for name in ("checkpoints/best.pt", "checkpoints/last.pt", "best.pt", "last.pt")
        )
    ):
        raise LrcnError(
            f"{run}: no checkpoints/best.pt or checkpoints/last.pt, so there is no model to "
            "export; pass a run folder whose training saved a checkpoint, or its .pt file."
        )
    path = resolve_checkpoint_path(run)
    if path.is_dir():
        raise LrcnError(
            f"{run}: already a model folder; copy it, or export the run folder it came from."
        )
    return path


def _output_folder(out: Path) -> Path:
    """``out`` created (or an existing model folder, whose files are replaced), writable."""
    if out.exists() and not out.is_dir():
        raise LrcnError(f"{out}: is a file; pass a folder for --out.")
    if out.is_dir():
        others = [p.name for p in out.iterdir() if p.name not in (*FILES, "onnx")]
        if (out / "checkpoints").exists() or (others and not is_model_folder(out)):
            raise LrcnError(
                f"{out}: holds other files ({', '.join(sorted(others)[:3])}), so exporting there "
                "could overwrite work; pass an empty or new folder for --out."
            )
    return check_writable(out)


def _write_weights(path: Path, state_dict: dict[str, Any]) -> None:
    """The state_dict as safetensors (each tensor contiguous and unshared, as the format needs)."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    data = save(tensors, metadata={"format": "pt", "lrcn": FORMAT})
    with atomic_path(path) as tmp:  # written into atomic_path's file: it keeps an open()'s mode
        tmp.write_bytes(data)


def _evaluation(folder: Path, checkpoint: Path) -> dict[str, Any] | None:
    """The test split's metrics in ``folder`` when they were made from ``checkpoint`` (None:
    no evaluation, or one of another checkpoint: the card says so)."""
    if not (folder / f"{SPLIT}_metrics.json").is_file():
        return None
    files = read_evaluation(folder, SPLIT)
    made_from = (files.manifest or {}).get("settings", {}).get("checkpoint")
    if made_from is not None and (folder.parent / made_from).resolve() != checkpoint.resolve():
        return None
    return files.read("metrics.json")


def folder_config(cfg: Config, payload: dict[str, Any]) -> dict[str, Any]:
    """``config.json``: what a reader outside lrcn needs, and lrcn's own config to rebuild."""
    task = get_task(cfg.task)
    mean, std = build.normalisation(cfg)
    preprocessing: dict[str, Any] = {
        "image_size": cfg.data.image_size,
        "mean": list(mean),
        "std": list(std),
        "channels": encoder_spec(cfg.encoder.name).in_channels,
        "resize": "shorter side to image_size, then centre crop (lrcn.data.media.load_image)",
    }
    if task.video:
        preprocessing.update(num_frames=cfg.data.num_frames, frame_sampling=cfg.data.frame_sampling)
    sizes = {
        "feature_dim": cfg.encoder.feature_dim,
        **get_task(cfg.task).model_sizes(payload),
    }
    if task.captions:
        sizes.update(embed_dim=cfg.decoder.embed_dim, hidden_dim=cfg.decoder.hidden_dim,
                     num_layers=cfg.decoder.num_layers)  # fmt: skip
    return {
        "format": FORMAT,
        "lrcn_version": __version__,
        "task": cfg.task,
        "encoder": cfg.encoder.name,
        "wiring": cfg.decoder.variant if task.captions else None,
        "sizes": sizes,
        "preprocessing": preprocessing,
        "decoding": {
            "max_length": cfg.eval.max_length,
            "beam_size": cfg.eval.beam_size,
            "length_penalty": cfg.eval.length_penalty,
            # lrcn.decoding_controls (the ONNX loop applies none: export refuses them with --onnx)
            "no_repeat_ngram": cfg.eval.no_repeat_ngram,
            "repetition_penalty": cfg.eval.repetition_penalty,
            "beam_groups": cfg.eval.beam_groups,
            "diversity_strength": cfg.eval.diversity_strength,
        }
        if task.captions
        else None,  # fmt: skip
        "vocab_file": VOCAB if payload.get("vocab") is not None else None,
        "labels": payload.get("labels"),
        "baseline_caption": payload.get("baseline_caption"),
        "plugins": list(cfg.plugins),
        "lrcn_config": cfg.to_dict(),
    }


def model_card(
    cfg: Config, payload: dict[str, Any], metrics: dict[str, Any] | None, folder: Path
) -> str:
    """The folder's ``README.md``: Hub metadata, how to use it, the recipe, data, evaluation."""
    task = get_task(cfg.task)
    kind = cfg.decoder.variant if task.captions else "classifier"
    use = (
        f"lrcn caption IMAGE_OR_VIDEO --checkpoint {folder}"
        if task.captions
        else f"lrcn classify VIDEO --checkpoint {folder}"
    )
    lines = [
        "---",
        "library_name: lrcn",
        f"tags: [lrcn, {cfg.task}, {cfg.encoder.name}" + (f", {kind}]" if task.captions else "]"),
        "---",
        "",
        f"# lrcn {cfg.task} model: {cfg.encoder.name}" + (f" + {kind}" if task.captions else ""),
        "",
        f"{task.description or cfg.task}. Exported by lrcn {__version__}; the weights are "
        "`model.safetensors` (no pickle), the settings `config.json`.",
        "",
        "## Use",
        "",
        "```",
        use,
        f"lrcn evaluate --checkpoint {folder}",
        "```",
        "",
        f'In Python: `model, cfg, payload = lrcn.predict.load_model("{folder}")`.',
        "",
        *_recipe_lines(cfg),
        *_evaluation_lines(metrics),
    ]
    return "\n".join(lines) + "\n"


def _recipe_lines(cfg: Config) -> list[str]:
    """The recipe and data sections: the settings that define the model and its training."""
    rows = [
        ("task", cfg.task),
        (
            "encoder",
            f"{cfg.encoder.name} (weights {cfg.encoder.weights}, "
            f"feature_dim {cfg.encoder.feature_dim}, frozen {cfg.encoder.freeze})",
        ),  # fmt: skip
        (
            "decoder",
            f"{cfg.decoder.variant} (embed {cfg.decoder.embed_dim}, hidden "
            f"{cfg.decoder.hidden_dim}, layers {cfg.decoder.num_layers})"
            if get_task(cfg.task).captions
            else f"classifier (hidden {cfg.classifier.hidden_dim}, "
            f"prediction {cfg.classifier.prediction})",
        ),  # fmt: skip
        (
            "training",
            f"{cfg.train.epochs} epochs, batch {cfg.train.batch_size}, lr "
            f"{cfg.train.lr}, {cfg.train.optimizer}, seed {cfg.train.seed}",
        ),  # fmt: skip
        ("decoding", f"beam {cfg.eval.beam_size}, max length {cfg.eval.max_length}"),
    ]
    data = cfg.data
    source = data.manifest or data.dataset
    sizes = f"train {data.train_size}, val {data.val_size}, test {data.test_size}"
    return [
        "## Recipe",
        "",
        "| setting | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in rows),
        "",
        "The whole lrcn config is `lrcn_config` in `config.json`.",
        "",
        "## Data",
        "",
        f"`{source}` (data.dataset `{data.dataset}`), images {data.image_size} px; the sizes "
        f"asked for: {sizes} (0: the whole split)."
        + (
            f" The decoder was trained from the frozen encoder's feature store `{data.features}` "
            "(two stages); `data.features=null` captions from pixels."
            if data.features
            else ""
        ),
        "",
    ]


def _evaluation_lines(metrics: dict[str, Any] | None) -> list[str]:
    """The evaluation section: each metric with its 95% bootstrap interval."""
    if metrics is None:
        return [
            "## Evaluation",
            "",
            f"No finished evaluation of the {SPLIT} split of this checkpoint was found in the "
            "run's `eval/` folder when it was exported.",
        ]
    rows = []
    for key, value in metrics.items():
        if key.endswith("_ci95") or not isinstance(value, float):
            continue
        interval = metrics.get(f"{key}_ci95")
        bounds = f"[{interval[0]:.4f}, {interval[1]:.4f}]" if isinstance(interval, list) else ""
        rows.append(f"| {key} | {value:.4f} | {bounds} |")
    return [
        "## Evaluation",
        "",
        f"The {metrics.get('split', SPLIT)} split, {metrics.get('items', '?')} items, beam "
        f"{metrics.get('beam_size', '?')} (from the run's `eval/{SPLIT}_metrics.json`):",
        "",
        "| metric | value | 95% interval |",
        "|---|---|---|",
        *rows,
    ]

"""Scoring one split with a loaded model: what `lrcn.predict.evaluate` writes, file by file.

Each function returns the metrics and the split's files as ``{name: writer}``;
`lrcn.evaluation_files.write_evaluation` writes them as one unit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lrcn import build
from lrcn.config import Config
from lrcn.data.datasets import CaptionEvalDataset, make_eval_collate
from lrcn.data.manifest import read_manifest
from lrcn.data.media import frames_to_tensor, read_frames
from lrcn.decoding_controls import Controls
from lrcn.engine import evaluate_classifier, generate_captions, score_captions
from lrcn.engine.evaluation import AttentionMaps
from lrcn.errors import LrcnError
from lrcn.io import write_json_atomic
from lrcn.metrics import evaluate_items, leave_one_out_scores
from lrcn.metrics.diversity import caption_statistics
from lrcn.metrics.per_item import evaluation_identity, per_item_records
from lrcn.runtime import make_loader
from lrcn.text.vocab import Vocabulary

log = logging.getLogger(__name__)
Files = dict[str, Callable[[Path], None]]  # file name -> what writes it (atomically)


def json_writer(data: Any) -> Callable[[Path], None]:
    """A function writing ``data`` as JSON to the path it is given, atomically."""
    return lambda path: write_json_atomic(path, data)


def evaluate_activity(
    model: nn.Module, cfg: Config, payload: dict[str, Any], split: str
) -> tuple[dict[str, Any], Files]:
    """Clip accuracy, and LRCN's clip/video accuracies; the metrics and predictions to write."""
    device = next(model.parameters()).device
    data, _ = build.build_activity_dataset(cfg, split)
    loader = make_loader(data, cfg.eval.batch_size, None, None, cfg.data.num_workers, device)
    result = evaluate_classifier(model, loader, device, payload["labels"])
    metrics = {"accuracy": result["accuracy"], "items": result["items"], "split": split}
    if cfg.data.dataset == "manifest" and cfg.data.frame_sampling == "clips":
        metrics.update(_clip_and_video_accuracy(model, cfg, split, payload["labels"]))
    else:  # one clip per video: the two levels coincide
        metrics.update(clip_accuracy=result["accuracy"], video_accuracy=result["accuracy"])
    return metrics, {
        f"{split}_metrics.json": json_writer(metrics),
        f"{split}_predictions.json": json_writer(result["predictions"]),
    }


def evaluate_captions(
    model: nn.Module, cfg: Config, payload: dict[str, Any], split: str
) -> tuple[dict[str, Any], Files]:
    """Decode the split, score it with the reference points and the dataset's own metrics;
    the metrics, and the split's files to write (per-item scores, captions, references, maps)."""
    device = next(model.parameters()).device
    vocab = Vocabulary.from_dict(payload["vocab"])
    source = build.build_source(cfg, split)
    dataset = CaptionEvalDataset(source, on_error=cfg.data.on_error)
    loader = make_loader(
        dataset,
        cfg.eval.batch_size,
        make_eval_collate(source.is_video),
        None,
        cfg.data.num_workers,
        device,
    )
    attention = (
        AttentionMaps(model.attends, limit=cfg.eval.attention_maps)
        if model.attends is not None and cfg.eval.attention_maps > 0
        else None
    )
    hyps, refs, skipped = generate_captions(
        model,
        loader,
        vocab,
        device,
        cfg.eval.beam_size,
        cfg.eval.max_length,
        cfg.eval.length_penalty,
        attention=attention,
        controls=Controls.from_config(cfg.eval),
    )
    if not hyps:
        raise LrcnError(f"split `{split}` has no readable items; check the data paths.")
    evaluation = evaluate_items(refs, hyps, metrics=cfg.eval.metrics, tokenizer=cfg.eval.tokenizer)
    metrics: dict[str, Any] = evaluation.results(cfg.eval.bootstrap)
    if cfg.eval.reference_points:
        metrics.update(reference_points(refs, hyps, cfg, payload.get("baseline_caption") or ""))
    metrics.update(source.task_metrics(hyps))  # e.g. scene_accuracy, motion_accuracy
    metrics.update(split=split, items=len(hyps), beam_size=cfg.eval.beam_size, skipped=skipped)
    # what `lrcn compare` checks before pairing two evaluations item by item
    metrics["evaluation"] = {
        "split": split,
        **evaluation_identity(evaluation.keys, refs, evaluation.tokenizer),
        "bootstrap": cfg.eval.bootstrap,
        "per_item": f"{split}_per_item.json",
    }
    metrics["caption_statistics"] = caption_statistics(refs, hyps, training=_training_captions(cfg))
    results = [{"image_id": _coco_id(k), "caption": v} for k, v in hyps.items()]
    files = {
        f"{split}_per_item.json": json_writer(per_item_records(evaluation, hyps)),
        f"{split}_metrics.json": json_writer(metrics),
        f"{split}_captions.json": json_writer(results),
        # the references too: the report works after the data moves
        f"{split}_references.json": json_writer(refs),
    }
    if attention is not None and attention.maps:  # else an earlier file is removed
        files[f"{split}_attention.npz"] = attention.save
    return metrics, files


def _training_captions(cfg: Config) -> list[str] | None:
    """Every training caption, to tell which generated captions are copies; None if unreadable."""
    try:
        source = build.build_source_raw(cfg, "train")
        return [c for i in range(len(source)) for c in source.captions(i)]
    except (LrcnError, OSError) as err:
        log.warning("no copy statistics: the training captions cannot be read (%s)", err)
        return None


def reference_points(
    refs: dict[str, list[str]], hyps: dict[str, str], cfg: Config, baseline: str
) -> dict[str, Any]:
    """``reference_loo_*`` (each reference against the others) and ``baseline_*`` (the most
    frequent training caption for every item)."""
    loo_metrics = [m for m in cfg.eval.metrics if m != "meteor"]  # METEOR's JVM is slow on 5x pairs
    loo = leave_one_out_scores(
        refs,
        metrics=loo_metrics,
        tokenizer=cfg.eval.tokenizer,
        max_held_out=cfg.eval.reference_loo_max_held_out,
    )
    points: dict[str, Any] = {k: v for k, v in loo.items() if k.startswith("reference_loo_")}
    if baseline:
        fixed = score_captions(
            refs, {k: baseline for k in hyps}, metrics=loo_metrics, tokenizer=cfg.eval.tokenizer
        )
        points.update({f"baseline_{k}": v for k, v in fixed.items() if isinstance(v, float)})
        points["baseline_caption"] = baseline
    return points


class _VideoClips(torch.utils.data.Dataset):
    """One manifest video per item: all its strided clips as pixels (N, L, 3, S, S), and its label."""

    def __init__(self, cfg: Config, records: list[dict]) -> None:

        self.records, self.cfg = records, cfg
        self.mean, self.std = build.normalisation(cfg)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:

        record, cfg = self.records[index], self.cfg
        length, stride = cfg.classifier.clip_length, cfg.classifier.clip_stride
        clips = read_frames(
            record["path"], length, sampling="clips", clip_len=length, stride=stride
        )
        pixels = torch.stack(
            [frames_to_tensor(c, cfg.data.image_size, self.mean, self.std) for c in clips]
        )  # (N, L, 3, S, S)
        return pixels, int(record["label"])


@torch.no_grad()
def _clip_and_video_accuracy(
    model: nn.Module, cfg: Config, split: str, labels: list[str]
) -> dict[str, float]:
    """LRCN's two levels: every strided clip judged alone, and clip probabilities averaged per video.

    Videos are decoded in ``data.num_workers`` DataLoader workers while the model runs; a long
    video's clips go through the model ``eval.batch_size`` at a time."""

    device = next(model.parameters()).device
    videos = _VideoClips(cfg, list(read_manifest(cfg.data.manifest, split)))
    loader = make_loader(videos, None, None, num_workers=cfg.data.num_workers, device=device)
    chunk = max(cfg.eval.batch_size, 1)
    clip_hits, clips_seen, video_hits = 0, 0, 0
    for pixels, label in loader:
        proba = torch.cat(
            [
                model.predict_proba(pixels[i : i + chunk].to(device, non_blocking=True))
                for i in range(0, len(pixels), chunk)
            ]
        )  # (N, C)
        clip_hits += int((proba.argmax(dim=1) == label).sum())
        clips_seen += proba.shape[0]
        video_hits += int(int(proba.mean(dim=0).argmax()) == label)
    return {
        "clip_accuracy": clip_hits / max(clips_seen, 1),
        "video_accuracy": video_hits / max(len(videos), 1),
    }


def _coco_id(item_id: str) -> int | str:
    """COCO results name an image by its number when the id is one."""
    return int(item_id) if item_id.isdigit() else item_id

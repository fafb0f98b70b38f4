"""Using a trained checkpoint: evaluate a split, caption files, classify videos."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lrcn.checkpoint import load_checkpoint, load_state_dict_checked, resolve_checkpoint_path
from lrcn.config import Config, config_from_dict, load_config_over
from lrcn.errors import LrcnError
from lrcn.io import write_json_atomic
from lrcn.text.vocab import Vocabulary

log = logging.getLogger(__name__)


def load_model(
    checkpoint: str | Path,
    device: str = "auto",
    overrides: list[str] | None = None,
    task: str | None = None,
) -> tuple[nn.Module, Config, dict[str, Any]]:
    """Rebuild the model a checkpoint was trained as and load its weights.

    Args:
        checkpoint: ``.pt`` file or run directory.
        overrides: ``key=value`` changes to the saved config (e.g. ``eval.beam_size=3``,
            ``data.manifest=...``); model-shape keys must not change.
        task: refuse checkpoints of another task.

    Returns:
        (model in eval mode on the device, config, raw checkpoint payload).
    """
    from lrcn import build
    from lrcn.engine import resolve_device

    path = resolve_checkpoint_path(checkpoint)
    payload = load_checkpoint(path, task=task)
    cfg = load_config_over(
        config_from_dict(payload["config"], f"{path} (saved config)"), overrides or []
    )
    # pretrained weights are inside the checkpoint: build without fetching them again, but return the
    # config unchanged (a feature store checks the encoder's weights against it)
    build_cfg = config_from_dict(cfg.to_dict())
    build_cfg.encoder.weights = "none"
    if cfg.task == "activity":
        model = build.build_model(build_cfg, num_classes=len(payload["labels"]))
    else:
        vocab = Vocabulary.from_dict(payload["vocab"])
        model = build.build_model(build_cfg, vocab_size=len(vocab))
    load_state_dict_checked(model, payload["model"], path)
    model.to(resolve_device(cfg.train.device)).eval()
    payload["path"] = str(path)
    return model, cfg, payload


def run_dir_of(checkpoint_path: str | Path) -> Path:
    path = Path(checkpoint_path)
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def evaluate(
    checkpoint: str | Path,
    split: str = "test",
    beam_size: int | None = None,
    overrides: list[str] | None = None,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Score a checkpoint on a split; write ``eval/<split>_metrics.json`` (and ``_captions.json``).

    Captioners report BLEU-1..4 (and CIDEr, ROUGE_L, METEOR as configured), plus two reference
    points on the same split: ``reference_loo_*`` (each human reference scored against the
    others) and ``baseline_*`` (the most frequent training caption for every item).
    Classifiers report clip ``accuracy``.
    """
    from lrcn import build
    from lrcn.data.datasets import CaptionEvalDataset, make_eval_collate
    from lrcn.engine import evaluate_classifier, generate_captions, make_loader, score_captions

    extra = list(overrides or []) + ([f"eval.beam_size={beam_size}"] if beam_size else [])
    model, cfg, payload = load_model(checkpoint, overrides=extra)
    device = next(model.parameters()).device
    out_dir = Path(out_dir) if out_dir else run_dir_of(payload["path"]) / "eval"
    if cfg.task == "activity":
        data, _ = build.build_activity_dataset(cfg, split)
        loader = make_loader(data, cfg.eval.batch_size, None, None, cfg.data.num_workers, device)
        result = evaluate_classifier(model, loader, device, payload["labels"])
        metrics = {"accuracy": result["accuracy"], "items": result["items"], "split": split}
        if cfg.data.dataset == "manifest" and cfg.data.frame_sampling == "clips":
            metrics.update(_clip_and_video_accuracy(model, cfg, split, payload["labels"]))
        else:  # one clip per video: the two levels coincide
            metrics.update(clip_accuracy=result["accuracy"], video_accuracy=result["accuracy"])
        write_json_atomic(out_dir / f"{split}_metrics.json", metrics)
        write_json_atomic(out_dir / f"{split}_predictions.json", result["predictions"])
        return metrics
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
    hyps, refs, skipped = generate_captions(
        model,
        loader,
        vocab,
        device,
        cfg.eval.beam_size,
        cfg.eval.max_length,
        cfg.eval.length_penalty,
    )
    if not hyps:
        raise LrcnError(f"split `{split}` has no readable items; check the data paths.")
    metrics: dict[str, Any] = score_captions(hyps, refs, cfg.eval.metrics, cfg.eval.tokenizer)
    if cfg.eval.reference_points:
        from lrcn.metrics import leave_one_out_scores

        loo_metrics = [
            m for m in cfg.eval.metrics if m != "meteor"
        ]  # METEOR's JVM is slow on 5x pairs
        metrics.update(
            {
                k: v
                for k, v in leave_one_out_scores(
                    refs, metrics=loo_metrics, tokenizer=cfg.eval.tokenizer
                ).items()
                if k.startswith("reference_loo_")
            }
        )
        baseline = payload.get("baseline_caption") or ""
        if baseline:
            fixed = score_captions(
                {k: baseline for k in hyps}, refs, loo_metrics, cfg.eval.tokenizer
            )
            metrics.update({f"baseline_{k}": v for k, v in fixed.items() if isinstance(v, float)})
            metrics["baseline_caption"] = baseline
    if cfg.data.dataset == "moving_shapes" and not cfg.data.features:
        from lrcn.data.synthetic.moving_shapes import motion_accuracy

        # ground truth from the generator: motion words in the references' order, and with colours
        metrics["motion_accuracy"] = motion_accuracy(hyps, source.data)
        metrics["motion_colour_accuracy"] = motion_accuracy(hyps, source.data, match="colour")
    metrics.update(split=split, items=len(hyps), beam_size=cfg.eval.beam_size, skipped=skipped)
    write_json_atomic(out_dir / f"{split}_metrics.json", metrics)
    results = [{"image_id": _coco_id(k), "caption": v} for k, v in hyps.items()]
    write_json_atomic(out_dir / f"{split}_captions.json", results)
    write_json_atomic(
        out_dir / f"{split}_references.json", refs
    )  # the report works after data moves
    return metrics


class _VideoClips(torch.utils.data.Dataset):
    """One manifest video per item: all its strided clips as pixels (N, L, 3, S, S), and its label."""

    def __init__(self, cfg: Config, records: list[dict]) -> None:
        from lrcn import build

        self.records, self.cfg = records, cfg
        self.mean, self.std = build.normalisation(cfg)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from lrcn.data.media import frames_to_tensor, read_frames

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
    from lrcn.data.formats import read_manifest
    from lrcn.engine import make_loader

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
    return int(item_id) if item_id.isdigit() else item_id


@torch.no_grad()
def caption_files(
    checkpoint: str | Path, paths: list[str], beam_size: int | None = None
) -> list[tuple[str, str]]:
    """Caption images (image checkpoints) or videos / frame folders (video checkpoints)."""
    from lrcn import build
    from lrcn.data.media import frames_to_tensor, image_to_tensor, load_image, read_frames
    from lrcn.decoding import decode

    model, cfg, payload = load_model(checkpoint)
    if cfg.task == "activity":
        raise LrcnError(
            f"{payload['path']}: an activity checkpoint classifies; use `lrcn classify`."
        )
    vocab = Vocabulary.from_dict(payload["vocab"])
    mean, std = build.normalisation(cfg)
    device = next(model.parameters()).device
    beam = beam_size or cfg.eval.beam_size
    results = []
    for path in paths:
        if cfg.task == "video_caption":
            frames = read_frames(path, cfg.data.num_frames)
            batch = {
                "frames": frames_to_tensor(frames, cfg.data.image_size, mean, std)
                .unsqueeze(0)
                .to(device)
            }
        else:
            if Path(path).is_dir():
                raise LrcnError(
                    f"{path}: is a folder; pass image files (an image checkpoint captions images)."
                )
            batch = {
                "images": image_to_tensor(
                    load_image(path, cfg.data.image_size), cfg.data.image_size, mean, std
                )
                .unsqueeze(0)
                .to(device)
            }
        features = model.encode(batch)
        tokens = decode(
            model.decoder,
            features,
            cfg.eval.max_length,
            vocab.start_id,
            vocab.end_id,
            beam,
            cfg.eval.length_penalty,
        )
        results.append((path, " ".join(vocab.decode(tokens[0]))))
    return results


@torch.no_grad()
def classify_files(
    checkpoint: str | Path, paths: list[str], overrides: list[str] | None = None
) -> list[tuple[str, str, float]]:
    """Label each video or frame folder with an activity checkpoint (clip-averaged over long videos)."""
    from lrcn import build
    from lrcn.data.media import frames_to_tensor, read_frames

    model, cfg, payload = load_model(checkpoint, overrides=overrides, task="activity")
    labels = payload["labels"]
    mean, std = build.normalisation(cfg)
    mean, std = (
        (mean * 3, std * 3) if len(mean) == 1 else (mean, std)
    )  # one-channel CNNs: normalise, then grey
    device = next(model.parameters()).device
    results = []
    for path in paths:
        if (
            cfg.data.frame_sampling == "clips"
        ):  # LRCN: average over strided clips of the whole video
            clip_len, stride = cfg.classifier.clip_length, cfg.classifier.clip_stride
            clips = read_frames(
                path, clip_len, sampling="clips", clip_len=clip_len, stride=stride
            )  # (N, L, H, W, 3)
        else:
            clips = read_frames(path, cfg.data.num_frames)[None]  # (1, T, H, W, 3) uint8
        pixels = torch.stack(
            [frames_to_tensor(c, cfg.data.image_size, mean, std) for c in clips]
        )  # (N, T, 3, S, S)
        if cfg.encoder.name == "seed_cnn":
            pixels = pixels.mean(dim=2, keepdim=True)  # the seed CNN reads one channel
        proba = model.predict_proba(pixels.to(device)).mean(
            dim=0
        )  # (C,): clip probabilities averaged
        best = int(proba.argmax())
        results.append((path, labels[best], float(proba[best])))
    return results

"""Using a trained checkpoint: evaluate a split, caption files, classify videos."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from lrcn import build
from lrcn.attention_pictures import input_strips
from lrcn.checkpoint import load_checkpoint, load_state_dict_checked, resolve_checkpoint_path
from lrcn.config import Config, config_from_dict, load_config_over
from lrcn.data.media import (
    IMAGE_EXTENSIONS,
    frames_to_tensor,
    image_files_in,
    image_given_for_video,
    image_to_tensor,
    load_image,
    read_frames,
)
from lrcn.decoding_controls import Controls, decode_with
from lrcn.ensemble import Ensemble, check_members
from lrcn.errors import LrcnError
from lrcn.evaluation_files import (
    check_replaceable,
    evaluation_folder,
    evaluation_settings,
    write_evaluation,
)
from lrcn.io import atomic_path, check_writable
from lrcn.model_folder import WEIGHTS
from lrcn.models.encoders import encoder_spec
from lrcn.runtime import make_loader, resolve_device
from lrcn.task import get_task
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
        checkpoint: ``.pt`` file, run directory, model folder (``lrcn export``) or its Hub id.
        overrides: ``key=value`` changes to the saved config (e.g. ``eval.beam_size=3``,
            ``data.manifest=...``); model-shape keys must not change.
        task: refuse checkpoints of another task.

    Returns:
        (model in eval mode on the device, config, raw checkpoint payload).
    """

    path = resolve_checkpoint_path(checkpoint)
    payload = load_checkpoint(path, task=task)
    cfg = load_config_over(
        config_from_dict(payload["config"], f"{path} (saved config)"), overrides or []
    )
    build.check_config(cfg, f"{path} (saved config)")
    # pretrained weights are inside the checkpoint: build without fetching them again, but return the
    # config unchanged (a feature store checks the encoder's weights against it)
    build_cfg = config_from_dict(cfg.to_dict())
    build_cfg.encoder.weights = "none"
    model = build.build_model(build_cfg, **get_task(cfg.task).model_sizes(payload))
    load_state_dict_checked(model, payload["model"], path)
    model.to(resolve_device(cfg.train.device)).eval()
    payload["path"] = str(path)
    return model, cfg, payload


Checkpoints = str | Path | Sequence[str | Path]  # one checkpoint, or an ensemble's


def _paths(checkpoints: Checkpoints) -> list[str | Path]:
    return [checkpoints] if isinstance(checkpoints, (str, Path)) else list(checkpoints)


def load_models(
    checkpoints: Checkpoints, overrides: list[str] | None = None
) -> tuple[nn.Module, Config, dict[str, Any]]:
    """`load_model` for one checkpoint; for several, their `lrcn.ensemble.Ensemble`.

    The ensemble decodes with the first checkpoint's config (its ``eval.*`` and ``data.*``
    settings, the overrides applied to every member) and payload, whose ``members`` lists every
    checkpoint file.

    Raises:
        LrcnError: a member is not a captioner, or two members differ in task, vocabulary or
            input (`lrcn.ensemble.check_members`, naming the two files).
    """
    paths = _paths(checkpoints)
    loaded = [load_model(path, overrides=overrides) for path in paths]
    if len(loaded) == 1:
        return loaded[0]
    first_model, cfg, payload = loaded[0]
    check_members([(c, p) for _, c, p in loaded])
    task = get_task(cfg.task)
    if not task.captions:
        raise LrcnError(
            f"{payload['path']}: a {task.name} checkpoint; ensembles of several --checkpoint "
            "are of captioners only, so pass one checkpoint."
        )
    model = Ensemble([m for m, _, _ in loaded]).to(next(first_model.parameters()).device).eval()
    payload = {**payload, "members": [other["path"] for _, _, other in loaded]}
    return model, cfg, payload


def run_dir_of(checkpoint_path: str | Path) -> Path:
    """The run directory a checkpoint file belongs to (a model folder: itself)."""
    path = Path(checkpoint_path)
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def evaluate(
    checkpoint: Checkpoints,
    split: str = "test",
    beam_size: int | None = None,
    overrides: list[str] | None = None,
    out_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Score a checkpoint on a split; write ``eval/<split>_metrics.json`` (and ``_captions.json``).

    Captioners report BLEU-1..4 (and CIDEr, ROUGE_L, METEOR as configured) with their 95%
    bootstrap intervals (``<metric>_ci95``, ``eval.bootstrap`` resamples), copy and diversity
    ``caption_statistics``, what identifies the evaluation (``evaluation``: split, items,
    tokenizer, digests of the ids and references) and write every item's scores to
    ``<split>_per_item.json``; plus two reference points on the same split: ``reference_loo_*`` (each human reference scored against the
    others) and ``baseline_*`` (the most frequent training caption for every item).
    Classifiers report clip ``accuracy``.

    The split's files are one unit with ``<split>_manifest.json`` (`lrcn.evaluation_files`):
    one ``lrcn evaluate`` at a time per folder, written whole or marked unfinished.

    Several checkpoints are evaluated as one ensemble (`load_models`); the folder defaults to the
    first's, and the manifest records every member.

    Raises:
        LrcnError: another ``lrcn evaluate`` writes into the folder (its PID named), or the
            folder holds a finished evaluation of the split made with other settings.
    """

    extra = list(overrides or []) + ([f"eval.beam_size={beam_size}"] if beam_size else [])
    paths = [resolve_checkpoint_path(c) for c in _paths(checkpoint)]
    # fail in the first second, not after decoding the whole split, when the outputs cannot be
    # written, another `lrcn evaluate` writes there, or they would replace another evaluation
    with evaluation_folder(out_dir or run_dir_of(paths[0]) / "eval") as folder:
        model, cfg, payload = load_models(paths, overrides=extra)
        settings = evaluation_settings(cfg, paths[0], folder, split, members=paths[1:])
        check_replaceable(folder, split, settings)
        metrics, files = get_task(cfg.task).evaluate(model, cfg, payload, split)
        # a model folder: its weights file
        weights = [p / WEIGHTS if p.is_dir() else p for p in paths]
        write_evaluation(folder, split, settings, files, weights[0], members=weights[1:])
    return metrics


class _ImageFiles(torch.utils.data.Dataset):
    """Image files for ``lrcn caption``: (position, pixels) or (position, the error sentence)."""

    def __init__(self, paths: list[str], cfg: Config) -> None:

        self.paths, self.size = paths, cfg.data.image_size
        self.mean, self.std = build.normalisation(cfg)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | str]:

        try:
            image = load_image(self.paths[index], self.size)
        except LrcnError as exc:
            return index, str(exc)
        return index, image_to_tensor(image, self.size, self.mean, self.std)


def _expand_image_paths(paths: list[str]) -> list[tuple[str, str | None]]:
    """(path, None) per image; a folder stands for the image files directly in it, in natural
    order; a folder without any becomes (folder, the error sentence)."""

    expanded: list[tuple[str, str | None]] = []
    for path in paths:
        if not Path(path).is_dir():
            expanded.append((path, None))
            continue
        files = image_files_in(path)
        if not files:
            expanded.append(
                (
                    path,
                    f"{path}: the folder holds no image files "
                    f"({', '.join(sorted(IMAGE_EXTENSIONS))}); pass image files or a folder of them.",
                )
            )
        expanded.extend((str(file), None) for file in files)
    return expanded


@torch.no_grad()
def iter_captions(
    checkpoint: Checkpoints,
    paths: list[str],
    beam_size: int | None = None,
    overrides: list[str] | None = None,
    attention_dir: str | Path | None = None,
) -> Iterator[tuple[str, str | None, str | None]]:
    """Caption images (image checkpoints) or videos / frame folders (video checkpoints).

    Yields ``(path, caption, None)``, or ``(path, None, error sentence)`` for a file that cannot
    be read, in input order, as soon as each batch is done: one bad file among thousands costs
    only its own caption. For an image checkpoint a folder stands for the images in it; images
    are read in ``data.num_workers`` DataLoader workers and decoded ``eval.batch_size`` at a time
    (batched beam search gives the captions one-at-a-time decoding would).

    Args:
        attention_dir: for an attention checkpoint, also save each input's `attention_strip`
            (the model's input picture, then every word's map over it) as
            ``attention_dir/<stem>.png``, written atomically; the folder is created, existing
            files are replaced, a stem met twice in one call gets ``-2``, ``-3``.

    Several checkpoints caption as one ensemble (`load_models`).

    Raises:
        LrcnError: not a captioner, or ``attention_dir`` with a decoder that does not attend.
    """

    # --beam-size as the override it is, so the config is checked with it (eval.beam_groups)
    extra = list(overrides or []) + ([f"eval.beam_size={beam_size}"] if beam_size else [])
    model, cfg, payload = load_models(checkpoint, overrides=extra)
    task = get_task(cfg.task)
    if not task.captions:
        raise LrcnError(f"{payload['path']}: a {task.name} checkpoint {task.cannot_caption}.")
    out_dir = (
        None if attention_dir is None else _attention_folder(model, cfg, payload, attention_dir)
    )
    device = next(model.parameters()).device
    captions_of = _caption_function(model, cfg, payload, beam_size, draw=out_dir is not None)
    if task.video:
        results = _video_captions(paths, cfg, device, captions_of)
    else:
        results = _image_captions(paths, cfg, device, captions_of)
    names: set[str] = set()
    for path, caption, strip, error in results:
        if strip is not None and out_dir is not None:
            _save_picture(out_dir / _unique_png(path, names), strip)
        yield path, caption, error


def _attention_folder(
    model: nn.Module, cfg: Config, payload: dict[str, Any], attention_dir: str | Path
) -> Path:
    """``attention_dir``, created and writable; LrcnError when the decoder does not attend."""
    if "members" in payload:
        raise LrcnError(
            f"--attention with {len(payload['members'])} checkpoints: an ensemble's members look "
            "at their own attention maps, so it has none; drop --attention or pass one checkpoint."
        )
    if model.attends is None:
        raise LrcnError(
            f"{payload['path']}: decoder.variant {cfg.decoder.variant} does not attend, so it "
            "has no attention maps to save; drop --attention, or pass a checkpoint trained "
            "with decoder.variant=show_attend_tell (images) or temporal_attention (video)."
        )
    return check_writable(attention_dir)


def _caption_function(
    model: nn.Module, cfg: Config, payload: dict[str, Any], beam_size: int | None, draw: bool
) -> CaptionFn:
    """What captions one batch of inputs: each caption and, when ``draw``, its attention strip
    over the input (`lrcn.attention_pictures.input_strips`), else None."""
    vocab = Vocabulary.from_dict(payload["vocab"])
    beam = beam_size or cfg.eval.beam_size
    controls = Controls.from_config(cfg.eval)
    controls.check(beam)  # before the first file is read: one sentence, not one per batch
    normalisation = build.normalisation(cfg)

    def captions_of(batch: dict[str, torch.Tensor]) -> list[tuple[str, np.ndarray | None]]:
        features = model.encode(batch)
        tokens = decode_with(
            model.decoder,
            features,
            vocab.start_id,
            vocab.end_id,
            max_length=cfg.eval.max_length,
            beam_size=beam,
            length_penalty=cfg.eval.length_penalty,
            controls=controls,
        )
        strips: list[np.ndarray | None] = [None] * len(tokens)
        if draw:
            strips = list(input_strips(model, vocab, batch, features, tokens, normalisation))
        return [(" ".join(vocab.decode(t)), strip) for t, strip in zip(tokens, strips)]

    return captions_of


def _unique_png(path: str, taken: set[str]) -> str:
    """``<stem>.png``, or ``<stem>-2.png``, ... when an earlier input of this call had the stem."""
    stem = Path(path).stem or "input"
    name, count = f"{stem}.png", 1
    while name in taken:
        count += 1
        name = f"{stem}-{count}.png"
    taken.add(name)
    return name


def _save_picture(path: Path, picture: np.ndarray) -> None:
    """A (H, W, 3) uint8 picture as PNG, atomically (an existing file is replaced)."""
    with atomic_path(path) as tmp:
        Image.fromarray(picture).save(tmp, format="PNG")


CaptionFn = Callable[[dict[str, torch.Tensor]], list[tuple[str, np.ndarray | None]]]
Result = tuple[str, str | None, np.ndarray | None, str | None]  # path, caption, strip, error


def _video_captions(
    paths: list[str], cfg: Config, device: torch.device, captions_of: CaptionFn
) -> Iterator[Result]:
    """Videos and frame folders one at a time: ``(path, caption, strip, None)`` or
    ``(path, None, None, error)``."""
    mean, std = build.normalisation(cfg)
    for path in paths:
        refused = image_given_for_video(path, "lrcn caption", "a video captioner")
        if refused is not None:
            yield path, None, None, refused
            continue
        try:
            frames = read_frames(path, cfg.data.num_frames)
        except LrcnError as exc:
            yield path, None, None, str(exc)
            continue
        pixels = frames_to_tensor(frames, cfg.data.image_size, mean, std)  # (T, 3, S, S)
        caption, strip = captions_of({"frames": pixels.unsqueeze(0).to(device)})[0]
        yield path, caption, strip, None


def _image_captions(
    paths: list[str], cfg: Config, device: torch.device, captions_of: CaptionFn
) -> Iterator[Result]:
    """Images (folders expanded) read in workers and decoded in batches, yielded in input order."""
    expanded = _expand_image_paths(paths)
    readable = [path for path, error in expanded if error is None]
    loader = make_loader(
        _ImageFiles(readable, cfg),
        max(cfg.eval.batch_size, 1),
        list,  # [(position, pixels or error), ...]
        num_workers=cfg.data.num_workers if len(readable) > cfg.eval.batch_size else 0,
        device=device,
    )
    results: dict[int, tuple[str | None, np.ndarray | None, str | None]] = {}
    position = 0
    batches = iter(loader)
    for path, error in expanded:
        if error is not None:
            yield path, None, None, error
            continue
        while position not in results:  # decode the next batch (in order)
            results.update(_caption_batch(next(batches), device, captions_of))
        caption, strip, problem = results.pop(position)
        yield path, caption, strip, problem
        position += 1


def _caption_batch(
    items: list[tuple[int, torch.Tensor | str]], device: torch.device, captions_of: CaptionFn
) -> dict[int, tuple[str | None, np.ndarray | None, str | None]]:
    """{position: (caption, strip, None) or (None, None, error)} for one loader batch."""
    results: dict[int, tuple[str | None, np.ndarray | None, str | None]] = {
        i: (None, None, x) for i, x in items if isinstance(x, str)
    }
    images = [(i, x) for i, x in items if not isinstance(x, str)]
    if images:
        pixels = torch.stack([x for _, x in images]).to(device, non_blocking=True)
        for (i, _), (caption, strip) in zip(images, captions_of({"images": pixels})):
            results[i] = (caption, strip, None)
    return results


def caption_files(
    checkpoint: Checkpoints,
    paths: list[str],
    beam_size: int | None = None,
    overrides: list[str] | None = None,
) -> list[tuple[str, str]]:
    """``(path, caption)`` for every input (see :func:`iter_captions`); raises the first
    unreadable file's ``LrcnError``."""
    results = []
    for path, caption, error in iter_captions(checkpoint, paths, beam_size, overrides):
        if error is not None:
            raise LrcnError(error)
        results.append((path, caption))
    return results


@torch.no_grad()
def iter_classifications(
    checkpoint: str | Path, paths: list[str], overrides: list[str] | None = None
) -> Iterator[tuple[str, str | None, float, str | None]]:
    """Label each video or frame folder with an activity checkpoint (clip-averaged over long
    videos): yields ``(path, label, probability, None)``, or ``(path, None, 0.0, error sentence)``
    for a file that cannot be read, in input order."""

    model, cfg, payload = load_model(checkpoint, overrides=overrides)
    if not get_task(cfg.task).labels:
        raise LrcnError(
            f"{payload['path']}: this checkpoint is for task `{cfg.task}`, which does not label "
            "clips; `lrcn classify` takes an activity checkpoint."
        )
    labels = payload["labels"]
    mean, std = build.normalisation(cfg)
    mean, std = (
        (mean * 3, std * 3) if len(mean) == 1 else (mean, std)
    )  # one-channel CNNs: normalise, then grey
    device = next(model.parameters()).device
    chunk = max(cfg.eval.batch_size, 1)
    for path in paths:
        refused = image_given_for_video(path, "lrcn classify", "a video classifier")
        if refused is not None:
            yield path, None, 0.0, refused
            continue
        try:
            if cfg.data.frame_sampling == "clips":  # LRCN: average over strided clips
                clip_len, stride = cfg.classifier.clip_length, cfg.classifier.clip_stride
                clips = read_frames(
                    path, clip_len, sampling="clips", clip_len=clip_len, stride=stride
                )  # (N, L, H, W, 3)
            else:
                clips = read_frames(path, cfg.data.num_frames)[None]  # (1, T, H, W, 3) uint8
        except LrcnError as exc:
            yield path, None, 0.0, str(exc)
            continue
        pixels = torch.stack(
            [frames_to_tensor(c, cfg.data.image_size, mean, std) for c in clips]
        )  # (N, T, 3, S, S)
        if encoder_spec(cfg.encoder.name).in_channels == 1:
            pixels = pixels.mean(dim=2, keepdim=True)  # e.g. the seed CNN reads one channel
        proba = torch.cat(
            [
                model.predict_proba(pixels[i : i + chunk].to(device))
                for i in range(0, len(pixels), chunk)
            ]
        ).mean(dim=0)  # (C,): clip probabilities averaged
        best = int(proba.argmax())
        yield path, labels[best], float(proba[best]), None


def classify_files(
    checkpoint: str | Path, paths: list[str], overrides: list[str] | None = None
) -> list[tuple[str, str, float]]:
    """``(path, label, probability)`` for every input (see :func:`iter_classifications`);
    raises the first unreadable file's ``LrcnError``."""
    results = []
    for path, label, probability, error in iter_classifications(checkpoint, paths, overrides):
        if error is not None:
            raise LrcnError(error)
        results.append((path, label, probability))
    return results

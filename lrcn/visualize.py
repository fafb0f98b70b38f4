"""Pictures of what a model sees and says: captioned image grids, frame strips, TensorBoard hooks.

Everything returns plain ``(H, W, 3)`` uint8 arrays, which TensorBoard (``add_image`` with
``dataformats="HWC"``), matplotlib (``imshow``) and Pillow (``Image.fromarray``) all take.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

ImageLike = torch.Tensor | np.ndarray

_BACKGROUND = (250, 250, 250)
_TEXT = (25, 25, 25)
# Numbers in an evaluation's metrics that describe it rather than score it.
_BOOKKEEPING = {"items", "skipped", "beam_size"}


def denormalise(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo ``(x - mean) / std``: normalised pixels (..., C, H, W) -> floats in [0, 1].

    Args:
        pixels: a normalised image (C, H, W), batch (B, C, H, W) or clips (B, T, C, H, W).
        mean, std: the per-channel statistics used to normalise (``lrcn.build.normalisation``);
            one value each broadcasts over every channel.
    """
    pixels = torch.as_tensor(pixels).float()
    mean_t = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return (pixels * std_t + mean_t).clamp(0.0, 1.0)


def to_rgb_array(image: ImageLike) -> np.ndarray:
    """One image as (H, W, 3) uint8.

    Tensors are read as (C, H, W); arrays as (H, W, C) when the last axis has 1 or 3 entries,
    else (C, H, W). Floats are taken to be in [0, 1]; one channel is repeated to three.
    """
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    channels_first = isinstance(image, torch.Tensor)
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 2:
        array = array[None]  # (1, H, W)
        channels_first = True
    if array.ndim != 3:
        raise ValueError(f"an image must have 2 or 3 dimensions, got shape {array.shape}")
    if not channels_first and array.shape[-1] not in (1, 3):
        channels_first = True
    if channels_first:
        array = array.transpose(1, 2, 0)  # (H, W, C)
    if array.shape[-1] not in (1, 3):
        raise ValueError(f"an image must have 1 or 3 channels, got shape {array.shape}")
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)  # (H, W, 3)
    return np.ascontiguousarray(array)


def frame_strip(frames: ImageLike | Sequence[ImageLike], n: int = 4, gap: int = 2) -> np.ndarray:
    """``n`` evenly spaced frames of a clip side by side, first and last included.

    Args:
        frames: (T, C, H, W) tensor, (T, H, W, C) uint8 array (as the synthetic clips come) or a
            list of images; floats in [0, 1].
        n: frames to show (all of them when the clip is shorter).
        gap: white pixels between frames.

    Returns:
        (H, n * W + (n - 1) * gap, 3) uint8.
    """
    count = len(frames)
    if count == 0:
        raise ValueError("frame_strip got a clip with no frames")
    n = max(1, min(n, count))
    picks = np.rint(np.linspace(0, count - 1, n)).astype(int)
    images = [to_rgb_array(frames[int(i)]) for i in picks]
    height = max(im.shape[0] for im in images)
    width = sum(im.shape[1] for im in images) + gap * (n - 1)
    strip = np.full((height, width, 3), 255, dtype=np.uint8)
    x = 0
    for im in images:
        strip[: im.shape[0], x : x + im.shape[1]] = im
        x += im.shape[1] + gap
    return strip


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled TrueType font (FreeType)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _wrap(text: str, font: Any, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap by rendered width; the last kept line ends in an ellipsis if cut."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
            continue
        while font.getlength(word) > width and len(word) > 1:  # a word wider than the cell
            cut = 1
            while cut < len(word) and font.getlength(word[: cut + 1]) <= width:
                cut += 1
            lines.append(word[:cut])
            word = word[cut:]
        lines.append(word)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and font.getlength(last + "…") > width:
            last = last[:-1]
        lines[-1] = last + "…"
    return lines or [""]


def _fit(image: np.ndarray, size: int) -> Image.Image:
    """Scale to fit a size x size box, keeping the aspect; small images stay crisp."""
    picture = Image.fromarray(image)
    scale = size / max(picture.size)
    new_size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    upscale = scale >= 1
    return picture.resize(
        new_size, Image.Resampling.NEAREST if upscale else Image.Resampling.LANCZOS
    )


def caption_grid(
    images: ImageLike | Sequence[ImageLike],
    captions: Sequence[str],
    columns: int = 4,
    cell_size: int = 160,
    font_size: int = 12,
    max_lines: int = 4,
) -> np.ndarray:
    """A grid of images, each with its caption wrapped below it.

    Args:
        images: (N, C, H, W) tensor or array in [0, 1] or uint8, or a list of images of any
            size (e.g. `frame_strip` results for clips). Normalised pixels must go through
            `denormalise` first.
        captions: one string per image (a reference can be added after a newline).
        columns: images per row.
        cell_size: each image is scaled to fit a cell_size x cell_size box.
        font_size: caption text size in pixels.
        max_lines: caption lines kept per image (cut with an ellipsis).

    Returns:
        (H, W, 3) uint8, for ``SummaryWriter.add_image(..., dataformats="HWC")``.
    """
    if len(images) != len(captions):
        raise ValueError(f"caption_grid got {len(images)} images but {len(captions)} captions")
    if len(images) == 0:
        raise ValueError("caption_grid got no images")
    font = _font(font_size)
    pad = 6
    text_width = cell_size
    line_height = font_size + 3
    wrapped = [
        [
            line
            for part in str(caption).split("\n")
            for line in _wrap(part, font, text_width, max_lines)
        ]
        for caption in captions
    ]
    pictures = [_fit(to_rgb_array(image), cell_size) for image in images]
    picture_h = max(picture.height for picture in pictures)  # wide strips need less height
    rows_of_text = max(len(lines) for lines in wrapped)
    cell_w = cell_size + 2 * pad
    cell_h = picture_h + 2 * pad + 4 + rows_of_text * line_height
    columns = max(1, min(columns, len(images)))
    rows = -(-len(images) // columns)
    canvas = Image.new("RGB", (columns * cell_w, rows * cell_h), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for index, (picture, lines) in enumerate(zip(pictures, wrapped)):
        left, top = (index % columns) * cell_w, (index // columns) * cell_h
        x = left + pad + (cell_size - picture.width) // 2
        canvas.paste(picture, (x, top + pad + picture_h - picture.height))
        for row, line in enumerate(lines):
            y = top + pad + picture_h + 4 + row * line_height
            draw.text((left + pad, y), line, fill=_TEXT, font=font)
    return np.asarray(canvas)  # (H, W, 3)


def log_validation_grid(
    writer: Any,
    images: ImageLike | Sequence[ImageLike],
    captions: Sequence[str],
    step: int,
    tag: str = "val/caption_grid",
    columns: int = 4,
) -> None:
    """Write a captioned grid of validation images (or clips) to TensorBoard.

    Args:
        writer: a ``torch.utils.tensorboard.SummaryWriter``; ``None`` does nothing.
        images: (N, 3, H, W) images or (N, T, 3, H, W) clips in [0, 1] (run `denormalise` on
            model inputs first); clips are shown as 4-frame strips.
        captions: the generated caption of each item (optionally ``"caption\\nreference"``).
        step: the global step or epoch.
    """
    if writer is None:
        return
    is_clips = (isinstance(images, torch.Tensor | np.ndarray) and images.ndim == 5) or (
        not isinstance(images, torch.Tensor | np.ndarray)
        and len(images)
        and getattr(images[0], "ndim", 0) == 4
    )
    if is_clips:
        images = [frame_strip(clip) for clip in images]
    grid = caption_grid(images, captions, columns=columns)
    writer.add_image(tag, grid, step, dataformats="HWC")


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    flat: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        elif value is None:
            flat[name] = "none"
        else:  # lists (eval.metrics) and anything else: their text
            flat[name] = (
                ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
            )
    return flat


def log_hparams(writer: Any, config_dict: Mapping[str, Any], metrics: Mapping[str, Any]) -> None:
    """Record a run's configuration and final metrics in TensorBoard's HParams tab.

    The summaries go into the writer's own event file (``SummaryWriter.add_hparams`` would open
    a second, timestamped run folder). Metrics appear as scalars ``hparam/<name>``, away from
    the per-epoch ``epoch/...`` curves.

    Args:
        writer: a ``SummaryWriter``; ``None`` does nothing.
        config_dict: ``Config.to_dict()`` (nested; flattened to dotted keys).
        metrics: final metrics, e.g. ``eval/test_metrics.json``; non-numeric entries are left out.
    """
    if writer is None:
        return
    from torch.utils.tensorboard.summary import hparams

    hparam_dict = _flatten(config_dict)
    metric_dict = {
        f"hparam/{key}": float(value)
        for key, value in metrics.items()
        if isinstance(value, int | float)
        and not isinstance(value, bool)
        and key not in _BOOKKEEPING
        and not key.endswith("_pairs")
    }
    experiment, start, end = hparams(hparam_dict, metric_dict)
    file_writer = writer._get_file_writer()
    for summary in (experiment, start, end):
        file_writer.add_summary(summary)
    for key, value in metric_dict.items():
        writer.add_scalar(key, value)
    writer.flush()

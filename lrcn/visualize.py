"""Pictures of what a model sees and says: captioned image grids, frame strips, attention strips
(where each word looked), TensorBoard hooks.

Everything returns plain ``(H, W, 3)`` uint8 arrays, which TensorBoard (``add_image`` with
``dataformats="HWC"``), matplotlib (``imshow``) and Pillow (``Image.fromarray``) all take.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from lrcn.errors import LrcnError

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
    attention: Sequence[np.ndarray] | None = None,
) -> None:
    """Write a captioned grid of validation images (or clips) to TensorBoard.

    Args:
        writer: a ``torch.utils.tensorboard.SummaryWriter``; ``None`` does nothing.
        images: (N, 3, H, W) images or (N, T, 3, H, W) clips in [0, 1] (run `denormalise` on
            model inputs first); clips are shown as 4-frame strips.
        captions: the generated caption of each item (optionally ``"caption\\nreference"``).
        step: the global step or epoch.
        attention: `attention_strip` pictures (an attention model's), stacked one under the
            other as a second image, ``<tag's folder>/attention``; None writes only the grid.
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
    if attention:
        folder = tag.rsplit("/", 1)[0] if "/" in tag else tag
        writer.add_image(f"{folder}/attention", stack_pictures(attention), step, dataformats="HWC")


def stack_pictures(pictures: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    """Pictures (H_i, W_i, 3) one under the other, left-aligned on the light background."""
    if not pictures:
        raise ValueError("stack_pictures got no pictures")
    width = max(p.shape[1] for p in pictures)
    height = sum(p.shape[0] for p in pictures) + gap * (len(pictures) - 1)
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = _BACKGROUND
    top = 0
    for picture in pictures:
        canvas[top : top + picture.shape[0], : picture.shape[1]] = picture
        top += picture.shape[0] + gap
    return canvas


def _square_grid(cells: int) -> tuple[int, int]:
    side = round(cells**0.5)
    if side * side != cells:
        raise LrcnError(
            f"attention maps of {cells} cells are not a square grid; pass grid_shape=(h, w) "
            "(the encoder's grid_map height and width) to attention_strip."
        )
    return side, side


def _map_image(
    weights: np.ndarray, grid_shape: tuple[int, int], size: tuple[int, int]
) -> np.ndarray:
    """One word's weights (N,) -> (H, W) in [0, 1], bilinearly upsampled, 1 at its maximum."""
    cells = weights.astype(np.float32).reshape(grid_shape)  # (h, w), row-major as Encoder.grid
    upsampled = Image.fromarray(cells, mode="F").resize(size, Image.Resampling.BILINEAR)
    heat = np.asarray(upsampled, dtype=np.float32)  # (H, W)
    top = float(heat.max())
    return heat / top if top > 0 else np.zeros_like(heat)


def _light(picture: np.ndarray, level: np.ndarray | float) -> np.ndarray:
    """Darken a picture (float RGB) to a quarter where ``level`` (in [0, 1]) is 0 and add a glow
    where it is 1, so attended parts of dark pictures (the synthetic data's) stand out too."""
    return picture * (0.25 + 0.75 * level) + 110.0 * level


def _attention_labels(words: Sequence[str], rows: int) -> list[str]:
    if rows == len(words) + 1:  # the maps of lrcn.decoding.attention_weights end with <end>'s
        return [*words, "<end>"]
    if rows != len(words):
        raise ValueError(f"attention_strip got {rows} maps for {len(words)} words")
    return list(words)


def attention_strip(
    image: ImageLike,
    words: Sequence[str],
    maps: torch.Tensor | np.ndarray,
    grid_shape: tuple[int, int] | None = None,
    cell_size: int = 72,
    font_size: int = 11,
    gap: int = 3,
) -> np.ndarray:
    """Where the model looked for each word (Xu et al., "Show, Attend and Tell", Fig. 2).

    An image: the picture, then one thumbnail per word, lit where that word's weights are high
    (each map bilinearly upsampled from the grid to the picture and scaled so its largest weight
    is 1: full brightness plus a glow; weight 0 darkened to a quarter), the word under it. A clip:
    one row per word, the word then every frame, each frame lit by its weight (relative to the
    word's largest) and the bar under it as long as the weight itself.

    Args:
        image: one image (C, H, W) / (H, W, C), or a clip's frames (T, C, H, W) / (T, H, W, C),
            in [0, 1] or uint8 (normalised pixels go through `denormalise` first).
        words: the caption's words.
        maps: (len(words), N) or (len(words) + 1, N) weights (the extra last row: ``<end>``), as
            `lrcn.decoding.attention_weights` returns them; N grid cells or T frames.
        grid_shape: (h, w) of an image's grid (``Encoder.grid_map``'s last two sizes); None: a
            square grid of N cells.
        cell_size: each picture (or frame) is scaled to fit a cell_size x cell_size box.

    Returns:
        (H, W, 3) uint8.
    """
    weights = (
        maps.detach().float().cpu().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps)
    )
    if weights.ndim != 2:
        raise ValueError(f"attention_strip needs maps (words, N), got shape {weights.shape}")
    labels = _attention_labels(words, weights.shape[0])
    is_clip = (isinstance(image, torch.Tensor | np.ndarray) and image.ndim == 4) or (
        isinstance(image, Sequence) and len(image) > 0 and not isinstance(image[0], str)
    )
    if is_clip:
        return _frame_attention(image, labels, weights, cell_size, font_size, gap)
    shape = grid_shape or _square_grid(weights.shape[1])
    if shape[0] * shape[1] != weights.shape[1]:
        raise ValueError(f"grid {shape} does not hold {weights.shape[1]} cells")
    picture = np.asarray(_fit(to_rgb_array(image), cell_size)).astype(np.float32)  # (h, w, 3)
    size = (picture.shape[1], picture.shape[0])
    tiles = [picture] + [
        _light(picture, _map_image(row, shape, size)[..., None]) for row in weights
    ]
    return _labelled_row(tiles, ["", *labels], font_size, gap)


def _labelled_row(
    tiles: list[np.ndarray], labels: list[str], font_size: int, gap: int
) -> np.ndarray:
    """Pictures of one size side by side, each label (cut to fit) centred under its picture."""
    font = _font(font_size)
    height, width = tiles[0].shape[:2]
    canvas = Image.new(
        "RGB", (len(tiles) * (width + gap) - gap, height + font_size + 6), _BACKGROUND
    )
    draw = ImageDraw.Draw(canvas)
    for index, (tile, label) in enumerate(zip(tiles, labels)):
        left = index * (width + gap)
        canvas.paste(Image.fromarray(np.clip(np.rint(tile), 0, 255).astype(np.uint8)), (left, 0))
        text = _wrap(label, font, width, 1)[0] if label else ""
        x = left + max(0, (width - int(font.getlength(text))) // 2)
        draw.text((x, height + 2), text, fill=_TEXT, font=font)
    return np.asarray(canvas)  # (H, W, 3)


def _frame_attention(
    frames: Any, labels: list[str], weights: np.ndarray, cell_size: int, font_size: int, gap: int
) -> np.ndarray:
    """One row per word: its label, then every frame lit (and barred) by the word's weight."""
    if len(frames) != weights.shape[1]:
        raise ValueError(f"{weights.shape[1]} frame weights for a clip of {len(frames)} frames")
    pictures = [
        np.asarray(_fit(to_rgb_array(frame), cell_size)).astype(np.float32) for frame in frames
    ]
    height, width = pictures[0].shape[:2]
    font = _font(font_size)
    label_w = max(int(font.getlength(label)) for label in labels) + 2 * gap
    bar = 5
    row_h = height + bar + gap
    canvas = Image.new(
        "RGB", (label_w + len(pictures) * (width + gap), len(labels) * row_h + gap), _BACKGROUND
    )
    draw = ImageDraw.Draw(canvas)
    for r, (label, row) in enumerate(zip(labels, weights)):
        top = gap + r * row_h
        draw.text((gap, top + (height - font_size) // 2), label, fill=_TEXT, font=font)
        scaled = row / row.max() if row.max() > 0 else np.zeros_like(row)
        for t, (picture, level, weight) in enumerate(zip(pictures, scaled, row)):
            left = label_w + t * (width + gap)
            lit = np.clip(np.rint(_light(picture, level)), 0, 255).astype(np.uint8)
            canvas.paste(Image.fromarray(lit), (left, top))
            filled = left + round(width * float(np.clip(weight, 0, 1)))
            draw.rectangle(
                (left, top + height + 1, left + width - 1, top + height + bar), fill=(225, 228, 234)
            )
            if filled > left:
                draw.rectangle(
                    (left, top + height + 1, filled - 1, top + height + bar), fill=(47, 111, 222)
                )
    return np.asarray(canvas)  # (H, W, 3)


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

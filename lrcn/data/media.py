"""Image loading (Pillow), video decoding (PyAV) and frame folders, frame sampling, and tensors.

Every problem a user's file can cause (missing, empty, truncated, not an image or video, no frames)
ends in one `LrcnError` that names the file. Pixel arrays are uint8 RGB, (H, W, 3) per frame.

Policies worth knowing:
- Transparency (RGBA, LA, palette with a transparent colour) is composited on black, so fully
  transparent pixels come out black whatever colour the file stored under them.
- 16-bit and 32-bit integer greyscale (modes I;16*, I) are scaled from 0..65535 to 0..255 rather
  than clipped, so a 16-bit PNG does not come out almost white.
- EXIF orientation is applied, so a portrait photo taken sideways loads upright.
- A video or frame folder shorter than the frames asked for is padded by repeating its last frame
  (``pad="repeat_last"``) or refused (``pad="error"``).
- A video whose stream ends well before the frame count its header declares (more than 2 frames
  or 2% short, as a cut AVI does: it still opens and decodes up to the cut) is refused as
  truncated; a shortfall within that slack is taken as header rounding and sampling is redone on
  the frames that exist.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lrcn.clips import clip_starts
from lrcn.errors import LrcnError

if TYPE_CHECKING:  # torch is imported where a tensor is made: `lrcn prepare` needs none (1.4 s)
    import torch

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
VIDEO_EXTENSIONS = frozenset({".avi", ".mp4", ".m4v", ".mkv", ".webm", ".mov", ".mpg", ".mpeg"})
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SAMPLINGS = ("uniform", "clips")
PAD_POLICIES = ("repeat_last", "error")


# ----------------------------------------------------------------------------- images


def load_image(path: str | os.PathLike, min_size: int | Sequence[int] | None = None) -> Image.Image:
    """Load an image file as an RGB PIL image (see the module docstring for the colour policies).

    Args:
        path: the image file.
        min_size: the size the image will be resized to (an int or (height, width)); a JPEG at
            least twice as large in both sides is then decoded at 1/2, 1/4 or 1/8 scale in the
            DCT (Pillow's ``draft``), never below ``min_size``: a 640x480 COCO photo for a
            224x224 CNN decodes about 1.5x faster, a 12-megapixel phone photo far faster, and
            the resized pixels differ by about one grey level on average.

    Raises:
        LrcnError: the file is missing, a folder, empty, truncated or not an image.
    """
    path = Path(path)
    if path.is_dir():
        raise LrcnError(f"{path} is a folder, not an image file; pass the path of an image.")
    try:
        with Image.open(path) as img:
            if min_size is not None and img.format == "JPEG":
                # both sides at least the largest requested side, whatever EXIF rotation follows
                side = max(_size_hw(min_size))
                img.draft("RGB", (side, side))
            # Decoding happens lazily in load(); a truncated file only fails here.
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except FileNotFoundError:
        raise LrcnError(f"image {path} does not exist; check the path.") from None
    except UnidentifiedImageError:
        size = path.stat().st_size if path.exists() else 0
        what = "is empty (0 bytes)" if size == 0 else "is not an image Pillow can read"
        raise LrcnError(f"image {path} {what}; replace it with a valid image file.") from None
    except Image.DecompressionBombError as err:
        raise LrcnError(
            f"image {path} is too large to load safely ({err}); resize it or raise "
            "PIL.Image.MAX_IMAGE_PIXELS."
        ) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise LrcnError(
            f"image {path} is corrupt or truncated ({err}); re-download or re-encode it."
        ) from None


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB (composite transparency on black, scale 16-bit)."""
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    if img.mode.startswith("I;16") or img.mode == "I":
        # Pillow's convert() clips 16-bit values at 255; scale the range down instead.
        values = np.asarray(img, dtype=np.float64)
        grey = np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        scale = 255.0 if values.size and values.max() <= 1.0 else 1.0
        grey = np.clip(np.round(values * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    return img.convert("RGB")


# ----------------------------------------------------------------------------- sampling


def uniform_indices(n_available: int, n_wanted: int) -> list[int]:
    """Pick ``n_wanted`` frame indices spread evenly over ``n_available`` frames.

    Each index is the centre of one of ``n_wanted`` equal segments, so the picks are distinct and
    in order whenever ``n_available >= n_wanted``. With fewer frames, every frame is used once and
    the last index repeats to fill ``n_wanted`` (the ``repeat_last`` padding policy).
    """
    if n_available < 1 or n_wanted < 1:
        raise ValueError(f"need n_available >= 1 and n_wanted >= 1, got {n_available}, {n_wanted}")
    if n_available < n_wanted:
        return list(range(n_available)) + [n_available - 1] * (n_wanted - n_available)
    return [(2 * i + 1) * n_available // (2 * n_wanted) for i in range(n_wanted)]


def _plan(
    n_available: int,
    num_frames: int,
    sampling: str,
    clip_len: int,
    stride: int,
    pad: str,
    max_clips: int | None,
    source: Path,
) -> list[list[int]]:
    """Frame indices to read: one row for ``uniform``, one row per clip for ``clips``."""
    if sampling not in SAMPLINGS:
        raise LrcnError(f"unknown frame sampling {sampling!r}; use one of {', '.join(SAMPLINGS)}.")
    if pad not in PAD_POLICIES:
        raise LrcnError(f"unknown padding policy {pad!r}; use one of {', '.join(PAD_POLICIES)}.")
    wanted = num_frames if sampling == "uniform" else clip_len
    if wanted < 1:
        raise LrcnError(f"asked for {wanted} frames from {source}; ask for at least 1.")
    if n_available < wanted and pad == "error":
        raise LrcnError(
            f"{source} has {n_available} frames but {wanted} were asked for; ask for fewer "
            'frames or use pad="repeat_last".'
        )
    if sampling == "uniform":
        return [uniform_indices(n_available, num_frames)]
    starts = clip_starts(n_available, clip_len, stride)
    if max_clips is not None and len(starts) > max_clips:
        starts = [starts[i] for i in uniform_indices(len(starts), max_clips)]
    return [
        [min(start + offset, n_available - 1) for offset in range(clip_len)] for start in starts
    ]


def _assemble(rows: list[list[int]], frames: dict[int, np.ndarray], sampling: str) -> np.ndarray:
    stacked = np.stack([np.stack([frames[i] for i in row]) for row in rows])  # (N, T, H, W, 3)
    return stacked[0] if sampling == "uniform" else stacked


# ----------------------------------------------------------------------------- videos


def read_video(
    path: str | os.PathLike,
    num_frames: int,
    sampling: str = "uniform",
    clip_len: int = 16,
    stride: int = 8,
    pad: str = "repeat_last",
    max_clips: int | None = None,
) -> np.ndarray:
    """Decode frames of a video file with PyAV.

    The video is decoded once, front to back, and only the frames that are sampled are converted
    and kept, so memory stays at the sampled frames however long the video is.

    Args:
        path: a video file (.avi, .mp4, ...).
        num_frames: frames wanted for ``uniform`` sampling (ignored for ``clips``).
        sampling: ``uniform`` (``num_frames`` spread over the whole video) or ``clips`` (every
            window of ``clip_len`` consecutive frames, windows ``stride`` frames apart).
        clip_len: frames per clip for ``clips``.
        stride: frames between clip starts for ``clips``.
        pad: ``repeat_last`` pads a short video with its last frame; ``error`` refuses it.
        max_clips: keep at most this many clips, spread evenly (``None``: all).

    Returns:
        uint8 array (T, H, W, 3) for ``uniform``, (N_clips, clip_len, H, W, 3) for ``clips``.

    Raises:
        LrcnError: PyAV is missing, or the file is missing, empty, truncated or has no frames.
    """
    path = Path(path)
    av = _import_av()
    if not path.is_file():
        what = "is a folder; use read_frames for frame folders" if path.is_dir() else "not found"
        raise LrcnError(f"video {path} {what}; check the path.")
    if path.stat().st_size == 0:
        raise LrcnError(f"video {path} is empty (0 bytes); re-download or re-encode it.")
    declared = _count_frames(av, path)
    rows = _plan(declared, num_frames, sampling, clip_len, stride, pad, max_clips, path)
    needed = {i for row in rows for i in row}
    frames, decoded = _decode(av, path, needed)
    if len(frames) < len(needed):
        # The stream ended before the last sampled frame, so `decoded` is the true length.
        # Headers can overstate the count by a frame or two; more than that is a cut file.
        if declared - decoded > max(2, declared // 50) or decoded == 0:
            raise LrcnError(
                f"video {path} ended after {decoded} of the {declared} frames its header "
                "declares; the file is probably truncated: re-download or re-encode it."
            )
        rows = _plan(decoded, num_frames, sampling, clip_len, stride, pad, max_clips, path)
        frames, _ = _decode(av, path, {i for row in rows for i in row})
    return _assemble(rows, frames, sampling)


def _import_av():
    try:
        import av
    except ImportError:
        raise LrcnError(
            "reading video files needs PyAV, which is not installed; run `pip install av`."
        ) from None
    return av


def _open_video(av, path: Path):
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise LrcnError(
            f"video {path} cannot be opened ({err}); it is corrupt, truncated or not a video: "
            "re-download or re-encode it."
        ) from None
    if not container.streams.video:
        container.close()
        raise LrcnError(
            f"video {path} has no video stream (corrupt, truncated or audio-only); "
            "re-download or re-encode it."
        )
    return container


def _count_frames(av, path: Path) -> int:
    """Frame count from the header, or by demuxing packets (no decoding) when it has none."""
    container = _open_video(av, path)
    try:
        stream = container.streams.video[0]
        count = stream.frames
        if count <= 0:
            count = sum(1 for packet in container.demux(stream) if packet.size)
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise LrcnError(f"video {path} is corrupt ({err}); re-download or re-encode it.") from None
    finally:
        container.close()
    if count <= 0:
        raise LrcnError(f"video {path} contains no frames; re-download or re-encode it.")
    return count


def _decode(av, path: Path, needed: set[int]) -> tuple[dict[int, np.ndarray], int]:
    """Decode up to the last needed frame; return the needed frames and how many were decoded."""
    last = max(needed)
    frames: dict[int, np.ndarray] = {}
    decoded = 0
    container = _open_video(av, path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        size = None
        for index, frame in enumerate(container.decode(stream)):
            decoded = index + 1
            if index in needed:
                if size is None:
                    size = (frame.width, frame.height)
                # A mid-stream resolution change would break stacking; keep the first size.
                frames[index] = frame.to_ndarray(width=size[0], height=size[1], format="rgb24")
            if index >= last:
                break
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise LrcnError(
            f"video {path} failed to decode after {decoded} frames ({err}); it is corrupt or "
            "truncated: re-download or re-encode it."
        ) from None
    finally:
        container.close()
    return frames, decoded


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int = 8) -> Path:
    """Encode frames (T, H, W, 3) uint8 (even H and W) as an H.264 video (.mp4) with PyAV."""
    av = _import_av()
    path = Path(path)
    _, height, width, _ = frames.shape
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


# ----------------------------------------------------------------------------- frame folders


def natural_key(name: str) -> list[str | int]:
    """Sort key that orders digit runs by value (``image2`` before ``image10``)."""
    # re.split with a group alternates text and digit runs: odd positions are the numbers.
    parts = re.split(r"(\d+)", name)
    return [int(part) if i % 2 else part.lower() for i, part in enumerate(parts)]


def image_files_in(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside an existing folder (no hidden files), in natural order."""
    with os.scandir(folder) as entries:
        names = [
            entry.name
            for entry in entries
            if entry.is_file()
            and not entry.name.startswith(".")
            and Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS
        ]
    return [Path(folder) / name for name in sorted(names, key=natural_key)]


def list_frame_files(path: str | os.PathLike) -> list[Path]:
    """Image files directly inside a frame folder, in natural order.

    Raises:
        LrcnError: the folder is missing or holds no image files.
    """
    path = Path(path)
    if not path.is_dir():
        raise LrcnError(f"frame folder {path} does not exist; check the path.")
    files = image_files_in(path)
    if not files:
        raise LrcnError(
            f"frame folder {path} holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
            "extract the frames again."
        )
    return files


def read_frame_folder(
    path: str | os.PathLike,
    num_frames: int,
    sampling: str = "uniform",
    clip_len: int = 16,
    stride: int = 8,
    pad: str = "repeat_last",
    max_clips: int | None = None,
) -> np.ndarray:
    """Read sampled frames from a folder of image files (naturally sorted); see `read_video`.

    Only the sampled files are decoded. All frames must have the size of the first one.
    """
    path = Path(path)
    files = list_frame_files(path)
    rows = _plan(len(files), num_frames, sampling, clip_len, stride, pad, max_clips, path)
    frames: dict[int, np.ndarray] = {}
    size = None
    for index in sorted({i for row in rows for i in row}):
        img = load_image(files[index])
        if size is None:
            size = img.size
        elif img.size != size:
            raise LrcnError(
                f"frame {files[index]} is {img.size[0]}x{img.size[1]} but the folder's first "
                f"frame is {size[0]}x{size[1]}; extract all frames of a video at one size."
            )
        frames[index] = np.asarray(img, dtype=np.uint8)
    return _assemble(rows, frames, sampling)


def read_frames(
    path: str | os.PathLike,
    num_frames: int,
    sampling: str = "uniform",
    clip_len: int = 16,
    stride: int = 8,
    pad: str = "repeat_last",
    max_clips: int | None = None,
) -> np.ndarray:
    """Read sampled frames from a video file or a frame folder (see `read_video`)."""
    path = Path(path)
    if path.is_dir():
        return read_frame_folder(path, num_frames, sampling, clip_len, stride, pad, max_clips)
    if not path.exists():
        raise LrcnError(f"video or frame folder {path} does not exist; check the path.")
    return read_video(path, num_frames, sampling, clip_len, stride, pad, max_clips)


# ----------------------------------------------------------------------------- tensors


def _size_hw(size: int | Sequence[int]) -> list[int]:
    if isinstance(size, int):
        return [size, size]
    height, width = size
    return [int(height), int(width)]


def _resize_normalise(
    pixels: torch.Tensor,
    size: int | Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """Resize uint8 (N, 3, H, W) pixels (bilinear, antialiased) and normalise them to float32."""
    import torch
    import torch.nn.functional as F

    # Interpolating the uint8 (N, H, W, 3) memory as a channels-last view takes PyTorch's
    # vectorised uint8 path: about 15x faster here than resizing float or contiguous tensors.
    resized = F.interpolate(pixels, size=_size_hw(size), mode="bilinear", antialias=True)
    resized = resized.contiguous()  # (N, 3, size_h, size_w)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    return torch.addcmul(-mean_t / std_t, resized.float(), 1.0 / (255.0 * std_t))


def image_to_tensor(
    img: Image.Image | np.ndarray,
    size: int | Sequence[int],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Resize an RGB image (bilinear, antialiased) and normalise it.

    Args:
        img: an RGB PIL image or a uint8 array (H, W, 3).
        size: output size; an int gives a square (size, size), a pair is (height, width). The
            aspect ratio is not kept (no crop), as the CNNs here take a fixed input.
        mean, std: per-channel statistics of pixels scaled to [0, 1].

    Returns:
        float32 tensor (3, H, W).
    """
    import torch

    pixels = np.array(img, dtype=np.uint8)  # a copy: PIL's buffer is read-only
    if pixels.ndim != 3 or pixels.shape[-1] != 3:
        raise ValueError(f"image must be RGB (H, W, 3), got shape {tuple(pixels.shape)}")
    pixels = torch.from_numpy(pixels)  # (H, W, 3)
    pixels = pixels.permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W)
    return _resize_normalise(pixels, size, mean, std)[0]  # (3, size_h, size_w)


def frames_to_tensor(
    frames: np.ndarray,
    size: int | Sequence[int],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Resize and normalise a stack of uint8 frames (T, H, W, 3) in one batched call.

    Returns:
        float32 tensor (T, 3, H, W); see `image_to_tensor` for ``size``, ``mean`` and ``std``.
    """
    import torch

    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got shape {tuple(frames.shape)}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    if not (frames.flags.writeable and frames.flags.c_contiguous):
        frames = frames.copy(order="C")  # torch.from_numpy needs a writable, plain buffer
    pixels = torch.from_numpy(frames)  # (T, H, W, 3)
    pixels = pixels.permute(0, 3, 1, 2)  # (T, 3, H, W)
    # Resizing in uint8 rounds each pixel once, to within 0.5/255 of a float resize.
    return _resize_normalise(pixels, size, mean, std)  # (T, 3, size_h, size_w)


def image_given_for_video(path: str, command: str, model: str) -> str | None:
    """The sentence refusing an image file given to a video model (read as a one-frame video it
    would be labelled or captioned without a word), or None for anything else."""
    if Path(path).suffix.lower() not in IMAGE_EXTENSIONS or Path(path).is_dir():
        return None
    return (
        f"{path} is an image, and {command} with {model} takes videos or frame folders (a "
        "folder of one video's frames); pass the video file, or the folder that holds its frames."
    )

"""Where the strided clips of a video start: the one clip arithmetic of lrcn (pure Python).

`lrcn.data.media` reads these clips for `lrcn evaluate` and `lrcn classify`, and
`ActivityClassifier.predict_video` cuts a frame tensor into the same ones, so a video's
clip-averaged label does not depend on the entry point. It sits at the bottom layer because
models and data may not import each other.
"""

from __future__ import annotations


def clip_starts(n_available: int, clip_len: int, stride: int) -> list[int]:
    """Start indices of windows of ``clip_len`` frames taken every ``stride`` frames.

    Windows start every ``stride`` frames; when they stop short of the end, one more window ends
    at the last frame, so every frame is seen (LRCN averages 16-frame clips taken every 8 frames
    over the whole video). A video of at most ``clip_len`` frames gives ``[0]`` (the caller pads
    it or takes it as one shorter clip).

    Raises:
        ValueError: a count is not positive.
    """
    if n_available < 1 or clip_len < 1 or stride < 1:
        raise ValueError(
            f"need positive n_available, clip_len, stride; got {n_available}, {clip_len}, {stride}"
        )
    if n_available <= clip_len:
        return [0]
    starts = list(range(0, n_available - clip_len + 1, stride))
    if starts[-1] + clip_len < n_available:
        starts.append(n_available - clip_len)
    return starts

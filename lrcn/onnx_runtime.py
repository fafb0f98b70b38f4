"""Captioning with onnxruntime from the ``onnx/`` folder of ``lrcn export --onnx``: no torch.

A reference decoding loop over the two graphs `lrcn.onnx_export` writes, in numpy, following
`lrcn.decoding`'s greedy and beam search step for step (``<pad>`` and ``<start>`` never chosen,
a finished beam extended only by ``<end>`` at no cost, the best beam by
``score / length ** length_penalty``), so its captions are lrcn's wherever the two runtimes'
float rounding picks the same tokens. ``scripts/onnx_caption.py`` captions image files with it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from lrcn.errors import LrcnError

__all__ = ["OnnxCaptioner"]

ONNX_FORMAT = "lrcn-onnx/1"
State = dict[str, np.ndarray]


class OnnxCaptioner:
    """The graphs of one ``onnx/`` folder in onnxruntime sessions, with greedy and beam decoding.

    Args:
        folder: the ``onnx/`` folder (or the model folder holding it).
        threads: onnxruntime's intra-op threads (None: its default).
    """

    def __init__(self, folder: str | os.PathLike, threads: int | None = None) -> None:
        folder = Path(folder)
        if (folder / "onnx" / "onnx.json").is_file():
            folder = folder / "onnx"
        self.meta = _read_json(folder / "onnx.json")
        if self.meta.get("format") != ONNX_FORMAT:
            raise LrcnError(
                f"{folder / 'onnx.json'}: not an lrcn ONNX export (format "
                f"{self.meta.get('format')!r}); run `lrcn export RUN --out DIR --onnx` again."
            )
        self.itos: list[str] = _read_json(folder / self.meta["vocab"])["itos"]
        try:
            import onnxruntime
        except ImportError:
            raise LrcnError(
                "onnxruntime is not installed: `pip install 'lrcn[onnx]'`, or caption with lrcn."
            ) from None
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        self.encoder = onnxruntime.InferenceSession(
            str(folder / self.meta["encoder"]), options, providers=providers
        )
        self.step_session = onnxruntime.InferenceSession(
            str(folder / self.meta["step"]), options, providers=providers
        )
        self.names = [entry["name"] for entry in self.meta["state"]]
        self.axes = {entry["name"]: entry["batch_axis"] for entry in self.meta["state"]}
        # the exporter drops inputs a graph never reads (an attention step recomputes `alpha`)
        self.step_inputs = {i.name for i in self.step_session.get_inputs()}

    def initial_state(self, pixels: np.ndarray) -> State:
        """Normalised pixels (B, 3, H, W) or (B, T, 3, H, W) float32 -> the state before ``<start>``."""
        values = self.encoder.run(self.names, {"pixels": pixels.astype(np.float32, copy=False)})
        return dict(zip(self.names, values))

    def step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """Feed tokens (B,): log-probabilities (B, V) of the next token and the new state."""
        feeds = {"tokens": tokens.astype(np.int64, copy=False)}
        feeds |= {n: v for n, v in state.items() if n in self.step_inputs}
        log_probs, *values = self.step_session.run(
            ["log_probs", *(f"next_{n}" for n in self.names)], feeds
        )
        return log_probs, dict(zip(self.names, values))

    def reorder(self, state: State, index: np.ndarray) -> State:
        """Rows ``index`` of every entry, along its batch axis (beam search's bookkeeping)."""
        return {n: np.take(v, index, axis=self.axes[n]) for n, v in state.items()}

    def _forbid(self, log_probs: np.ndarray) -> np.ndarray:
        """``<pad>`` and ``<start>`` at -inf: never chosen."""
        log_probs = log_probs.copy()
        log_probs[..., [self.meta["pad_id"], self.meta["start_id"]]] = -np.inf
        return log_probs

    def greedy(self, pixels: np.ndarray, max_length: int) -> list[list[int]]:
        """The most likely token at every step: B token-id lists without ``<start>``/``<end>``."""
        end = self.meta["end_id"]
        state = self.initial_state(pixels)
        batch = pixels.shape[0]
        tokens = np.full(batch, self.meta["start_id"], dtype=np.int64)
        done = np.zeros(batch, dtype=bool)
        out = np.full((batch, max_length), end, dtype=np.int64)
        for t in range(max_length):
            log_probs, state = self.step(tokens, state)
            tokens = np.where(done, end, self._forbid(log_probs).argmax(axis=-1))
            out[:, t] = tokens
            done |= tokens == end
            if done.all():
                break
        return _trim(out, end)

    def beam_search(
        self, pixels: np.ndarray, max_length: int, beam_size: int, length_penalty: float = 0.0
    ) -> list[list[int]]:
        """`lrcn.decoding.beam_search` over (B * k) beams; ``beam_size`` 1 is `greedy`."""
        if beam_size == 1:
            return self.greedy(pixels, max_length)
        end, k = self.meta["end_id"], beam_size
        batch = pixels.shape[0]
        state = self.reorder(self.initial_state(pixels), np.repeat(np.arange(batch), k))
        tokens = np.full(batch * k, self.meta["start_id"], dtype=np.int64)
        scores = np.zeros((batch, k), dtype=np.float32)
        scores[:, 1:] = -np.inf  # the beams start identical: one fans out at the first step
        finished = np.zeros((batch, k), dtype=bool)
        lengths = np.zeros((batch, k), dtype=np.float32)
        history = np.full((batch, k, max_length), end, dtype=np.int64)
        rows = np.arange(batch)[:, None]
        for t in range(max_length):
            log_probs, state = self.step(tokens, state)
            vocab = log_probs.shape[-1]
            log_probs = self._forbid(log_probs).reshape(batch, k, vocab)
            frozen = np.full_like(log_probs, -np.inf)
            frozen[..., end] = 0.0
            log_probs = np.where(finished[..., None], frozen, log_probs)
            candidates = (scores[..., None] + log_probs).reshape(batch, k * vocab)
            flat = np.argsort(-candidates, axis=-1, kind="stable")[:, :k]  # (B, k)
            scores = np.take_along_axis(candidates, flat, axis=-1)
            beam, chosen = flat // vocab, flat % vocab
            history = history[rows, beam]
            history[:, :, t] = chosen
            was_finished = finished[rows, beam]
            lengths = lengths[rows, beam] + (~was_finished)
            finished = was_finished | (chosen == end)
            state = self.reorder(state, (rows * k + beam).reshape(-1))
            tokens = chosen.reshape(-1)
            if finished.all():
                break
        final = scores / np.maximum(lengths, 1) ** length_penalty if length_penalty else scores
        return _trim(history[np.arange(batch), final.argmax(axis=-1)], end)

    def caption_ids(self, pixels: np.ndarray, beam_size: int | None = None) -> list[list[int]]:
        """Token ids per input with the exported decoding settings (``beam_size`` overrides)."""
        return self.beam_search(
            pixels,
            self.meta["max_length"],
            beam_size or self.meta["beam_size"],
            self.meta["length_penalty"],
        )

    def words(self, ids: list[int]) -> str:
        """Token ids -> the caption, words joined by spaces (the specials dropped)."""
        specials = {self.meta["pad_id"], self.meta["start_id"], self.meta["end_id"]}
        return " ".join(self.itos[i] for i in ids if i not in specials)


def _trim(sequences: np.ndarray, end_id: int) -> list[list[int]]:
    """Cut each row at its first ``<end>`` (excluded)."""
    out = []
    for row in sequences.tolist():
        out.append(row[: row.index(end_id)] if end_id in row else row)
    return out


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON file of the export, or one sentence naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LrcnError(
            f"{path}: missing or not readable JSON ({exc.__class__.__name__}); run "
            "`lrcn export RUN --out DIR --onnx` again."
        ) from None

"""``lrcn export --onnx``: a captioner as two ONNX graphs a caller decodes with onnxruntime.

lrcn decodes through a decoder's ``init_state`` / ``step`` / ``reorder_state`` (`lrcn.decoding`);
the graphs are the same split, so any decoding loop (greedy, beam) runs outside torch:

- ``encoder.onnx``: ``pixels`` (B, 3, H, W), or (B, T, 3, H, W) for video, normalised as
  ``onnx.json`` says -> the decoder's state before ``<start>`` (the CNN, the temporal encoder and
  ``init_state`` in one graph).
- ``decoder_step.onnx``: ``tokens`` (B,) int64 and the state -> ``log_probs`` (B, V) of the next
  token and the new state, entry by entry under the same names (``next_<name>``).

``onnx.json`` names the state's entries in order with the axis that holds the batch (what a beam
search reorders: recurrent states keep it on axis 1), the special token ids, the decoding
settings and the preprocessing. `lrcn.onnx_runtime` is a reference loop over them.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lrcn import build
from lrcn.config import Config
from lrcn.errors import LrcnError
from lrcn.io import atomic_path, write_json_atomic
from lrcn.task import get_task
from lrcn.text.vocab import Vocabulary

__all__ = ["ONNX_FILES", "ONNX_FORMAT", "export_onnx"]

ONNX_FORMAT = "lrcn-onnx/1"
ONNX_FILES = ("encoder.onnx", "decoder_step.onnx", "onnx.json")
OPSET = 17


class _EncoderGraph(nn.Module):
    """Pixels -> the decoder's initial state, entries in ``names`` order."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names
        # torch.onnx.export puts the graph in eval mode and afterwards back in the mode it found
        # it in, recursively: a wrapper left in nn.Module's default training mode would leave the
        # caller's model training (BatchNorm then normalises by the batch and updates its stats)
        self.eval()

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, 3, H, W) or (B, T, 3, H, W) -> the state's tensors."""
        features = self.model.encode_features(self.model.cnn_features(pixels))
        state = self.model.decoder.init_state(features)
        return tuple(state[name] for name in self.names)


class _StepGraph(nn.Module):
    """(tokens, state...) -> (log_probs, new state...): `LSTMDecoder.step` with a flat state."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.decoder, self.names = model.decoder, names
        self.eval()  # as _EncoderGraph: the export must not leave the decoder training

    def forward(self, tokens: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """tokens (B,) -> log_probs (B, V) and the state after feeding them."""
        log_probs, new = self.decoder.step(tokens, dict(zip(self.names, state)))
        return (log_probs, *(new[name] for name in self.names))


def export_onnx(model: nn.Module, cfg: Config, payload: dict[str, Any], out: Path) -> Path:
    """Write ``encoder.onnx``, ``decoder_step.onnx`` and ``onnx.json`` of a captioner into ``out``.

    Raises:
        LrcnError: the model is not a captioner, ``onnx`` is not installed, or the wiring's step
            cannot be traced into a graph (its name and torch's reason given).
    """
    task = get_task(cfg.task)
    if not task.captions:
        raise LrcnError(
            f"--onnx: task {cfg.task} has no caption decoder; ONNX export covers captioners "
            "(encoder + decoder step), so export this run without --onnx."
        )
    _check_onnx_installed()
    model = model.cpu().eval()
    pixels = _example_pixels(cfg, task.video, batch=2)
    with torch.no_grad():
        names, axes, grows = _state_layout(model, cfg, task.video)
        state = _EncoderGraph(model, names)(pixels)
        tokens = torch.full((2,), Vocabulary.start_id, dtype=torch.long)
        if any(grows.values()):  # a cache: trace the step from one word in, not from empty
            state = _StepGraph(model, names)(tokens, *state)[1:]
    variant = cfg.decoder.variant
    out.mkdir(parents=True, exist_ok=True)
    dynamic = {n: {axes[n]: "batch"} | {a: "steps" for a in grows[n]} for n in names}
    encoder_axes = {"pixels": {0: "batch"}} | dynamic
    _export(_EncoderGraph(model, names), (pixels,), ["pixels"], names, encoder_axes,
            out / "encoder.onnx", variant)  # fmt: skip
    step_outputs = ["log_probs", *(f"next_{n}" for n in names)]
    step_axes = {"tokens": {0: "batch"}, "log_probs": {0: "batch"}} | dynamic
    step_axes |= {f"next_{n}": dynamic[n] for n in names}
    _export(_StepGraph(model, names), (tokens, *state), ["tokens", *names], step_outputs,
            step_axes, out / "decoder_step.onnx", variant)  # fmt: skip
    write_json_atomic(out / "onnx.json", onnx_metadata(cfg, names, axes))
    return out


def onnx_metadata(cfg: Config, names: list[str], axes: dict[str, int]) -> dict[str, Any]:
    """``onnx.json``: what a decoding loop needs besides the graphs."""
    mean, std = build.normalisation(cfg)
    video = get_task(cfg.task).video
    return {
        "format": ONNX_FORMAT,
        "encoder": "encoder.onnx",
        "step": "decoder_step.onnx",
        "wiring": cfg.decoder.variant,
        "input": "frames" if video else "images",
        "pixels_shape": ["batch", *(["frames"] if video else []), 3, "size", "size"],
        "image_size": cfg.data.image_size,
        "num_frames": cfg.data.num_frames if video else None,
        "mean": list(mean),
        "std": list(std),
        "state": [{"name": n, "batch_axis": axes[n]} for n in names],
        "start_id": Vocabulary.start_id,
        "end_id": Vocabulary.end_id,
        "pad_id": Vocabulary.pad_id,
        "max_length": cfg.eval.max_length,
        "beam_size": cfg.eval.beam_size,
        "length_penalty": cfg.eval.length_penalty,
        "vocab": "../vocab.json",
    }


def _check_onnx_installed() -> None:
    """torch's exporter needs the ``onnx`` package: one sentence when it is missing."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise LrcnError(
            "--onnx needs the onnx package: `pip install 'lrcn[onnx]'` (onnx and onnxruntime), "
            "or export without --onnx."
        ) from None


def _example_pixels(cfg: Config, video: bool, batch: int) -> torch.Tensor:
    """Zeros shaped as the model's input (only shapes matter for tracing)."""
    size = cfg.data.image_size
    frames = (cfg.data.num_frames,) if video else ()
    return torch.zeros(batch, *frames, 3, size, size)


def _state_layout(
    model: nn.Module, cfg: Config, video: bool
) -> tuple[list[str], dict[str, int], dict[str, list[int]]]:
    """The state's entry names and, for each, the axis that grows with the batch and the axes
    that grow with every word fed (a Transformer's key/value cache; none for an LSTM's state),
    found by running ``init_state`` at two batch sizes and one ``step``, so a plug-in wiring
    needs no declaration."""
    shapes = []
    for batch in (2, 3):
        features = model.encode_features(model.cnn_features(_example_pixels(cfg, video, batch)))
        state = model.decoder.init_state(features)
        shapes.append({k: tuple(v.shape) for k, v in state.items()})
    tokens = torch.full((3,), Vocabulary.start_id, dtype=torch.long)
    stepped = {k: tuple(v.shape) for k, v in model.decoder.step(tokens, state)[1].items()}
    names = list(shapes[0])
    axes = {}
    for name in names:
        grown = [i for i, (a, b) in enumerate(zip(shapes[0][name], shapes[1][name])) if a != b]
        if len(grown) != 1:
            raise LrcnError(
                f"--onnx: decoder.variant {cfg.decoder.variant}'s state entry `{name}` has no "
                "single batch axis, so a beam search cannot reorder it outside torch; export "
                "without --onnx."
            )
        axes[name] = grown[0]
    grows = {
        n: [i for i, (a, b) in enumerate(zip(shapes[1][n], stepped[n])) if a != b] for n in names
    }
    return names, axes, grows


def _export(
    graph: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
    path: Path,
    variant: str,
) -> None:
    """One graph, written atomically; a wiring torch cannot trace is named in one sentence."""
    options: dict[str, Any] = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        options["dynamo"] = False  # the TorchScript exporter: no onnxscript needed
    try:
        with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter(
                "ignore"
            )  # the tracer's notes on constants, not the user's to fix
            torch.onnx.export(
                graph,
                inputs,
                str(tmp),
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                opset_version=OPSET,
                do_constant_folding=True,
                **options,
            )
    except LrcnError:
        raise
    except Exception as exc:  # torch raises many kinds for an untraceable module
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise LrcnError(
            f"--onnx: decoder.variant {variant} could not be exported to {path.name} ({reason}); "
            "export without --onnx and decode with lrcn."
        ) from None

"""Digests of one short run's artifacts for scripts/golden.py: checkpoint tensors (model, optimizer,
training state), a pretraining run's encoder.pt, a feature store's arrays, and the eval files read
as JSON with the fields that legitimately vary removed. See golden.py's docstring for the use."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

# Fields of the eval files that legitimately vary between two runs of the same code.
VARYING = frozenset(
    {"path", "paths", "run", "run_dir", "out_dir", "checkpoint", "cwd", "host", "hostname"}
    | {"seconds", "time", "elapsed", "timestamp", "date", "started", "finished", "created"}
)
EVAL_FILES = (
    "test_captions.json",
    "test_per_item.json",
    "test_predictions.json",
    "test_metrics.json",
)


def _tensor_bytes(tensor: Any) -> bytes:
    import torch

    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()


def _feed(digest: Any, value: Any) -> None:
    """Feed ``value`` into ``digest`` canonically: tensors as dtype, shape and bytes; containers
    in order (dict keys sorted when they are not all strings in insertion order)."""
    import torch

    if isinstance(value, torch.Tensor):
        digest.update(f"T{value.dtype}{tuple(value.shape)}".encode())
        digest.update(_tensor_bytes(value))
    elif isinstance(value, dict):
        digest.update(f"D{len(value)}".encode())
        for key, item in value.items():
            digest.update(f"K{key!r}".encode())
            _feed(digest, item)
    elif isinstance(value, list | tuple):
        digest.update(f"L{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(f"V{value!r}".encode())


def digest_value(value: Any) -> str:
    """sha256 of a tensor, a state dict or any nest of them and plain values."""
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()


def normalise(value: Any, work: str | None = None) -> Any:
    """``value`` without the `VARYING` fields (at any depth), the work folder written ``<work>``."""
    if isinstance(value, dict):
        return {k: normalise(v, work) for k, v in value.items() if k not in VARYING}
    if isinstance(value, list):
        return [normalise(v, work) for v in value]
    if isinstance(value, str) and work and work in value:
        return value.replace(work, "<work>")
    return value


def digest_json(path: Path, work: str | None = None) -> str:
    """sha256 of a JSON file's content, normalised and written canonically."""
    data = normalise(json.loads(path.read_text(encoding="utf-8")), work)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def checkpoint_digests(path: Path) -> dict[str, str]:
    """A checkpoint's model tensors, optimizer state and training state (without times)."""
    import torch

    payload = torch.load(path, map_location="cpu", weights_only=True)
    out = {}
    if "model" in payload:
        out["model"] = digest_value(payload["model"])
    else:  # a bare state dict
        return {"model": digest_value(payload)}
    if payload.get("optimizer") is not None:
        out["optimizer"] = digest_value(payload["optimizer"])
    state = payload.get("train_state")
    if isinstance(state, dict):
        history = [normalise(record) for record in state.get("history", [])]
        out["train_state"] = digest_value({**state, "history": history})
    return out


def store_digest(folder: Path) -> str:
    """sha256 of a feature store's arrays (``<split>.npy``, by name); its index holds paths."""
    import numpy as np

    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.npy")):
        array = np.load(path, allow_pickle=False)
        digest.update(f"{path.name}{array.dtype}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def run_digests(folder: Path, work: Path, store: Path | None = None) -> dict[str, str]:
    """Every artifact of one finished run folder -> its digest."""
    out: dict[str, str] = {}
    for name in ("last.pt", "best.pt"):
        path = folder / "checkpoints" / name
        if path.is_file():
            for part, value in checkpoint_digests(path).items():
                out[f"{name}:{part}"] = value
    if (folder / "encoder.pt").is_file():
        out["encoder.pt"] = checkpoint_digests(folder / "encoder.pt")["model"]
    if store is not None and store.is_dir():
        out["features"] = store_digest(store)
    for name in EVAL_FILES:
        path = folder / "eval" / name
        if path.is_file():
            out[f"eval/{name}"] = digest_json(path, str(work))
    return out

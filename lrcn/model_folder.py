"""Reading a model folder written by ``lrcn export`` (the Hugging Face Hub layout), or a Hub id.

A model folder holds ``config.json`` (stamped ``lrcn-model/1``: the task, sizes, preprocessing, the
labels and lrcn's own config), ``model.safetensors`` (the weights), ``vocab.json`` (captioners)
and a model card ``README.md``. It is read with JSON and safetensors only, so nothing in it is
unpickled: ``weights_only`` semantics by construction. `load_model_folder` returns the same
payload a training checkpoint gives (`lrcn.checkpoint.load_checkpoint`), so every command that
takes ``--checkpoint`` takes a folder; `lrcn.export` writes them.

A ``--checkpoint`` that is not a local path but looks like ``user/name`` is fetched from the Hub
with ``huggingface_hub`` (the local cache first); without the package or a network, one sentence
says so.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from lrcn.errors import LrcnError

FORMAT = "lrcn-model/1"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
VOCAB = "vocab.json"
CARD = "README.md"
FILES = (CONFIG, WEIGHTS, VOCAB, CARD)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_REEXPORT = "export it again with `lrcn export RUN --out DIR`"


def is_model_folder(path: str | os.PathLike) -> bool:
    """True for a folder holding ``config.json`` or ``model.safetensors`` and no training
    checkpoints (a model folder, complete or not: `load_model_folder` names what it lacks)."""
    path = Path(path)
    return (
        path.is_dir()
        and any((path / name).is_file() for name in (CONFIG, WEIGHTS))
        and not (path / "checkpoints").is_dir()
        and not any((path / name).is_file() for name in ("best.pt", "last.pt"))
    )


def read_folder_config(folder: str | os.PathLike) -> dict[str, Any]:
    """A model folder's ``config.json``, checked to be this lrcn's format.

    Raises:
        LrcnError: unreadable or not JSON, or another format (naming the file and the fix).
    """
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise LrcnError(
            f"{path}: missing, so the folder is not a whole model folder; copy the whole folder "
            f"again or {_REEXPORT}."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LrcnError(
            f"{path}: not readable JSON ({exc.__class__.__name__}); the folder is damaged: "
            f"{_REEXPORT}."
        ) from None
    stamp = data.get("format") if isinstance(data, dict) else None
    if stamp != FORMAT:
        found = f"format {stamp!r}" if stamp else "no lrcn format stamp"
        raise LrcnError(
            f"{path}: not an lrcn model folder this lrcn reads ({found}, expected {FORMAT!r}); "
            f"{_REEXPORT} using this lrcn, or install the lrcn that wrote it."
        )
    for key in ("task", "lrcn_config"):
        if key not in data:
            raise LrcnError(f"{path}: has no `{key}` entry, so it is incomplete; {_REEXPORT}.")
    return data


def load_model_folder(folder: str | os.PathLike, task: str | None = None) -> dict[str, Any]:
    """A model folder as a checkpoint payload: ``task``, ``config``, ``vocab``, ``labels``,
    ``baseline_caption`` and ``model`` (the state_dict, read from safetensors).

    Raises:
        LrcnError: a missing or damaged file, another format, or a folder of another task.
    """
    folder = Path(folder)
    data = read_folder_config(folder)
    if task is not None and data["task"] != task:
        raise LrcnError(
            f"{folder}: this model folder is for task `{data['task']}`, not `{task}`; pass a "
            f"model folder (or checkpoint) of task `{task}`."
        )
    vocab = None
    if data.get("vocab_file"):
        vocab = _read_vocab(folder / data["vocab_file"])
    return {
        "format": data["format"],
        "task": data["task"],
        "config": data["lrcn_config"],
        "vocab": vocab,
        "labels": data.get("labels"),
        "baseline_caption": data.get("baseline_caption"),
        "model": _read_weights(folder / WEIGHTS),
    }


def _read_vocab(path: Path) -> dict[str, Any]:
    """``vocab.json``: ``{"itos": [...]}``."""
    if not path.is_file():
        raise LrcnError(
            f"{path}: missing, and config.json names it as the vocabulary; copy the whole "
            f"folder again or {_REEXPORT}."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LrcnError(
            f"{path}: not readable JSON ({exc.__class__.__name__}); copy the folder again or "
            f"{_REEXPORT}."
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("itos"), list):
        raise LrcnError(f"{path}: not an lrcn vocabulary (no `itos` list); {_REEXPORT}.")
    return data


def _read_weights(path: Path) -> dict[str, Any]:
    """The state_dict in ``model.safetensors`` (no pickle: safetensors holds only tensors)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise LrcnError(
            f"{path}: missing, so the folder has no weights; copy the whole folder again or "
            f"{_REEXPORT}."
        )
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise LrcnError(
            f"{path}: not a readable safetensors file ({str(exc).splitlines()[0][:100]}); it "
            f"may be truncated: copy the folder again or {_REEXPORT}."
        ) from None


def fetch_hub_model(spec: str) -> Path | None:
    """The local folder of Hub id ``spec`` (``user/name``), downloaded if needed; None when
    ``spec`` exists locally or is not shaped like a Hub id.

    The local cache is tried first, so a model fetched once loads offline.

    Raises:
        LrcnError: ``huggingface_hub`` is not installed, there is no network (or
            ``HF_HUB_OFFLINE`` is set and the cache lacks it), or the Hub has no such model.
    """
    if Path(spec).exists() or not HUB_ID.match(spec) or Path(spec.split("/")[0]).exists():
        return None  # a local path (its first folder exists here: a typo, not a Hub id)
    where = f"{spec}: no such file or folder here, and as a Hugging Face Hub id it"
    try:
        import huggingface_hub
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:
        raise LrcnError(
            f"{where} needs the huggingface_hub package: `pip install huggingface_hub`, or pass "
            "an existing checkpoint, run folder or model folder."
        ) from None
    patterns = list(FILES)
    try:
        return Path(huggingface_hub.snapshot_download(spec, allow_patterns=patterns,
                                                      local_files_only=True))  # fmt: skip
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass  # not in the cache: ask the Hub
    try:
        folder = Path(huggingface_hub.snapshot_download(spec, allow_patterns=patterns))
    except LocalEntryNotFoundError:
        raise LrcnError(
            f"{where} cannot be fetched: the Hub is not reachable (no network, or HF_HUB_OFFLINE "
            "is set) and it is not in the local cache; connect and run again, or pass a local "
            "model folder."
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise LrcnError(
            f"{where} could not be fetched ({str(exc).splitlines()[0][:120]}); check the id "
            "(user/name) and your access to it, or pass a local model folder."
        ) from None
    if not (folder / CONFIG).is_file():
        raise LrcnError(
            f"{spec}: the Hub repository has no {CONFIG}, so it is not an lrcn model folder; "
            "pass the id of a folder written by `lrcn export`."
        )
    return folder

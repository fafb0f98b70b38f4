"""What a resumed run starts from: its last checkpoint and saved config, with the changes a resume
may make (``RESUME_SAFE_KEYS``) applied and every other change refused, naming the key."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lrcn.checkpoint import load_checkpoint
from lrcn.config import Config, config_from_dict, load_config_over, overridden_keys
from lrcn.errors import LrcnError

log = logging.getLogger(__name__)

# Keys a resumed run may change: they steer how long, how fast and how visibly it trains, not what
# the saved weights, optimizer state and data position mean (torchvision's references resume with
# a new epoch count the same way). Any other key would silently corrupt the run.
RESUME_SAFE_KEYS = (
    "train.epochs",
    "train.lr",
    "train.encoder_lr",
    "train.grad_clip",
    "train.early_stopping_patience",
    "train.checkpoint_every_steps",
    "train.log_every_steps",
    "train.val_max_items",
    "train.progress",
    "train.device",
    "train.amp",
    "data.num_workers",
    "data.on_error",
    "eval.",
)


def check_resume_overrides(overrides: list[str], run_dir: Path) -> None:
    """Refuse, naming the key, a change that a resumed run cannot take safely.

    Overrides follow every command's rule (`lrcn.config.apply_overrides`); a section override is
    judged key by key, so ``eval={beam_size: 3}`` is taken and ``train={epochs: 4, seed: 1}``
    refused for ``train.seed``.
    """
    for key in overridden_keys(overrides):
        if not any(
            key == safe or (safe.endswith(".") and key.startswith(safe))
            for safe in RESUME_SAFE_KEYS
        ):
            allowed = ", ".join(k + "*" if k.endswith(".") else k for k in RESUME_SAFE_KEYS)
            raise LrcnError(
                f"`{key}` cannot change when a run is continued with --resume {run_dir}: the saved "
                f"weights, optimizer and data position depend on it; start a new run with -c instead "
                f"(keys that can change on resume: {allowed})."
            )


def resume_payload(run_dir: Path, overrides: list[str]) -> tuple[dict[str, Any], Config]:
    """The last checkpoint and its config with the (safe) overrides applied."""
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        raise LrcnError(
            f"{run_dir}: nothing to resume (no checkpoints/last.pt); start with `lrcn train -c CONFIG --run-dir {run_dir}`."
        )
    check_resume_overrides(overrides, run_dir)
    payload = load_checkpoint(last)
    cfg = config_from_dict(payload["config"], f"{last} (saved config)")
    if overrides:
        saved = cfg
        cfg = load_config_over(cfg, overrides)
        changes = _changes(saved.to_dict(), cfg.to_dict())
        if changes:
            log.info("resuming with changes: %s", ", ".join(changes))
    return payload, cfg


def _changes(before: dict[str, Any], after: dict[str, Any], prefix: str = "") -> list[str]:
    """``key old -> new`` for every leaf that differs between two config dicts."""
    out = []
    for key, value in after.items():
        if isinstance(value, dict):
            out += _changes(before.get(key, {}), value, f"{prefix}{key}.")
        elif before.get(key) != value:
            out.append(f"{prefix}{key} {before.get(key)!r} -> {value!r}")
    return out

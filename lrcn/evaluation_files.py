"""An evaluation's files as one unit: one writer, a manifest written last, checked by every reader.

``lrcn evaluate`` writes one split's files into its output folder (``<run>/eval`` unless
``--out-dir``): ``<split>_metrics.json``, ``_per_item.json``, ``_captions.json``,
``_references.json`` and ``_attention.npz`` for a captioner, ``_metrics.json`` and
``_predictions.json`` for a classifier. Several splits share one folder, so the unit is one
split's files, and the file names stay those earlier versions wrote. The unit is made whole by
``<split>_manifest.json``:

1. the writer holds ``<folder>/.lock`` (:func:`lrcn.io.hold_lock`) from before decoding to the
   end, so a second ``lrcn evaluate`` into the folder is refused at once, naming the holder's PID;
2. it first replaces the manifest with an *unfinished* one (``"finished": false``, in one atomic
   rename), then writes each file atomically, then removes what the previous evaluation left and
   this one does not write (an attention file), and last writes the *finished* manifest: the
   sha256 of every file of the unit and the evaluation's settings (checkpoint file and its
   sha256, decoding, scoring and data settings, split).

A kill anywhere leaves either the previous finished manifest with the previous files untouched
(before step 2's rename), the unfinished manifest (readers refuse, naming the command to run
again), or the new finished manifest with the new files. :func:`read_evaluation` checks the
manifest: unfinished, a listed file missing, or a file whose sha256 differs is one sentence.
A folder written before manifests existed (lrcn 0.2.0) has none: it is read with a warning that
its files are not checked.

:func:`check_replaceable` keeps an evaluation from overwriting one made with other settings: a
finished evaluation of the split whose settings differ is refused, naming what differs and the
folder to write into instead. The same settings re-evaluated (e.g. ``lrcn train --resume`` made a
new ``best.pt``: the same checkpoint file, the same settings) replace it: the folder keeps the
evaluation of that file as it is now.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrcn.config import Config
from lrcn.errors import LrcnError
from lrcn.io import check_writable, hold_lock, kill_point, read_json, write_json_atomic

log = logging.getLogger(__name__)

FORMAT = 1
# the files an evaluation of split S writes: S_<kind>
KINDS = ("manifest.json", "metrics.json", "per_item.json", "captions.json", "references.json",
         "attention.npz", "predictions.json")  # fmt: skip
# eval keys that change no written number (batched decoding gives one-at-a-time captions)
_IGNORED = {"eval": {"split", "batch_size"}, "data": {"num_workers"}}
# recorded, but another value may replace the evaluation: it changes what is kept (how many
# items' attention maps), not what was measured
_KEPT_ONLY = {"eval.attention_maps"}
# the decoding controls' off values (lrcn.decoding_controls): not recorded when off
_CONTROLS_OFF = {"eval.no_repeat_ngram": 0, "eval.repetition_penalty": 1.0, "eval.beam_groups": 1,
                 "eval.diversity_strength": 0.0}  # fmt: skip


def manifest_path(folder: str | os.PathLike, split: str) -> Path:
    """``<folder>/<split>_manifest.json``."""
    return Path(folder) / f"{split}_manifest.json"


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def evaluation_settings(
    cfg: Config,
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    split: str,
    members: Sequence[str | os.PathLike] = (),
) -> dict[str, Any]:
    """What decides an evaluation's numbers besides the data: flat ``key: value`` pairs.

    ``checkpoint`` is the checkpoint file as seen from the output folder's parent (e.g.
    ``checkpoints/best.pt`` for ``<run>/eval``), so a run folder copied or moved whole keeps
    its evaluations' settings. ``members``: an ensemble's other checkpoints (``ensemble``).
    The decoding controls are recorded only when on, so an evaluation made before they existed
    has the settings it would have now.
    """
    where = Path(out_dir).resolve().parent
    settings: dict[str, Any] = {
        "split": split,
        "checkpoint": os.path.relpath(Path(checkpoint).resolve(), where),
    }
    if members:
        settings["ensemble"] = [os.path.relpath(Path(m).resolve(), where) for m in members]
    for section in ("eval", "data"):
        for key, value in sorted(dataclasses.asdict(getattr(cfg, section)).items()):
            name = f"{section}.{key}"
            off = name in _CONTROLS_OFF and _CONTROLS_OFF[name] == value
            if key not in _IGNORED[section] and not off:
                settings[name] = value
    return json.loads(json.dumps(settings))  # as the manifest will hold them (lists, not tuples)


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = list(old) + [k for k in new if k not in old]
    return [f"{k} {old.get(k)} -> {new.get(k)}" for k in keys if old.get(k) != new.get(k)]


def _evaluate_command(checkpoint: str, folder: Path, split: str, beam: Any) -> str:
    beam_option = f" --beam-size {beam}" if beam is not None else ""
    return (
        f"`lrcn evaluate --checkpoint {checkpoint} --split {split}{beam_option} --out-dir {folder}`"
    )


def _read_manifest(folder: Path, split: str) -> dict[str, Any] | None:
    path = manifest_path(folder, split)
    if not path.is_file():
        return None
    manifest = read_json(path, f"delete it and run `lrcn evaluate --split {split}` again")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise LrcnError(
            f"{path}: not an evaluation manifest of `lrcn evaluate`; delete it and run "
            f"`lrcn evaluate --split {split} --out-dir {folder}` again."
        )
    return manifest


def check_replaceable(folder: str | os.PathLike, split: str, settings: dict[str, Any]) -> None:
    """Refuse to overwrite a finished evaluation of ``split`` made with other settings.

    Raises:
        LrcnError: naming the folder, what differs (e.g. ``eval.beam_size 1 -> 3``) and another
            folder to write into.
    """
    folder = Path(folder)
    manifest = _read_manifest(folder, split)
    if manifest is not None and not manifest.get("finished"):
        return  # an interrupted evaluation: nothing whole to keep
    if manifest is not None:
        old = manifest.get("settings", {})
    else:  # written by lrcn 0.2.0: its metrics file knows the split and the beam
        old = _legacy_settings(folder / f"{split}_metrics.json")
        settings = {k: settings.get(k) for k in old}
    changed = _differences(
        {k: v for k, v in old.items() if k not in _KEPT_ONLY},
        {k: v for k, v in settings.items() if k not in _KEPT_ONLY},
    )
    if not changed:
        return
    beam = settings.get("eval.beam_size")
    name = f"eval_beam{beam}" if "eval.beam_size" in " ".join(changed) else f"{folder.name}-2"
    raise LrcnError(
        f"{folder} already holds an evaluation of split {split} made with other settings "
        f"({', '.join(changed)}); write this one elsewhere, e.g. --out-dir {folder.parent / name} "
        f"(or delete {folder}/{split}_* to replace it)."
    )


def _legacy_settings(metrics_path: Path) -> dict[str, Any]:
    if not metrics_path.is_file():
        return {}
    try:
        metrics = read_json(metrics_path, "delete it")
    except LrcnError:
        return {}  # unreadable: nothing to keep
    if not isinstance(metrics, dict) or "beam_size" not in metrics:
        return {}
    return {"eval.beam_size": metrics["beam_size"]}


@contextlib.contextmanager
def evaluation_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold the output folder of an evaluation for the whole of one ``lrcn evaluate``.

    Raises:
        LrcnError: the folder cannot be written, or another ``lrcn evaluate`` holds it.
    """
    folder = check_writable(folder)
    with hold_lock(folder / ".lock", "another `lrcn evaluate`"):
        kill_point("evaluation:locked")
        yield folder


def write_evaluation(
    folder: Path,
    split: str,
    settings: dict[str, Any],
    writers: dict[str, Callable[[Path], None]],
    checkpoint: str | os.PathLike,
    members: Sequence[str | os.PathLike] = (),
) -> dict[str, Any]:
    """Write one split's files as a unit (the module docstring's steps 2-3); call it inside
    :func:`evaluation_folder`.

    Args:
        writers: file name -> a function writing that path atomically; a file of the previous
            evaluation of the split that is not among them is removed.
        checkpoint: the checkpoint file evaluated (its sha256 is recorded).
        members: an ensemble's other checkpoint files (``members``: every file and its sha256).

    Returns:
        The finished manifest.
    """
    previous = _read_manifest(folder, split) or {}
    for kind in KINDS:  # what a killed writer of this split left (we hold the folder's lock)
        for tmp in folder.glob(f".{split}_{kind}.*.tmp"):
            tmp.unlink(missing_ok=True)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "split": split,
        "finished": False,
        "checkpoint_path": str(Path(checkpoint).resolve()),
        "settings": settings,
        "files": {},
    }
    write_json_atomic(manifest_path(folder, split), manifest)
    for name, write in writers.items():
        write(folder / name)
    stale = set(previous.get("files", {})) | {f"{split}_attention.npz"}
    for name in sorted(stale - set(writers)):
        if (folder / name).exists():
            (folder / name).unlink()
            kill_point(f"{name}:removed")
    manifest["checkpoint_sha256"] = file_sha256(checkpoint)
    if members:
        manifest["members"] = [
            {"path": str(Path(p).resolve()), "sha256": file_sha256(p)}
            for p in [checkpoint, *members]
        ]
    manifest["files"] = {name: file_sha256(folder / name) for name in writers}
    manifest["finished"] = True
    write_json_atomic(manifest_path(folder, split), manifest)
    return manifest


@dataclass
class EvaluationFiles:
    """One split's evaluation in a folder, checked against its manifest when it has one."""

    folder: Path
    split: str
    manifest: dict[str, Any] | None  # None: written before manifests (lrcn 0.2.0)

    def path(self, kind: str) -> Path:
        """``<folder>/<split>_<kind>``, e.g. ``path("captions.json")``."""
        return self.folder / f"{self.split}_{kind}"

    @property
    def fix(self) -> str:
        """The command that writes this evaluation again."""
        if self.manifest is None:
            return f"re-run `lrcn evaluate --split {self.split} --out-dir {self.folder}`"
        return "re-run " + _evaluate_command(
            self.manifest.get("checkpoint_path", "RUN"),
            self.folder,
            self.split,
            self.manifest.get("settings", {}).get("eval.beam_size"),
        )

    def read(self, kind: str) -> Any:
        """A JSON file of the evaluation (e.g. ``metrics.json``); a sentence when unreadable."""
        return read_json(self.path(kind), self.fix)

    def references(self) -> dict[str, list[str]] | None:
        """The references the captions were scored against; None when the evaluation kept none."""
        if not self.path("references.json").is_file():
            return None
        refs = self.read("references.json")
        if not isinstance(refs, dict) or not all(isinstance(v, list) for v in refs.values()):
            raise LrcnError(
                f"{self.path('references.json')}: not an object of item id -> list of "
                f"references; {self.fix}."
            )
        return {str(k): [str(r) for r in v] for k, v in refs.items()}


def read_evaluation(folder: str | os.PathLike, split: str = "test") -> EvaluationFiles:
    """The evaluation of ``split`` in ``folder`` (e.g. ``<run>/eval``), its files checked.

    Readers (``lrcn report``, ``lrcn compare``, the demo) read through this, so a folder an
    interrupted or concurrent write left, or a file changed since, is one sentence, never a
    mix of two evaluations.

    Raises:
        LrcnError: the evaluation did not finish, a file it lists is missing, or one changed
            since it was written (naming the file and the command that writes it again).
    """
    folder = Path(folder)
    manifest = _read_manifest(folder, split)
    files = EvaluationFiles(folder, split, manifest)
    if manifest is None:
        if files.path("metrics.json").is_file():
            log.warning(
                "%s holds no %s (written by lrcn 0.2.0 or by hand), so its files are not "
                "checked; %s to make it checkable.",
                folder,
                manifest_path(folder, split).name,
                files.fix,
            )
        return files
    if not manifest.get("finished"):
        raise LrcnError(
            f"the evaluation of split {split} in {folder} did not finish (it was interrupted, or "
            f"another `lrcn evaluate` is writing it); {files.fix}."
        )
    for name, sha in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise LrcnError(
                f"{path} is missing from the evaluation in {folder} "
                f"({manifest_path(folder, split).name} lists it); {files.fix}."
            )
        if file_sha256(path) != sha:
            raise LrcnError(
                f"{path} changed after `lrcn evaluate` wrote it (its sha256 is not the one "
                f"{manifest_path(folder, split).name} records); {files.fix}."
            )
    return files

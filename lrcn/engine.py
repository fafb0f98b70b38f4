"""Training and evaluation loops: ``train_one_epoch``, ``evaluate_*`` and ``fit``.

Runs are exactly resumable: the data order depends only on (seed, epoch), checkpoints hold the
position inside the epoch and every RNG state, and SIGINT/SIGTERM save a checkpoint before exiting.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from lrcn import distributed
from lrcn.checkpoint import (
    load_checkpoint,
    load_state_dict_checked,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from lrcn.config import Config, config_from_dict, load_config_over, save_config
from lrcn.data.datasets import (
    CaptionEvalDataset,
    CaptionTrainDataset,
    EpochSampler,
    build_vocabulary,
    make_caption_collate,
    make_eval_collate,
    most_frequent_caption,
    tokenize_source,
)
from lrcn.errors import LrcnError
from lrcn.runtime import (
    autocast,
    make_grad_scaler,
    make_loader,
    move_batch,
    progress_bar,
    resolve_device,
)
from lrcn.text.vocab import Vocabulary

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0  # the epoch in progress (or next to start)
    step: int = 0  # optimizer steps so far
    batch_in_epoch: int = 0  # batches of `epoch` already trained
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0


class StopRequested(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint has been written."""


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW (or Adam); a fine-tuned pretrained encoder gets ``train.encoder_lr``."""
    encoder = getattr(model, "encoder", None)
    encoder_params = (
        [p for p in encoder.parameters() if p.requires_grad] if encoder is not None else []
    )
    encoder_ids = {id(p) for p in encoder_params}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in encoder_ids]
    pretrained = cfg.encoder.weights not in ("none", "")
    groups = [{"params": rest, "lr": cfg.train.lr}]
    if encoder_params:
        groups.append(
            {"params": encoder_params, "lr": cfg.train.encoder_lr if pretrained else cfg.train.lr}
        )
    cls = torch.optim.AdamW if cfg.train.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=cfg.train.lr, eps=cfg.train.adam_eps, weight_decay=cfg.train.weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: Config, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    warmup = cfg.train.warmup_steps

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if cfg.train.scheduler == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress))
        if cfg.train.scheduler == "step":
            return 0.1 ** int(3 * step / max(1, total_steps))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: TrainState,
    device: torch.device,
    grad_clip: float = 0.0,
    amp: bool = False,
    grad_accum_steps: int = 1,
    on_step: Callable[[TrainState, float], None] | None = None,
    progress: bool = True,
    loss_fn: Callable[[nn.Module, dict], torch.Tensor] | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """One pass over ``loader`` (which already skips the batches trained before a resume).

    Every batch is a dict the model's ``loss(batch)`` understands. ``on_step`` runs after each
    optimizer step (logging, step checkpoints, stop requests). An enabled ``scaler`` (float16
    autocast, :func:`make_grad_scaler`) scales the loss before backward, unscales the gradients
    before clipping, and skips the optimizer step whose gradients overflowed.

    Returns:
        ``{"loss": mean training loss, "items": examples seen, "seconds": wall time}``.
    """
    model.train()
    scaling = scaler is not None and scaler.is_enabled()
    total, count, items, start = 0.0, 0, 0, time.perf_counter()
    # an accumulation cycle always closes at the epoch's last batch
    last_batch = _start(loader) + len(loader)
    bar = progress_bar(loader, progress, desc=f"epoch {state.epoch + 1}")
    for batch in bar:
        skipped = batch.pop("skipped", [])
        if skipped:
            state.skipped += len(skipped)
            for message in skipped:
                log.warning("skipped: %s", message)
        if batch.get("size", 1) == 0:
            state.batch_in_epoch += 1
            continue
        batch = move_batch(batch, device)
        with autocast(device, amp):
            if loss_fn is not None:
                loss = loss_fn(model, batch)
            elif isinstance(model, nn.parallel.DistributedDataParallel):
                loss = model(batch)
            else:
                loss = model.loss(batch)
        value = loss.item()  # the step's one host sync: logging and the NaN check share it
        if not math.isfinite(value):
            raise LrcnError(
                f"the training loss became {value} at step {state.step + 1} (epoch {state.epoch + 1}); "
                "the last good checkpoint is kept — lower train.lr or enable train.grad_clip."
            )
        loss = loss / grad_accum_steps
        (scaler.scale(loss) if scaling else loss).backward()
        state.batch_in_epoch += 1
        if state.batch_in_epoch % grad_accum_steps == 0 or state.batch_in_epoch == last_batch:
            if scaling:
                scaler.unscale_(optimizer)  # clip the true gradients
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            applied = True
            if scaling:
                scale = scaler.get_scale()
                scaler.step(optimizer)  # skipped when a gradient is inf/nan
                scaler.update()
                applied = scaler.get_scale() >= scale  # the scale backs off only on a skip
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if applied:  # the schedule follows the steps actually taken
                scheduler.step()
            state.step += 1
        total += value
        count += 1
        items += int(batch.get("size", 0)) or next(
            v.shape[0] for v in batch.values() if torch.is_tensor(v)
        )
        if progress and hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{value:.3f}")
        if on_step is not None:
            on_step(state, value)
    return {"loss": total / max(count, 1), "items": items, "seconds": time.perf_counter() - start}


def _start(loader: DataLoader) -> int:
    sampler = loader.batch_sampler.sampler if loader.batch_sampler is not None else None
    return getattr(sampler, "start", 0) // max(loader.batch_size or 1, 1)


# ---- evaluation ------------------------------------------------------------------------------
@torch.no_grad()
def generate_captions(
    model: nn.Module,
    loader: DataLoader,
    vocab: Vocabulary,
    device: torch.device,
    beam_size: int = 1,
    max_length: int = 24,
    length_penalty: float = 0.0,
    progress: bool = False,
) -> tuple[dict[str, str], dict[str, list[str]], int]:
    """Decode every item of an eval loader.

    Returns:
        (hypotheses {id: caption}, references {id: [captions]}, number of skipped items).
    """
    from lrcn.decoding import decode

    model.eval()
    hypotheses: dict[str, str] = {}
    references: dict[str, list[str]] = {}
    skipped = 0
    for batch in progress_bar(loader, progress, desc="decoding"):
        skipped += len(batch.pop("skipped", []))
        if batch["size"] == 0:
            continue
        ids, refs = batch.pop("ids"), batch.pop("references")
        batch = move_batch(batch, device)
        features = model.encode(batch)
        token_ids = decode(
            model.decoder,
            features,
            max_length,
            vocab.start_id,
            vocab.end_id,
            beam_size,
            length_penalty,
        )
        for item_id, tokens, item_refs in zip(ids, token_ids, refs):
            hypotheses[item_id] = " ".join(vocab.decode(tokens))
            references[item_id] = item_refs
    return hypotheses, references, skipped


def score_captions(
    hypotheses: dict[str, str],
    references: dict[str, list[str]],
    metrics: list[str],
    tokenizer: str,
) -> dict[str, Any]:
    from lrcn.metrics import score

    return score(references, hypotheses, metrics=metrics, tokenizer=tokenizer)


@torch.no_grad()
def evaluate_classifier(
    model: nn.Module, loader: DataLoader, device: torch.device, class_names: list[str]
) -> dict[str, Any]:
    """Clip accuracy (one prediction per item) and per-item predictions."""
    model.eval()
    correct, total = 0, 0
    predictions = []
    for batch in loader:
        batch.pop("skipped", None)
        batch = move_batch(batch, device)
        proba = model.predict_proba(batch["frames"])  # (B, C)
        pred = proba.argmax(dim=1)
        correct += int((pred == batch["label"]).sum())
        total += int(batch["label"].numel())
        for p, y, pr in zip(
            pred.tolist(), batch["label"].tolist(), proba.max(dim=1).values.tolist()
        ):
            predictions.append(
                {"label": class_names[y], "predicted": class_names[p], "probability": pr}
            )
    return {"accuracy": correct / max(total, 1), "items": total, "predictions": predictions}


# ---- fit -------------------------------------------------------------------------------------
class _StopFlag:
    """Turns SIGINT/SIGTERM into a flag checked between steps (so the checkpoint is consistent)."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.requested is not None:  # second signal: give up at once
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Run:
    """Everything ``fit`` needs for one task: data, model, evaluation; built from a config."""

    def __init__(
        self, cfg: Config, run_dir: Path, device: torch.device, vocab: Vocabulary | None = None
    ) -> None:
        from lrcn import build

        self.cfg, self.run_dir, self.device = cfg, run_dir, device
        self.task = cfg.task
        self.vocab = vocab
        self.labels: list[str] | None = None
        self.baseline_caption = ""
        rank, world = distributed.rank(), distributed.world_size()
        if self.task == "activity":
            self.train_data, self.labels = build.build_activity_dataset(cfg, "train")
            self.val_data, _ = build.build_activity_dataset(cfg, "val")
            self.collate = None
            self.model = build.build_model(cfg, num_classes=len(self.labels))
        else:
            train_source = build.build_source(cfg, "train")
            tokenized = tokenize_source(train_source)  # once, for all three uses below
            if self.vocab is None:
                self.vocab = build_vocabulary(
                    train_source, cfg.data.min_word_count, cfg.data.max_caption_length, tokenized
                )
            self.baseline_caption = (
                most_frequent_caption(train_source, tokenized) if cfg.eval.reference_points else ""
            )
            self.train_data = CaptionTrainDataset(
                train_source,
                self.vocab,
                cfg.data.max_caption_length,
                seed=cfg.train.seed,
                on_error=cfg.data.on_error,
                tokenized=tokenized,
            )
            del tokenized
            self.collate = make_caption_collate(train_source.is_video)
            self.val_data = CaptionEvalDataset(
                build.build_source(cfg, "val"),
                on_error=cfg.data.on_error,
                max_items=cfg.train.val_max_items,
            )
            self.val_collate = make_eval_collate(train_source.is_video)
            self.model = build.build_model(cfg, vocab_size=len(self.vocab))
            if hasattr(train_source, "check_encoder"):  # the store was made by this very encoder
                train_source.check_encoder(self.model.encoder)
        self.model.to(device)
        if cfg.train.batch_size % world:
            raise LrcnError(
                f"train.batch_size={cfg.train.batch_size} is the global batch and must divide by the {world} processes."
            )
        self.batch_size = cfg.train.batch_size // world  # per process; train.batch_size is global
        self.sampler = EpochSampler(
            len(self.train_data),
            cfg.train.seed,
            rank=rank,
            world_size=world,
            batch_size=self.batch_size,
        )
        self.monitor = (
            cfg.train.monitor
            if cfg.train.monitor != "auto"
            else ("accuracy" if self.task == "activity" else "Bleu_4")
        )

    def train_loader(self) -> DataLoader:
        return make_loader(
            self.train_data,
            self.batch_size,
            self.collate,
            self.sampler,
            self.cfg.data.num_workers,
            self.device,
        )

    def validate(self) -> dict[str, Any]:
        if self.task == "activity":
            loader = make_loader(
                self.val_data,
                self.cfg.eval.batch_size,
                None,
                None,
                self.cfg.data.num_workers,
                self.device,
            )
            result = evaluate_classifier(self.model, loader, self.device, self.labels)
            return {"accuracy": result["accuracy"]}
        loader = make_loader(
            self.val_data,
            self.cfg.eval.batch_size,
            self.val_collate,
            None,
            self.cfg.data.num_workers,
            self.device,
        )
        hyps, refs, _ = generate_captions(
            self.model, loader, self.vocab, self.device, 1, self.cfg.eval.max_length
        )
        metrics = score_captions(hyps, refs, ["bleu", "cider"], "python")
        metrics["samples"] = [
            {"id": k, "caption": hyps[k], "reference": refs[k][0]} for k in list(hyps)[:4]
        ]
        first = next(
            iter(loader)
        )  # the same first items generate_captions decoded, for a picture grid
        key = "frames" if "frames" in first else "images" if "images" in first else None
        if key is not None:
            from lrcn.build import normalisation
            from lrcn.visualize import denormalise

            ids = first["ids"][:8]
            metrics["grid"] = (
                denormalise(first[key][:8], *normalisation(self.cfg)),
                [f"{hyps[i]}\n({refs[i][0]})" for i in ids],
            )
        return metrics


def fit(
    cfg: Config | None,
    run_dir: str | Path,
    resume: bool = False,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Train as configured, writing ``config.yaml``, ``vocab.json``, checkpoints and TensorBoard logs.

    Args:
        cfg: the experiment.
        run_dir: output folder (created).
        resume: continue from ``run_dir/checkpoints/last.pt`` with its optimizer, scheduler, data
            position and RNG states (the run's saved config is used; ``cfg`` is ignored).
        overrides: with ``resume``, ``key=value`` changes to the saved config, e.g.
            ``train.epochs=20`` to train longer.

    Returns:
        Summary: final epoch, best validation metric, history, paths.
    """
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    payload = None
    if resume:
        last = ckpt_dir / "last.pt"
        if not last.is_file():
            raise LrcnError(
                f"{run_dir}: nothing to resume (no checkpoints/last.pt); start with `lrcn train -c CONFIG --run-dir {run_dir}`."
            )
        payload = load_checkpoint(last)
        cfg = config_from_dict(payload["config"], f"{last} (saved config)")
        if overrides:
            cfg = load_config_over(cfg, overrides)
    distributed.setup()
    is_main = distributed.is_main()
    device = distributed.device_for(resolve_device(cfg.train.device))
    _seed_everything(cfg.train.seed)
    vocab = Vocabulary.from_dict(payload["vocab"]) if payload and payload.get("vocab") else None
    init_payload = None
    if payload is None and cfg.train.init_from:
        init_payload = load_checkpoint(cfg.train.init_from, task=cfg.task)
        if init_payload.get("vocab"):
            vocab = Vocabulary.from_dict(
                init_payload["vocab"]
            )  # the weights only fit their own vocabulary
    run = Run(cfg, run_dir, device, vocab)
    model = run.model
    if init_payload is not None:
        load_state_dict_checked(model, init_payload["model"], cfg.train.init_from)
        log.info("initialised from %s", cfg.train.init_from)
    loss_fn = None
    if cfg.train.scst:
        from lrcn.scst import SelfCriticalLoss

        loss_fn = SelfCriticalLoss.from_run(run)
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        if run.vocab is not None:
            run.vocab.save(run_dir / "vocab.json")
    optimizer = build_optimizer(model, cfg)
    per_epoch = math.ceil(len(run.sampler) / run.batch_size)
    scheduler = build_scheduler(
        optimizer, cfg, per_epoch * cfg.train.epochs // cfg.train.grad_accum_steps
    )
    scaler = make_grad_scaler(device, cfg.train.amp)
    state = TrainState()
    if payload is not None:
        load_state_dict_checked(model, payload["model"], ckpt_dir / "last.pt")
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        if scaler.is_enabled() and payload.get("grad_scaler"):
            scaler.load_state_dict(payload["grad_scaler"])
        state = TrainState(**payload["train_state"])
        restore_rng_state(payload["rng"])
        log.info(
            "resumed from %s at epoch %d, step %d",
            ckpt_dir / "last.pt",
            state.epoch + 1,
            state.step,
        )
    train_model = distributed.wrap(model, device)
    writer = _writer(run_dir) if is_main else None

    def checkpoint(name: str) -> None:
        if not is_main:
            return
        save_checkpoint(
            ckpt_dir / name,
            {
                "task": cfg.task,
                "config": cfg.to_dict(),
                "vocab": run.vocab.to_dict() if run.vocab is not None else None,
                "labels": run.labels,
                "baseline_caption": run.baseline_caption,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "grad_scaler": scaler.state_dict(),  # {} unless float16 autocast
                "train_state": asdict(state),
                "rng": rng_state(),
            },
        )

    with _StopFlag() as stop:

        def on_step(st: TrainState, loss: float) -> None:
            if writer is not None and st.step % max(cfg.train.log_every_steps, 1) == 0:
                writer.add_scalar("train/loss", loss, st.step)
                writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], st.step)
            every = cfg.train.checkpoint_every_steps
            if (
                every
                and st.step % every == 0
                and st.batch_in_epoch % cfg.train.grad_accum_steps == 0
            ):
                checkpoint("last.pt")
            if stop.requested:
                checkpoint("last.pt")
                raise StopRequested(stop.requested)

        try:
            while state.epoch < cfg.train.epochs:
                run.sampler.set_epoch(state.epoch, start=state.batch_in_epoch * run.batch_size)
                if hasattr(run.train_data, "set_epoch"):
                    run.train_data.set_epoch(state.epoch)
                if (
                    cfg.train.scheduled_sampling_max > 0
                ):  # Bengio et al. 2015: ramp up feeding own words
                    ramp = max(cfg.train.scheduled_sampling_ramp_epochs, 1)
                    model.scheduled_sampling_prob = cfg.train.scheduled_sampling_max * min(
                        1.0, state.epoch / ramp
                    )
                stats = train_one_epoch(
                    train_model, run.train_loader(), optimizer, scheduler, state, device,
                    cfg.train.grad_clip, cfg.train.amp, cfg.train.grad_accum_steps, on_step,
                    cfg.train.progress and is_main,
                    loss_fn, scaler,
                )  # fmt: skip
                state.epoch += 1
                state.batch_in_epoch = 0
                record: dict[str, Any] = {
                    "epoch": state.epoch,
                    "train_loss": stats["loss"],
                    "seconds": stats["seconds"],
                }
                if is_main:
                    val = run.validate()
                    samples = val.pop("samples", [])
                    grid = val.pop("grid", None)
                    if writer is not None and grid is not None:
                        from lrcn.visualize import log_validation_grid

                        log_validation_grid(writer, grid[0], grid[1], state.epoch + 1)
                    record.update(
                        {f"val_{k}": v for k, v in val.items() if isinstance(v, int | float)}
                    )
                    value = val.get(run.monitor)
                    improved = value is not None and (state.best is None or value > state.best)
                    if improved:
                        state.best, state.best_epoch, state.bad_epochs = value, state.epoch, 0
                    else:
                        state.bad_epochs += 1
                    state.history.append(record)
                    _log_epoch(writer, record, samples, state.epoch)
                    log.info(
                        "epoch %d: %s",
                        state.epoch,
                        ", ".join(
                            f"{k}={v:.4g}" for k, v in record.items() if isinstance(v, float)
                        ),
                    )
                    checkpoint("last.pt")
                    if improved:
                        checkpoint("best.pt")
                if (
                    cfg.train.early_stopping_patience
                    and state.bad_epochs >= cfg.train.early_stopping_patience
                ):
                    log.info(
                        "early stopping: no %s improvement for %d epochs",
                        run.monitor,
                        state.bad_epochs,
                    )
                    break
                distributed.barrier()
        finally:
            if writer is not None:
                from lrcn.visualize import log_hparams

                final = state.history[-1] if state.history else {}
                log_hparams(
                    writer,
                    cfg.to_dict(),
                    {
                        **{k: v for k, v in final.items() if k != "epoch"},
                        f"best_{run.monitor}": state.best,
                    },
                )
                writer.close()
    if state.skipped:
        log.warning("%d unreadable items were skipped (data.on_error=skip)", state.skipped)
    distributed.barrier()
    return {
        "run_dir": str(run_dir),
        "epochs": state.epoch,
        "steps": state.step,
        "best": state.best,
        "best_epoch": state.best_epoch,
        "monitor": run.monitor,
        "history": state.history,
        "skipped": state.skipped,
    }


def _writer(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but a broken install must not stop training
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def _log_epoch(writer, record: dict[str, Any], samples: list[dict], epoch: int) -> None:
    if writer is None:
        return
    for key, value in record.items():
        if key != "epoch" and isinstance(value, int | float):
            writer.add_scalar(f"epoch/{key}", value, epoch)
    if samples:
        text = "\n\n".join(
            f"**{s['id']}**: {s['caption']}  \n_reference_: {s['reference']}" for s in samples
        )
        writer.add_text("val/captions", text, epoch)

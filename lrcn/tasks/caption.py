"""Image and video description: ``task: caption`` and ``task: video_caption``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import DataLoader

from lrcn import build
from lrcn.config import Config
from lrcn.data.datasets import (
    CaptionEvalDataset,
    CaptionTrainDataset,
    build_vocabulary,
    make_caption_collate,
    make_eval_collate,
    most_frequent_caption,
    tokenize_source,
)
from lrcn.engine import Run, generate_captions, score_captions
from lrcn.evaluation_files import EvaluationFiles
from lrcn.report.collect import caption_rows
from lrcn.report.page import Row
from lrcn.split_evaluation import Files, evaluate_captions
from lrcn.task import Task
from lrcn.text.vocab import Vocabulary
from lrcn.visualize import denormalise

# validation decodes greedily and scores BLEU and CIDEr each epoch; the first is the monitor's auto
_VALIDATION = ("Bleu_4", "Bleu_1", "Bleu_2", "Bleu_3", "CIDEr")


class CaptionTask(Task):
    """A CNN (per frame for video) in front of an LSTM decoder that writes a caption.

    Args:
        name: ``caption`` or ``video_caption``.
        video: whether the inputs are clips (a frame CNN, then a temporal encoder or attention).
    """

    captions = True
    validation_metrics = _VALIDATION
    # a feature store depends on the data and the encoder, not on the decoder or training
    result_sections = {"extract": ("task", "data", "encoder")}
    items_file = "captions.json"

    def __init__(self, name: str, video: bool) -> None:
        self.name, self.video = name, video
        self.description = "video description" if video else "image description"
        self.cannot_caption = ""

    def build_model(self, cfg: Config, *, vocab_size: int = 0, num_classes: int = 0) -> nn.Module:
        """`lrcn.build.build_captioner` with a vocabulary of ``vocab_size`` words."""
        return build.build_captioner(cfg, vocab_size)

    def model_sizes(self, payload: dict[str, Any]) -> dict[str, int]:
        """The vocabulary the checkpoint was trained with."""
        return {"vocab_size": len(Vocabulary.from_dict(payload["vocab"]))}

    def prepare_run(self, run: Run) -> None:
        """The training split tokenized once (vocabulary, baseline caption, dataset), the
        validation split, their collates and the captioner."""
        cfg = run.cfg
        train_source = build.build_source(cfg, "train")
        tokenized = tokenize_source(train_source)  # once, for all three uses below
        if run.vocab is None:
            run.vocab = build_vocabulary(
                train_source, cfg.data.min_word_count, cfg.data.max_caption_length, tokenized
            )
        run.baseline_caption = (
            most_frequent_caption(train_source, tokenized) if cfg.eval.reference_points else ""
        )
        run.train_data = CaptionTrainDataset(
            train_source,
            run.vocab,
            cfg.data.max_caption_length,
            seed=cfg.train.seed,
            on_error=cfg.data.on_error,
            tokenized=tokenized,
        )
        del tokenized
        run.collate = make_caption_collate(train_source.is_video)
        run.val_data = CaptionEvalDataset(
            build.build_source(cfg, "val"),
            on_error=cfg.data.on_error,
            max_items=cfg.train.val_max_items,
        )
        run.val_collate = make_eval_collate(train_source.is_video)
        run.model = build.build_model(cfg, vocab_size=len(run.vocab))
        if hasattr(train_source, "check_encoder"):  # the store was made by this very encoder
            train_source.check_encoder(run.model.encoder)

    def validate(self, run: Run, loader: DataLoader) -> dict[str, Any]:
        """Greedy captions of the validation split: BLEU, CIDEr, the dataset's own content check
        (shapes: scene_accuracy), four sample captions and a picture grid of the first items."""
        hyps, refs, _ = generate_captions(
            run.model, loader, run.vocab, run.device, 1, run.cfg.eval.max_length
        )
        metrics = score_captions(refs, hyps, metrics=["bleu", "cider"], tokenizer="python")
        metrics.update(run.val_data.source.task_metrics(hyps))
        metrics["samples"] = [
            {"id": k, "caption": hyps[k], "reference": refs[k][0]} for k in list(hyps)[:4]
        ]
        # the same first items generate_captions decoded, for a picture grid
        first = next(iter(loader))
        key = "frames" if "frames" in first else "images" if "images" in first else None
        if key is not None:
            ids = first["ids"][:8]
            metrics["grid"] = (
                denormalise(first[key][:8], *build.normalisation(run.cfg)),
                [f"{hyps[i]}\n({refs[i][0]})" for i in ids],
            )
        return metrics

    def evaluate(
        self, model: nn.Module, cfg: Config, payload: dict[str, Any], split: str
    ) -> tuple[dict[str, Any], Files]:
        """`lrcn.split_evaluation.evaluate_captions`: metrics with intervals, per-item scores,
        reference points, captions, references and attention maps."""
        return evaluate_captions(model, cfg, payload, split)

    def report_rows(
        self, cfg: Config, files: EvaluationFiles, metrics: dict[str, Any], run_dir: Path
    ) -> tuple[list[tuple[str, str]], list[Row]]:
        """Each item's caption beside its references, scores and attention strip."""
        return caption_rows(cfg, files, metrics, run_dir)

    def model_summary(self, cfg: Config) -> str:
        """``encoder [+ temporal over frames] -> LSTM (wiring)``."""
        model = cfg.encoder.name
        if self.video:
            model += f" + {cfg.encoder.temporal} over frames"
        return f"{model} → LSTM ({cfg.decoder.variant})"

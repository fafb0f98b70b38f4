"""Self-critical sequence training (Rennie et al., CVPR 2017): CIDEr-D as a reward, greedy as baseline.

After cross-entropy training (``train.init_from``), each image gets ``train.scst_samples`` captions
sampled from the model; each sample's reward is its CIDEr-D against the image's references, and
the baseline is the CIDEr-D of the caption the model would output at test time (greedy). The
loss ``-mean((reward - baseline) * log p(sample))`` raises the probability of samples that beat
greedy decoding and lowers the others, optimising the evaluation metric directly.

Modes: the baseline is decoded with the model in eval mode (BatchNorm running statistics, no
dropout), so it is exactly what evaluation would output; the samples come from the model in
train mode, as any training step. The CNN therefore runs twice per batch, once without gradients.
The decoder's ``step()`` has no dropout, so only the encoder's BatchNorm differs between the two.

Words: references are the batch's own token rows (the training captions as the model sees them:
tokenized, cut at ``data.max_caption_length``), decoded with the vocabulary. ``<unk>`` is dropped
from references, samples and the document-frequency corpus alike, so the model earns nothing for
an unknown word.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lrcn import decoding, distributed
from lrcn.data.datasets import Source
from lrcn.engine.run import Run
from lrcn.errors import LrcnError
from lrcn.metrics import CiderD
from lrcn.models.decoder import LSTMDecoder
from lrcn.text.tokenize import tokenize
from lrcn.text.vocab import SPECIALS, Vocabulary

log = logging.getLogger(__name__)

DF_FILE = "cider_df.json"
Words = list[str]


def _unwrap(model: nn.Module) -> nn.Module:
    """The captioner inside a DDP wrapper (``DDP(_LossModule(captioner))``) or the model itself."""
    model = getattr(model, "module", model)
    return getattr(model, "model", model)


def training_references(
    source: Source, vocab: Vocabulary, max_caption_length: int
) -> list[list[Words]]:
    """Every training item's references as the reward sees them (see the module docstring)."""
    known = set(vocab.stoi) - set(SPECIALS)
    return [
        [[w for w in tokenize(c)[:max_caption_length] if w in known] for c in source.captions(i)]
        for i in range(len(source))
    ]


def load_or_build_cider(
    path: str | Path, source: Source, vocab: Vocabulary, max_caption_length: int
) -> CiderD:
    """CIDEr-D document frequencies over the training references, cached at ``path``.

    The cache is reused when it counts as many documents (items with references) as ``source``;
    otherwise it is rebuilt (the training data changed). Only the main process writes it.
    """
    path = Path(path)
    if path.is_file():
        cider = CiderD.load(path)
        documents = sum(1 for i in range(len(source)) if source.captions(i))
        if cider.num_documents == documents:
            log.info("CIDEr-D document frequencies from %s", path)
            return cider
        log.warning(
            "%s counts %d documents but the training split has %d; rebuilding it",
            path,
            cider.num_documents,
            documents,
        )
    items = [refs for refs in training_references(source, vocab, max_caption_length) if refs]
    cider = CiderD(dict(enumerate(items)))
    if distributed.is_main():
        cider.save(path)
        log.info(
            "CIDEr-D document frequencies over %d training items written to %s", len(items), path
        )
    return cider


class SelfCriticalLoss:
    """The engine's ``loss_fn`` for ``train.scst``: called as ``loss_fn(model, batch)``.

    Args:
        vocab: the model's vocabulary.
        cider: CIDEr-D with training-set document frequencies (see `load_or_build_cider`).
        num_samples: captions sampled per image.
        max_length: most words per sampled or greedy caption (``<end>`` excluded).
        log_every: calls between INFO lines with the mean reward and baseline.
    """

    def __init__(
        self,
        vocab: Vocabulary,
        cider: CiderD,
        num_samples: int = 5,
        max_length: int = 24,
        log_every: int = 20,
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}")
        self.vocab, self.cider = vocab, cider
        self.num_samples, self.max_length, self.log_every = num_samples, max_length, log_every
        self.calls = 0
        self.last_stats: dict[str, float] = {}
        self._totals = np.zeros(2)  # reward, baseline sums since the last log line

    @classmethod
    def from_run(cls, run: Run) -> SelfCriticalLoss:
        """Built from an ``lrcn.engine.Run``; document frequencies cached in ``<run_dir>/cider_df.json``."""
        cfg = run.cfg
        if run.vocab is None:
            raise LrcnError(
                f"train.scst is for captioning, not task `{cfg.task}`; set train.scst=false."
            )
        if cfg.train.scst_samples < 1:
            raise LrcnError(
                f"train.scst_samples is {cfg.train.scst_samples}; sample at least 1 caption per image."
            )
        if not cfg.train.init_from:
            log.warning(
                "train.scst starts from random weights: rewards stay near 0 until captions make "
                "sense; start from a cross-entropy checkpoint with train.init_from=PATH"
            )
        cider = load_or_build_cider(
            Path(run.run_dir) / DF_FILE,
            run.train_data.source,
            run.vocab,
            cfg.data.max_caption_length,
        )
        return cls(
            run.vocab,
            cider,
            cfg.train.scst_samples,
            cfg.eval.max_length,
            max(cfg.train.log_every_steps, 1),
        )

    # ---- words ---------------------------------------------------------------------------------
    def words(self, token_ids: Sequence[int]) -> Words:
        """Token ids -> words: up to ``<end>``, specials (``<unk>`` included) dropped."""
        return [w for w in self.vocab.decode(token_ids) if w not in SPECIALS]

    def references(self, batch: dict) -> list[list[Words]]:
        """References of each of the batch's B images: its token rows (``owner == i``) as words."""
        num_images = int(batch["size"]) if "size" in batch else int(batch["owner"].max()) + 1
        refs: list[list[Words]] = [[] for _ in range(num_images)]
        for owner, row in zip(batch["owner"].tolist(), batch["tokens"].tolist()):
            refs[owner].append(self.words(row))
        return refs

    # ---- rewards -------------------------------------------------------------------------------
    def rewards(
        self,
        samples: Sequence[Sequence[Words]],
        greedy: Sequence[Words],
        references: Sequence[list[Words]],
    ) -> tuple[np.ndarray, np.ndarray]:
        """CIDEr-D of every sample and of the greedy caption, all against the same references.

        Args:
            samples: per image, its sampled captions (K each).
            greedy: per image, its greedy caption.
            references: per image, its reference captions.

        Returns:
            (reward (B, K), baseline (B,)); images without references get 0 for both.
        """
        B, K = len(samples), len(samples[0]) if samples else 0
        reward, baseline = np.zeros((B, K)), np.zeros(B)
        scored = [i for i in range(B) if references[i]]
        if not scored:
            return reward, baseline
        # One call, one reference list object per image: CiderD scores every hypothesis of an
        # image against that one set, so a sample equal to the greedy caption gets its score.
        hyps = [list(s) for i in scored for s in samples[i]] + [list(greedy[i]) for i in scored]
        refs = [references[i] for i in scored for _ in range(K)] + [references[i] for i in scored]
        _, per_item = self.cider.score(refs, hyps)
        reward[scored] = per_item[: len(scored) * K].reshape(len(scored), K)
        baseline[scored] = per_item[len(scored) * K :]
        return reward, baseline

    # ---- decoding ------------------------------------------------------------------------------
    @torch.no_grad()
    def greedy_words(self, captioner: nn.Module, batch: dict) -> list[Words]:
        """Test-time captions (eval mode, greedy) of the batch's images, as words."""
        was_training = captioner.training
        captioner.eval()
        try:
            visual = captioner.encode(batch)  # (B, D)
            ids = decoding.greedy(
                captioner.decoder,
                visual,
                self.vocab.start_id,
                self.vocab.end_id,
                max_length=self.max_length,
                pad_id=self.vocab.pad_id,
            )
        finally:
            captioner.train(was_training)
        return [self.words(c) for c in ids]

    def sample(
        self, decoder: LSTMDecoder, visual: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample K captions per image with gradients (``lrcn.decoding.sample_sequences``).

        Args:
            visual: (B, D) visual features.

        Returns:
            (token ids (B*K, max_length), padded with ``<end>``; summed log-probabilities (B*K,) of
            the generated tokens up to and including the first ``<end>``), rows image-major.
        """
        return decoding.sample_sequences(
            decoder,
            visual,
            self.vocab.start_id,
            self.vocab.end_id,
            max_length=self.max_length,
            num_samples=self.num_samples,
            pad_id=self.vocab.pad_id,
        )

    # ---- the loss ------------------------------------------------------------------------------
    def policy_loss(
        self, captioner: nn.Module, batch: dict, references: list[list[Words]], greedy: list[Words]
    ) -> torch.Tensor:
        """REINFORCE with the greedy baseline: the part of the step that carries gradients."""
        visual = captioner.encode(batch)  # (B, D)
        B, K = visual.shape[0], self.num_samples
        ids, log_prob = self.sample(captioner.decoder, visual)  # (B*K, T), (B*K,)
        rows = [self.words(r) for r in ids.tolist()]
        samples = [rows[b * K : (b + 1) * K] for b in range(B)]
        reward, baseline = self.rewards(samples, greedy, references)  # (B, K), (B,)
        advantage = torch.as_tensor(
            (reward - baseline[:, None]).reshape(-1), dtype=log_prob.dtype, device=log_prob.device
        )  # (B*K,)
        self._record(float(reward.mean()), float(baseline.mean()))
        return -(advantage * log_prob).mean()

    def __call__(self, model: nn.Module, batch: dict) -> torch.Tensor:
        """The SCST loss of one training batch (``model``: a captioner, or its DDP wrapper)."""
        captioner = _unwrap(model)
        references = self.references(batch)
        greedy = self.greedy_words(captioner, batch)
        if not isinstance(model, nn.parallel.DistributedDataParallel):
            return self.policy_loss(captioner, batch, references, greedy)
        # DDP all-reduces only the gradients of a forward that ran through it, and its
        # _LossModule routes that forward to ``captioner.loss``: route it here for this call.
        wrapper = model.module
        wrapper.forward = lambda b: self.policy_loss(captioner, b, references, greedy)
        try:
            return model(batch)
        finally:
            del wrapper.forward

    def _record(self, reward: float, baseline: float) -> None:
        self.calls += 1
        self.last_stats = {"reward": reward, "baseline": baseline}
        self._totals += (reward, baseline)
        log.debug("scst: reward %.4f, baseline %.4f", reward, baseline)
        if self.calls % self.log_every == 0:
            mean_reward, mean_baseline = self._totals / self.log_every
            log.info(
                "scst: mean CIDEr-D reward %.4f, greedy baseline %.4f (last %d batches)",
                mean_reward,
                mean_baseline,
                self.log_every,
            )
            self._totals[:] = 0

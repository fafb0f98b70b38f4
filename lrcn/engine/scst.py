"""Self-critical sequence training (Rennie et al., CVPR 2017): CIDEr-D as a reward.

After cross-entropy training (``train.init_from``), each image gets ``train.scst_samples`` captions
sampled from the model at temperature 1, as long as evaluation's (``eval.max_length``); each
sample's reward is its CIDEr-D against the image's references, with document frequencies counted
over the training split (``cider_df.json``). The baseline (``train.scst_baseline``) is either

- ``greedy``: the CIDEr-D of the caption the model would output at test time (Rennie et al.), or
- ``mean``: the mean reward of the image's *other* samples ("new self-critical", Luo 2020): no
  greedy decode, and a baseline that never includes the sample it is compared with.

The loss ``-mean((reward - baseline) * log p(sample))``, ``log p`` summed over the sampled tokens
up to and including ``<end>`` and the mean taken over the B*K captions (per caption, as Rennie et
al. and ruotianluo's code do), raises the probability of samples that beat the baseline and lowers
the others, optimising the evaluation metric directly. ``pop_stats`` gives the means since its last
call of the reward, the baseline, the share of samples beating it and the sampling entropy per
token; fit logs them to TensorBoard under ``scst/``.

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
BASELINES = ("greedy", "mean")
STATS = ("reward", "baseline", "beat_baseline", "entropy", "sample_length")
Words = list[str]


def mean_of_others(reward: np.ndarray) -> np.ndarray:
    """Each sample's baseline under ``mean``: the mean reward of its image's other samples.

    Args:
        reward: (B, K) rewards, K >= 2.

    Returns:
        (B, K): ``(sum_j reward[b, j] - reward[b, k]) / (K - 1)``.
    """
    K = reward.shape[1]
    if K < 2:
        raise ValueError("the mean baseline needs at least 2 samples per image")
    return (reward.sum(axis=1, keepdims=True) - reward) / (K - 1)


class _EntropyProbe:
    """A step decoder that passes every call through and keeps each step's log-probabilities
    (detached), so the sampling entropy is measured on the very distributions drawn from; it uses
    only the ``init_state``/``step``/``reorder_state`` interface, so any decoder works."""

    def __init__(self, decoder: nn.Module, start_id: int, pad_id: int) -> None:
        self.decoder, self.start_id, self.pad_id = decoder, start_id, pad_id
        self.steps: list[torch.Tensor] = []

    def init_state(self, features: torch.Tensor) -> decoding.State:
        return self.decoder.init_state(features)

    def step(
        self, tokens: torch.Tensor, state: decoding.State
    ) -> tuple[torch.Tensor, decoding.State]:
        log_probs, state = self.decoder.step(tokens, state)
        self.steps.append(log_probs.detach())
        return log_probs, state

    def reorder_state(self, state: decoding.State, index: torch.Tensor) -> decoding.State:
        return self.decoder.reorder_state(state, index)

    def entropy(self, ids: torch.Tensor, end_id: int) -> tuple[float, float]:
        """(mean entropy in nats per generated token, mean tokens per sample incl. ``<end>``) of
        the rows ``ids`` (N, T): a step counts for a row until and including its first ``<end>``."""
        if not self.steps:
            return 0.0, 0.0
        T = len(self.steps)
        ended = (ids[:, :T] == end_id).long().cumsum(1)  # (N, T)
        live = (ended - (ids[:, :T] == end_id).long()) == 0  # not ended before step t
        total = 0.0
        for t, log_probs in enumerate(self.steps):
            policy = torch.log_softmax(
                decoding._forbid(log_probs, self.start_id, self.pad_id), dim=-1
            )
            h = -(policy.exp() * policy.nan_to_num(neginf=0.0)).sum(-1)  # (N,)
            total += float(h[live[:, t]].sum())
        count = float(live.sum())
        return total / max(count, 1.0), count / ids.shape[0]


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
        baseline: ``greedy`` (the image's greedy caption's reward) or ``mean`` (the mean reward of
            the image's other samples; needs ``num_samples >= 2``), see the module docstring.
    """

    def __init__(
        self,
        vocab: Vocabulary,
        cider: CiderD,
        num_samples: int = 5,
        max_length: int = 24,
        log_every: int = 20,
        baseline: str = "greedy",
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}")
        if baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
        if baseline == "mean" and num_samples < 2:
            raise ValueError("the mean baseline needs num_samples >= 2")
        self.vocab, self.cider, self.baseline = vocab, cider, baseline
        self.num_samples, self.max_length, self.log_every = num_samples, max_length, log_every
        self.calls = 0
        self.last_stats: dict[str, float] = {}
        self._totals = np.zeros(len(STATS))  # sums of STATS since the last log line
        self._pending = np.zeros(len(STATS) + 1)  # sums of STATS and calls since pop_stats

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
        baseline = getattr(cfg.train, "scst_baseline", "greedy")
        if baseline not in BASELINES or (baseline == "mean" and cfg.train.scst_samples < 2):
            raise LrcnError(
                f"train.scst_baseline is {baseline!r} with train.scst_samples "
                f"{cfg.train.scst_samples}; choose greedy, or mean with at least 2 samples."
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
            baseline,
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
        greedy: Sequence[Words] | None,
        references: Sequence[list[Words]],
    ) -> tuple[np.ndarray, np.ndarray]:
        """CIDEr-D of every sample and of the greedy caption, all against the same references.

        Args:
            samples: per image, its sampled captions (K each).
            greedy: per image, its greedy caption; None (the mean baseline): 0 for each.
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
        hyps = [list(s) for i in scored for s in samples[i]]
        refs = [references[i] for i in scored for _ in range(K)]
        if greedy is not None:
            hyps += [list(greedy[i]) for i in scored]
            refs += [references[i] for i in scored]
        _, per_item = self.cider.score(refs, hyps)
        reward[scored] = per_item[: len(scored) * K].reshape(len(scored), K)
        if greedy is not None:
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
        self, decoder: LSTMDecoder | _EntropyProbe, visual: torch.Tensor
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
        self,
        captioner: nn.Module,
        batch: dict,
        references: list[list[Words]],
        greedy: list[Words] | None,
    ) -> torch.Tensor:
        """REINFORCE with the configured baseline: the part of the step that carries gradients."""
        visual = captioner.encode(batch)  # (B, D)
        B, K = visual.shape[0], self.num_samples
        probe = _EntropyProbe(captioner.decoder, self.vocab.start_id, self.vocab.pad_id)
        ids, log_prob = self.sample(probe, visual)  # (B*K, T), (B*K,)
        rows = [self.words(r) for r in ids.tolist()]
        samples = [rows[b * K : (b + 1) * K] for b in range(B)]
        reward, greedy_reward = self.rewards(samples, greedy, references)  # (B, K), (B,)
        baseline = self.baselines(reward, greedy_reward)  # (B, K)
        advantage = torch.as_tensor(
            (reward - baseline).reshape(-1), dtype=log_prob.dtype, device=log_prob.device
        )  # (B*K,)
        entropy, length = probe.entropy(ids, self.vocab.end_id)
        beat = float((reward > baseline).mean()) if reward.size else 0.0
        self._record(
            dict(zip(STATS, (reward.mean(), baseline.mean(), beat, entropy, length), strict=True))
        )
        return -(advantage * log_prob).mean()

    def baselines(self, reward: np.ndarray, greedy_reward: np.ndarray) -> np.ndarray:
        """(B, K) baseline of each sample: its image's greedy reward, or its other samples' mean."""
        if self.baseline == "mean":
            return mean_of_others(reward)
        return np.broadcast_to(greedy_reward[:, None], reward.shape)

    def __call__(self, model: nn.Module, batch: dict) -> torch.Tensor:
        """The SCST loss of one training batch (``model``: a captioner, or its DDP wrapper)."""
        captioner = _unwrap(model)
        references = self.references(batch)
        greedy = self.greedy_words(captioner, batch) if self.baseline == "greedy" else None
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

    def pop_stats(self) -> dict[str, float]:
        """Means of ``STATS`` over the calls since the last ``pop_stats`` ({} if none), for
        TensorBoard: what the reward does during training, not just the loss."""
        calls = self._pending[-1]
        if not calls:
            return {}
        means = dict(zip(STATS, (self._pending[:-1] / calls).tolist(), strict=True))
        self._pending[:] = 0
        return means

    def _record(self, stats: dict[str, float]) -> None:
        self.calls += 1
        self.last_stats = {k: float(v) for k, v in stats.items()}
        values = np.array([self.last_stats[k] for k in STATS])
        self._totals += values
        self._pending += (*values, 1.0)
        log.debug("scst: %s", self.last_stats)
        if self.calls % self.log_every == 0:
            mean = dict(zip(STATS, self._totals / self.log_every, strict=True))
            log.info(
                "scst: mean CIDEr-D reward %.4f, %s baseline %.4f, %.0f%% beat it, entropy %.3f "
                "nats/token, %.1f tokens (last %d batches)",
                mean["reward"],
                self.baseline,
                mean["baseline"],
                100 * mean["beat_baseline"],
                mean["entropy"],
                mean["sample_length"],
                self.log_every,
            )
            self._totals[:] = 0

"""SCST's baselines (greedy, mean of the other samples), its reward statistics and their logs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import REPO, TINY_SHAPES
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from test_scst import CORPUS, _batch, _captioner, _loss_fn, _sequence_log_prob, _vocab

from lrcn.config import load_config
from lrcn.engine.scst import STATS, SelfCriticalLoss, mean_of_others
from lrcn.errors import LrcnError


def test_mean_baseline_of_a_toy_matrix():
    reward = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
    # by hand: each entry is the mean of the row's other two (exact in binary: halves of integers)
    assert mean_of_others(reward).tolist() == [[2.5, 2.0, 1.5], [3.0, 3.0, 0.0]]


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(2, 6)), elements=st.floats(0, 10)),
    st.floats(0, 10),
)
def test_mean_baseline_excludes_the_sample_itself(reward, other):
    base = mean_of_others(reward)
    changed = reward.copy()
    changed[0, 0] = other
    # a sample's own reward never enters its baseline: changing it leaves its baseline as it was
    # (0 ulps: the sum is recomputed, so allow float64 rounding of a sum of <= 6 values <= 10)
    assert mean_of_others(changed)[0, 0] == pytest.approx(base[0, 0], abs=1e-12)
    K = reward.shape[1]
    for k in range(K):
        others = np.delete(reward, k, axis=1).mean(axis=1)
        assert base[:, k] == pytest.approx(others, abs=1e-12)  # float64 sums of <= 6 values


class _SetRewards(SelfCriticalLoss):
    """Rewards set per sample (B, K); remembers what it sampled; counts greedy decodes."""

    set_reward = np.array([[1.0, 0.0]])
    greedy_calls = 0

    def rewards(self, samples, greedy, references):
        return self.set_reward.copy(), np.zeros(len(samples))

    def greedy_words(self, captioner, batch):
        self.greedy_calls += 1
        return super().greedy_words(captioner, batch)

    def sample(self, decoder, visual):
        ids, log_prob = super().sample(decoder, visual)
        self.drawn = ids
        return ids, log_prob


def test_mean_baseline_raises_the_better_sample_and_lowers_the_worse():
    vocab = _vocab()
    model = _captioner(len(vocab)).eval()  # eval: fixed BatchNorm statistics throughout
    batch = _batch(vocab, [["a red circle"]])
    loss_fn = _SetRewards(
        vocab, _loss_fn(vocab).cider, num_samples=2, max_length=6, baseline="mean"
    )
    torch.manual_seed(0)
    loss = loss_fn(model, batch)
    assert loss_fn.greedy_calls == 0  # the mean baseline decodes no greedy caption
    first, second = loss_fn.drawn[0], loss_fn.drawn[1]
    before = [_sequence_log_prob(model, batch, ids) for ids in (first, second)]
    # baselines 0 and 1 (each the other's reward): advantages +1 and -1
    stats = loss_fn.last_stats
    assert stats["baseline"] == 0.5 and stats["beat_baseline"] == 0.5
    # float32 rounding of two sums of a few log-probabilities (1e-5 is ~80 ulps)
    assert loss.item() == pytest.approx(-(before[0] - before[1]) / 2, rel=1e-5)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.01 * p.grad
    after = [_sequence_log_prob(model, batch, ids) for ids in (first, second)]
    if not torch.equal(first, second):  # the same caption twice gets no net push
        # a step of 0.01 moves each total (about -10) by ~0.01 or more, far beyond rounding
        assert after[0] > before[0] + 1e-4 and after[1] < before[1] - 1e-4


def test_statistics_count_the_end_token_and_measure_entropy():
    vocab = _vocab()
    model = _captioner(len(vocab)).eval()
    with torch.no_grad():  # "circle" twice as likely to end as to go on: a known distribution
        model.decoder.out.weight.zero_()
        model.decoder.out.bias.fill_(-1e4)
        model.decoder.out.bias[vocab.stoi["circle"]] = 0.0
        model.decoder.out.bias[vocab.end_id] = 0.0
    batch = _batch(vocab, [["a red circle"], ["a blue square"]])
    loss_fn = _loss_fn(vocab, num_samples=3)
    torch.manual_seed(0)
    loss_fn(model, batch)
    stats = loss_fn.last_stats
    assert set(stats) == set(STATS)
    # each step is a fair coin between two tokens: log 2 nats per token, <end> included (float32
    # rounding of one softmax over 16 logits)
    assert stats["entropy"] == pytest.approx(np.log(2), rel=1e-5)
    assert stats["sample_length"] >= 1.0  # every sample ends: <end> is a generated token
    popped = loss_fn.pop_stats()
    assert popped == pytest.approx(stats) and loss_fn.pop_stats() == {}


def test_reward_counts_document_frequency_over_the_training_split(tmp_path: Path):
    cfg = load_config(None, ["train.scst=true", "train.scst_baseline=mean"])
    run = SimpleNamespace(
        cfg=cfg, vocab=_vocab(), run_dir=tmp_path, train_data=SimpleNamespace(source=CORPUS)
    )
    loss_fn = SelfCriticalLoss.from_run(run)
    assert loss_fn.baseline == "mean" and loss_fn.cider.num_documents == len(CORPUS)
    assert loss_fn.max_length == cfg.eval.max_length  # samples as long as evaluation's captions
    assert loss_fn.cider.document_frequency(["circle"]) == 2  # CORPUS items 0 and 1
    assert loss_fn.cider.document_frequency(["square"]) == 2  # items 1 and 3


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.scst_baseline=median"], "`train.scst_baseline` is 'median'; choose one of greedy"),
        (
            ["train.scst=true", "train.scst_baseline=mean", "train.scst_samples=1"],
            "`train.scst_samples` is 1; set it to at least 2",
        ),
    ],
)
def test_a_baseline_the_config_cannot_use_is_one_sentence(overrides, message):
    with pytest.raises(LrcnError, match=message) as caught:
        load_config(None, overrides)
    assert str(caught.value).count(". ") == 0 and "\n" not in str(caught.value)


@pytest.mark.slow
@pytest.mark.parametrize("baseline", ["mean", "greedy"])
def test_fit_logs_the_reward_statistics(tiny_shapes_run: Path, tmp_path: Path, baseline: str):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lrcn.engine import fit

    overrides = [
        *TINY_SHAPES,
        "data.train_size=64",
        "train.epochs=1",
        "train.batch_size=16",
        "train.log_every_steps=2",
        "train.scst_samples=2",
        f"train.scst_baseline={baseline}",
        f"train.init_from={tiny_shapes_run / 'checkpoints' / 'best.pt'}",
    ]
    run_dir = tmp_path / "scst"
    fit(load_config(REPO / "configs" / "shapes_scst.yaml", overrides), run_dir)
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {f"scst/{k}" for k in STATS} <= tags
    shares = [e.value for e in events.Scalars("scst/beat_baseline")]
    assert len(shares) == 2 and all(0.0 <= s <= 1.0 for s in shares)  # 4 steps, every 2nd logged

"""Self-critical sequence training: references, rewards, the gradient's direction, the df cache, fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, TINY_SHAPES

from lrcn.build import build_captioner
from lrcn.config import load_config
from lrcn.data.datasets import Source
from lrcn.engine.scst import SelfCriticalLoss, load_or_build_cider
from lrcn.metrics import CiderD
from lrcn.text.vocab import Vocabulary

WORDS = "a red blue green circle square triangle big small left right of the to".split()


def _vocab() -> Vocabulary:
    return Vocabulary(WORDS)


def _encode(vocab: Vocabulary, captions: list[str]) -> torch.Tensor:
    rows = [vocab.encode(c.split()) for c in captions]
    tokens = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r)
    return tokens


class ListSource(Source):
    def __init__(self, captions: list[list[str]]) -> None:
        self.items = captions

    def __len__(self) -> int:
        return len(self.items)

    def captions(self, index: int) -> list[str]:
        return self.items[index]


CORPUS = ListSource(
    [
        ["a red circle", "a big red circle"],
        ["a blue square", "a small blue square to the left of a circle"],
        ["a green triangle", "the green triangle"],
        ["a red square", "a square"],
    ]
)


def _batch(vocab: Vocabulary, refs_per_image: list[list[str]], seed: int = 0) -> dict:
    """A train-collate batch: pixels for B images, their captions as token rows with ``owner``."""
    gen = torch.Generator().manual_seed(seed)
    captions = [c for refs in refs_per_image for c in refs]
    tokens = _encode(vocab, captions)
    lengths = (tokens != 0).sum(1)
    owner = torch.tensor([i for i, refs in enumerate(refs_per_image) for _ in refs])
    B = len(refs_per_image)
    images = torch.randn(B, 3, 32, 32, generator=gen)
    return {"images": images, "tokens": tokens, "lengths": lengths, "owner": owner, "size": B}


def _captioner(vocab_size: int, *extra: str):
    torch.manual_seed(0)
    cfg = load_config(
        None,
        [
            "data.image_size=32",
            "encoder.feature_dim=16",
            "decoder.embed_dim=8",
            "decoder.hidden_dim=16",
            "decoder.dropout=0",
            *extra,
        ],
    )
    return build_captioner(cfg, vocab_size)


def _loss_fn(vocab: Vocabulary, **kwargs) -> SelfCriticalLoss:
    refs = {i: [c.split() for c in CORPUS.captions(i)] for i in range(len(CORPUS))}
    return SelfCriticalLoss(vocab, CiderD(refs), max_length=8, **kwargs)


def test_references_are_the_batch_rows_of_each_image():
    vocab = _vocab()
    batch = _batch(vocab, [["a red circle", "a big zebra"], ["blue square"]])
    refs = _loss_fn(vocab).references(batch)
    # grouped by owner; <start>/<end>/<pad> gone, and <unk> (zebra) dropped as in the df corpus
    assert refs == [[["a", "red", "circle"], ["a", "big"]], [["blue", "square"]]]


def test_reward_and_baseline_use_the_same_references(monkeypatch):
    vocab = _vocab()
    loss_fn = _loss_fn(vocab, num_samples=3)
    refs = [[["a", "red", "circle"], ["a", "big", "red", "circle"]], [["a", "blue", "square"]]]
    samples = [[["a", "red", "circle"], ["a", "circle"], ["blue"]], [["a", "square"]] * 3]
    greedy = [["a", "circle"], ["a", "blue", "square"]]
    seen = []
    score = loss_fn.cider.score

    def spy(references, hyps):
        seen.extend(zip(map(tuple, hyps), references))
        return score(references, hyps)

    monkeypatch.setattr(loss_fn.cider, "score", spy)
    reward, baseline = loss_fn.rewards(samples, greedy, refs)
    assert reward.shape == (2, 3) and baseline.shape == (2,)
    # every hypothesis of image i, sampled or greedy, was scored against image i's references
    assert len(seen) == 8
    for hyp, references in seen:
        image = 0 if hyp in {("a", "red", "circle"), ("a", "circle"), ("blue",)} else 1
        assert references is refs[image]
    # so a sample equal to the greedy caption earns exactly the baseline
    assert reward[0, 1] == baseline[0] and reward[0, 0] > baseline[0] > reward[0, 2]
    assert baseline[1] > reward[1, 0]


def test_images_without_references_get_no_advantage():
    loss_fn = _loss_fn(_vocab(), num_samples=2)
    reward, baseline = loss_fn.rewards(
        [[["a"], ["a", "circle"]], [["b"], ["c"]]], [["a"], ["b"]], [[["a", "circle"]], []]
    )
    assert reward[1].tolist() == [0.0, 0.0] and baseline[1] == 0.0 and reward[0, 1] > 0


def test_samples_equal_to_greedy_give_zero_loss():
    vocab = _vocab()
    model = _captioner(len(vocab)).eval()  # one BatchNorm mode for samples and greedy alike
    with torch.no_grad():  # a certain decoder: "circle" every time, sampled or greedy
        model.decoder.out.weight.zero_()
        model.decoder.out.bias.fill_(-50.0)
        model.decoder.out.bias[vocab.stoi["circle"]] = 50.0
    batch = _batch(vocab, [["a red circle", "a big red circle"], ["a blue square"]])
    loss_fn = _loss_fn(vocab, num_samples=4)
    loss = loss_fn(model, batch)
    assert loss_fn.last_stats["reward"] == loss_fn.last_stats["baseline"] > 0
    assert loss.item() == 0.0


def test_baseline_is_decoded_in_eval_mode_and_train_mode_is_restored(monkeypatch):
    from lrcn import decoding

    vocab = _vocab()
    model = _captioner(len(vocab)).train()
    modes = []
    greedy = decoding.greedy

    def spy(*args, **kwargs):
        modes.append(model.training)
        return greedy(*args, **kwargs)

    monkeypatch.setattr(decoding, "greedy", spy)
    batch = _batch(vocab, [["a red circle"], ["a blue square"]])
    # a set reward above the baseline: with CIDEr the seeded samples and the greedy baseline can
    # all score 0 (they did once small_cnn lost its BatchNorm-fed biases), an advantage of 0 and
    # no gradient at all, whatever the code does
    loss_fn = _FixedReward(vocab, CiderD({0: [["a"]], 1: [["a"]]}), num_samples=2, max_length=8)
    loss = loss_fn(model, batch)
    assert modes == [False] and model.training
    loss.backward()  # the sampled half carries gradients into the CNN
    assert model.encoder.trunk.fc[1].weight.grad.abs().sum() > 0


class _FixedReward(SelfCriticalLoss):
    """A set reward against a baseline of 0.5; remembers what it sampled."""

    reward = 1.0

    def rewards(self, samples, greedy, references):
        return np.full((len(samples), self.num_samples), self.reward), np.full(len(samples), 0.5)

    def sample(self, decoder, visual):
        ids, log_prob = super().sample(decoder, visual)
        self.drawn, self.log_prob = ids, log_prob.detach()
        return ids, log_prob


def _sequence_log_prob(model, batch, ids: torch.Tensor) -> float:
    """Total log-probability of one token row (cut after <end>) under the sampling policy: the
    model's distribution renormalised over the tokens other than <pad> (0) and <start> (1)."""
    with torch.no_grad():
        state = model.decoder.init_state(model.encode(batch))
        total, previous = 0.0, torch.tensor([1])
        for token in ids.tolist():
            log_probs, state = model.decoder.step(previous, state)
            log_probs = log_probs.index_fill(-1, torch.tensor([0, 1]), float("-inf"))
            total += torch.log_softmax(log_probs, -1)[0, token].item()
            if token == 2:
                break
            previous = torch.tensor([token])
    return total


@pytest.mark.parametrize("variant", ["show_tell", "transformer"])  # an LSTM, a key/value cache
@pytest.mark.parametrize("reward", [1.0, 0.0])
def test_gradient_moves_a_sample_with_its_advantage(reward, variant):
    vocab = _vocab()
    # eval: BatchNorm uses fixed statistics throughout
    model = _captioner(len(vocab), f"decoder.variant={variant}").eval()
    batch = _batch(vocab, [["a red circle"]])
    loss_fn = _FixedReward(vocab, CiderD({0: [["a"]]}), num_samples=1, max_length=6)
    loss_fn.reward = reward
    torch.manual_seed(0)
    loss = loss_fn(model, batch)
    ids = loss_fn.drawn[0]
    assert ids[0] != 2  # a caption with words, not a bare <end>
    before = _sequence_log_prob(model, batch, ids)
    # one forward two ways (sampling and stepping): float32 rounding of a sum of a few
    # log-probabilities, so the bound is relative to the total (1e-5 is ~80 ulps; was abs=1e-5)
    assert before == pytest.approx(loss_fn.log_prob.item(), rel=1e-5)  # incl. <end>, not past it
    assert loss.item() == pytest.approx(-(reward - 0.5) * before, rel=1e-5)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p -= 0.01 * p.grad
    after = _sequence_log_prob(model, batch, ids)
    # one step of 0.01 moves the total (about -13.6) by 0.075 either way (show_tell; measured
    # for the transformer from about -13.2: +2.0 and -2.3), far beyond rounding
    if reward > 0.5:
        assert after > before + 1e-4  # above the baseline: more likely
    else:
        assert after < before - 1e-4  # below: less likely


def test_document_frequencies_are_cached_once_and_reused(tmp_path: Path, monkeypatch):
    vocab = _vocab()
    path = tmp_path / "run" / "cider_df.json"
    saves = []
    save = CiderD.save
    monkeypatch.setattr(CiderD, "save", lambda self, p: (saves.append(p), save(self, p)))
    first = load_or_build_cider(path, CORPUS, vocab, 24)
    assert path.is_file() and len(saves) == 1
    stamp = path.stat().st_mtime_ns

    def no_counting(*args, **kwargs):
        raise AssertionError("the cached document frequencies should have been reused")

    with monkeypatch.context() as m:
        m.setattr("lrcn.engine.scst.CiderD.__init__", no_counting)
        second = load_or_build_cider(path, CORPUS, vocab, 24)
    assert len(saves) == 1 and path.stat().st_mtime_ns == stamp
    hyp, refs = [["a", "red", "circle"]], [[["a", "red", "circle"], ["a", "circle"]]]
    assert second.score(refs, hyp)[0] == first.score(refs, hyp)[0] > 0
    assert second.document_frequency(["circle"]) == 2  # items 0 and 1 mention a circle
    # a different training split (here one more item) makes the cache stale: it is rebuilt
    bigger = ListSource([*CORPUS.items, ["a big green circle"]])
    third = load_or_build_cider(path, bigger, vocab, 24)
    assert len(saves) == 2 and third.num_documents == 5


def test_document_frequencies_count_the_words_the_batch_carries(tmp_path: Path):
    vocab = _vocab()
    source = ListSource([["A red zebra, left of the circle!"], ["a circle"]])
    cider = load_or_build_cider(tmp_path / "df.json", source, vocab, 3)
    # tokenized, cut at max_caption_length (3 tokens: "a red zebra"), unknown words dropped
    assert cider.document_frequency(["red"]) == 1
    assert cider.document_frequency(["circle"]) == 1
    assert cider.document_frequency(["zebra"]) == 0
    assert cider.document_frequency(["a", "red"]) == 1


def test_ddp_routes_the_policy_gradient_through_the_wrapper(tmp_path: Path):
    import torch.distributed as dist

    from lrcn.distributed import _LossModule

    vocab = _vocab()
    batch = _batch(vocab, [["a red circle", "a big red circle"], ["a blue square"]])
    bare = _captioner(len(vocab)).train()
    wrapped = _captioner(len(vocab)).train()
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        ddp = torch.nn.parallel.DistributedDataParallel(_LossModule(wrapped))
        torch.manual_seed(5)
        expected = _loss_fn(vocab, num_samples=3)(bare, batch)
        torch.manual_seed(5)
        got = _loss_fn(vocab, num_samples=3)(ddp, batch)
        torch.testing.assert_close(got, expected)
        expected.backward()
        got.backward()
        for p, q in zip(bare.parameters(), wrapped.parameters()):
            torch.testing.assert_close(q.grad, p.grad)
        # the wrapper is handed back: its forward is the cross-entropy loss again
        torch.testing.assert_close(ddp(batch), wrapped.loss(batch))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_fit_with_scst_from_a_cross_entropy_checkpoint(tiny_shapes_run: Path, tmp_path: Path):
    from lrcn.engine import fit

    init = tiny_shapes_run / "checkpoints" / "best.pt"
    overrides = [
        *TINY_SHAPES,
        "data.train_size=64",
        "train.epochs=1",
        "train.batch_size=16",
        "train.scst=true",
        "train.scst_samples=2",
        f"train.init_from={init}",
        "train.lr=5e-5",
        "train.scheduler=none",
        "train.monitor=CIDEr",
    ]
    run_dir = tmp_path / "scst"
    summary = fit(load_config(REPO / "configs" / "shapes_scst.yaml", overrides), run_dir)
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert (run_dir / "checkpoints" / "best.pt").is_file()
    assert (run_dir / "cider_df.json").is_file()
    assert summary["monitor"] == "CIDEr" and summary["best"] is not None
    assert Vocabulary.load(run_dir / "vocab.json") == Vocabulary.load(
        tiny_shapes_run / "vocab.json"
    )
    assert CiderD.load(run_dir / "cider_df.json").num_documents == 64


def test_from_run_rejects_settings_a_user_can_fix(tmp_path: Path):
    from types import SimpleNamespace

    from lrcn.errors import LrcnError

    with pytest.raises(LrcnError, match="train.scst_samples.* is 0, which cannot work"):
        load_config(None, ["train.scst=true", "train.scst_samples=0"])  # refused at load time
    cfg = load_config(None, ["train.scst=true"])
    cfg.train.scst_samples = 0  # a config built in code, past the loader's checks
    run = SimpleNamespace(cfg=cfg, vocab=_vocab(), run_dir=tmp_path, train_data=None)
    with pytest.raises(LrcnError, match="train.scst_samples is 0"):
        SelfCriticalLoss.from_run(run)
    activity = SimpleNamespace(cfg=load_config(None, ["task=activity"]), vocab=None)
    with pytest.raises(LrcnError, match="for captioning"):
        SelfCriticalLoss.from_run(activity)

"""The ``transformer`` wirings: the key/value cache, decoding through it, training, maps, files.

Decoding steps one word at a time through the cache of every layer's past keys and values; the
reference is `Recompute`, a decoder that reruns the whole prefix through teacher forcing's
parallel pass at every step (what decoding without a cache costs). The two compute the same
attention sums in different groupings (one query row against t keys, or a (t, t) product with the
future masked to zero weight), so they agree to float32 rounding, not bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lrcn import decoding
from lrcn.build import build_captioner, check_config
from lrcn.cli import main
from lrcn.config import load_config
from lrcn.errors import LrcnError
from lrcn.models.decoder import LSTMDecoder
from lrcn.state_dicts import load_state_dict_checked

V, START, END = 23, 1, 2
# Float32 rounding of the attention and feed-forward sums: cached and recomputed log-probabilities
# (of magnitude up to ~14 here: float32's ulp there is 9.5e-7) differ by at most 3.8e-6 measured
# over 150 random cases of the property test below and the beam searches (width 32, 1-3 layers,
# prefixes up to 12 words), 4 ulps; 1e-5 is 10 ulps, a 2.6x margin, while a wrong position or a
# stale cache moves them by more than 1e-2.
BOUND = 1e-5


def _decoder(
    variant: str = "transformer", layers: int = 2, seed: int = 0, **options
) -> LSTMDecoder:
    torch.manual_seed(seed)
    decoder = LSTMDecoder(V, 16, embed_dim=24, hidden_dim=32, num_layers=layers, variant=variant,
                          heads=4, **options).eval()  # fmt: skip
    with torch.no_grad():
        decoder.out.weight.mul_(4)  # confident: captions differ by image, log-probs up to ~12
        decoder.out.bias[END] -= 2.0  # captions of several words, not <end> first
    return decoder


class Recompute:
    """A step decoder without a cache: every step reruns teacher forcing over the whole prefix
    and reads the last position (decoding's cost without the cache), recording each step's
    log-probabilities."""

    def __init__(self, decoder: LSTMDecoder) -> None:
        self.decoder, self.log_probs = decoder, []

    def init_state(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        B = features.shape[0]
        prefix = torch.zeros(B, 0, dtype=torch.long, device=features.device)
        return {"visual": self.decoder.visual_proj(features), "prefix": prefix}

    def step(self, tokens: torch.Tensor, state: dict[str, torch.Tensor]):
        prefix = torch.cat([state["prefix"], tokens[:, None]], dim=1)  # (B, t)
        words = self.decoder.embed(prefix)
        steps = torch.full((prefix.shape[0],), prefix.shape[1])
        hidden = self.decoder.wiring.hidden_states(state["visual"], words, steps, lambda x: x)
        log_probs = torch.log_softmax(self.decoder.out(hidden[:, -1]).float(), dim=-1)
        self.log_probs.append(log_probs)
        return log_probs, {**state, "prefix": prefix}

    def reorder_state(self, state: dict[str, torch.Tensor], index: torch.Tensor):
        return {k: v.index_select(0, index) for k, v in state.items()}


class Recording:
    """The decoder itself, recording each step's log-probabilities and batch size."""

    def __init__(self, decoder: LSTMDecoder) -> None:
        self.decoder, self.log_probs, self.batches = decoder, [], []

    def init_state(self, features: torch.Tensor):
        return self.decoder.init_state(features)

    def step(self, tokens: torch.Tensor, state):
        log_probs, state = self.decoder.step(tokens, state)
        self.log_probs.append(log_probs)
        self.batches.append(tokens.shape[0])
        return log_probs, state

    def reorder_state(self, state, index: torch.Tensor):
        return self.decoder.reorder_state(state, index)


def _features(B: int = 6, N: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randn(B, N, 16, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("beam_size", [1, 3])
def test_cached_decoding_equals_recomputing_the_prefix(beam_size: int):
    decoder, features = _decoder(), _features()
    cached, recomputed = Recording(decoder), Recompute(decoder)
    with torch.no_grad():
        ours = decoding.beam_search(cached, features, START, END, max_length=12,
                                    beam_size=beam_size)  # fmt: skip
        theirs = decoding.beam_search(recomputed, features, START, END, max_length=12,
                                      beam_size=beam_size)  # fmt: skip
    assert ours == theirs and len({tuple(c) for c in ours}) > 1  # captions differ by image
    assert max(len(c) for c in ours) > 3
    assert len(cached.log_probs) == len(recomputed.log_probs) > 3
    worst = max((a - b).abs().max().item() for a, b in zip(cached.log_probs, recomputed.log_probs))
    assert worst < BOUND, worst


def test_beam_size_one_is_greedy_exactly():
    decoder, features = _decoder(), _features()
    greedy = decoding.greedy(decoder, features, START, END, max_length=12)
    assert decoding.beam_search(decoder, features, START, END, max_length=12, beam_size=1) == greedy
    assert decoding.best_of_n(decoder, features, START, END, max_length=12, num_samples=2,
                              temperature=0.0) == greedy  # fmt: skip


def test_a_hundred_images_by_five_beams_is_one_batched_call():
    decoder = _decoder(layers=1)
    recording = Recording(decoder)
    captions = decoding.beam_search(recording, _features(B=100, N=4), START, END, max_length=8,
                                    beam_size=5)  # fmt: skip
    assert len(captions) == 100
    # one step call per word for all 500 beams: no Python loop over images or beams
    assert recording.batches == [500] * len(recording.batches) and len(recording.batches) <= 8


@settings(max_examples=12, deadline=None)
@given(batch=st.integers(1, 4), length=st.integers(2, 9), cells=st.integers(1, 7),
       layers=st.integers(1, 3), seed=st.integers(0, 2**16))  # fmt: skip
def test_teacher_forcing_equals_stepping_through_the_cache(batch, length, cells, layers, seed):
    decoder = _decoder(layers=layers, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, cells, 16, generator=gen)
    tokens = torch.randint(4, V, (batch, length), generator=gen)
    tokens[:, 0] = START
    lengths = torch.randint(2, length + 1, (batch,), generator=gen)
    with torch.no_grad():
        forced = torch.log_softmax(decoder(features, tokens, lengths).float(), dim=-1)
        state, stepped = decoder.init_state(features), []
        for t in range(length - 1):
            log_probs, state = decoder.step(tokens[:, t], state)
            stepped.append(log_probs)
    assert state["keys"].shape == (batch, layers, 4, length - 1, 8)  # one cached position a word
    valid = torch.arange(length - 1)[None] < (lengths[:, None] - 1)
    # BOUND: see its comment (the same sums grouped two ways)
    torch.testing.assert_close(torch.stack(stepped, 1)[valid], forced[valid], atol=BOUND, rtol=0)


def _train(variant: str, steps: int = 30) -> list[float]:
    """A few Adam steps on one fixed batch; the losses."""
    inputs = ["task=caption", "data.dataset=shapes", "data.image_size=32", "encoder.feature_dim=16",
              "decoder.embed_dim=16", "decoder.hidden_dim=32", f"decoder.variant={variant}"]  # fmt: skip
    torch.manual_seed(0)
    model = build_captioner(load_config(None, inputs), V)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(4, V, (8, 7), generator=gen)
    tokens[:, 0], tokens[:, -1] = START, END
    batch = {"images": torch.randn(8, 3, 32, 32, generator=gen), "tokens": tokens,
             "lengths": torch.full((8,), 7)}  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        loss = model.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("variant", ["transformer", "transformer_vector"])
def test_the_grid_and_the_one_vector_paths_train(variant: str):
    losses = _train(variant)
    # 8 random captions memorised: the first loss is near log(23) = 3.1, and a model that learns
    # halves it within 30 steps (measured: 3.2 -> under 0.6 on both paths); one that does not
    # learn stays near 3.
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3, losses


def test_attention_maps_have_the_grids_shape_and_sum_to_one():
    decoder, features = _decoder(), _features(B=3, N=16)
    captions = decoding.greedy(decoder, features, START, END, max_length=6)
    maps = decoding.attention_weights(decoder, features, captions, START, END)
    for caption, weights in zip(captions, maps):
        assert weights.shape == (len(caption) + 1, 16)  # a row per word and <end>, a 4 x 4 grid
        # a float32 softmax over 16 cells, averaged over 4 heads: 1 within a few ulps
        torch.testing.assert_close(weights.sum(-1), torch.ones(len(caption) + 1), atol=1e-6,
                                   rtol=0)  # fmt: skip
    assert not torch.allclose(maps[0][0], torch.full((16,), 1 / 16))  # it looks somewhere


def test_a_checkpoint_round_trip_keeps_the_outputs(tmp_path: Path):
    decoder, features = _decoder(), _features(B=2)
    tokens = torch.tensor([[START, 5, 6, END], [START, 7, END, 0]])
    lengths = torch.tensor([4, 3])
    path = tmp_path / "decoder.pt"
    torch.save(decoder.state_dict(), path)
    keys = list(torch.load(path))
    assert keys[0].startswith("embed.") and keys[-1].startswith("out.")
    assert "layers.0.self_qkv.weight" in keys and not any(k.startswith("wiring.") for k in keys)
    loaded = _decoder(seed=5)  # other weights: the outputs below come from the file
    load_state_dict_checked(loaded, torch.load(path), str(path))
    with torch.no_grad():
        assert torch.equal(loaded(features, tokens, lengths), decoder(features, tokens, lengths))


def test_heads_that_do_not_divide_the_width_are_one_sentence(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a refused run leaves nothing behind, but not in the repository
    cfg = load_config(None, ["decoder.variant=transformer", "decoder.hidden_dim=30",
                             "decoder.heads=4"])  # fmt: skip
    with pytest.raises(
        LrcnError, match=r"hidden_dim` 30 is not a multiple of `decoder.heads` 4.*e\.g\. 2\.$"
    ):
        check_config(cfg, "run.yaml")
    check_config(load_config(None, ["decoder.hidden_dim=30", "decoder.heads=4"]))  # LSTM: ignored
    with pytest.raises(LrcnError, match="decoder.heads"):
        load_config(None, ["decoder.heads=0"])
    assert main(["train", "-c", "shapes_transformer", "decoder.heads=7"]) == 2  # before any work
    err = capsys.readouterr().err
    assert "is not a multiple of `decoder.heads` 7" in err and "Traceback" not in err


def test_the_decoding_benchmark_runs_and_its_decoders_agree():
    import importlib.util

    from conftest import REPO

    path = REPO / "scripts" / "benchmarks" / "transformer_decode.py"
    spec = importlib.util.spec_from_file_location("transformer_decode", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.measure("quick")
    assert result["captions_identical"]  # cached and recomputed beams choose the same words
    assert result["words_per_caption"] == [result["words"]]  # <end> unreachable: equal work
    assert set(result["captions_per_s"]) == {"cached", "recompute", "lstm"}

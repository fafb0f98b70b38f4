import pytest
import torch

from lrcn import decoding
from lrcn.models.decoder import VARIANTS, LSTMDecoder


def _batch(B=5, L=7, V=30):
    tokens = torch.randint(4, V, (B, L))
    tokens[:, 0] = 1
    lengths = torch.tensor([L, 5, 6, 3, L][:B])
    for i, n in enumerate(lengths):
        tokens[i, n - 1] = 2
        tokens[i, n:] = 0
    return tokens, lengths


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_shapes_and_step_equals_teacher_forcing(variant):
    torch.manual_seed(0)
    decoder = LSTMDecoder(30, 16, 8, 12, num_layers=2, variant=variant).eval()
    features = torch.randn(5, 16)
    tokens, lengths = _batch()
    logits = decoder(features, tokens, lengths)
    assert logits.shape == (5, 6, 30)
    state = decoder.init_state(features)
    stepped = []
    for t in range(6):
        log_probs, state = decoder.step(tokens[:, t], state)
        stepped.append(log_probs)
    stepped = torch.stack(stepped, 1)
    valid = torch.arange(6)[None] < (lengths[:, None] - 1)
    assert torch.allclose(stepped[valid], torch.log_softmax(logits, -1)[valid], atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_beam_one_and_cold_sampling_equal_greedy(variant):
    torch.manual_seed(1)
    decoder = LSTMDecoder(25, 10, 8, 16, variant=variant).eval()
    features = torch.randn(8, 10)
    greedy = decoding.greedy(decoder, features, 12, 1, 2)
    assert decoding.beam_search(decoder, features, 1, 12, 1, 2) == greedy
    samples, _ = decoding.sample(decoder, features, 12, 1, 2, temperature=0.0)
    assert [s[0] for s in samples] == greedy
    with torch.no_grad():  # a confident model, so that a tiny temperature is deterministic
        decoder.out.weight.mul_(50)
    greedy = decoding.greedy(decoder, features, 12, 1, 2)
    samples, _ = decoding.sample(decoder, features, 12, 1, 2, temperature=1e-3, num_samples=3)
    assert all(s == [g] * 3 for s, g in zip(samples, greedy))


def test_batched_beam_equals_one_image_at_a_time_and_never_repeats_end():
    torch.manual_seed(2)
    decoder = LSTMDecoder(20, 6, 8, 16).eval()
    features = torch.randn(6, 6)
    batched = decoding.beam_search(decoder, features, 4, 10, 1, 2, length_penalty=1.0)
    single = [
        decoding.beam_search(decoder, features[i : i + 1], 4, 10, 1, 2, length_penalty=1.0)[0]
        for i in range(6)
    ]
    assert batched == single
    assert all(2 not in caption and len(caption) <= 10 for caption in batched)


def test_beam_finds_a_sequence_at_least_as_likely_as_greedy():
    torch.manual_seed(3)
    decoder = LSTMDecoder(15, 6, 8, 16).eval()
    features = torch.randn(10, 6)

    def log_prob(caption, i):
        state = decoder.init_state(features[i : i + 1])
        total, prev = 0.0, 1
        for tok in [*caption, 2]:
            lp, state = decoder.step(torch.tensor([prev]), state)
            total += lp[0, tok].item()
            prev = tok
        return total

    greedy = decoding.greedy(decoder, features, 8, 1, 2)
    beam = decoding.beam_search(decoder, features, 5, 8, 1, 2)
    for i in range(10):
        if len(greedy[i]) < 8 and len(beam[i]) < 8:  # both finished: comparable totals
            assert log_prob(beam[i], i) >= log_prob(greedy[i], i) - 1e-4

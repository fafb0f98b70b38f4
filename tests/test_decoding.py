import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lrcn import decoding
from lrcn.models.decoder import VARIANTS, LSTMDecoder
from lrcn.models.wirings import get_wiring

# the built-in wirings that read one visual vector (B, E): the attention ones need a grid or frames
ONE_VECTOR = tuple(v for v in VARIANTS if get_wiring(v).attends is None)


def _batch(B=5, L=7, V=30):
    tokens = torch.randint(4, V, (B, L))
    tokens[:, 0] = 1
    lengths = torch.tensor([L, 5, 6, 3, L][:B])
    for i, n in enumerate(lengths):
        tokens[i, n - 1] = 2
        tokens[i, n:] = 0
    return tokens, lengths


@pytest.mark.parametrize("variant", ONE_VECTOR)
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
    expected = torch.log_softmax(logits, -1)[valid]
    # One forward two ways (batched and step by step): float32 rounding only, so the bound is 32
    # ulps of the largest log-probability (4 ulps measured on default, AVX2 and AVX-512 kernels).
    bound = 32 * torch.finfo(torch.float32).eps * expected.abs().max().item()
    torch.testing.assert_close(stepped[valid], expected, atol=bound, rtol=0)


@pytest.mark.parametrize("variant", ONE_VECTOR)
def test_beam_one_and_cold_sampling_equal_greedy(variant):
    torch.manual_seed(1)
    decoder = LSTMDecoder(25, 10, 8, 16, variant=variant).eval()
    features = torch.randn(8, 10)
    greedy = decoding.greedy(decoder, features, 1, 2, max_length=12)
    assert decoding.beam_search(decoder, features, 1, 2, max_length=12, beam_size=1) == greedy
    samples, _ = decoding.sample(decoder, features, 1, 2, max_length=12, temperature=0.0)
    assert [s[0] for s in samples] == greedy
    with torch.no_grad():  # a confident model, so that a tiny temperature is deterministic
        decoder.out.weight.mul_(50)
    greedy = decoding.greedy(decoder, features, 1, 2, max_length=12)
    samples, _ = decoding.sample(
        decoder, features, 1, 2, max_length=12, num_samples=3, temperature=1e-5
    )
    assert all(s == [g] * 3 for s, g in zip(samples, greedy))


def test_batched_beam_equals_one_image_at_a_time_and_never_repeats_end():
    torch.manual_seed(2)
    decoder = LSTMDecoder(20, 6, 8, 16).eval()
    features = torch.randn(6, 6)
    batched = decoding.beam_search(
        decoder, features, 1, 2, max_length=10, beam_size=4, length_penalty=1.0
    )
    single = [
        decoding.beam_search(
            decoder, features[i : i + 1], 1, 2, max_length=10, beam_size=4, length_penalty=1.0
        )[0]
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

    greedy = decoding.greedy(decoder, features, 1, 2, max_length=8)
    beam = decoding.beam_search(decoder, features, 1, 2, max_length=8, beam_size=5)
    for i in range(10):
        if len(greedy[i]) < 8 and len(beam[i]) < 8:  # both finished: comparable totals
            # a tie may be broken by rounding: allow 1e-5 of the total (~80 float32 ulps)
            assert log_prob(beam[i], i) >= log_prob(greedy[i], i) * (1 + 1e-5)


# ---- defect 9: <pad> (0) and <start> (1) are never decoded -------------------------------------
PAD, START, END = 0, 1, 2


def _biased_decoder(bias, variant="show_tell", seed=0):
    """A decoder whose next-token distribution is fixed by the output bias alone."""
    torch.manual_seed(seed)
    decoder = LSTMDecoder(len(bias), 5, 6, 8, variant=variant).eval()
    with torch.no_grad():
        decoder.out.weight.zero_()
        decoder.out.bias.copy_(torch.tensor(bias, dtype=torch.float))
    return decoder


def _no_specials(captions):
    return all(PAD not in c and START not in c for c in captions)


def test_greedy_takes_the_best_valid_token_not_start():
    decoder = _biased_decoder([0, 5, 0, 0, 4, 0])  # <start> most likely, then word 4
    assert decoding.greedy(decoder, torch.randn(1, 5), START, END, max_length=4) == [[4, 4, 4, 4]]


def test_greedy_never_emits_pad():
    decoder = _biased_decoder([6, 0, 1, 0, 0, 0])  # <pad> most likely, then <end>
    assert decoding.greedy(decoder, torch.randn(2, 5), START, END, max_length=4) == [[], []]


def test_beam_search_never_emits_pad_or_start():
    decoder = _biased_decoder([5, 5, 0, 0, 3, 2])
    beams = decoding.beam_search(decoder, torch.randn(3, 5), START, END, max_length=5, beam_size=3)
    assert beams == [[4, 4, 4, 4, 4]] * 3


def test_sampling_and_best_of_n_never_emit_pad_or_start():
    decoder = _biased_decoder([4, 4, 0, 1, 1, 1])  # specials hold ~90% of the mass
    features = torch.randn(4, 5)
    gen = torch.Generator().manual_seed(0)
    for temperature in (1.0, 0.7, 0.0):
        samples, _ = decoding.sample(
            decoder,
            features,
            START,
            END,
            max_length=6,
            num_samples=8,
            temperature=temperature,
            generator=gen,
        )
        assert all(_no_specials(s) for s in samples), temperature
    assert _no_specials(
        decoding.best_of_n(
            decoder, features, START, END, max_length=6, num_samples=4, generator=gen
        )
    )


@settings(max_examples=40, deadline=None)
@given(
    vocab=st.integers(5, 8),
    variant=st.sampled_from(ONE_VECTOR),
    seed=st.integers(0, 2**16),
    scale=st.floats(0.0, 8.0),
    beam=st.integers(2, 4),
)
def test_no_decoder_ever_emits_pad_or_start_and_beam_one_is_greedy(
    vocab, variant, seed, scale, beam
):
    torch.manual_seed(seed)
    decoder = LSTMDecoder(vocab, 5, 6, 8, variant=variant).eval()
    with torch.no_grad():
        decoder.out.bias.copy_(torch.randn(vocab) * scale)
        decoder.out.weight.mul_(scale)
    features = torch.randn(3, 5)
    greedy = decoding.greedy(decoder, features, START, END, max_length=6)
    assert _no_specials(greedy)
    assert decoding.beam_search(decoder, features, START, END, max_length=6, beam_size=1) == greedy
    assert _no_specials(
        decoding.beam_search(decoder, features, START, END, max_length=6, beam_size=beam)
    )
    gen = torch.Generator().manual_seed(seed)
    samples, _ = decoding.sample(
        decoder, features, START, END, max_length=6, num_samples=3, generator=gen
    )
    assert all(_no_specials(s) for s in samples)


# (function, the positional ints that once followed (decoder, features): sizes first or ids first)
POSITIONAL_SIZES = [
    (decoding.greedy, (12, 1, 2)),
    (decoding.beam_search, (3, 12, 1, 2)),
    (decoding.decode, (12, 1, 2, 3)),
    (decoding.sample, (12, 1, 2, 1.0, 2)),
    (decoding.sample_sequences, (12, 1, 2, 1.0, 2)),
    (decoding.best_of_n, (12, 1, 2, 2)),
]


@pytest.mark.parametrize(
    "function,positional", POSITIONAL_SIZES, ids=lambda v: getattr(v, "__name__", "")
)
def test_sizes_are_keyword_only_in_one_order_of_names(function, positional):
    import inspect

    decoder = LSTMDecoder(15, 6, 8, 16).eval()
    features = torch.randn(2, 6)
    with pytest.raises(TypeError):  # a size passed by position cannot land in the wrong slot
        function(decoder, features, *positional)
    parameters = inspect.signature(function).parameters
    positional_names = [name for name, p in parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional_names == ["decoder", "features", "start_id", "end_id"]
    order = ["max_length", "beam_size", "length_penalty", "num_samples", "temperature"]
    order += ["generator", "pad_id"]
    named = [name for name, p in parameters.items() if p.kind is p.KEYWORD_ONLY]
    assert named == [name for name in order if name in named] and "max_length" in named


def test_decode_by_name_is_beam_search_and_greedy_by_name():
    torch.manual_seed(4)
    decoder = LSTMDecoder(15, 6, 8, 16).eval()
    features = torch.randn(5, 6)
    sizes = {"max_length": 7, "length_penalty": 0.5}
    beams = decoding.beam_search(decoder, features, 1, 2, beam_size=3, **sizes)
    assert decoding.decode(decoder, features, 1, 2, beam_size=3, **sizes) == beams
    greedy = decoding.greedy(decoder, features, 1, 2, max_length=7)
    assert decoding.decode(decoder, features, 1, 2, max_length=7) == greedy

"""Attention wirings (show_attend_tell, temporal_attention): shapes, options, regularisation, the
state contract, batched beam search and SCST. Teacher forcing == stepping, beam 1 == greedy and
scheduled sampling are in tests/test_variants.py.

The assert_close calls compare the same arithmetic twice (exact) or one forward of untrained
values of order one computed two ways, under PyTorch's default float32 tolerance (rtol 1.3e-6,
about ten ulps): float32 rounding holds that on any CPU. No test asserts a trained value."""

from __future__ import annotations

import pytest
import torch

from lrcn import decoding
from lrcn.build import build_captioner
from lrcn.config import load_config
from lrcn.errors import LrcnError
from lrcn.models.wirings.show_attend_tell import doubly_stochastic_penalty

V = 23
START, END = 1, 2
TINY = [
    "data.image_size=32",
    "data.num_frames=3",
    "encoder.feature_dim=16",
    "decoder.embed_dim=8",
    "decoder.hidden_dim=12",
]
IMAGE = ["task=caption", "data.dataset=shapes", "decoder.variant=show_attend_tell"]
VIDEO = ["task=video_caption", "data.dataset=moving_shapes", "decoder.variant=temporal_attention"]


def _captioner(*extra: str):
    torch.manual_seed(0)
    return build_captioner(load_config(None, [*TINY, *extra]), V)


def _batch(video: bool = False, B: int = 3, per_image: int = 2, L: int = 7) -> dict:
    gen = torch.Generator().manual_seed(0)
    shape = (B, 3, 3, 32, 32) if video else (B, 3, 32, 32)
    N = B * per_image
    tokens = torch.randint(4, V, (N, L), generator=gen)
    tokens[:, 0] = START
    lengths = torch.tensor([L, 3, 5, 4, 6, 3][:N])
    for i, n in enumerate(lengths.tolist()):
        tokens[i, n - 1] = END
        tokens[i, n:] = 0
    return {
        "frames" if video else "images": torch.randn(*shape, generator=gen),
        "tokens": tokens,
        "lengths": lengths,
        "owner": torch.arange(B).repeat_interleave(per_image),
        "size": B,
    }


@pytest.mark.parametrize("video", [False, True])
def test_features_and_gradients(video):
    model = _captioner(*(VIDEO if video else IMAGE), "decoder.attention_gate=true")
    batch = _batch(video)
    visual = model.encode(batch)
    # image: small_cnn's 2 x 2 grid of 64 channels at 32 px; video: 3 frames of 16 features
    assert visual.shape == ((3, 3, 16) if video else (3, 4, 64))
    assert model.temporal is None and model.attends == ("frames" if video else "grid")
    loss = model.loss(batch)
    loss.backward()
    # the image grid is read before small_cnn's fc: the fc (encoder.trunk.fc.*) gets no gradient
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad and ".fc." not in n]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in trainable), [
        n for n, p in trainable if p.grad is None or p.grad.abs().sum() == 0
    ]


def test_temporal_attention_over_the_temporal_lstm_at_every_frame():
    model = _captioner(*VIDEO, "encoder.temporal=lstm", "encoder.temporal_hidden_dim=6")
    batch = _batch(video=True)
    assert model.temporal is not None and model.temporal.every_frame
    assert model.encode(batch).shape == (3, 3, 6)  # 3 clips, 3 frames, the LSTM's 6
    loss = model.loss(batch)
    loss.backward()
    assert model.temporal.lstm.weight_hh_l0.grad.abs().sum() > 0
    # the other decoders still get the last output only
    plain = _captioner("task=video_caption", "data.dataset=moving_shapes", "encoder.temporal=lstm")
    assert not plain.temporal.every_frame and plain.encode(batch).shape == (3, 512)


def test_alpha_in_the_state_is_what_the_step_used():
    model = _captioner(*IMAGE).eval()
    decoder = model.decoder
    with torch.no_grad():
        visual = model.encode(_batch())  # (3, 4, 64)
        state = decoder.init_state(visual)
        context, expected = decoder.wiring.attend(state)
        _, state = decoder.step(torch.full((3,), START), state)
    torch.testing.assert_close(state["alpha"], expected)
    torch.testing.assert_close(state["alpha"].sum(-1), torch.ones(3))
    torch.testing.assert_close(context, torch.bmm(expected[:, None], state["cells"])[:, 0])
    assert state["alpha"].shape == (3, 4)


def test_options_set_the_attention_size_and_the_gate():
    plain = _captioner(*IMAGE)
    sized = _captioner(*IMAGE, "decoder.attention_dim=5", "decoder.attention_gate=true")
    assert plain.decoder.wiring.att_visual.out_features == 12  # 0: the hidden size
    sized_wiring = sized.decoder.wiring
    assert sized_wiring.att_visual.out_features == 5 and sized_wiring.att_score.in_features == 5
    assert "att_gate.weight" in sized.decoder.state_dict()
    assert not any(k.startswith("att_gate") for k in plain.decoder.state_dict())
    # the gate's draw is aside: the other weights are drawn as without it
    gated = _captioner(*IMAGE, "decoder.attention_gate=true").decoder.state_dict()
    for key, value in plain.decoder.state_dict().items():
        torch.testing.assert_close(gated[key], value)


@pytest.mark.parametrize("variant", ["show_tell", "lrcn1u", "lrcn2f"])
def test_attention_options_leave_other_wirings_alone(variant):
    base = ["task=caption", f"decoder.variant={variant}"]
    plain = _captioner(*base).state_dict()
    opted = _captioner(
        *base, "decoder.attention_dim=5", "decoder.attention_gate=true", "decoder.attention_reg=1"
    )
    assert opted.attention_reg == 0.0  # no weights to regularise
    assert opted.state_dict().keys() == plain.keys()
    for key, value in plain.items():
        torch.testing.assert_close(opted.state_dict()[key], value)


def test_doubly_stochastic_penalty_by_hand():
    # one caption, 2 real steps over 3 cells, the third step padding (zeros)
    alphas = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 0.0]]])
    # coverage (0.5, 1.0, 0.5): (0.5^2 + 0 + 0.5^2) = 0.5
    assert doubly_stochastic_penalty(alphas).item() == pytest.approx(0.5)
    # averaged over captions: a second caption covering every cell exactly once adds 0
    perfect = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    assert doubly_stochastic_penalty(torch.cat([alphas, perfect])).item() == pytest.approx(0.25)


@pytest.mark.parametrize("video", [False, True])
def test_loss_adds_the_penalty_over_real_steps_only(video):
    inputs = VIDEO if video else IMAGE
    batch = _batch(video)
    plain = _captioner(*inputs, "decoder.dropout=0").eval()
    reg = _captioner(*inputs, "decoder.dropout=0", "decoder.attention_reg=0.7").eval()
    assert reg.attention_reg == 0.7
    with torch.no_grad():
        visual = plain.encode(batch).index_select(0, batch["owner"])
        hidden, trace = plain.decoder.teacher_forcing(visual, batch["tokens"], batch["lengths"])
        logits = plain.decoder(visual, batch["tokens"], batch["lengths"])
    torch.testing.assert_close(plain.decoder.out(hidden), logits)  # one pass: exact
    alpha = trace["alpha"]  # (N, L-1, cells)
    steps = batch["lengths"] - 1
    for row, n in enumerate(steps.tolist()):  # weights on real steps sum to 1, zero after
        torch.testing.assert_close(alpha[row, :n].sum(-1), torch.ones(n))
        assert alpha[row, n:].abs().sum() == 0
    expected = plain.loss(batch) + 0.7 * doubly_stochastic_penalty(alpha)
    torch.testing.assert_close(reg.loss(batch), expected)
    # the same with scheduled sampling at p=0 in train mode (the stepping path)
    reg.train()
    reg.scheduled_sampling_prob = 1e-12
    torch.manual_seed(0)
    stepped = reg.loss(batch)
    # the penalty is >= 0; 1e-3 of slack on a loss near 3 is far above rounding
    assert torch.isfinite(stepped) and stepped > plain.loss(batch) - 1e-3


def test_negative_regularisation_is_refused():
    with pytest.raises(LrcnError, match="decoder.attention_reg"):
        load_config(None, ["decoder.attention_reg=-1"])


def test_batched_beam_of_100_images_is_one_call(monkeypatch):
    model = _captioner(*IMAGE).eval()
    images = torch.randn(100, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    calls = []
    wiring_init = model.decoder.wiring.init_state
    monkeypatch.setattr(
        model.decoder.wiring, "init_state", lambda v: calls.append(v.shape) or wiring_init(v)
    )
    with torch.no_grad():
        visual = model.encode({"images": images})  # (100, 4, 64)
        captions = decoding.beam_search(
            model.decoder, visual, START, END, max_length=8, beam_size=5
        )
    assert len(captions) == 100
    assert calls == [torch.Size([500, 4, 8])]  # one init_state: 100 images x 5 beams
    # and each row equals its own single-image beam search (no row sees another's cells)
    with torch.no_grad():
        for i in (0, 57, 99):
            alone = decoding.beam_search(
                model.decoder, visual[i : i + 1], START, END, max_length=8, beam_size=5
            )
            assert alone[0] == captions[i]


@pytest.mark.parametrize("video", [False, True])
def test_scst_step_runs_and_changes_weights(video):
    from lrcn.engine.scst import SelfCriticalLoss
    from lrcn.metrics import CiderD
    from lrcn.text.vocab import Vocabulary

    words = "a red blue green circle square triangle big small left right of the to moves".split()
    vocab = Vocabulary(words)
    model = _captioner(*(VIDEO if video else IMAGE), "decoder.dropout=0")
    batch = _batch(video)
    batch["tokens"] = batch["tokens"].clamp(max=len(vocab) - 1)
    refs = {0: [["a", "red", "circle"]], 1: [["a", "blue", "square"]]}
    loss_fn = SelfCriticalLoss(vocab, CiderD(refs), num_samples=3, max_length=6)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    torch.manual_seed(0)
    loss = loss_fn(model, batch)
    assert torch.isfinite(loss)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    moved = {
        n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])
    }
    assert {
        "decoder.wiring.att_visual.weight",
        "decoder.wiring.att_score.weight",
        "decoder.wiring.lstm.weight_ih_l0",
    } <= moved


def test_small_cnn_grid_before_its_last_pool():
    coarse = _captioner(*IMAGE)
    fine = _captioner(*IMAGE, "encoder.grid_before_pool=true")
    images = _batch()["images"]
    assert coarse.encode({"images": images}).shape == (3, 4, 64)  # 2 x 2 cells at 32 px
    assert fine.encode({"images": images}).shape == (3, 16, 64)  # 4 x 4: before the last pool
    # the pooled vector (what show_tell reads) and the weights are the same either way
    torch.testing.assert_close(fine.encoder(images), coarse.encoder(images))
    pooled = torch.nn.functional.max_pool2d(fine.encoder.grid_map(images), 2)
    torch.testing.assert_close(pooled, coarse.encoder.grid_map(images))

"""Encoders and decoder wirings registered from outside lrcn work like the built-in ones."""

import pytest
import torch
from torch import nn

from lrcn import decoding
from lrcn.errors import LrcnError
from lrcn.models import (
    Encoder,
    ImageCaptioner,
    LSTMDecoder,
    Wiring,
    available_encoders,
    available_wirings,
    build_seed_cnn,
    create_encoder,
    encoder_spec,
    register_encoder,
    register_wiring,
)
from lrcn.models.efficientnet import EFFICIENTNET_LITE0_MEAN, EFFICIENTNET_LITE0_STD


# ---- a toy encoder and a toy wiring, registered the way a plugin would ---------------------------
@register_encoder("toy_mean_pool", mean=(0.25,) * 3, std=(0.5,) * 3)
def toy_mean_pool(weights: str, feature_dim: int = 8, **_: object) -> tuple[nn.Module, int]:
    """Average colour -> a linear layer."""
    if weights not in ("none", ""):
        raise LrcnError("toy_mean_pool has no weights; set encoder.weights=none.")
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, feature_dim)
    ), feature_dim


@register_wiring("toy_gru")
class ToyGRU(Wiring):
    """Show and Tell with a GRU: the image is the first input."""

    def __init__(self, embed_dim: int, hidden_dim: int, num_layers: int, dropout: float) -> None:
        super().__init__(embed_dim, hidden_dim, num_layers, dropout)
        self.gru = nn.GRU(embed_dim, hidden_dim, num_layers, batch_first=True)

    def init_state(self, visual):
        _, h = self.gru(visual.unsqueeze(1))
        return {"h": h}

    def step(self, word, state, dropout=lambda x: x):
        out, h = self.gru(word, state["h"])
        return out[:, 0], {"h": h}


def _tokens():
    tokens = torch.tensor([[1, 5, 6, 2, 0], [1, 7, 2, 0, 0], [1, 4, 5, 6, 2]])
    return tokens, torch.tensor([4, 3, 5])


def test_a_toy_encoder_registered_outside_lrcn_is_created_by_name():
    assert "toy_mean_pool" in available_encoders()
    spec = encoder_spec("toy_mean_pool")
    assert (spec.mean, spec.std, spec.pretrained, spec.in_channels) == (
        (0.25,) * 3,
        (0.5,) * 3,
        False,
        3,
    )
    encoder = create_encoder("toy_mean_pool", freeze=True, feature_dim=5, image_size=16)
    assert isinstance(encoder, Encoder) and encoder.feature_dim == 5 and not encoder.training
    assert encoder(torch.rand(2, 3, 16, 16)).shape == (2, 5)
    with pytest.raises(LrcnError, match="no ImageNet weights"):
        create_encoder("toy_mean_pool", weights="imagenet")


def test_unknown_names_are_one_sentence_listing_the_registered_ones():
    with pytest.raises(LrcnError, match="encoder.name to one of .*small_cnn.*toy_mean_pool"):
        encoder_spec("resnet9000")
    with pytest.raises(LrcnError, match="decoder.variant to one of .*show_tell.*toy_gru"):
        LSTMDecoder(10, 4, variant="mamba")


def test_seed_cnn_is_a_registered_encoder_with_the_same_init_as_build_seed_cnn():
    spec = encoder_spec("seed_cnn")
    assert (spec.mean, spec.std, spec.in_channels) == ((0.0,), (1.0,), 1)
    torch.manual_seed(0)
    encoder = create_encoder("seed_cnn", feature_dim=256, image_size=10)
    torch.manual_seed(0)
    trunk, dim = build_seed_cnn(height=10, width=10)
    assert encoder.feature_dim == dim == 50 and encoder.name == "seed_cnn"
    reference = Encoder(trunk, dim, "seed_cnn").state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in encoder.state_dict().items())
    assert encoder.state_dict().keys() == reference.keys()
    with pytest.raises(LrcnError, match="encoder.weights=none"):
        create_encoder("seed_cnn", weights="imagenet")


def test_efficientnet_normalisation_is_the_module_constants():
    spec = encoder_spec("efficientnet_lite0")
    assert (spec.mean, spec.std) == (EFFICIENTNET_LITE0_MEAN, EFFICIENTNET_LITE0_STD)


@pytest.mark.parametrize(
    ("variant", "recurrent"),
    [("show_tell", ["lstm"]), ("lrcn1u", ["lstm"]), ("lrcn2f", ["lstm", "lstm2"])],
)
def test_builtin_wirings_keep_the_state_dict_keys_of_old_checkpoints(variant, recurrent):
    decoder = LSTMDecoder(10, 4, 6, 8, num_layers=2, variant=variant)
    prefixes = [key.split(".")[0] for key in decoder.state_dict()]
    assert list(dict.fromkeys(prefixes)) == ["embed", "visual_proj", *recurrent, "out"]
    # the wiring is a submodule; its keys are written at the decoder's level all the same
    assert [name for name, _ in decoder.named_children()] == [
        "embed",
        "visual_proj",
        "dropout",
        "wiring",
        "out",
    ]
    assert [name for name, _ in decoder.wiring.named_children()] == recurrent


def test_a_toy_wiring_trains_and_decodes_through_lstm_decoder():
    assert "toy_gru" in available_wirings()
    torch.manual_seed(0)
    encoder = create_encoder("toy_mean_pool", feature_dim=6)
    decoder = LSTMDecoder(10, 6, 8, 12, dropout=0.1, variant="toy_gru")
    assert {key.split(".")[0] for key in decoder.state_dict()} == {
        "embed",
        "visual_proj",
        "gru",
        "out",
    }
    model = ImageCaptioner(encoder, decoder)
    tokens, lengths = _tokens()
    batch = {"images": torch.rand(3, 3, 8, 8), "tokens": tokens, "lengths": lengths}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = decoder.wiring.gru.weight_hh_l0.detach().clone()
    loss = model.loss(batch)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and not torch.equal(before, decoder.wiring.gru.weight_hh_l0)
    model.scheduled_sampling_prob = 0.5  # the wiring's step serves scheduled sampling too
    assert torch.isfinite(model.loss(batch))
    model.eval()
    # the default teacher forcing (stepping through `step`) agrees with step-by-step decoding
    visual = model.encode(batch)
    forced = torch.log_softmax(decoder(visual, tokens, lengths), -1)
    state, stepped = decoder.init_state(visual), []
    for t in range(tokens.shape[1] - 1):
        log_probs, state = decoder.step(tokens[:, t], state)
        stepped.append(log_probs)
    valid = torch.arange(4)[None] < (lengths[:, None] - 1)
    # one forward two ways: float32 rounding only, 32 ulps of the largest log-probability
    bound = 32 * torch.finfo(torch.float32).eps * forced[valid].abs().max().item()
    torch.testing.assert_close(torch.stack(stepped, 1)[valid], forced[valid], atol=bound, rtol=0)
    greedy = decoding.greedy(decoder, visual, 1, 2, max_length=6)
    assert len(greedy) == 3 and all(0 not in c and 1 not in c and len(c) <= 6 for c in greedy)
    assert decoding.beam_search(decoder, visual, 1, 2, max_length=6, beam_size=3) is not None

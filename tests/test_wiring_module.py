"""A wiring is an ``nn.Module`` held by the decoder as ``wiring``; its keys stay at the decoder's
level; a plug-in wiring's mistakes are one sentence; a wiring's regulariser reaches the loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lrcn.errors import LrcnError
from lrcn.models import Wiring, register_wiring
from lrcn.models.captioner import ImageCaptioner
from lrcn.models.decoder import LSTMDecoder
from lrcn.models.wirings import Trace
from lrcn.models.wirings.base import WIRINGS


class _GRU(Wiring):
    """Show and Tell with a GRU: the shape every plug-in wiring below starts from."""

    def __init__(self, embed_dim: int, hidden_dim: int, num_layers: int, dropout: float) -> None:
        super().__init__(embed_dim, hidden_dim, num_layers, dropout)
        self.gru = nn.GRU(embed_dim, hidden_dim, num_layers, batch_first=True)

    def init_state(self, visual):  # noqa: ANN001, ANN201
        _, h = self.gru(visual.unsqueeze(1))
        return {"h": h}

    def step(self, word, state, dropout=lambda x: x):  # noqa: ANN001, ANN201
        out, h = self.gru(word, state["h"])
        return out[:, 0], {"h": h}


@register_wiring("module_test_start")
class StartVector(_GRU):
    """A wiring holding a parameter of its own (not in a module): a learnt first input."""

    def __init__(self, embed_dim: int, hidden_dim: int, num_layers: int, dropout: float) -> None:
        super().__init__(embed_dim, hidden_dim, num_layers, dropout)
        self.start = nn.Parameter(torch.zeros(embed_dim))

    def init_state(self, visual):  # noqa: ANN001, ANN201
        return super().init_state(visual + self.start)


@register_wiring("module_test_energy")
class Energy(_GRU):
    """A wiring with a regulariser of its own: the mean squared output it traced."""

    def trace(self, state):  # noqa: ANN001, ANN201
        return {"h": state["h"][-1]}  # (B, H): the top output of the step

    def regulariser(self, trace: Trace) -> torch.Tensor:
        return trace["h"].pow(2).mean()


def _tokens() -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.tensor([[1, 5, 6, 7, 2], [1, 4, 2, 0, 0], [1, 8, 4, 2, 0]])
    return tokens, torch.tensor([5, 3, 4])


def test_the_wiring_is_the_decoders_submodule_and_its_keys_stay_at_the_decoders_level():
    decoder = LSTMDecoder(10, 4, 6, 8, variant="lrcn2f")
    assert isinstance(decoder.wiring, nn.Module)
    assert dict(decoder.named_children())["wiring"] is decoder.wiring
    names = [name for name, _ in decoder.named_parameters()]
    assert "wiring.lstm2.weight_hh_l0" in names and "lstm2.weight_hh_l0" not in names
    keys = list(decoder.state_dict())
    assert "lstm2.weight_hh_l0" in keys and not any(k.startswith("wiring.") for k in keys)
    decoder.to(torch.float64)  # moves with the decoder
    assert decoder.wiring.lstm2.weight_hh_l0.dtype == torch.float64


def test_the_keys_keep_their_order_inside_a_parent_and_nested_keys_load_too():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), LSTMDecoder(10, 4, 6, 8, variant="lrcn2f"), nn.ReLU())
    model.add_module("after", nn.Linear(3, 2))
    keys = list(model.state_dict())
    # the parameters' order, with the wiring's level dropped: what optimizers and digests see
    assert keys == [name.replace("1.wiring.", "1.") for name, _ in model.named_parameters()]
    nested = {
        name: value.detach().clone() + 1.0  # other values, so loading them shows
        for name, value in model.named_parameters()
    }
    model.load_state_dict(nested)  # strict: every key found
    for name, value in model.named_parameters():
        assert torch.equal(value, nested[name]), name  # loading copies: exact


def test_a_parameter_of_the_wiring_itself_is_trained_and_saved():
    torch.manual_seed(0)
    model = ImageCaptioner(nn.Identity(), LSTMDecoder(10, 4, 6, 8, variant="module_test_start"))  # type: ignore[arg-type]
    assert "decoder.start" in model.state_dict()
    tokens, lengths = _tokens()
    model.loss({"features": torch.randn(3, 4), "tokens": tokens, "lengths": lengths}).backward()
    grad = model.decoder.wiring.start.grad
    assert grad is not None and grad.abs().sum() > 0  # it feeds the first state: a gradient


def _register(name: str, cls: type) -> str:
    """Register ``cls`` under a fresh name (tests may run twice in one process)."""
    if name not in WIRINGS.names():
        register_wiring(name)(cls)
    return name


def test_a_plugin_wiring_setting_a_module_before_init_is_one_sentence():
    class Early(Wiring):
        def __init__(self, embed_dim: int, hidden_dim: int, num_layers: int, dropout: float):
            self.gru = nn.GRU(embed_dim, hidden_dim)
            super().__init__(embed_dim, hidden_dim, num_layers, dropout)

    name = _register("module_test_early", Early)
    with pytest.raises(LrcnError, match=r"test_wiring_module\.py: wiring module_test_early .*"
                       r"call super\(\)\.__init__\(embed_dim, hidden_dim, num_layers, dropout\) "
                       r"first"):  # fmt: skip
        LSTMDecoder(10, 4, 6, 8, variant=name)


def test_a_plugin_wiring_that_is_not_a_module_is_one_sentence():
    class Plain:  # the old plain-object form, not a Wiring subclass
        attends = None

        def __init__(self, embed_dim: int, hidden_dim: int, num_layers: int, dropout: float):
            self.hidden_dim = hidden_dim

    name = _register("module_test_plain", Plain)
    with pytest.raises(LrcnError, match=r"test_wiring_module\.py: .* is not a Wiring module"):
        LSTMDecoder(10, 4, 6, 8, variant=name)


def test_a_plugin_wiring_naming_a_module_as_the_decoder_does_is_one_sentence():
    class Clash(_GRU):
        def __init__(self, embed_dim: int, hidden_dim: int, num_layers: int, dropout: float):
            super().__init__(embed_dim, hidden_dim, num_layers, dropout)
            self.out = nn.Linear(hidden_dim, hidden_dim)

    name = _register("module_test_clash", Clash)
    with pytest.raises(LrcnError, match=r"names out as the decoder names its own parts"):
        LSTMDecoder(10, 4, 6, 8, variant=name)


@pytest.mark.parametrize("train", [False, True])
def test_a_plugin_wirings_regulariser_is_added_to_the_loss(train):
    torch.manual_seed(0)
    model = ImageCaptioner(nn.Identity(), LSTMDecoder(10, 4, 6, 8, variant="module_test_energy"))  # type: ignore[arg-type]
    tokens, lengths = _tokens()
    batch = {"features": torch.randn(3, 4), "tokens": tokens, "lengths": lengths}
    model.train(train)  # train: scheduled sampling, the stepping path; eval: plain teacher forcing
    model.scheduled_sampling_prob = 0.5
    torch.manual_seed(1)
    plain = model.loss(batch)
    torch.manual_seed(1)
    forced = model.decoder.teacher_forcing(
        batch["features"], tokens, lengths, sample_prob=0.5 if train else 0.0
    )
    h = forced.trace["h"]  # (3, 4, 8): every step's top output, zero past each row's length
    assert h.shape == (3, 4, 8) and h[1, 2:].abs().sum() == 0 and h[1, :2].abs().sum() > 0
    torch.testing.assert_close(h, forced.hidden)  # a GRU's output is its top state
    model.attention_reg = 0.5
    torch.manual_seed(1)
    # the same draws, the same arithmetic, plus 0.5 x the penalty: exact
    assert model.loss(batch) == plain + 0.5 * h.pow(2).mean()

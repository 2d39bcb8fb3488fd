"""Tiled super-resolution equals untiled when the margin covers the receptive field."""

from __future__ import annotations

import numpy as np
import pytest

from serving.gateway import tiling


def toy_sr(x: np.ndarray, radius: int = 3, scale: int = 2) -> np.ndarray:
    """A stand-in fully convolutional model: ``radius`` zero-padded 3x3 box blurs, then x``scale``."""
    y = x.astype(np.float64)
    for _ in range(radius):
        p = np.pad(y, ((0, 0), (0, 0), (1, 1), (1, 1)))
        y = sum(p[:, :, i : i + y.shape[2], j : j + y.shape[3]] for i in range(3) for j in range(3)) / 9.0
    return y.repeat(scale, axis=2).repeat(scale, axis=3)


@pytest.mark.parametrize(("h", "w", "tile"), [(70, 90, 32), (33, 200, 40), (64, 64, 64), (10, 150, 48)])
def test_stitched_equals_whole(h: int, w: int, tile: int) -> None:
    img = np.random.default_rng(0).random((3, h, w))
    whole = toy_sr(img[None])[0]
    th, tw, tiles = tiling.plan(h, w, tile, margin=4)
    outs = toy_sr(tiling.cut(img, tiles, th, tw))
    stitched = tiling.stitch(outs, tiles, h, w, 2)
    np.testing.assert_allclose(stitched, whole, atol=1e-12)


def test_every_pixel_owned_exactly_once() -> None:
    starts = tiling.tile_starts(101, 32, 4)
    bounds = tiling.owned_bounds(starts, 32, 101)
    assert bounds[0][0] == 0 and bounds[-1][1] == 101
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    for s, (lo, hi) in zip(starts, bounds, strict=True):
        assert s <= lo < hi <= s + 32


def test_small_image_is_one_tile() -> None:
    th, tw, tiles = tiling.plan(20, 30, 64, 8)
    assert (th, tw) == (20, 30) and len(tiles) == 1

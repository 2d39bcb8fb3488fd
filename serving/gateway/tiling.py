"""Overlapping tiles for fully convolutional image-to-image models (super-resolution).

A large image is cut into equal tiles that overlap by ``2 * margin`` pixels; every output
pixel is taken from the tile in which it lies furthest from an edge, so each tile's border
(where zero padding changes the convolution) is discarded. With a margin larger than the
model's receptive-field radius, the stitched result equals the untiled one.

Memory (issue 18): the model states the planned peak per input pixel (``bytes_per_pixel``, from
export/memory.py); tiles and tiles per call are sized so one Triton call stays under the gateway's
``max_call_bytes``, and outputs are pasted into the result as each call returns, so a larger image
takes more calls, never more memory per call.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


def tile_starts(length: int, tile: int, margin: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` with >= 2*margin overlap."""
    if length <= tile:
        return [0]
    step = max(1, tile - 2 * margin)
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)  # the last tile is shifted inwards so all tiles have one size
    return sorted(set(starts))


def owned_bounds(starts: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    """For each tile, the [lo, hi) input range it contributes: split overlaps at their midpoints."""
    bounds = []
    for i, s in enumerate(starts):
        lo = 0 if i == 0 else (s + starts[i - 1] + tile) // 2
        hi = length if i == len(starts) - 1 else (starts[i + 1] + s + tile) // 2
        bounds.append((lo, hi))
    return bounds


@dataclass(frozen=True)
class Tile:
    y: int
    x: int
    own_y: tuple[int, int]
    own_x: tuple[int, int]


def plan(h: int, w: int, tile: int, margin: int) -> tuple[int, int, list[Tile]]:
    th, tw = min(tile, h), min(tile, w)
    ys, xs = tile_starts(h, th, margin), tile_starts(w, tw, margin)
    by, bx = owned_bounds(ys, th, h), owned_bounds(xs, tw, w)
    return (
        th,
        tw,
        [Tile(y, x, oy, ox) for y, oy in zip(ys, by, strict=True) for x, ox in zip(xs, bx, strict=True)],
    )


def cut(image: np.ndarray, tiles: list[Tile], th: int, tw: int) -> np.ndarray:
    """(C, H, W) -> (N, C, th, tw) stack of tiles."""
    return np.stack([image[:, t.y : t.y + th, t.x : t.x + tw] for t in tiles])


def stitch(outputs: np.ndarray, tiles: list[Tile], h: int, w: int, scale: int) -> np.ndarray:
    """(N, C, th*s, tw*s) tile outputs -> (C, H*s, W*s), each pixel from the tile that owns it."""
    out = np.empty((outputs.shape[1], h * scale, w * scale), dtype=outputs.dtype)
    paste(out, outputs, tiles, scale)
    return out


def paste(out: np.ndarray, outputs: np.ndarray, tiles: list[Tile], scale: int) -> None:
    """Write each tile output's owned region into ``out`` (C, H*s, W*s), batch by batch as they come."""
    for t, o in zip(tiles, outputs, strict=True):
        (y0, y1), (x0, x1) = t.own_y, t.own_x
        out[:, y0 * scale : y1 * scale, x0 * scale : x1 * scale] = o[
            :, (y0 - t.y) * scale : (y1 - t.y) * scale, (x0 - t.x) * scale : (x1 - t.x) * scale
        ]


def budget_tile(tile: int, bytes_per_pixel: int, budget: int, least: int) -> int:
    """The largest tile side <= ``tile`` whose single row stays under ``budget``, never below ``least``
    (a tile must keep an owned core between its margins)."""
    if bytes_per_pixel <= 0:
        return max(least, tile)
    return max(least, min(tile, int(math.isqrt(budget // bytes_per_pixel))))


def tiles_per_call(th: int, tw: int, bytes_per_pixel: int, budget: int, cap: int) -> int:
    """How many (th, tw) tiles one Triton call may carry under ``budget`` (1 .. ``cap``)."""
    if bytes_per_pixel <= 0:
        return max(1, cap)
    return max(1, min(cap, budget // (th * tw * bytes_per_pixel)))


def chunks(n: int, size: int) -> Iterator[slice]:
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))

"""Generated segmentation scenes: circles, squares and triangles on natural-image textures.

Each scene is a random crop of one of scikit-image's / scikit-learn's bundled photos and
textures (recoloured, rescaled), with 1..``max_shapes`` filled shapes drawn on top. A pixel
belongs to a shape when its centre lies inside the shape's exact geometry, and the very same
boolean mask paints the pixels, so the per-pixel labels are exact (no anti-aliasing to argue
about). Later shapes occlude earlier ones. Fill colours are kept at least ``MIN_CONTRAST`` away
from the background under the shape, so every labelled shape is actually visible.

Scene ``i`` of split ``s`` with seed ``k`` comes from its own generator seeded with ``(s, k, i)``:
the set is deterministic, a smaller set is a prefix of a larger one, and the test split (fixed
seed, its own split id) never overlaps the training scenes whatever ``--seed`` is.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image

from training.data.bundled import load_bundled_image

CLASSES = ["background", "circle", "square", "triangle"]
PALETTE = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200)]  # overlay colour per class (RGB)
SHAPE_KINDS = CLASSES[1:]
SPLITS = {"train": 0, "val": 1, "test": 2}
TEST_SEED = 0  # the test split ignores --seed: the held-out set is the same for every run
MIN_CONTRAST = 70.0  # min RGB distance between a shape's fill and the mean background under it
SIZE_RANGE = (0.09, 0.22)  # shape "radius" as a fraction of the scene side
# Bundled images only (offline). Grey textures are tinted at random so colour is no class cue.
BACKGROUND_SOURCES = (
    "skimage:astronaut",
    "skimage:coffee",
    "skimage:chelsea",
    "skimage:rocket",
    "skimage:hubble_deep_field",
    "skimage:retina",
    "skimage:immunohistochemistry",
    "skimage:brick",
    "skimage:grass",
    "skimage:gravel",
    "skimage:camera",
    "skimage:moon",
    "sklearn:china.jpg",
    "sklearn:flower.jpg",
)
_PYRAMID_SIDES = (96, 160, 288)  # each source is pre-scaled so its short side is one of these


@functools.lru_cache(maxsize=1)
def _background_pyramid() -> tuple[np.ndarray, ...]:
    levels = []
    for source in BACKGROUND_SOURCES:
        pil = Image.fromarray(load_bundled_image(source))
        for side in _PYRAMID_SIDES:
            f = side / min(pil.size)
            levels.append(
                np.asarray(
                    pil.resize((round(pil.width * f), round(pil.height * f)), Image.Resampling.BILINEAR),
                    dtype=np.float32,
                )
            )
    return tuple(levels)


def shape_mask(
    kind: str,
    size: int | tuple[int, int],
    center: tuple[float, float],
    radius: float,
    angle: float,
    jitter: np.ndarray | None = None,
) -> np.ndarray:
    """Exact (H, W) bool mask: pixel centres inside a circle / square / triangle.

    ``center`` is (x, y) in pixels, ``radius`` the circumradius (circle: its radius), ``angle``
    in radians; ``jitter`` (3, 2) moves a triangle's vertices (fractions of the radius).
    """
    h, w = (size, size) if isinstance(size, int) else size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    dx, dy = xx - center[0], yy - center[1]
    if kind == "circle":
        return dx * dx + dy * dy <= radius * radius
    c, s = np.cos(angle), np.sin(angle)
    if kind == "square":
        half = radius / np.sqrt(2.0)
        u, v = c * dx + s * dy, -s * dx + c * dy
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if kind == "triangle":
        t = angle + np.array([0.0, 2.0 * np.pi / 3.0, 4.0 * np.pi / 3.0])
        verts = np.stack([np.cos(t), np.sin(t)], axis=1)
        if jitter is not None:
            verts = verts + jitter
        verts = verts * radius  # counter-clockwise in (x, y): inside = left of every edge
        inside = np.ones((h, w), dtype=bool)
        for i in range(3):
            (x0, y0), (x1, y1) = verts[i], verts[(i + 1) % 3]
            inside &= (x1 - x0) * (dy - y0) - (y1 - y0) * (dx - x0) >= 0
        return inside
    raise ValueError(f"unknown shape {kind!r}")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    levels = [lv for lv in _background_pyramid() if min(lv.shape[:2]) >= size]
    if not levels:
        raise ValueError(f"scene size {size} exceeds the largest background level {_PYRAMID_SIDES[-1]}")
    src = levels[rng.integers(len(levels))]
    y = rng.integers(0, src.shape[0] - size + 1)
    x = rng.integers(0, src.shape[1] - size + 1)
    crop = src[y : y + size, x : x + size]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    # Recolour: random channel order, per-channel gain and a brightness shift.
    crop = crop[:, :, rng.permutation(3)] * rng.uniform(0.6, 1.3, size=3) + rng.uniform(-40, 40)
    return np.clip(crop, 0, 255)


def render_scene(
    rng: np.random.Generator, size: int = 64, max_shapes: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (3, S, S) uint8 image and (S, S) uint8 class-index mask."""
    img = _background(rng, size)
    mask = np.zeros((size, size), dtype=np.uint8)
    for _ in range(rng.integers(1, max_shapes + 1)):
        cls = int(rng.integers(1, len(CLASSES)))
        radius = rng.uniform(*SIZE_RANGE) * size
        margin = 0.8 * radius  # mostly inside the frame; a little clipping is allowed
        center = (rng.uniform(margin, size - margin), rng.uniform(margin, size - margin))
        jitter = rng.uniform(-0.15, 0.15, size=(3, 2))
        m = shape_mask(CLASSES[cls], size, center, radius, rng.uniform(0, 2 * np.pi), jitter)
        if not m.any():
            continue
        under = img[m].mean(axis=0)
        for _attempt in range(20):
            colour = rng.uniform(0, 255, size=3)
            if np.linalg.norm(colour - under) >= MIN_CONTRAST:
                break
        else:  # rare: pick the colour opposite the background
            colour = 255.0 - under
        # A little shading and grain so fills are not perfectly flat (real objects are not).
        yy, xx = np.mgrid[0:size, 0:size]
        ramp = rng.uniform(-0.6, 0.6) * (xx - center[0]) + rng.uniform(-0.6, 0.6) * (yy - center[1])
        fill = colour[None, :] + ramp[m][:, None] + rng.normal(0, 6, size=(int(m.sum()), 3))
        img[m] = fill
        mask[m] = cls
    img = img + rng.normal(0, rng.uniform(0, 6), size=img.shape)  # sensor noise over the whole scene
    return np.clip(np.round(img), 0, 255).astype(np.uint8).transpose(2, 0, 1), mask


@dataclass
class SceneSet:
    images: np.ndarray  # (N, 3, S, S) uint8
    masks: np.ndarray  # (N, S, S) uint8 class indices


def make_scenes(n: int, size: int = 64, split: str = "train", seed: int = 0, max_shapes: int = 4) -> SceneSet:
    """``n`` deterministic scenes of ``split`` (train|val|test); test always uses TEST_SEED."""
    seed = TEST_SEED if split == "test" else seed
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=np.uint8)
    for i in range(n):
        rng = np.random.default_rng([SPLITS[split], seed, i])
        images[i], masks[i] = render_scene(rng, size, max_shapes)
    return SceneSet(images, masks)

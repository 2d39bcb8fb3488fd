"""Photos and textures that scikit-image's and scikit-learn's wheels ship: loaded offline, never downloaded.

Only these skimage names load without a download (the rest of ``skimage.data`` fetches files):
astronaut, coffee, chelsea (= cat), rocket, hubble_deep_field, retina, immunohistochemistry,
brick, grass, gravel, camera, moon, coins, ... and scikit-learn's china.jpg and flower.jpg.
"""

from __future__ import annotations

import numpy as np


def load_bundled_image(source: str) -> np.ndarray:
    """'skimage:<name>' or 'sklearn:<file>' -> (H, W, 3) uint8 RGB. Both ship inside their wheels."""
    lib, _, name = source.partition(":")
    if lib == "skimage":
        from skimage import data

        img = np.asarray(getattr(data, name)())
    elif lib == "sklearn":
        from sklearn.datasets import load_sample_images

        ds = load_sample_images()
        img = np.asarray(ds.images[[f.rsplit("/", 1)[-1] for f in ds.filenames].index(name)])
    else:
        raise ValueError(f"unknown image source {source!r}")
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3].astype(np.uint8))

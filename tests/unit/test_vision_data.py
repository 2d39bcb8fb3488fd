"""Offline vision datasets: generated scenes, photo patches and anomalies are deterministic and honest."""

from __future__ import annotations

import numpy as np
import pytest

from training.data import anomaly, photos, shapes


def test_scenes_are_deterministic_and_prefix_stable() -> None:
    a = shapes.make_scenes(6, 32, "train", seed=3)
    b = shapes.make_scenes(4, 32, "train", seed=3)
    np.testing.assert_array_equal(a.images[:4], b.images)
    np.testing.assert_array_equal(a.masks[:4], b.masks)
    assert a.images.dtype == np.uint8 and a.images.shape == (6, 3, 32, 32) and a.masks.shape == (6, 32, 32)


def test_test_split_ignores_seed_and_differs_from_train() -> None:
    t0, t1 = shapes.make_scenes(3, 32, "test", seed=0), shapes.make_scenes(3, 32, "test", seed=7)
    np.testing.assert_array_equal(t0.images, t1.images)
    train = shapes.make_scenes(3, 32, "train", seed=shapes.TEST_SEED)
    assert not np.array_equal(train.images, t0.images)


def test_scene_masks_cover_every_class_and_only_known_ids() -> None:
    s = shapes.make_scenes(40, 48, "val")
    assert set(np.unique(s.masks)) == set(range(len(shapes.CLASSES)))


@pytest.mark.parametrize("kind", shapes.SHAPE_KINDS)
def test_shape_masks_are_exact_geometry(kind: str) -> None:
    m = shapes.shape_mask(kind, 64, (32.0, 32.0), 20.0, 0.3)
    area = m.sum()
    expected = {"circle": np.pi * 400, "square": 2 * 400, "triangle": 3 * np.sqrt(3) / 4 * 400}[kind]
    assert abs(area - expected) / expected < 0.03
    assert m[32, 32] and not m[0, 0]


def test_held_out_photos_are_never_training_sources() -> None:
    assert not set(photos.HELD_OUT) & set(photos.TRAIN_SOURCES)
    assert "skimage:cat" not in photos.TRAIN_SOURCES  # the same photo as the held-out chelsea


def test_patch_pairs_are_bicubic_downscales() -> None:
    lr, hr = photos.PatchSampler(32, 4, seed=0).batch(3)
    assert lr.shape == (3, 3, 8, 8) and hr.shape == (3, 3, 32, 32) and lr.dtype == hr.dtype == np.uint8
    np.testing.assert_array_equal(lr[0], photos.downscale(hr[0].transpose(1, 2, 0), 4).transpose(2, 0, 1))
    again, _ = photos.PatchSampler(32, 4, seed=0).batch(3)
    np.testing.assert_array_equal(lr, again)


def test_held_out_images_fit_the_scale() -> None:
    for im in photos.held_out_images(4, max_side=50):
        assert im.hr.shape[0] % 4 == 0 and im.hr.shape[1] % 4 == 0
        assert im.lr.shape[:2] == (im.hr.shape[0] // 4, im.hr.shape[1] // 4)


def test_anomalies_are_balanced_and_look_like_scans() -> None:
    raw, kinds = anomaly.raw_anomalies(30)
    assert raw.shape == (30, 8, 8) and raw.dtype == np.uint8
    assert {k: int((kinds == k).sum()) for k in anomaly.ANOMALY_KINDS} == dict.fromkeys(
        anomaly.ANOMALY_KINDS, 10
    )
    again, _ = anomaly.raw_anomalies(30)
    np.testing.assert_array_equal(raw, again)

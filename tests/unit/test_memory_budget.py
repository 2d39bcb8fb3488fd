"""Issue 18: the stated per-pixel cost and the tile sizing that keeps one Triton call in budget."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from export.memory import image_bytes_per_pixel, peak_activation_bytes
from serving.gateway import tiling


def _upsampler(path, channels: int = 3, width: int = 8) -> None:
    """image (N, C, H, W) -> conv to `width` channels -> x2 nearest resize: the peak grows per pixel."""
    w = helper.make_tensor(
        "w", TensorProto.FLOAT, [width, channels, 1, 1], np.ones(width * channels, np.float32)
    )
    scales = helper.make_tensor("s", TensorProto.FLOAT, [4], [1, 1, 2, 2])
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["f"]),
            helper.make_node("Resize", ["f", "", "s"], ["y"], mode="nearest"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", channels, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", width, "H", "W"])],
        initializer=[w, scales],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_peak_counts_live_tensors_and_scales_with_pixels(tmp_path):
    path = tmp_path / "m.onnx"
    _upsampler(path)
    model = onnx.load(str(path))
    # Resize step: f (8 ch) and y (8 ch at 4x the pixels) live together; x is dead by then.
    peak = peak_activation_bytes(model, {"x": [1, 3, 10, 10]})
    assert peak == (8 * 100 + 8 * 400) * 4
    assert image_bytes_per_pixel(path, "x", 3) == (8 + 32) * 4


def test_tiles_per_call_and_tile_side_stay_under_budget():
    bpp, budget = 4108, 256 * 1024 * 1024
    side = tiling.budget_tile(1024, bpp, budget, least=48)
    assert side * side * bpp <= budget < (side + 1) ** 2 * bpp
    n = tiling.tiles_per_call(128, 128, bpp, budget, cap=8)
    assert 1 <= n <= 8 and n * 128 * 128 * bpp <= budget
    assert tiling.tiles_per_call(128, 128, 0, budget, cap=8) == 8  # no stated cost: the cap
    assert tiling.tiles_per_call(128, 128, 10**9, budget, cap=8) == 1  # never zero


def test_paste_per_batch_equals_stitch():
    rng = np.random.default_rng(0)
    h, w, scale = 70, 90, 2
    th, tw, tiles = tiling.plan(h, w, 32, 4)
    outs = rng.integers(0, 255, (len(tiles), 3, th * scale, tw * scale), dtype=np.uint8)
    whole = tiling.stitch(outs, tiles, h, w, scale)
    parts = np.empty_like(whole)
    for s in tiling.chunks(len(tiles), 3):
        tiling.paste(parts, outs[s], tiles[s], scale)
    assert np.array_equal(whole, parts)


def test_triton_and_its_stubs_run_with_a_fixed_mmap_threshold():
    """glibc's dynamic threshold would let a large request's blocks stay on the heap once idle."""
    from serving.triton.launcher import MALLOC_ENV, triton_env

    assert triton_env({})["MALLOC_MMAP_THRESHOLD_"] == MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"] == str(1 << 20)
    assert triton_env({"MALLOC_MMAP_THRESHOLD_": "65536"})["MALLOC_MMAP_THRESHOLD_"] == "65536"  # theirs wins

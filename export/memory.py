"""What one call of an exported graph costs in memory, stated by export so serving can stay in budget.

onnxruntime plans a run's intermediate tensors ahead (its "memory pattern"): a tensor lives from
the node that writes it to the last node that reads it. We replay that plan on the graph with every
dynamic axis fixed to a probe size and take the peak of the live set. For fully convolutional image
models the peak grows linearly with the input's pixels, so export writes the peak divided by the
probe's rows and pixels (``bytes_per_pixel``, of one input row) into the model's parameters; the
gateway sizes its calls (tiles per call) from it and the Python-backend runner refuses a call that
would exceed the per-call budget. Measured against the real process peak by ``make memory``
(reports/memory.json, column ``estimate_ratio``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, shape_inference

_ITEMSIZE = {
    TensorProto.FLOAT: 4,
    TensorProto.UINT8: 1,
    TensorProto.INT8: 1,
    TensorProto.INT32: 4,
    TensorProto.INT64: 8,
    TensorProto.FLOAT16: 2,
    TensorProto.DOUBLE: 8,
    TensorProto.BOOL: 1,
}


def _fixed(model: onnx.ModelProto, dims: dict[str, list[int]]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph inputs have the concrete shapes ``dims``."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for inp in fixed.graph.input:
        if inp.name not in dims:
            continue
        shape = inp.type.tensor_type.shape
        for d, size in zip(shape.dim, dims[inp.name], strict=True):
            d.ClearField("dim_param")
            d.dim_value = size
    return fixed


def _sizes(model: onnx.ModelProto) -> dict[str, int]:
    """Bytes of every tensor whose shape inference could resolve fully."""
    sizes: dict[str, int] = {}
    graph = model.graph
    for vi in [*graph.input, *graph.value_info, *graph.output]:
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            continue
        dims = [d.dim_value for d in t.shape.dim]
        if any(d <= 0 for d in dims):
            continue
        sizes[vi.name] = int(np.prod(dims, dtype=np.int64)) * _ITEMSIZE.get(t.elem_type, 4)
    return sizes


def peak_activation_bytes(model: onnx.ModelProto, dims: dict[str, list[int]]) -> int:
    """Peak bytes of simultaneously live intermediate tensors (inputs and outputs included)."""
    inferred = shape_inference.infer_shapes(_fixed(model, dims), data_prop=True)
    sizes = _sizes(inferred)
    graph = inferred.graph
    weights = {init.name for init in graph.initializer}
    last_use: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            last_use[name] = i
    outputs = {o.name for o in graph.output}
    live = {i.name for i in graph.input if i.name not in weights}
    current = sum(sizes.get(n, 0) for n in live)
    peak = current
    for i, node in enumerate(graph.node):
        for name in node.output:  # outputs are allocated while the inputs are still alive
            if name and name not in live:
                live.add(name)
                current += sizes.get(name, 0)
        peak = max(peak, current)
        for name in {*node.input, *node.output}:
            if name in live and name not in outputs and last_use.get(name, -1) <= i:
                live.discard(name)
                current -= sizes.get(name, 0)
    return peak


def image_bytes_per_pixel(onnx_path: Path, input_name: str, channels: int, probe: int = 64) -> int:
    """Peak activation bytes per input pixel of one row, for a model taking (N, C, H, W) images.

    Probed at two sizes so that a fixed cost (e.g. a global pool's output) is not counted per pixel.
    """
    model = onnx.load(str(onnx_path))
    small = peak_activation_bytes(model, {input_name: [1, channels, probe, probe]})
    large = peak_activation_bytes(model, {input_name: [1, channels, 2 * probe, 2 * probe]})
    per_pixel = (large - small) / (3 * probe * probe)
    return max(1, int(np.ceil(per_pixel)))

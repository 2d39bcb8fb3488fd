"""Bring your own model: wrap a user's ONNX graph (or PyTorch module) into a task's serving contract.

    python -m export --onnx net.onnx:mynet --task classification --labels labels.txt \
        --input-size 224 --input-layout nhwc --input-range 0-1 --normalize imagenet --outputs logits
    python -m export --torch mypkg.nets:build --weights net.pt --task segmentation --labels classes.txt ...

The wrapped graph speaks the same contract as our own exports, so the task routes serve it with no
gateway change: a uint8 NCHW image in (dynamic batch; dynamic height and width for segmentation), the
normalisation the user's model expects inside the graph, then the task's head (softmax to ``probs``
for classification unless the model already returns probabilities; argmax to a uint8 ``mask`` for
segmentation). Every fact the spec states is checked against the graph at export time, and the wrapped
graph must agree with the user's own graph on probe inputs (PARITY_ATOL) and give finite outputs.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from export.onnx_export import OnnxContract, TensorSpec
from export.repository import RepositoryModel

TASKS = ("classification", "segmentation")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PARITY_ATOL = 1e-5  # probabilities, wrapped graph vs the user's graph fed our own float preprocessing
MASK_MISMATCH_MAX_FRACTION = 1e-3  # argmax may flip where two logits tie to float precision
FLOAT_TYPES = {1: np.float32, 10: np.float16, 11: np.float64}  # onnx TensorProto elem types


class ByoError(ValueError):
    """The spec contradicts the graph (or the graph cannot serve): the message names the mismatch."""


@dataclass
class ByoSpec:
    """What the user's model expects, as the command line states it."""

    task: str
    labels: list[str]
    input_size: int | None = None  # square side; None: read from the graph
    layout: str = "nchw"  # the user's graph input layout: nchw | nhwc
    input_range: str = "0-1"  # what a pixel becomes before mean/std: 0-1 (x/255) or 0-255 (x)
    mean: list[float] = field(default_factory=lambda: [0.0])
    std: list[float] = field(default_factory=lambda: [1.0])
    outputs: str = "logits"  # logits | probs (classification); segmentation takes per-pixel scores
    channels: int | None = None  # 1 or 3; None: read from the graph
    multiple_of: int = 32  # segmentation: H and W the network accepts are multiples of this

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ByoError(f"--task {self.task!r}: bring-your-own supports {', '.join(TASKS)}")
        if self.layout not in ("nchw", "nhwc"):
            raise ByoError(f"--input-layout {self.layout!r}: nchw or nhwc")
        if self.input_range not in ("0-1", "0-255"):
            raise ByoError(f"--input-range {self.input_range!r}: 0-1 or 0-255")
        if self.outputs not in ("logits", "probs"):
            raise ByoError(f"--outputs {self.outputs!r}: logits or probs")
        if not self.labels:
            raise ByoError("--labels: a file with one label per line is required")
        if any(s == 0 for s in self.std):
            raise ByoError("--std: a standard deviation of 0 divides by zero")


def read_labels(path: Path) -> list[str]:
    if not path.is_file():
        raise ByoError(f"--labels {path}: no such file")
    labels = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not labels:
        raise ByoError(f"--labels {path}: the file holds no labels")
    return labels


def normalisation(spec: ByoSpec, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (scale, shift) with model_input = pixel * scale - shift, pixel in 0..255."""

    def per_channel(values: list[float], what: str) -> np.ndarray:
        if len(values) not in (1, channels):
            raise ByoError(f"--{what} has {len(values)} values; the model's input has {channels} channels")
        return np.broadcast_to(np.asarray(values, np.float64), (channels,))

    mean, std = per_channel(spec.mean, "mean"), per_channel(spec.std, "std")
    unit = 1 / 255 if spec.input_range == "0-1" else 1.0
    return unit / std, mean / std


def preprocess(images: np.ndarray, spec: ByoSpec, dtype: Any) -> np.ndarray:
    """Reference preprocessing in numpy: uint8 (N, C, H, W) -> the user's float input, in its layout."""
    scale, shift = normalisation(spec, images.shape[1])
    x = images.astype(np.float64) * scale[None, :, None, None] - shift[None, :, None, None]
    if spec.layout == "nhwc":
        x = x.transpose(0, 2, 3, 1)
    return x.astype(dtype)


# --- graph facts ------------------------------------------------------------------------------------


def _dims(value_info: Any) -> list[int | str]:
    """Shape of a graph input/output: ints where fixed, the symbolic name (or '?') where dynamic."""
    t = value_info.type.tensor_type
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]


def _shape_text(dims: list[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


@dataclass
class GraphFacts:
    input_name: str
    input_dtype: Any
    input_dims: list[int | str]
    output_name: str
    output_dtype: Any
    output_dims: list[int | str]
    channels: int
    size: int | None  # fixed square side, None where dynamic


def graph_facts(model: Any, spec: ByoSpec) -> GraphFacts:
    g = model.graph
    initializers = {i.name for i in g.initializer}
    inputs = [i for i in g.input if i.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise ByoError(f"the graph has {len(inputs)} inputs ({names}); an image model takes exactly one")
    if len(g.output) != 1:
        names = ", ".join(o.name for o in g.output)
        raise ByoError(f"the graph has {len(g.output)} outputs ({names}); wrap it to return one score tensor")
    inp, out = inputs[0], g.output[0]
    in_type, out_type = inp.type.tensor_type.elem_type, out.type.tensor_type.elem_type
    if in_type not in FLOAT_TYPES:
        raise ByoError(f"input {inp.name!r} has element type {in_type}; a float input is expected")
    if out_type not in FLOAT_TYPES:
        raise ByoError(f"output {out.name!r} has element type {out_type}; float scores are expected")
    dims = _dims(inp)
    if len(dims) != 4:
        raise ByoError(
            f"input {inp.name!r} has rank {len(dims)} {_shape_text(dims)}; an image model takes a rank-4 "
            f"batch ({spec.layout.upper()})"
        )
    if isinstance(dims[0], int) and dims[0] > 0:
        raise ByoError(
            f"input {inp.name!r} has a fixed batch of {dims[0]} {_shape_text(dims)}; export it with a "
            "dynamic batch axis (torch.onnx.export(..., dynamic_axes={'<input>': {0: 'batch'}}))"
        )
    c_axis, spatial = (1, dims[2:4]) if spec.layout == "nchw" else (3, dims[1:3])
    c = dims[c_axis]
    if isinstance(c, int):
        if c not in (1, 3):
            other = "nhwc" if spec.layout == "nchw" else "nchw"
            raise ByoError(
                f"input {inp.name!r} {_shape_text(dims)}: with --input-layout {spec.layout} its channel axis "
                f"is {c}; images have 1 or 3 channels: did you mean --input-layout {other}?"
            )
        if spec.channels is not None and spec.channels != c:
            raise ByoError(f"--channels {spec.channels}, but input {inp.name!r} {_shape_text(dims)} has {c}")
    elif spec.channels is None:
        raise ByoError(f"input {inp.name!r} {_shape_text(dims)} has a dynamic channel axis: pass --channels")
    channels = c if isinstance(c, int) else int(spec.channels or 3)
    fixed = [d for d in spatial if isinstance(d, int) and d > 0]
    size = None
    if len(fixed) == 2:
        if fixed[0] != fixed[1]:
            raise ByoError(
                f"input {inp.name!r} {_shape_text(dims)} is not square; the task routes send squares"
            )
        size = fixed[0]
        if spec.input_size is not None and spec.input_size != size:
            raise ByoError(f"--input-size {spec.input_size}, but input {inp.name!r} {_shape_text(dims)}")
        if spec.task == "segmentation":
            raise ByoError(
                f"input {inp.name!r} {_shape_text(dims)} has a fixed height and width; segmentation serves "
                "any image size: export with dynamic axes 2 and 3 (NCHW) or 1 and 2 (NHWC)"
            )
    out_dims = _dims(out)
    want_rank = 2 if spec.task == "classification" else 4
    if len(out_dims) != want_rank:
        shape = "(N, classes)" if want_rank == 2 else "(N, classes, H, W)"
        raise ByoError(
            f"output {out.name!r} has rank {len(out_dims)} {_shape_text(out_dims)}; "
            f"{spec.task} expects {shape}"
        )
    k = out_dims[1]
    if isinstance(k, int) and k > 0 and k != len(spec.labels):
        raise ByoError(
            f"output {out.name!r} {_shape_text(out_dims)} has {k} classes; --labels lists {len(spec.labels)}"
        )
    return GraphFacts(
        inp.name, FLOAT_TYPES[in_type], dims, out.name, FLOAT_TYPES[out_type], out_dims, channels, size
    )


# --- the wrapper graph --------------------------------------------------------------------------------


def _rename(graph: Any, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for vi in [*graph.input, *graph.output, *graph.value_info]:
        if vi.name == old:
            vi.name = new


def wrap(model: Any, spec: ByoSpec, facts: GraphFacts) -> tuple[Any, OnnxContract]:
    """uint8 NCHW ``image`` -> [Cast, Mul, Sub, (Transpose)] -> the user's graph -> the task's head."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    wrapped = onnx.ModelProto()
    wrapped.CopyFrom(model)
    g = wrapped.graph
    names = {n for node in g.node for n in [*node.input, *node.output]} | {i.name for i in g.initializer}
    out_name = "probs" if spec.task == "classification" else "mask"
    for ours in ("image", out_name):  # our contract's names win; a user tensor so named is renamed
        if ours in names:
            _rename(g, ours, f"user_{ours}")
    user_in = facts.input_name if facts.input_name not in ("image", out_name) else f"user_{facts.input_name}"
    user_out = (
        facts.output_name if facts.output_name not in ("image", out_name) else f"user_{facts.output_name}"
    )

    c = facts.channels
    scale, shift = normalisation(spec, c)
    dtype = facts.input_dtype
    g.initializer.extend(
        [
            numpy_helper.from_array(scale.reshape(1, c, 1, 1).astype(dtype), "byo_scale"),
            numpy_helper.from_array(shift.reshape(1, c, 1, 1).astype(dtype), "byo_shift"),
        ]
    )
    elem = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16, np.float64: TensorProto.DOUBLE}
    pre = [
        helper.make_node("Cast", ["image"], ["byo_float"], to=elem[dtype]),
        helper.make_node("Mul", ["byo_float", "byo_scale"], ["byo_scaled"]),
        helper.make_node(
            "Sub", ["byo_scaled", "byo_shift"], ["byo_nchw" if spec.layout == "nhwc" else user_in]
        ),
    ]
    if spec.layout == "nhwc":
        pre.append(helper.make_node("Transpose", ["byo_nchw"], [user_in], perm=[0, 2, 3, 1]))
    if spec.task == "classification":
        scores = user_out
        if facts.output_dtype is not np.float32:
            post = [helper.make_node("Cast", [user_out], ["byo_scores"], to=TensorProto.FLOAT)]
            scores = "byo_scores"
        else:
            post = []
        post.append(
            helper.make_node("Softmax", [scores], [out_name], axis=1)
            if spec.outputs == "logits"
            else helper.make_node("Identity", [scores], [out_name])
        )
    else:  # argmax over classes: the same uint8 mask our own segmenter returns
        post = [
            helper.make_node("ArgMax", [user_out], ["byo_argmax"], axis=1, keepdims=0),
            helper.make_node("Cast", ["byo_argmax"], [out_name], to=TensorProto.UINT8),
        ]
    nodes = [*pre, *g.node, *post]
    del g.node[:]
    g.node.extend(nodes)

    side: Any = facts.size if spec.task == "classification" else "height"
    width: Any = facts.size if spec.task == "classification" else "width"
    image = helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", c, side, width])
    if spec.task == "classification":
        out = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["batch", len(spec.labels)])
    else:
        out = helper.make_tensor_value_info(out_name, TensorProto.UINT8, ["batch", "height", "width"])
    kept = [i for i in g.input if i.name != user_in]  # initializers some exporters list as inputs
    del g.input[:]
    g.input.extend([image, *kept])
    del g.output[:]
    g.output.append(out)
    onnx.checker.check_model(wrapped)

    s = int(facts.size or spec.input_size or 0)
    if spec.task == "classification":
        contract = OnnxContract(
            inputs=[TensorSpec("image", "uint8", [-1, c, s, s])],
            outputs=[TensorSpec("probs", "float32", [-1, len(spec.labels)])],
        )
    else:
        axes = {0: "batch", 2: "height", 3: "width"}
        contract = OnnxContract(
            inputs=[TensorSpec("image", "uint8", [-1, c, -1, -1], dict(axes))],
            outputs=[TensorSpec("mask", "uint8", [-1, -1, -1], {0: "batch", 1: "height", 2: "width"})],
        )
    return wrapped, contract


# --- checks on probe inputs ---------------------------------------------------------------------------


def _session(model_bytes: bytes) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def probe_and_parity(user: Any, wrapped: Any, spec: ByoSpec, facts: GraphFacts, side: int) -> dict[str, Any]:
    """Run both graphs on the same probe images: finite outputs, then wrapped == user within tolerance."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, facts.channels, side, side), dtype=np.uint8)
    images[0] = 0  # a black and a white probe too: constant inputs expose NaN from norm layers
    images[1] = 255
    try:
        ref = _session(user.SerializeToString()).run(
            [facts.output_name], {facts.input_name: preprocess(images, spec, facts.input_dtype)}
        )[0]
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types; the message is the point
        raise ByoError(f"the graph does not run on a probe batch of 3 images {side}x{side}: {exc}") from exc
    if not np.isfinite(ref).all():
        raise ByoError(
            f"the model's outputs on a probe input contain {int((~np.isfinite(ref)).sum())} NaN/inf values"
        )
    if ref.shape[1] != len(spec.labels):
        raise ByoError(f"the model returns {ref.shape[1]} classes; --labels lists {len(spec.labels)}")
    got = _session(wrapped.SerializeToString()).run(None, {"image": images})[0]
    report: dict[str, Any] = {"probe": f"3 x {facts.channels}x{side}x{side} uint8 (black, white, noise)"}
    if spec.task == "classification":
        ref = ref.astype(np.float64)
        if spec.outputs == "probs":
            sums = ref.sum(axis=1)
            if (ref < -1e-6).any() or np.abs(sums - 1).max() > 1e-3:
                raise ByoError(
                    f"--outputs probs, but rows sum to {sums.round(3).tolist()}: pass --outputs logits"
                )
            probs = ref
        else:
            probs = _softmax(ref)
        worst = float(np.abs(probs - got.astype(np.float64)).max())
        if worst > PARITY_ATOL:
            raise ByoError(f"wrapped graph vs the user's: max |probs diff| {worst:.3g} > {PARITY_ATOL}")
        report.update({"max_abs_err/probs": worst, "atol": PARITY_ATOL})
    else:
        mask = ref.argmax(axis=1)
        fraction = float((mask != got).mean())
        if fraction > MASK_MISMATCH_MAX_FRACTION:
            raise ByoError(f"wrapped graph vs the user's: {fraction:.2%} of mask pixels differ")
        report.update({"mask_mismatch_fraction": fraction, "max_fraction": MASK_MISMATCH_MAX_FRACTION})
    return report


# --- entry points ---------------------------------------------------------------------------------------


def export_onnx_file(path: Path, name: str, spec: ByoSpec, workdir: Path) -> RepositoryModel:
    import onnx

    if not path.is_file():
        raise ByoError(f"--onnx {path}: no such file")
    try:
        user = onnx.load(str(path))
        onnx.checker.check_model(user)
    except Exception as exc:  # noqa: BLE001 - DecodeError, ValidationError: one message either way
        raise ByoError(f"--onnx {path}: not a valid ONNX model ({exc})") from exc
    facts = graph_facts(user, spec)
    if spec.task == "classification" and facts.size is None and spec.input_size is None:
        raise ByoError(
            f"input {facts.input_name!r} {_shape_text(facts.input_dims)} has a dynamic size: "
            "pass --input-size"
        )
    wrapped, contract = wrap(user, spec, facts)
    side = int(facts.size or spec.input_size or 4 * spec.multiple_of)
    if spec.task == "segmentation" and side % spec.multiple_of:
        raise ByoError(f"--input-size {side} is not a multiple of --multiple-of {spec.multiple_of}")
    parity = probe_and_parity(user, wrapped, spec, facts, side)
    out = workdir / "model.onnx"
    onnx.save(wrapped, str(out))
    source = {"onnx": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    card = {
        "arch": f"byo:{path.stem}",
        "source": source,
        "preprocessing": {**asdict(spec), "labels": len(spec.labels)},
        "user_graph": {
            "input": [facts.input_name, _shape_text(facts.input_dims)],
            "output": [facts.output_name, _shape_text(facts.output_dims)],
        },
        "parity": parity,
        "input": "uint8 NCHW image; the normalisation the model expects runs inside the graph",
    }
    params = {"channels": str(facts.channels), "image_size": str(side), "arch": f"byo:{path.stem}"}
    if spec.task == "classification":
        return RepositoryModel(
            name=name,
            task="classification",
            inputs=contract.inputs,
            outputs=contract.outputs,
            files={"model.onnx": out},
            labels=list(spec.labels),
            parameters=params,
            card=card,
        )
    palette = np.random.default_rng(1).integers(0, 256, (len(spec.labels), 3)).tolist()
    palette[0] = [0, 0, 0]
    return RepositoryModel(
        name=name,
        task="segmentation",
        inputs=contract.inputs,
        outputs=contract.outputs,
        files={"model.onnx": out},
        max_batch_size=16,
        parameters={
            **params,
            "classes": json.dumps(spec.labels),
            "palette": json.dumps(palette),
            "multiple_of": str(spec.multiple_of),
        },
        card=card,
    )


def export_torch_factory(
    target: str, weights: Path | None, name: str, spec: ByoSpec, workdir: Path
) -> RepositoryModel:
    """``module:factory`` builds the user's nn.Module; its weights load with weights_only=True. It is
    exported to ONNX as the user would (float input in its layout, dynamic batch), checked against
    PyTorch, then wrapped like any ONNX file."""
    import torch

    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ByoError(f"--torch {target!r}: expected module:factory (e.g. mypkg.nets:build)")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ByoError(f"--torch {target}: {exc}") from exc
    net = factory()
    if not isinstance(net, torch.nn.Module):
        raise ByoError(f"--torch {target}: the factory returned {type(net).__name__}, not a torch.nn.Module")
    if weights is not None:
        if not weights.is_file():
            raise ByoError(f"--weights {weights}: no such file")
        state = torch.load(weights, map_location="cpu", weights_only=True)
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise ByoError(f"--weights {weights} do not fit {target}: {str(exc).splitlines()[0]}") from exc
    net.eval()
    if spec.input_size is None:
        raise ByoError("--torch needs --input-size (the side of the square images the model takes)")
    c, s = spec.channels or 3, spec.input_size
    shape = (2, c, s, s) if spec.layout == "nchw" else (2, s, s, c)
    axes = {0: "batch"}
    if spec.task == "segmentation":
        axes.update({2: "height", 3: "width"} if spec.layout == "nchw" else {1: "height", 2: "width"})
    path = workdir / "user.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, as export_onnx
        example = torch.rand(shape)
        torch.onnx.export(
            net,
            (example,),
            str(path),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={
                "input": axes,
                "output": {0: "batch", **({2: "height", 3: "width"} if len(axes) > 1 else {})},
            },
            opset_version=17,
            dynamo=False,
        )
        ref = net(example).numpy()
    got = _session(path.read_bytes()).run(None, {"input": example.numpy()})[0]
    worst = float(np.abs(ref - got).max())
    if worst > 1e-4:
        raise ByoError(f"the ONNX export of {target} disagrees with PyTorch: max |diff| {worst:.3g} > 1e-4")
    model = export_onnx_file(path, name, spec, workdir)
    model.card["source"] = {"torch": target, "weights": str(weights) if weights else None}
    model.card["parity"]["torch_vs_onnx_max_abs_err"] = worst
    model.parameters["arch"] = model.card["arch"] = f"byo:{attr}"
    return model

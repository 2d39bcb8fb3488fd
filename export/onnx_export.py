"""ONNX export under an explicit contract, checked by onnx.checker and by parity with PyTorch.

The contract names every tensor, its dtype and which axes are dynamic; the same contract is
what the repository writer turns into config.pbtxt, so the two can never disagree.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

OPSET = 17


@dataclass
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: uint8, float32, int64, ...
    shape: list[int]  # full shape including the batch axis; -1 marks a dynamic axis
    dynamic: dict[int, str] = field(default_factory=dict)  # axis -> symbolic name, only axes we mean

    def __post_init__(self) -> None:
        for axis, dim in enumerate(self.shape):
            if dim == -1 and axis not in self.dynamic:
                self.dynamic[axis] = "batch" if axis == 0 else f"{self.name}_dim{axis}"


@dataclass
class OnnxContract:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    batched: bool = True  # axis 0 of every tensor is the batch axis Triton may stack requests on

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OnnxContract:
        return cls(
            [TensorSpec(**t) for t in d["inputs"]],
            [TensorSpec(**t) for t in d["outputs"]],
            d.get("batched", True),
        )


class ParityError(AssertionError):
    """onnxruntime disagrees with PyTorch beyond the stated tolerance."""


def export_onnx(
    module: nn.Module, example: tuple[torch.Tensor, ...], contract: OnnxContract, path: Path
) -> Path:
    """Export ``module`` (eval mode) with the contract's names and dynamic axes, then run onnx.checker."""
    import onnx

    module = module.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic_axes = {t.name: dict(t.dynamic) for t in contract.inputs + contract.outputs if t.dynamic}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", DeprecationWarning
        )  # torch marks this exporter as legacy; we chose it
        # The TorchScript-based exporter: fast, deterministic and it handles explicit state
        # (LSTM h/c, KV caches) without graph breaks.
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=[t.name for t in contract.inputs],
            output_names=[t.name for t in contract.outputs],
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    _check_names(model, contract)
    return path


def _check_names(model: Any, contract: OnnxContract) -> None:
    got_in = [i.name for i in model.graph.input]
    got_out = [o.name for o in model.graph.output]
    want_in = [t.name for t in contract.inputs]
    want_out = [t.name for t in contract.outputs]
    if got_in != want_in or got_out != want_out:
        raise ValueError(
            f"ONNX graph tensors {got_in}->{got_out} differ from the contract {want_in}->{want_out}"
        )


def ort_session(path: Path, threads: int = 0) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def check_parity(
    module: nn.Module, path: Path, feeds: dict[str, np.ndarray], atol: float, rtol: float = 0.0
) -> dict[str, float]:
    """Run the same inputs through PyTorch and onnxruntime; raise ParityError beyond atol + rtol*|ref|.

    Returns the max absolute error per output and the time taken, for the model card.
    """
    sess = ort_session(path)
    names = [o.name for o in sess.get_outputs()]
    start = time.perf_counter()
    got = sess.run(names, feeds)
    with torch.no_grad():
        ref = module.eval()(*[torch.from_numpy(v) for v in feeds.values()])
    ref_list = list(ref) if isinstance(ref, (tuple, list)) else [ref]
    report: dict[str, float] = {"seconds": time.perf_counter() - start, "atol": atol, "rtol": rtol}
    for name, r, g in zip(names, ref_list, got, strict=True):
        r_np = r.detach().cpu().numpy()
        if r_np.shape != g.shape:
            raise ParityError(f"output {name!r}: onnxruntime shape {g.shape} != PyTorch {r_np.shape}")
        if np.issubdtype(r_np.dtype, np.floating):
            err = np.abs(r_np.astype(np.float64) - g.astype(np.float64))
            bound = atol + rtol * np.abs(r_np.astype(np.float64))
            worst = float(err.max()) if err.size else 0.0
            if (err > bound).any():
                raise ParityError(
                    f"output {name!r}: max |onnx - torch| = {worst:.3g} exceeds atol={atol} rtol={rtol}"
                )
        else:
            worst = float((r_np != g).sum())
            if worst:
                raise ParityError(f"output {name!r}: {int(worst)} integer elements differ")
        report[f"max_abs_err/{name}"] = worst
    return report

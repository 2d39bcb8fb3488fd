"""INT8 variants of a classifier: dynamic and static (calibrated) onnxruntime quantisation.

``quantize_dynamic`` quantises weights ahead of time and activations per call; onnxruntime only
has dynamic kernels for MatMul/Gemm (and ConvInteger, which is slow on x86), so a conv net
gains little or loses. ``quantize_static`` calibrates activation ranges on real images (the
digits train split here) and emits QDQ/QLinearConv, which is where a CNN can speed up.
The benchmark reports both, with the accuracy change on the digits test split.

    python -m deploy.bench.int8 --model-dir build/model_repository/cpu/classifier --mode static

writes ``<repo>/<name>_int8`` beside the model: an optional INT8 variant Triton serves like any
other model (same config, ``model.onnx`` replaced, strictly validated).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from deploy.bench.inprocess import images, ort_session


def calibration_images(channels: int, size: int, n: int = 128) -> np.ndarray:
    """Digits train images at the model's input size when it takes 1 channel; random otherwise."""
    if channels == 1:
        try:
            from training.data.digits import load_digits_splits

            return load_digits_splits(size).x_train[:n]
        except ImportError:  # scikit-learn is in the train extra
            pass
    return images(channels, size, n, seed=1)


def quantize(src: Path, dest: Path, mode: str, input_name: str, calib: np.ndarray | None = None) -> Path:
    """Write an INT8 copy of ``src``: mode ``dynamic`` (weights only) or ``static`` (QDQ, calibrated)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="int8-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:  # shape inference + graph fusion first, as onnxruntime recommends
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception:
            pre = src
        if mode == "dynamic":
            quantize_dynamic(str(pre), str(dest), weight_type=QuantType.QInt8)
        elif mode == "static":
            if calib is None:
                raise ValueError("static quantisation needs calibration images")

            class Reader(CalibrationDataReader):
                def __init__(self) -> None:
                    self.batches = iter([{input_name: calib[i:i + 16]} for i in range(0, len(calib), 16)])

                def get_next(self) -> dict[str, np.ndarray] | None:
                    return next(self.batches, None)

            quantize_static(str(pre), str(dest), Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
        else:
            raise ValueError(f"mode must be dynamic or static, not {mode!r}")
    return dest


def accuracy(onnx: Path, input_name: str, x: np.ndarray, y: np.ndarray) -> float:
    sess = ort_session(onnx, threads=1)
    preds = np.concatenate([sess.run(None, {input_name: x[i:i + 64]})[0].argmax(1) for i in range(0, len(x), 64)])
    return float((preds == y).mean())


def compare(onnx: Path, input_name: str, channels: int, size: int, batch_size: int, seconds: float, workdir: Path,
            digits: bool, tick: Callable[[str], None] | None = None) -> dict[str, Any]:
    """images/s (single-threaded session, at ``batch_size``) and digits accuracy: fp32 vs dynamic vs static."""
    from deploy.bench.inprocess import _timed

    test: tuple[np.ndarray, np.ndarray] | None = None
    if digits and channels == 1:  # the served digits classifier: its ONNX carries the trained weights
        try:
            from training.data.digits import load_digits_splits

            splits = load_digits_splits(size)
            test = (splits.x_test, splits.y_test)
        except ImportError:
            test = None
    calib = calibration_images(channels, size)
    variants: dict[str, Path] = {"fp32": onnx}
    out: dict[str, Any] = {"batch_size": batch_size, "threads": 1, "variants": {}}
    for mode in ("dynamic", "static"):
        try:
            variants[mode] = quantize(onnx, workdir / f"{onnx.parent.parent.name}-{mode}.onnx", mode, input_name, calib)
        except Exception as exc:  # report, do not abort the benchmark
            out["variants"][mode] = {"error": f"{type(exc).__name__}: {exc}"}
    x = images(channels, size, batch_size)
    for mode, path in variants.items():
        sess = ort_session(path, threads=1)
        rate = _timed([lambda s=sess: (s.run(None, {input_name: x}), len(x))[1]], seconds)
        entry: dict[str, Any] = {"images_per_s": round(rate, 1), "onnx_bytes": path.stat().st_size}
        if test is not None:
            entry["test_accuracy"] = round(accuracy(path, input_name, *test), 4)
        out["variants"][mode] = entry
        if tick:
            tick(f"int8 {mode}: {rate:.0f} img/s")
    base = out["variants"]["fp32"]
    for mode in ("dynamic", "static"):
        v = out["variants"].get(mode, {})
        if "images_per_s" in v:
            v["speedup_vs_fp32"] = round(v["images_per_s"] / base["images_per_s"], 3)
            if "test_accuracy" in v:
                v["accuracy_change"] = round(v["test_accuracy"] - base["test_accuracy"], 4)
    if test is None:
        out["accuracy"] = "not measured: not the digits classifier (random-weight speed test) or no digits data"
    return out


def text_models_perplexity_hook(artifacts: Path = Path("build/artifacts")) -> dict[str, Any]:
    """INT8 perplexity change of the text models, once they exist.

    Hook: when ``export/tasks/text_generation.py`` and ``build/artifacts/{lstm,gpt}/model.pt``
    land, quantise their step-decoder ONNX with ``quantize(..., "dynamic", ...)`` (their MatMul/
    Gemm layers are where dynamic INT8 pays) and evaluate validation perplexity with the text
    recipe's own evaluation on both graphs. Until then this reports why it was skipped.
    """
    found = [name for name in ("lstm", "gpt") if (artifacts / name / "model.pt").is_file()]
    exporter = Path(__file__).resolve().parents[2] / "export" / "tasks" / "text_generation.py"
    if not found or not exporter.exists():
        return {"status": "skipped: text models not built yet (build/artifacts/{lstm,gpt}, "
                          "export/tasks/text_generation.py)"}
    return {"status": f"skipped: text models {found} exist but the perplexity evaluation is not wired yet"}


def write_variant(model_dir: Path, mode: str, name: str | None = None) -> Path:
    """``<repo>/<name>_int8``: the model folder with its ONNX quantised (config validated)."""
    from deploy.bench.models import copy_model
    from export.repository import validate_config_text

    cfg = validate_config_text((model_dir / "config.pbtxt").read_text(), expect_name=model_dir.name)
    params = {k: v.string_value for k, v in cfg.parameters.items()}
    channels, size = int(params.get("channels", "1")), int(params.get("image_size", "32"))
    name = name or f"{model_dir.name}_int8"

    def mark(c: Any) -> None:
        c.parameters["quantization"].string_value = f"int8-{mode}"

    dest = copy_model(model_dir, model_dir.parent, name, mark)
    for vdir in (p for p in dest.iterdir() if p.is_dir() and p.name.isdigit()):
        src = model_dir / vdir.name / "model.onnx"
        quantize(src, vdir / "model.onnx", mode, cfg.input[0].name,
                 calibration_images(channels, size) if mode == "static" else None)
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.bench.int8", description=(__doc__ or "").split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=Path("build/model_repository/cpu/classifier"),
                   help="a classification model folder of a cpu repository")
    p.add_argument("--mode", choices=["dynamic", "static"], default="static")
    p.add_argument("--name", default=None, help="served name of the variant (default <model>_int8)")
    args = p.parse_args(argv)
    if not (args.model_dir / "config.pbtxt").exists():
        print(f"error: {args.model_dir} has no config.pbtxt; run `make export` first", file=sys.stderr)
        return 2
    print(f"wrote {write_variant(args.model_dir, args.mode, args.name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

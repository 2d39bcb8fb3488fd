"""INT8 variants of a classifier (dynamic and static onnxruntime quantisation) and of the text models.

``quantize_dynamic`` quantises weights ahead of time and activations per call; onnxruntime only
has dynamic kernels for MatMul/Gemm (and ConvInteger, which is slow on x86), so a conv net
gains little or loses. ``quantize_static`` calibrates activation ranges on real images (the
digits train split here) and emits QDQ/QLinearConv, which is where a CNN can speed up.
The benchmark reports both, with the accuracy change on the digits test split. The text models'
step decoders are MatMul/LSTM graphs, where dynamic INT8 applies: ``text_models`` reports their
validation perplexity change and decode speed-up.

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
                    self.batches = iter([{input_name: calib[i : i + 16]} for i in range(0, len(calib), 16)])

                def get_next(self) -> dict[str, np.ndarray] | None:
                    return next(self.batches, None)

            quantize_static(
                str(pre),
                str(dest),
                Reader(),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
        else:
            raise ValueError(f"mode must be dynamic or static, not {mode!r}")
    return dest


def accuracy(onnx: Path, input_name: str, x: np.ndarray, y: np.ndarray) -> float:
    sess = ort_session(onnx, threads=1)
    preds = np.concatenate(
        [sess.run(None, {input_name: x[i : i + 64]})[0].argmax(1) for i in range(0, len(x), 64)]
    )
    return float((preds == y).mean())


def compare(
    onnx: Path,
    input_name: str,
    channels: int,
    size: int,
    batch_size: int,
    seconds: float,
    workdir: Path,
    digits: bool,
    tick: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """images/s (single-threaded session, at ``batch_size``) and digits accuracy: fp32 vs dynamic vs
    static."""
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
            variants[mode] = quantize(
                onnx, workdir / f"{onnx.parent.parent.name}-{mode}.onnx", mode, input_name, calib
            )
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
        out["accuracy"] = (
            "not measured: not the digits classifier (random-weight speed test) or no digits data"
        )
    return out


def text_models(
    repository: Path = Path("build/model_repository/cpu"),
    workdir: Path = Path("build/bench/run"),
    windows: int = 64,
    steps: int = 200,
) -> dict[str, Any]:
    """Dynamic INT8 of the served text models' step decoders: validation perplexity and decode speed.

    Perplexity: teacher forcing over ``windows`` evenly spaced windows of the held-out plays (the
    training recipe's own split), one prefill call per batch of windows, on the fp32 and the INT8
    graph. Speed: decode steps (one new token per row, the state/cache as served) at 1 and 16
    rows, one onnxruntime thread, as the generator runs them.
    """
    import json
    import math
    import time

    from export.repository import validate_config_text
    from serving.textgen import CharVocab

    try:
        from training.data.shakespeare import VALIDATION_WORKS, load_works
    except ImportError as exc:  # the corpus comes with the train extra
        return {"status": f"skipped: {exc}"}
    out: dict[str, Any] = {}
    val_text: str | None = None
    for name in ("lstm", "gpt"):
        model_dir = repository / name
        versions = sorted((p for p in model_dir.glob("[0-9]*") if p.is_dir()), key=lambda p: int(p.name))
        if not versions or not (versions[-1] / "decoder.onnx").exists():
            out[name] = {"status": f"skipped: no {model_dir}/<version>/decoder.onnx (run `make export`)"}
            continue
        cfg = validate_config_text((model_dir / "config.pbtxt").read_text(), expect_name=name)
        params = {k: v.string_value for k, v in cfg.parameters.items()}
        facts, arch = json.loads(params.get("state", "{}")), params.get("arch", name)
        context = int(params.get("context_length") or 128)
        vocab = CharVocab.load(versions[-1] / "vocab.json")
        if val_text is None:
            works = load_works()
            val_text = "".join(works[w] for w in VALIDATION_WORKS)
        ids = vocab.encode(val_text).astype(np.int64)
        fp32 = versions[-1] / "decoder.onnx"
        int8 = quantize(fp32, workdir / f"{name}_int8" / "decoder.onnx", "dynamic", "tokens")
        row: dict[str, Any] = {
            "arch": arch,
            "onnx_bytes": {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size},
        }
        for label, path in (("fp32", fp32), ("int8", int8)):
            session = ort_session(path, 1)
            feeds = _state_feeds(arch, facts, context)
            nll = _perplexity_nll(session, ids, context, windows, feeds)
            rates = {}
            for n in (1, 16):
                step = feeds(n, min(64, context - 1), 1)
                session.run(None, step)
                t0 = time.perf_counter()
                for _ in range(steps):
                    session.run(None, step)
                rates[f"tokens_per_s_at_{n}"] = round(n * steps / (time.perf_counter() - t0), 1)
            row[label] = {"val_perplexity": round(math.exp(nll), 4), **rates}
        row["perplexity_change"] = round(
            row["int8"]["val_perplexity"] / row["fp32"]["val_perplexity"] - 1.0, 4
        )
        row["speedup_at_1"] = round(row["int8"]["tokens_per_s_at_1"] / row["fp32"]["tokens_per_s_at_1"], 3)
        row["speedup_at_16"] = round(row["int8"]["tokens_per_s_at_16"] / row["fp32"]["tokens_per_s_at_16"], 3)
        out[name] = row
    return out


def _state_feeds(
    arch: str, facts: dict[str, Any], context: int
) -> Callable[[int, int, int], dict[str, np.ndarray]]:
    """feeds(rows, past, new): the decoder's inputs for ``rows`` sequences holding ``past`` positions,
    with ``new`` tokens each (zeros: speed and shapes only; the perplexity pass sets real tokens)."""

    def feeds(rows: int, past: int, new: int) -> dict[str, np.ndarray]:
        tokens = np.zeros((rows, new), np.int64)
        if arch == "gpt":
            shape = (rows, int(facts["n_head"]), context if past else 0, int(facts["head_dim"]))
            out = {"tokens": tokens, "past_lengths": np.full(rows, past, np.int64)}
            for i in range(int(facts["n_layer"])):
                out[f"past_k_{i}"] = out[f"past_v_{i}"] = np.zeros(shape, np.float32)
            return out
        state = np.zeros((int(facts["num_layers"]), rows, int(facts["hidden_size"])), np.float32)
        return {"tokens": tokens, "h": state, "c": state}

    return feeds


def _perplexity_nll(
    session: Any,
    ids: np.ndarray,
    context: int,
    windows: int,
    feeds: Callable[[int, int, int], dict[str, np.ndarray]],
) -> float:
    """Mean next-token cross-entropy (nats) over evenly spaced windows of ``context`` tokens."""
    starts = np.linspace(0, len(ids) - context - 1, windows).astype(np.int64)
    total, count = 0.0, 0
    for s in range(0, windows, 16):
        idx = starts[s : s + 16, None] + np.arange(context + 1)[None, :]
        w = ids[idx]
        f = feeds(len(w), 0, context)
        f["tokens"] = w[:, :-1]
        logits = session.run(None, f)[0].astype(np.float64)  # (B, T, V)
        logits -= logits.max(axis=-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        total -= float(np.take_along_axis(logp, w[:, 1:, None], axis=-1).sum())
        count += w[:, 1:].size
    return total / count


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

    text = any((p / "decoder.onnx").exists() for p in model_dir.iterdir() if p.is_dir())
    if text and mode != "dynamic":
        raise ValueError("text models take --mode dynamic (their step decoders are MatMul/LSTM graphs)")
    dest = copy_model(model_dir, model_dir.parent, name, mark)
    for vdir in (p for p in dest.iterdir() if p.is_dir() and p.name.isdigit()):
        if text:  # the generator reads decoder.onnx; everything else in the folder stays as exported
            quantize(model_dir / vdir.name / "decoder.onnx", vdir / "decoder.onnx", "dynamic", "tokens")
            continue
        src = model_dir / vdir.name / "model.onnx"
        quantize(
            src,
            vdir / "model.onnx",
            mode,
            cfg.input[0].name,
            calibration_images(channels, size) if mode == "static" else None,
        )
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m deploy.bench.int8",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--model-dir",
        type=Path,
        default=Path("build/model_repository/cpu/classifier"),
        help="a classification or text-generation (lstm, gpt: --mode dynamic) model folder "
        "of a cpu repository",
    )
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

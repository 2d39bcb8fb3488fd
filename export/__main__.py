"""Export trained checkpoints to ONNX (checked against PyTorch) and write a Triton model repository.

    python -m export --checkpoint build/artifacts/classifier/model.pt:classifier \
        --repository build/model_repository --targets cpu gpu

Your own model (any architecture; see export/byo.py), served by the same task routes:

    python -m export --onnx net.onnx:mynet --task classification --labels labels.txt \
        --input-size 224 --input-layout nhwc --normalize imagenet --outputs logits
    python -m export --torch mypkg.nets:build --weights net.pt:mynet --task classification ...
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

from export import byo as byo_spec
from export.repository import TARGETS, RepositoryModel, validate_repository, write_model
from export.tasks import get_exporter
from training.common import load_checkpoint


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m export",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="PATH[:NAME]",
        help="a model.pt from training; NAME is the served model name (default: its folder name)",
    )
    byo = p.add_argument_group("bring your own model (instead of --checkpoint)")
    byo.add_argument(
        "--onnx", metavar="FILE[:NAME]", help="your ONNX graph; NAME defaults to the file's stem"
    )
    byo.add_argument("--torch", metavar="MODULE:FACTORY", help="a function returning your torch.nn.Module")
    byo.add_argument("--weights", metavar="FILE[:NAME]", help="--torch: a state_dict (loaded weights_only)")
    byo.add_argument("--task", choices=byo_spec.TASKS, help="the task route that serves it")
    byo.add_argument("--labels", type=Path, help="one label (class name) per line, in output order")
    byo.add_argument("--input-size", type=int, help="square input side (default: the graph's own)")
    byo.add_argument("--input-layout", choices=["nchw", "nhwc"], default="nchw", help="your input's layout")
    byo.add_argument("--channels", type=int, choices=[1, 3], help="input channels (default: the graph's own)")
    byo.add_argument(
        "--input-range", choices=["0-1", "0-255"], default="0-1", help="pixel scale before --mean/--std"
    )
    byo.add_argument("--normalize", choices=["none", "imagenet"], default="none", help="a mean/std preset")
    byo.add_argument(
        "--mean", type=_floats, help="per-channel mean, comma-separated (in --input-range units)"
    )
    byo.add_argument("--std", type=_floats, help="per-channel std, comma-separated (in --input-range units)")
    byo.add_argument(
        "--outputs", choices=["logits", "probs"], default="logits", help="what your classifier returns"
    )
    byo.add_argument("--multiple-of", type=int, default=32, help="segmentation: H and W must be multiples of")
    p.add_argument(
        "--repository",
        type=Path,
        default=Path("build/model_repository"),
        help="root folder; each target is written to <root>/<target>/",
    )
    p.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    p.add_argument(
        "--version",
        default="auto",
        help="version number, or 'auto': reuse the newest when identical, else add one",
    )
    args = p.parse_args(argv)
    if bool(args.checkpoint) + bool(args.onnx) + bool(args.torch) != 1:
        p.error("give --checkpoint (ours, repeatable), or one --onnx or --torch model of your own")
    if (args.onnx or args.torch) and not (args.task and args.labels):
        p.error("--onnx/--torch need --task and --labels")
    return args


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: comma-separated numbers, e.g. 0.485,0.456,0.406"
        ) from None


def byo_model(args: argparse.Namespace, workdir: Path) -> RepositoryModel:
    """A user's ONNX graph or PyTorch module wrapped into the task's contract (export/byo.py)."""
    mean, std = args.mean, args.std
    if args.normalize == "imagenet":
        unit = 1.0 if args.input_range == "0-1" else 255.0
        mean = mean or [m * unit for m in byo_spec.IMAGENET_MEAN]
        std = std or [s * unit for s in byo_spec.IMAGENET_STD]
    spec = byo_spec.ByoSpec(
        task=args.task,
        labels=byo_spec.read_labels(args.labels),
        input_size=args.input_size,
        layout=args.input_layout,
        input_range=args.input_range,
        mean=mean or [0.0],
        std=std or [1.0],
        outputs=args.outputs,
        channels=args.channels,
        multiple_of=args.multiple_of,
    )
    if args.onnx:
        path, _, name = args.onnx.partition(":")
        return byo_spec.export_onnx_file(Path(path), name or Path(path).stem, spec, workdir)
    weights, _, name = (args.weights or "").partition(":")
    return byo_spec.export_torch_factory(
        args.torch, Path(weights) if weights else None, name or args.torch.rpartition(":")[2], spec, workdir
    )


def checkpoint_facts(path: Path) -> dict[str, str]:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    trained = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(path.stat().st_mtime))
    return {"checkpoint": str(path), "sha256": digest, "trained_at": trained}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.onnx or args.torch:
        with tempfile.TemporaryDirectory(prefix="export-byo-") as tmp:
            try:
                model = byo_model(args, Path(tmp))
            except byo_spec.ByoError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            for target in args.targets:
                vdir = write_model(args.repository / target, target, model, args.version)
                print(f"wrote {vdir} ({model.task}, target {target}; parity {model.card['parity']})")
        for target in args.targets:
            validate_repository(args.repository / target)
        return 0
    for item in args.checkpoint:
        path_str, _, name = item.partition(":")
        path = Path(path_str)
        if not path.is_file():
            print(f"error: checkpoint {path} not found; train it first (see `make help`)", file=sys.stderr)
            return 2
        ckpt = load_checkpoint(path)
        name = name or path.parent.name
        with tempfile.TemporaryDirectory(prefix=f"export-{name}-") as tmp:
            models = get_exporter(ckpt.task)(ckpt, Path(tmp), name)
            for model in models:
                # The model card also names the checkpoint it came from and when that was trained.
                model.card.setdefault("source", checkpoint_facts(path))
                for target in args.targets:
                    vdir = write_model(args.repository / target, target, model, args.version)
                    print(f"wrote {vdir} ({model.task}, target {target})")
    for target in args.targets:
        names = validate_repository(args.repository / target)
        print(f"{args.repository / target}: {len(names)} model configs parse strictly: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

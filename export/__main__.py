"""Export trained checkpoints to ONNX (checked against PyTorch) and write a Triton model repository.

    python -m export --checkpoint build/artifacts/classifier/model.pt:classifier \
        --repository build/model_repository --targets cpu gpu
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

from export.repository import TARGETS, validate_repository, write_model
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
        required=True,
        metavar="PATH[:NAME]",
        help="a model.pt from training; NAME is the served model name (default: its folder name)",
    )
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
    return p.parse_args(argv)


def checkpoint_facts(path: Path) -> dict[str, str]:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    trained = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(path.stat().st_mtime))
    return {"checkpoint": str(path), "sha256": digest, "trained_at": trained}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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

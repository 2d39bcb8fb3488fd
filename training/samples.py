"""Write a few held-out test images to try the served models with, e.g. with curl.

    python -m training.samples --out build/samples
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("build/samples"))
    p.add_argument("--count", type=int, default=10, help="digits to write (from the held-out test split)")
    args = p.parse_args(argv)
    from training.data.digits import raw_digit_images, split_indices

    raw, labels = raw_digit_images()
    _, _, test = split_indices(labels)
    args.out.mkdir(parents=True, exist_ok=True)
    for i, idx in enumerate(test[: args.count]):
        path = args.out / f"digit_{i}_label{labels[idx]}.png"
        Image.fromarray(raw[idx]).resize((64, 64), Image.Resampling.NEAREST).save(path)
        print(path, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Write held-out inputs for every task, to try the served models with (e.g. with curl).

    python -m training.samples --out build/samples

digits (classify, anomaly), generated scenes (segment), a held-out photo downscaled (super-resolve)
and with noise added (denoise),
and an anomaly (random shapes) — none of them was trained on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("build/samples"))
    p.add_argument("--count", type=int, default=5, help="images per kind")
    args = p.parse_args(argv)
    from training.data.anomaly import raw_anomalies
    from training.data.digits import raw_digit_images, split_indices
    from training.data.photos import held_out_images
    from training.data.shapes import make_scenes

    args.out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    raw, labels = raw_digit_images()
    _, _, test = split_indices(labels)
    for i, idx in enumerate(test[: args.count]):
        path = args.out / f"digit_{i}_label{labels[idx]}.png"
        Image.fromarray(raw[idx]).resize((64, 64), Image.Resampling.NEAREST).save(path)
        written.append(path)
    scenes = make_scenes(args.count, 128, split="test")
    for i, img in enumerate(scenes.images):
        path = args.out / f"scene_{i}.png"
        Image.fromarray(img.transpose(1, 2, 0)).save(path)
        written.append(path)
    photo = held_out_images(4, max_side=256)[1]
    for name, arr in (("photo_lr.png", photo.lr), ("photo_hr.png", photo.hr)):
        Image.fromarray(arr).save(args.out / name)
        written.append(args.out / name)
    from training.denoise import EVAL_SEED, add_noise

    noisy = add_noise(photo.hr, 25.0, np.random.default_rng(EVAL_SEED))  # denoise: held-out, sigma 25
    Image.fromarray(noisy).save(args.out / "photo_noisy.png")
    written.append(args.out / "photo_noisy.png")
    anomalies, kinds = raw_anomalies(args.count)
    for i, (a, kind) in enumerate(zip(anomalies, kinds, strict=True)):
        path = args.out / f"anomaly_{i}_{kind}.png"
        Image.fromarray(a).resize((64, 64), Image.Resampling.NEAREST).save(path)
        written.append(path)
    for path in written:
        print(path, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

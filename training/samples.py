"""Write held-out inputs for every task, to try the served models with (e.g. with curl).

    python -m training.samples --out build/samples

digits (classify, anomaly), generated scenes (segment), a held-out photo downscaled (super-resolve)
and with noise added (denoise),
and an anomaly (random shapes) — none of them was trained on.

    python -m training.samples --playground serving/gateway/static/playground/samples.js

writes a few of the same held-out inputs as a JavaScript module of PNG data URLs (and held-out
spelled-out numbers for translation, speech openings from the held-out plays for text generation):
the playground's example inputs (the gateway has no training data and no torch, so they ship with
the page).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("build/samples"))
    p.add_argument("--count", type=int, default=5, help="images per kind")
    p.add_argument("--playground", type=Path, help="write the playground's samples.js here instead")
    args = p.parse_args(argv)
    if args.playground:
        args.playground.write_text(playground_module())
        print(args.playground, flush=True)
        return 0
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


def _data_url(arr: np.ndarray, side: int | None = None) -> str:
    img = Image.fromarray(arr)
    if side:  # 8x8 digits: a nearest upscale, as the curl samples are
        img = img.resize((side, side), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def held_out_numbers(count: int = 4) -> list[dict[str, str]]:
    """Spelled-out numbers from translation's held-out split, >= 1000 so never trained on (below
    1000 the split is shared: see training/data/numbers.py), shortest first."""
    from training.data import numbers
    from training.translate import EVAL_SEED

    picked = [e for e in numbers.examples(4 * count, EVAL_SEED, held_out=True) if int(e.target) >= 1000]
    picked = sorted(picked[:count], key=lambda e: len(e.source))
    return [{"name": e.source, "text": e.source, "target": e.target} for e in picked]


def _first_speeches(names: tuple[str, ...], lines: str, after: int) -> list[tuple[str, re.Match[str]]]:
    """(work, match of speaker + ``lines``) for the first speech past ``after`` characters of each
    named work (past the title page and the list of persons); works with none are left out. The
    corpus is read once for all of them."""
    from training.data import shakespeare

    works = shakespeare.load_works()
    turn = re.compile(rf"\n\n([A-Z][A-Z ]+)\.\n({lines})")
    found = ((name, turn.search(works[name], after)) for name in names)
    return [(name, m) for name, m in found if m]


def _title(work: str) -> str:
    return work.replace("_", " ").title()


def held_out_prompts() -> list[dict[str, str]]:
    """One speech opening per held-out play (text generation's validation works, never trained on):
    the speaker's name and the first line, as the corpus writes them."""
    from training.data import shakespeare

    return [
        {"name": f"{_title(name)}: {m.group(1).title()}", "text": f"{m.group(1)}.\n{m.group(2)}"}
        for name, m in _first_speeches(shakespeare.VALIDATION_WORKS, r"[^\n\[]{12,80}\n", 5000)
    ]


def held_out_passages() -> list[dict[str, str]]:
    """One speech per genre test play (text classification's test works, unseen in pre-training and
    fine-tuning): ``{"name", "text", "target"}`` with the play's First Folio genre as the target."""
    from training.data import shakespeare

    return [
        {
            "name": f"{_title(name)} ({m.group(1).title()})",
            "text": " ".join(m.group(2).split()),
            "target": shakespeare.GENRE_OF[name],
        }
        for name, m in _first_speeches(shakespeare.GENRE_TEST_WORKS, r"(?:[^\n\[]{8,80}\n){2,3}", 8000)
    ]


def playground_samples(count: int = 4) -> dict[str, list[dict[str, str]]]:
    """Held-out inputs per kind, ``{"digits": [{"name", "url"}], ...}``; small enough to ship.
    ``numbers`` (``{"name", "text", "target"}``) and ``prompts`` (``{"name", "text"}``) and ``passages``
    (``{"name", "text", "target"}``) are text."""
    from training.data.anomaly import raw_anomalies
    from training.data.digits import raw_digit_images, split_indices
    from training.data.photos import held_out_images
    from training.data.shapes import make_scenes
    from training.denoise import EVAL_SEED, add_noise

    raw, labels = raw_digit_images()
    _, _, test = split_indices(labels)
    digits = [{"name": f"digit {labels[i]}", "url": _data_url(raw[i], 64)} for i in test[:count]]
    scenes = make_scenes(3, 96, split="test").images  # noisy textures: ~20 kB each as PNG
    photos = held_out_images(4, max_side=128)
    noisy = add_noise(photos[1].hr[16:112, 16:112], 25.0, np.random.default_rng(EVAL_SEED))
    anomalies, kinds = raw_anomalies(count)
    return {
        "digits": digits,
        "scenes": [
            {"name": f"scene {i}", "url": _data_url(im.transpose(1, 2, 0))} for i, im in enumerate(scenes)
        ],
        "photos": [{"name": f"{p.name} (low-res)", "url": _data_url(p.lr)} for p in photos],
        "noisy": [{"name": f"{photos[1].name} + noise (sigma 25)", "url": _data_url(noisy)}],
        "anomalies": [
            *digits[:1],
            *(
                {"name": f"anomaly: {k}", "url": _data_url(a, 64)}
                for a, k in zip(anomalies, kinds, strict=True)
            ),
        ],
        "numbers": held_out_numbers(count),
        "prompts": held_out_prompts(),
        "passages": held_out_passages(),
    }


def playground_module() -> str:
    head = "// Held-out inputs, never trained on. Written by: python -m training.samples --playground FILE\n"
    return head + "export const samples = " + json.dumps(playground_samples(), indent=1) + ";\n"


if __name__ == "__main__":
    raise SystemExit(main())

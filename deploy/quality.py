"""Every task's quality metric, offline (PyTorch) and through the gateway, side by side.

    python -m deploy.quality                      # starts the embedded stack from build/model_repository/cpu
    python -m deploy.quality --url http://127.0.0.1:8080 --limit 100

Writes reports/quality.json. For each task the same held-out inputs go through the PyTorch
checkpoint in this process and through the served model (HTTP, the task route), and the two
figures must agree within the stated tolerance; the exit code is 1 when one does not.

The "robustness" section (``deploy.robustness``; ``--no-robustness`` skips it) is the table of
task x perturbation (what users send: other sizes, blocks, polarity, JPEG, shifts, colour modes),
offline vs served, with the targets judged on the served figures; its plot is
reports/robustness.png. ``--require-targets`` also exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

# Served vs offline, per metric: absolute tolerances and why they are not zero.
TOLERANCES = {
    "classification/accuracy": 0.005,  # same pixels; float32 graph vs eager may flip a near-tie
    "segmentation/mean_iou": 0.01,  # argmax of logits equal to ~1e-5; a few boundary pixels may flip
    "super_resolution/psnr": 0.05,  # uint8 rounding of x.5 values may differ by one level (dB)
    "super_resolution/ssim": 0.002,
    "anomaly/roc_auc": 0.005,
    "denoising/psnr": 0.05,  # same uint8 rounding as super-resolution (dB)  # float32 scores agree to ~1e-6
    "sampling/confident": 0.01,  # same latents; a sample at the judge threshold may cross it after rounding
    "sampling/pixel_agreement": 0.001,  # share of pixels within 1 level of PyTorch's (uint8 rounding of x.5)
    "text_generation/greedy_exact_match": 0.0,  # greedy decoding must reproduce the offline text exactly
}


def png(arr_hw_or_hwc: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr_hw_or_hwc).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Row:
    task: str
    model: str
    metric: str
    offline: float
    served: float
    baseline: float | None = None  # e.g. bicubic PSNR, unigram perplexity
    n: int = 0

    @property
    def tolerance(self) -> float:
        return TOLERANCES[f"{self.task}/{self.metric}"]

    @property
    def ok(self) -> bool:
        return abs(self.offline - self.served) <= self.tolerance + 1e-12

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "model": self.model,
            "metric": self.metric,
            "offline": self.offline,
            "served": self.served,
            "difference": self.served - self.offline,
            "tolerance": self.tolerance,
            "agree": self.ok,
            "baseline": self.baseline,
            "n": self.n,
        }


def post_image(client: httpx.Client, route: str, data: bytes, **params: Any) -> httpx.Response:
    r = client.post(route, files={"file": ("x.png", data, "image/png")}, params=params)
    r.raise_for_status()
    return r


def check_classification(client: httpx.Client, art: Path, limit: int) -> list[Row]:
    from training.classify import evaluate
    from training.common import load_checkpoint
    from training.data.digits import load_digits_splits, raw_digit_images, split_indices

    ckpt = load_checkpoint(art / "classifier" / "model.pt")
    data = load_digits_splits(int(ckpt.meta["image_size"]))
    raw, y = raw_digit_images()
    test = split_indices(y)[2][:limit]
    import torch

    _, offline = evaluate(ckpt.model, data.x_test[:limit], data.y_test[:limit], torch.device("cpu"))
    labels = [
        post_image(client, "/v1/classify", png(raw[i]), top_k=1, model="classifier").json()["predictions"][0][
            "label"
        ]
        for i in test
    ]
    served = float(np.mean([lab == str(y[i]) for lab, i in zip(labels, test, strict=True)]))
    return [Row("classification", "classifier", "accuracy", float(offline), served, n=len(test))]


def check_segmentation(client: httpx.Client, art: Path, limit: int) -> list[Row]:
    import torch

    from training.common import load_checkpoint
    from training.data.shapes import make_scenes
    from training.segment import confusion, iou_from_confusion, predict

    ckpt = load_checkpoint(art / "segmenter" / "model.pt")
    k = len(ckpt.meta["classes"])
    scenes = make_scenes(limit, int(ckpt.meta.get("image_size", 64)), split="test")
    offline_pred = predict(ckpt.model, scenes.images, torch.device("cpu"))
    served_pred = np.stack(
        [
            np.asarray(
                Image.open(
                    io.BytesIO(
                        post_image(
                            client,
                            "/v1/segment",
                            png(img.transpose(1, 2, 0)),
                            output="mask",
                            model="segmenter",
                        ).content
                    )
                )
            )
            for img in scenes.images
        ]
    )
    off = float(np.nanmean(iou_from_confusion(confusion(offline_pred, scenes.masks, k))))
    srv = float(np.nanmean(iou_from_confusion(confusion(served_pred, scenes.masks, k))))
    return [Row("segmentation", "segmenter", "mean_iou", off, srv, n=limit)]


def check_super_resolution(client: httpx.Client, art: Path, max_side: int) -> list[Row]:
    import torch

    from training.common import load_checkpoint
    from training.data.photos import held_out_images, upscale_bicubic
    from training.super_resolve import image_metrics, super_resolve

    rows: list[Row] = []
    for scale in (2, 4):
        images = held_out_images(scale, max_side=max_side)
        bicubic = [image_metrics(upscale_bicubic(im.lr, scale), im.hr, scale) for im in images]
        for variant in ("psnr", "gan"):
            name = f"sr_{variant}_x{scale}"
            path = art / f"sr_x{scale}" / name / "model.pt"
            if not path.exists():
                continue
            model = load_checkpoint(path).model
            off = [
                image_metrics(super_resolve(model, im.lr, torch.device("cpu")), im.hr, scale) for im in images
            ]
            srv = []
            for im in images:
                body = post_image(client, "/v1/super-resolve", png(im.lr), scale=scale, model=variant).content
                srv.append(
                    image_metrics(np.asarray(Image.open(io.BytesIO(body)).convert("RGB")), im.hr, scale)
                )
            for metric in ("psnr", "ssim"):
                rows.append(
                    Row(
                        "super_resolution",
                        name,
                        metric,
                        float(np.mean([m[metric] for m in off])),
                        float(np.mean([m[metric] for m in srv])),
                        baseline=float(np.mean([m[metric] for m in bicubic])),
                        n=len(images),
                    )
                )
    return rows


def check_anomaly(client: httpx.Client, art: Path, limit: int) -> list[Row]:
    import torch

    from training.anomaly import roc_auc, scores
    from training.common import load_checkpoint
    from training.data.anomaly import raw_anomalies
    from training.data.digits import raw_digit_images, split_indices

    ckpt = load_checkpoint(art / "anomaly" / "model.pt")
    size = int(ckpt.meta["image_size"])
    raw, y = raw_digit_images()
    normal_raw = raw[split_indices(y)[2][:limit]]
    anomal_raw, _ = raw_anomalies(len(normal_raw))
    from training.data.digits import prepare, to_pil

    def prep(r: np.ndarray) -> np.ndarray:  # the gateway's preprocessing, canonicalisation included
        return np.stack([prepare(to_pil(x), size) for x in r])

    off = roc_auc(
        scores(ckpt.model, prep(normal_raw), torch.device("cpu")),
        scores(ckpt.model, prep(anomal_raw), torch.device("cpu")),
    )

    def served(rs: np.ndarray) -> np.ndarray:
        return np.array(
            [post_image(client, "/v1/anomaly", png(r), model="anomaly").json()["score"] for r in rs]
        )

    srv = roc_auc(served(normal_raw), served(anomal_raw))
    return [Row("anomaly", "anomaly", "roc_auc", off, srv, n=2 * len(normal_raw))]


PROMPTS = ["ROMEO:", "First Citizen:\nBefore we proceed", "To be, or not", "KING HENRY:\nWhat", "The "]


def check_text(client: httpx.Client, art: Path, tokens: int) -> list[Row]:
    from serving.textgen import CharVocab, SamplingParams
    from training.common import load_checkpoint
    from training.generate import generate

    rows = []
    for name in ("lstm", "gpt"):
        path = art / name / "model.pt"
        if not path.exists():
            continue
        ckpt = load_checkpoint(path)
        vocab = CharVocab.from_dict(ckpt.meta["vocabulary"])
        matches = []
        for prompt in PROMPTS:
            offline = generate(ckpt.model, vocab, prompt, tokens, SamplingParams(temperature=0.0)).text
            r = client.post(
                "/v1/generate",
                json={"prompt": prompt, "max_new_tokens": tokens, "temperature": 0, "model": name},
            )
            r.raise_for_status()
            matches.append(r.json()["text"] == offline)
        ppl = ckpt.meta.get("metrics", {}).get("val_perplexity")
        rows.append(
            Row(
                "text_generation",
                name,
                "greedy_exact_match",
                1.0,
                float(np.mean(matches)),
                baseline=ppl,
                n=len(PROMPTS),
            )
        )
    return rows


def check_denoising(client: httpx.Client, art: Path, max_side: int) -> list[Row]:
    """PSNR of the denoised held-out photos at sigma 25, offline vs through /v1/denoise; baseline: median."""
    from training.common import load_checkpoint
    from training.data.photos import held_out_images
    from training.denoise import EVAL_SEED, add_noise, denoise, median_filter
    from training.super_resolve import image_metrics

    path = art / "denoiser" / "model.pt"
    if not path.exists():
        return []
    model = load_checkpoint(path).model
    rng = np.random.default_rng(EVAL_SEED)
    clean = [im.hr for im in held_out_images(1, max_side=max_side)]
    noisy = [add_noise(c, 25.0, rng) for c in clean]
    off, srv, base = [], [], []
    for c, n in zip(clean, noisy, strict=True):
        off.append(image_metrics(denoise(model, n), c, 0)["psnr"])
        body = post_image(client, "/v1/denoise", png(n), model="denoiser").content
        srv.append(image_metrics(np.asarray(Image.open(io.BytesIO(body)).convert("RGB")), c, 0)["psnr"])
        base.append(image_metrics(median_filter(n, 3), c, 0)["psnr"])
    return [
        Row(
            "denoising",
            "denoiser",
            "psnr",
            float(np.mean(off)),
            float(np.mean(srv)),
            baseline=float(np.mean(base)),
            n=len(clean),
        )
    ]


def check_sampling(client: httpx.Client, art: Path, limit: int) -> list[Row]:
    """Seeded /v1/sample vs the generator in PyTorch on the same latents: pixels, and the judge's
    confident share (baseline: uniform noise through the same judge)."""
    from serving.latent import latents
    from training.common import load_checkpoint
    from training.gan_sample import JUDGE_NAME, judge_probs, judge_report, sample

    path = art / "sampler" / "model.pt"
    if not path.exists():
        return []
    ckpt = load_checkpoint(path)
    dim, per = int(ckpt.meta["latent_dim"]), 16
    served, offline = [], []
    for seed in range(max(1, limit // per)):
        r = client.post("/v1/sample", json={"n": per, "seed": seed, "format": "json", "model": "sampler"})
        r.raise_for_status()
        served += [np.asarray(Image.open(io.BytesIO(base64.b64decode(b)))) for b in r.json()["images"]]
        offline.append(sample(ckpt.model, latents(seed, per, dim)))
    srv = np.stack(served)[:, None]
    off = np.concatenate(offline)
    agree = float((np.abs(srv.astype(np.int16) - off) <= 1).mean())
    rows = [Row("sampling", "sampler", "pixel_agreement", 1.0, agree, n=len(srv))]
    judge_path = path.resolve().parent / JUDGE_NAME  # beside the real checkpoint, even through a symlink
    if judge_path.exists():
        judge = load_checkpoint(judge_path).model
        noise = np.random.default_rng(0).integers(0, 256, srv.shape, dtype=np.uint8)
        rows.append(
            Row(
                "sampling",
                "sampler",
                "confident",
                judge_report(judge_probs(judge, off))["confident"],
                judge_report(judge_probs(judge, srv))["confident"],
                baseline=judge_report(judge_probs(judge, noise))["confident"],
                n=len(srv),
            )
        )
    return rows


def run(url: str, art: Path, limit: int, tasks: list[str]) -> list[Row]:
    checks: dict[str, Callable[[httpx.Client], list[Row]]] = {
        "classification": lambda c: check_classification(c, art, limit),
        "segmentation": lambda c: check_segmentation(c, art, min(limit, 100)),
        "super_resolution": lambda c: check_super_resolution(c, art, 256 if limit < 360 else 0),
        "anomaly": lambda c: check_anomaly(c, art, limit),
        "denoising": lambda c: check_denoising(c, art, 256 if limit < 360 else 0),
        "sampling": lambda c: check_sampling(c, art, max(limit, 16)),
        "text_generation": lambda c: check_text(c, art, 40),
    }
    rows: list[Row] = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for task in tasks:
            start = time.perf_counter()
            got = checks[task](client)
            rows += got
            print(f"{task}: {len(got)} figure(s) in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    return rows


def table(rows: list[Row]) -> str:
    lines = [f"{'task':<17} {'model':<11} {'metric':<19} {'offline':>9} {'served':>9} {'baseline':>9}  agree"]
    for r in rows:
        base = f"{r.baseline:9.4f}" if isinstance(r.baseline, float) else f"{'':>9}"
        lines.append(
            f"{r.task:<17} {r.model:<11} {r.metric:<19} {r.offline:9.4f} {r.served:9.4f} {base}  "
            f"{'yes' if r.ok else 'NO'} (±{r.tolerance:g})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m deploy.quality",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--url", help="a running gateway; default: start the embedded stack")
    p.add_argument("--model-repository", type=Path, default=Path("build/model_repository/cpu"))
    p.add_argument("--artifacts", type=Path, default=Path("build/artifacts"), help="the checkpoints served")
    p.add_argument(
        "--limit", type=int, default=360, help="held-out items per task (360 = the whole digit test split)"
    )
    p.add_argument(
        "--tasks",
        nargs="+",
        default=[
            "classification",
            "segmentation",
            "super_resolution",
            "anomaly",
            "denoising",
            "sampling",
            "text_generation",
        ],
    )
    p.add_argument("--out", type=Path, default=Path("reports/quality.json"))
    p.add_argument(
        "--robustness",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the task x perturbation table (deploy.robustness)",
    )
    p.add_argument("--robust-n", type=int, default=16, help="items per robustness cell")
    p.add_argument("--require-targets", action="store_true", help="exit 1 when a robustness target is missed")
    args = p.parse_args(argv)
    stack = None
    if args.url is None:
        from deploy.stack import start_local_stack

        if not any(args.model_repository.glob("*/config.pbtxt")):
            print(f"error: no models in {args.model_repository}; run `make export` first", file=sys.stderr)
            return 2
        stack = start_local_stack(args.model_repository, Path(tempfile.mkdtemp(prefix="quality-")))
        args.url = stack.gateway_url
    cells: list[Any] = []
    try:
        rows = run(args.url, args.artifacts, args.limit, args.tasks)
        if args.robustness:
            from deploy import robustness

            start = time.perf_counter()
            with httpx.Client(base_url=args.url, timeout=120) as client:
                cells = robustness.run(client, args.artifacts, args.robust_n, args.tasks)
            print(f"robustness: {len(cells)} cell(s) in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    finally:
        if stack is not None:
            stack.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "url": args.url if stack is None else "embedded",
        "limit": args.limit,
        "tolerances": TOLERANCES,
        "rows": [r.to_dict() for r in rows],
        "all_agree": all(r.ok for r in rows),
    }
    ok = bool(report["all_agree"])
    if args.robustness:
        from deploy import robustness

        report["robustness"] = robustness.report(cells, args.robust_n)
        plot = robustness.plot(cells, args.out.with_name("robustness.png")) if cells else None
        report["robustness"]["plot"] = str(plot) if plot else None
        ok = ok and report["robustness"]["all_agree"]
        if args.require_targets:
            ok = ok and report["robustness"]["all_targets_met"]
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(rows))
    if args.robustness:
        print(robustness.table(cells))
        for line in report["robustness"]["failed_targets"]:
            print(f"target missed: {line}")
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

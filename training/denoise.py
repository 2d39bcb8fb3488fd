"""Train a denoising autoencoder on photo patches corrupted with Gaussian noise of random strength.

    python -m training.denoise --profile quick --out build/artifacts/denoiser

Blind denoising: each training patch gets noise with its own sigma drawn from SIGMA_RANGE (0..255
scale), clipped and quantised to uint8 exactly as a served upload would be; the target is the
clean patch. Evaluation runs on the held-out photos of training.data.photos (never cropped for
training) at each of EVAL_SIGMAS, with a fixed noise seed: PSNR/SSIM of the noisy input, of the
best median filter (3x3 or 5x5, whichever scores higher at that sigma: the strongest version of
the classical baseline) and of the autoencoder. Writes model.pt, metrics.json,
training_curve.png and denoise_comparison.png (noisy | median | autoencoder | clean).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from training.common import (
    CHECKPOINT_NAME,
    History,
    Timer,
    base_parser,
    count_parameters,
    plot_curves,
    progress,
    save_checkpoint,
    setup_run,
    write_metrics,
)
from training.data.photos import HELD_OUT, PatchSampler, held_out_images
from training.models import build_model, config_class
from training.super_resolve import image_metrics

PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {"steps": 40, "patch": 32, "batch": 8, "lr": 2e-3, "eval_side": 64, "model": {"widths": (8, 16)}},
    "quick": {  # ~0.08 s a step on 2 idle cores: under 2 minutes, inside make serve's budget
        "steps": 1200,
        "patch": 32,
        "batch": 16,
        "lr": 2e-3,
        "eval_side": None,
        "model": {"widths": (24, 48, 64)},
    },
    "full": {
        "steps": 20000,
        "patch": 64,
        "batch": 32,
        "lr": 1e-3,
        "eval_side": None,
        "model": {"widths": (64, 128, 192), "convs_per_stage": 3},
    },
}
SIGMA_RANGE = (5.0, 55.0)  # training noise std on the 0..255 scale, uniform per patch
EVAL_SIGMAS = (15.0, 25.0, 50.0)
MEDIAN_SIZES = (3, 5)
EVAL_SEED = 1234  # the held-out noise is the same for every run and every baseline
MEAN, STD = 0.0, 1.0  # the model works on x/255 in [0, 1]
VAL_EVERY = 100
COMPARISON_NAME = "denoise_comparison.png"


def add_noise(clean: np.ndarray, sigma: float | np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 image(s) + Gaussian noise of std ``sigma`` (0..255; per leading item if an array), as uint8."""
    sig = (
        np.asarray(sigma, dtype=np.float64).reshape(-1, *([1] * (clean.ndim - 1)))
        if np.ndim(sigma)
        else sigma
    )
    noisy = clean.astype(np.float64) + rng.normal(0.0, 1.0, clean.shape) * sig
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def median_filter(img: np.ndarray, size: int) -> np.ndarray:
    """(H, W, C) uint8 -> per-channel size x size median, the classical denoiser."""
    from scipy.ndimage import median_filter as nd_median

    return nd_median(img, size=(size, size, 1), mode="reflect")


@torch.no_grad()
def denoise(model: nn.Module, img: np.ndarray) -> np.ndarray:
    """(H, W, C) uint8 -> (H, W, C) uint8 through the model, whole image in one pass (as exported,
    untiled)."""
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].float() / 255.0
    y = model(x).mul(255.0).clamp(0.0, 255.0).round().to(torch.uint8)
    return y[0].numpy().transpose(1, 2, 0)


def evaluate(model: nn.Module, clean: list[np.ndarray], names: list[str]) -> dict[str, Any]:
    """Per sigma: mean PSNR/SSIM of noisy input, best median filter and the autoencoder, plus gains."""
    rng = np.random.default_rng(EVAL_SEED)
    report: dict[str, Any] = {}
    for sigma in EVAL_SIGMAS:
        noisy = [add_noise(c, sigma, rng) for c in clean]
        per: dict[str, list[dict[str, float]]] = {"noisy": [], "autoencoder": []}
        per |= {f"median{k}": [] for k in MEDIAN_SIZES}
        for c, n in zip(clean, noisy, strict=True):
            per["noisy"].append(image_metrics(n, c, 0))
            per["autoencoder"].append(image_metrics(denoise(model, n), c, 0))
            for k in MEDIAN_SIZES:
                per[f"median{k}"].append(image_metrics(median_filter(n, k), c, 0))
        mean = {
            m: {key: float(np.mean([d[key] for d in v])) for key in ("psnr", "ssim")} for m, v in per.items()
        }
        best_median = max((f"median{k}" for k in MEDIAN_SIZES), key=lambda m: mean[m]["psnr"])
        report[f"sigma_{sigma:g}"] = {
            "noisy": mean["noisy"],
            "median": {**mean[best_median], "size": int(best_median.removeprefix("median"))},
            "autoencoder": mean["autoencoder"],
            "psnr_gain_over_noisy_db": mean["autoencoder"]["psnr"] - mean["noisy"]["psnr"],
            "psnr_gain_over_median_db": mean["autoencoder"]["psnr"] - mean[best_median]["psnr"],
            "per_image_psnr": {
                name: {m: per[m][i]["psnr"] for m in ("noisy", best_median, "autoencoder")}
                for i, name in enumerate(names)
            },
        }
    return report


def plot_comparison(out: Path, model: nn.Module, clean: np.ndarray, sigma: float, side: int = 128) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = clean.shape[:2]
    y, x = max(0, (h - side) // 2), max(0, (w - side) // 2)
    crop = clean[y : y + side, x : x + side]
    noisy = add_noise(crop, sigma, np.random.default_rng(EVAL_SEED))
    panels = {
        "noisy": noisy,
        f"median {MEDIAN_SIZES[0]}x{MEDIAN_SIZES[0]}": median_filter(noisy, MEDIAN_SIZES[0]),
        "denoising AE": denoise(model, noisy),
        "clean": crop,
    }
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.3))
    for ax, (title, img) in zip(axes, panels.items(), strict=True):
        psnr = "" if title == "clean" else f"\n{image_metrics(img, crop, 0)['psnr']:.2f} dB"
        ax.imshow(img)
        ax.set_title(f"{title}{psnr}", fontsize=9)
        ax.axis("off")
    fig.suptitle(f"held-out photo, Gaussian noise sigma={sigma:g}", fontsize=10)
    fig.tight_layout()
    path = out / COMPARISON_NAME
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = base_parser(__doc__.splitlines()[0], "build/artifacts/denoiser")
    p.add_argument("--arch", default="denoiser", help="registered image-to-image model")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the profile's)")
    args = p.parse_args(argv)
    device = setup_run(args)
    prof = PROFILES[args.profile]
    steps = args.steps or (
        args.epochs * VAL_EVERY if args.epochs else prof["steps"]
    )  # an "epoch" = VAL_EVERY steps
    cfg_cls = config_class(args.arch)
    cfg = replace(cfg_cls(), in_channels=3, **prof["model"])
    model = build_model(args.arch, cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=prof["lr"], weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=prof["lr"], total_steps=steps)
    sampler = PatchSampler(prof["patch"], 1, args.seed)
    rng = np.random.default_rng(args.seed)
    _, val_clean = PatchSampler(prof["patch"], 1, args.seed + 1).batch(64)  # training photos, other crops
    val_noisy = add_noise(val_clean, 25.0, np.random.default_rng(EVAL_SEED))
    val_x, val_y = (torch.from_numpy(a).float().div(255.0) for a in (val_noisy, val_clean))
    hist = History()

    with Timer() as timer:
        bar = progress(range(steps), args.no_progress, desc=f"train {args.arch}", unit="step")
        running = 0.0
        for step in bar:
            model.train()
            _, clean = sampler.batch(prof["batch"])
            noisy = add_noise(clean, rng.uniform(*SIGMA_RANGE, size=len(clean)), rng)
            x = torch.from_numpy(noisy).float().div(255.0).to(device)
            y = torch.from_numpy(clean).float().div(255.0).to(device)
            loss = F.mse_loss(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item()
            if (step + 1) % VAL_EVERY == 0 or step + 1 == steps:
                model.eval()
                with torch.no_grad():
                    val_mse = F.mse_loss(model(val_x.to(device)).cpu(), val_y).item()
                val_psnr = 10 * np.log10(1.0 / max(val_mse, 1e-10))
                n = (step % VAL_EVERY) + 1
                hist.log(train_loss=running / n, val_psnr_sigma25=float(val_psnr))
                bar.set_postfix(loss=f"{running / n:.5f}", val_psnr=f"{val_psnr:.2f}")
                running = 0.0

    model.cpu()
    images = held_out_images(1, prof["eval_side"])
    report = evaluate(model, [im.hr for im in images], [im.name for im in images])
    dataset = (
        "random 'PatchSampler' crops of the scikit-image/scikit-learn training photos (flips, rotations); "
        f"held out whole: {', '.join(HELD_OUT)}; Gaussian noise, sigma uniform in {SIGMA_RANGE} (0..255)"
    )
    metrics: dict[str, Any] = {
        "task": "denoising",
        "arch": args.arch,
        "profile": args.profile,
        "steps": steps,
        "parameters": count_parameters(model),
        "train_seconds": round(timer.seconds, 2),
        "eval": report,
        "median_baseline": f"per-channel median filter, best of sizes {MEDIAN_SIZES} at each sigma",
        "dataset": dataset,
    }
    headline = {f"psnr_gain_over_median_db/{k}": v["psnr_gain_over_median_db"] for k, v in report.items()}
    headline |= {f"psnr_gain_over_noisy_db/{k}": v["psnr_gain_over_noisy_db"] for k, v in report.items()}
    meta = {
        "channels": 3,
        "mean": MEAN,
        "std": STD,
        "noise_sigmas_trained": list(SIGMA_RANGE),
        "dataset": dataset,
        "metrics": {**headline, "profile": args.profile, "steps": steps},
    }
    save_checkpoint(args.out / CHECKPOINT_NAME, args.arch, cfg, model, "denoising", meta)
    write_metrics(args.out, metrics, hist)
    plot_curves(args.out, hist, "denoising autoencoder", groups=[("train_loss",), ("val_psnr_sigma25",)])
    plot_comparison(args.out, model, images[0].hr, 25.0)
    for k, v in report.items():
        print(
            f"{k}: noisy {v['noisy']['psnr']:.2f} dB, median{v['median']['size']} "
            f"{v['median']['psnr']:.2f} dB, "
            f"autoencoder {v['autoencoder']['psnr']:.2f} dB ({v['psnr_gain_over_median_db']:+.2f} dB over "
            "median)"
        )
    print(f"trained {steps} steps in {timer.seconds:.1f}s; wrote {args.out}")
    return metrics


if __name__ == "__main__":
    main()

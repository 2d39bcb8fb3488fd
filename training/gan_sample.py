"""Train a DCGAN on the digits and judge its samples with a digit classifier trained here.

    python -m training.gan_sample --profile quick --out build/artifacts/sampler

The GAN sees only the digits' training split (32x32 paper images, pixels mapped to [-1, 1]);
non-saturating loss, Adam(2e-4, beta1 0.5) and one-sided label smoothing, as in DCGAN practice.
A judge (LeNet-5, the same split) scores the samples, since a GAN has no held-out likelihood:

- confident: share of images whose top class probability is >= CONFIDENT, for the GAN's
  samples against two baselines that must score lower (uniform noise; training digits blurred
  with a Gaussian of BLUR_SIGMA px, the "blurry average" a collapsed generator produces) and
  against real held-out digits (the ceiling);
- coverage: share of the 10 classes that get at least COVERAGE_MIN_SHARE of the confident
  samples (mode collapse shows here);
- nearest-neighbour distance (RMS, pixels in [0, 1]) to the training set, for samples against
  real held-out digits: a generator that memorised its training images would sit well below the
  held-out digits' distance (ratio << 1).

Writes model.pt (the generator; what the ``sampling`` exporter serves), judge.pt, metrics.json,
training_curve.png and samples.png (GAN | noise | blurred | real).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from serving.imaging import grid
from serving.latent import latents
from training.classify import augment, to_float
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
from training.data.digits import LABELS, DigitSplits, load_digits_splits
from training.models import build_model, config_class

PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {
        "steps": 30,
        "batch": 32,
        "limit": 256,
        "judge_epochs": 2,
        "eval_n": 64,
        "generator": {"latent_dim": 16, "width": 8},
        "discriminator": {"width": 8},
    },
    "quick": {  # a couple of minutes on 2 cores, inside make serve's budget
        "steps": 2000,
        "batch": 64,
        "limit": None,
        "judge_epochs": 15,
        "eval_n": 1000,
        "generator": {"latent_dim": 64, "width": 24},
        "discriminator": {"width": 16},
    },
    "full": {
        "steps": 20000,
        "batch": 128,
        "limit": None,
        "judge_epochs": 30,
        "eval_n": 5000,
        "generator": {"latent_dim": 100, "width": 64},
        "discriminator": {"width": 64},
    },
}
IMAGE_SIZE = 32
LR, BETAS = 2e-4, (0.5, 0.999)
REAL_LABEL = 0.9  # one-sided label smoothing: the discriminator never becomes certain of a real image
CONFIDENT = 0.9  # judge top-class probability that counts as "a recognisable digit"
COVERAGE_MIN_SHARE = 0.02  # a class is covered when it gets >= 2% of the confident samples
BLUR_SIGMA = 4.0  # one pixel of the 8x8 scan (upscaled x4): the strokes smear into a blob
EVAL_SEED = 2024  # eval latents and baseline noise are the same on every run
LOG_EVERY = 100
JUDGE_NAME = "judge.pt"
SAMPLES_NAME = "samples.png"


def to_gan(x_u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x_u8).float().div(127.5).sub(1.0)


def to_uint8(y: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> uint8 pixels; the exported graph does exactly this."""
    return ((y + 1.0) * 127.5).clamp(0.0, 255.0).round().to(torch.uint8)


@torch.no_grad()
def sample(gen: nn.Module, z: np.ndarray) -> np.ndarray:
    """(N, Z) float32 latents -> (N, C, S, S) uint8 images, in eval mode (batch-norm running stats)."""
    gen.eval()
    return to_uint8(gen(torch.from_numpy(z))).numpy()


def train_judge(data: DigitSplits, epochs: int, seed: int) -> tuple[nn.Module, Any, float]:
    """LeNet-5 on the training split, the classify recipe's augmentation; returns (model, cfg, test acc)."""
    cfg = replace(config_class("lenet5")(), in_channels=1, num_classes=len(LABELS))
    judge = build_model("lenet5", cfg)
    opt = torch.optim.AdamW(judge.parameters(), lr=3e-3, weight_decay=1e-4)
    x, y = to_float(torch.from_numpy(data.x_train)), torch.from_numpy(data.y_train)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        judge.train()
        for idx in torch.randperm(len(x), generator=gen).split(64):
            loss = F.cross_entropy(judge(augment(x[idx])), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    acc = float((judge_probs(judge, data.x_test).argmax(1) == data.y_test).mean())
    return judge, cfg, acc


@torch.no_grad()
def judge_probs(judge: nn.Module, x_u8: np.ndarray) -> np.ndarray:
    judge.eval()
    return torch.softmax(judge(to_float(torch.from_numpy(x_u8))), 1).numpy()


def judge_report(probs: np.ndarray) -> dict[str, Any]:
    """Confident share, class coverage and the class histogram of the confident images."""
    top, cls = probs.max(1), probs.argmax(1)
    conf = top >= CONFIDENT
    hist = np.bincount(cls[conf], minlength=probs.shape[1])
    share = hist / max(int(conf.sum()), 1)
    return {
        "confident": float(conf.mean()),
        "mean_top_probability": float(top.mean()),
        "coverage": float((share >= COVERAGE_MIN_SHARE).mean()),
        "class_histogram": hist.tolist(),
    }


def nn_distance(x_u8: np.ndarray, train_u8: np.ndarray) -> np.ndarray:
    """RMS pixel distance (pixels in [0, 1]) from each image to its nearest training image."""
    a = x_u8.reshape(len(x_u8), -1).astype(np.float64) / 255.0
    b = train_u8.reshape(len(train_u8), -1).astype(np.float64) / 255.0
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d2.min(1), 0.0) / a.shape[1])


def baselines(data: DigitSplits, n: int) -> dict[str, np.ndarray]:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(EVAL_SEED)
    shape = (n, *data.x_train.shape[1:])
    pick = rng.integers(0, len(data.x_train), n)
    blurred = gaussian_filter(data.x_train[pick].astype(np.float64), sigma=(0, 0, BLUR_SIGMA, BLUR_SIGMA))
    return {
        "noise": rng.integers(0, 256, shape, dtype=np.uint8),
        "blurred_real": np.clip(np.rint(blurred), 0, 255).astype(np.uint8),
        "real_held_out": data.x_test,
    }


def evaluate(gen: nn.Module, judge: nn.Module, data: DigitSplits, n: int, latent_dim: int) -> dict[str, Any]:
    sets = {"gan": sample(gen, latents(EVAL_SEED, n, latent_dim)), **baselines(data, n)}
    report: dict[str, Any] = {}
    for name, imgs in sets.items():
        dist = nn_distance(imgs, data.x_train)
        report[name] = {
            **judge_report(judge_probs(judge, imgs)),
            "nn_distance": float(dist.mean()),
            "n": len(imgs),
        }
    held = nn_distance(data.x_test, data.x_train)
    gan = nn_distance(sets["gan"], data.x_train)
    report["memorisation"] = {
        "nn_distance_ratio_gan_over_held_out": report["gan"]["nn_distance"]
        / report["real_held_out"]["nn_distance"],
        # a copy of a training digit sits nearer than almost every genuinely new digit does
        "share_nearer_than_held_out_p5": float((gan < np.percentile(held, 5)).mean()),
    }
    return report


def plot_samples(out: Path, gen: nn.Module, data: DigitSplits, latent_dim: int, n: int = 16) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = baselines(data, n)
    panels = {
        "DCGAN samples": sample(gen, latents(EVAL_SEED, n, latent_dim)),
        "noise baseline": base["noise"],
        f"blurred real (sigma {BLUR_SIGMA:g})": base["blurred_real"],
        "real held-out": data.x_test[:n],
    }
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.3))
    for ax, (title, imgs) in zip(axes, panels.items(), strict=True):
        ax.imshow(grid(imgs)[0], cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    path = out / SAMPLES_NAME
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = base_parser(__doc__.splitlines()[0], "build/artifacts/sampler")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the profile's)")
    args = p.parse_args(argv)
    device = setup_run(args)
    prof = PROFILES[args.profile]
    steps = args.steps or (args.epochs * LOG_EVERY if args.epochs else prof["steps"])
    data = load_digits_splits(IMAGE_SIZE, prof["limit"])
    g_cfg = replace(config_class("dcgan_generator")(), channels=1, image_size=IMAGE_SIZE, **prof["generator"])
    d_cfg = replace(
        config_class("dcgan_discriminator")(), channels=1, image_size=IMAGE_SIZE, **prof["discriminator"]
    )
    gen = build_model("dcgan_generator", g_cfg).to(device)
    disc = build_model("dcgan_discriminator", d_cfg).to(device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=LR, betas=BETAS)
    opt_d = torch.optim.Adam(disc.parameters(), lr=LR, betas=BETAS)
    real_all = to_gan(data.x_train).to(device)
    torch_gen = torch.Generator().manual_seed(args.seed)
    hist = History()

    # A winning discriminator's tiny gradients go denormal: 10x slower steps on CPU (measured). Flushed
    # for the loop only: the flag is process-wide and tests run recipes in-process.
    torch.set_flush_denormal(True)
    with Timer() as timer:
        bar = progress(range(steps), args.no_progress, desc="train dcgan", unit="step")
        acc: dict[str, float] = {}
        for step in bar:
            gen.train()
            disc.train()
            real = real_all[torch.randint(0, len(real_all), (prof["batch"],), generator=torch_gen)]
            z = torch.randn(prof["batch"], g_cfg.latent_dim, generator=torch_gen).to(device)
            fake = gen(z)
            # discriminator: real -> REAL_LABEL, fake -> 0
            d_real, d_fake = disc(real), disc(fake.detach())
            loss_d = F.binary_cross_entropy_with_logits(
                d_real, torch.full_like(d_real, REAL_LABEL)
            ) + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            # generator: non-saturating, maximise log D(G(z))
            d_gen = disc(fake)
            loss_g = F.binary_cross_entropy_with_logits(d_gen, torch.ones_like(d_gen))
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            for k, v in {
                "d_loss": loss_d.item(),
                "g_loss": loss_g.item(),
                "d_real_prob": torch.sigmoid(d_real).mean().item(),
                "d_fake_prob": torch.sigmoid(d_fake).mean().item(),
            }.items():
                acc[k] = acc.get(k, 0.0) + v
            if (step + 1) % LOG_EVERY == 0 or step + 1 == steps:
                n = (step % LOG_EVERY) + 1
                hist.log(**{k: v / n for k, v in acc.items()})
                bar.set_postfix(d=f"{acc['d_loss'] / n:.3f}", g=f"{acc['g_loss'] / n:.3f}")
                acc = {}
    torch.set_flush_denormal(False)

    gen.cpu().eval()
    judge, j_cfg, judge_acc = train_judge(data, prof["judge_epochs"], args.seed)
    report = evaluate(gen, judge, data, prof["eval_n"], g_cfg.latent_dim)
    dataset = (
        f"scikit-learn digits, training split only ({len(data.x_train)} images, {IMAGE_SIZE}x{IMAGE_SIZE} "
        "dark ink on white)"
    )
    metrics: dict[str, Any] = {
        "task": "sampling",
        "arch": "dcgan_generator",
        "profile": args.profile,
        "steps": steps,
        "parameters": count_parameters(gen),
        "discriminator_parameters": count_parameters(disc),
        "train_seconds": round(timer.seconds, 2),
        "judge": {"arch": "lenet5", "test_accuracy": judge_acc, "confident_threshold": CONFIDENT},
        "eval": report,
        "dataset": dataset,
    }
    headline = {
        "judge_test_accuracy": judge_acc,
        "confident/gan": report["gan"]["confident"],
        "confident/noise": report["noise"]["confident"],
        "confident/blurred_real": report["blurred_real"]["confident"],
        "coverage/gan": report["gan"]["coverage"],
        "nn_distance_ratio": report["memorisation"]["nn_distance_ratio_gan_over_held_out"],
    }
    meta = {
        "channels": 1,
        "image_size": IMAGE_SIZE,
        "latent_dim": g_cfg.latent_dim,
        "dataset": dataset,
        "metrics": {**headline, "profile": args.profile, "steps": steps},
    }
    save_checkpoint(args.out / CHECKPOINT_NAME, "dcgan_generator", g_cfg, gen, "sampling", meta)
    judge_meta = {"image_size": IMAGE_SIZE, "channels": 1, "labels": LABELS, "test_accuracy": judge_acc}
    save_checkpoint(args.out / JUDGE_NAME, "lenet5", j_cfg, judge, "classification", judge_meta)
    write_metrics(args.out, metrics, hist)
    plot_curves(
        args.out, hist, "DCGAN on digits", groups=[("d_loss", "g_loss"), ("d_real_prob", "d_fake_prob")]
    )
    plot_samples(args.out, gen, data, g_cfg.latent_dim)
    print(f"judge (lenet5) held-out accuracy {judge_acc:.3f}")
    for name in ("gan", "noise", "blurred_real", "real_held_out"):
        r = report[name]
        print(
            f"{name:>13}: confident {r['confident']:.3f}, coverage {r['coverage']:.2f}, "
            f"nn distance {r['nn_distance']:.4f}"
        )
    print(f"trained {steps} steps in {timer.seconds:.1f}s; wrote {args.out}")
    return metrics


if __name__ == "__main__":
    main()

"""Train SRResNet (pixel loss) then SRGAN (adversarial fine-tune) for one upscaling factor.

    python -m training.super_resolve --profile quick --scale 2 --out build/artifacts/sr_x2
    python -m training.super_resolve --profile quick --scale 4 --out build/artifacts/sr_x4

One run trains both generators of one scale and writes one checkpoint per served model:

    <out>/sr_psnr_x<scale>/model.pt   SRResNet, PSNR-oriented (meta variant "psnr"), + its metrics.json
    <out>/sr_gan_x<scale>/model.pt    SRGAN generator (meta variant "gan"), + its metrics.json
    <out>/metrics.json                bicubic vs SRResNet vs SRGAN on the held-out whole images
    <out>/sr_comparison.png           bicubic | SRResNet | SRGAN | original, as in the SRGAN paper's figure
    <out>/training_curve.png

Each checkpoint folder is named as its served model, so `python -m export --checkpoint
<out>/sr_gan_x4/model.pt` serves it as "sr_gan_x4" without a ":name".

Phase 1 minimises L1 to the HR patch (as EDSR: L1 converges better than L2).
Phase 2 starts from that generator and adds a discriminator: generator loss = L1 content +
feature matching on the discriminator's activations (a VGG-free perceptual proxy: no hub weights)
+ a small adversarial term. The discriminator is not saved (it is not served).
Metrics follow the SR literature: PSNR and SSIM on the luma (Y, BT.601) channel, ignoring a
border of ``scale`` pixels, on uint8 outputs exactly as the served model rounds them.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from training.common import (
    CHECKPOINT_NAME,
    METRICS_NAME,
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
from training.data.photos import (
    HELD_OUT,
    TRAIN_SOURCES,
    HeldOutImage,
    PatchSampler,
    held_out_images,
    upscale_bicubic,
)
from training.models import build_model, config_class

# Per-profile recipe. An "epoch" is `steps_per_epoch` generator steps on fresh random patches;
# `epochs` is the SRResNet phase (what --epochs overrides), `gan_epochs` the SRGAN fine-tune;
# `lr_patch` is the LR patch side per scale (x4 uses smaller ones: its upsampling convs dominate).
PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {
        "epochs": 2,
        "gan_epochs": 1,
        "steps_per_epoch": 3,
        "batch": 4,
        "lr_patch": {2: 12, 4: 8},
        "lr": 1e-3,
        "gan_lr": 1e-4,
        "eval_side": 48,
        "val_patches": 8,
        "model": {"width": 8, "num_blocks": 1, "head_kernel": 3},
        "disc": {"widths": (8, 16), "hidden": 16},
    },
    "quick": {
        "epochs": 8,
        "gan_epochs": 2,
        "steps_per_epoch": 100,
        "batch": 16,
        "lr_patch": {2: 24, 4: 20},
        "lr": 1e-3,
        "gan_lr": 1e-4,
        "eval_side": None,
        "val_patches": 64,
        "model": {"width": 32, "num_blocks": 6, "head_kernel": 3},
        "disc": {"widths": (16, 32, 64, 128), "hidden": 128},
    },
    "full": {
        "epochs": 200,
        "gan_epochs": 100,
        "steps_per_epoch": 500,
        "batch": 16,
        "lr_patch": {2: 48, 4: 48},
        "lr": 2e-4,
        "gan_lr": 1e-4,
        "eval_side": None,
        "val_patches": 256,
        "model": {"width": 64, "num_blocks": 16, "head_kernel": 9},
        "disc": {"widths": (64, 128, 256, 512), "hidden": 1024},
    },
}
# Per-scale step budget: an x4 step costs ~2x an x2 step even with smaller patches.
SCALE_STEP_FACTOR = {2: 1.0, 4: 0.6}
MEAN, STD = 0.5, 0.5  # normalisation baked into the exported graph: x/255 -> (x - MEAN) / STD
# SRGAN-phase weights: pixel L1 kept at full weight as an anchor, feature matching (perceptual
# proxy) 1, a small adversarial term. Measured on quick, from one SRResNet, held-out PSNR change /
# gradient ratio (SRResNet itself x2 0.713, x4 0.488), content/fm/adv:
#   x2 (200 steps): 1/1/5e-3 -0.27 dB / 0.780; 0.1/1/1e-2 -0.31 / 0.787; 1/0/5e-2 -0.25 / 0.693
#   x4 (100 steps): 1/1/5e-3 -0.44 dB / 0.570; 0.1/1/1e-2 -0.82 / 0.607 (visible halos); 1/0.3/5e-3 -0.22
# / 0.542
# Feature matching is what adds detail; a weaker pixel anchor mostly adds ringing at x4.
CONTENT_WEIGHT = 1.0  # L1 to the HR patch
FM_WEIGHT = 1.0  # feature matching on the discriminator's stages
ADV_WEIGHT = 5e-3  # adversarial term (ESRGAN's weight)
COMPARISON_NAME = "sr_comparison.png"
VARIANTS = ("psnr", "gan")


def served_name(variant: str, scale: int) -> str:
    """sr_psnr_x2, sr_gan_x4, ...: the checkpoint's folder and the served model's default name."""
    return f"sr_{variant}_x{scale}"


def to_float(x_u8: torch.Tensor) -> torch.Tensor:
    return (x_u8.float() / 255.0 - MEAN) / STD


def to_uint8(y: torch.Tensor) -> torch.Tensor:
    """Generator output -> uint8 the way the exported graph does it: denormalise, clamp, round."""
    return (y * STD + MEAN).mul(255.0).clamp(0.0, 255.0).round().to(torch.uint8)


def luma(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) float64 Y in [16, 235] (ITU-R BT.601), as SR papers evaluate."""
    rgb = img.astype(np.float64)
    return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0


def image_metrics(sr: np.ndarray, hr: np.ndarray, border: int) -> dict[str, float]:
    """PSNR and SSIM on Y, plus ``gradient_ratio``: mean |grad Y| of SR over that of HR.

    The ratio is a crude sharpness gauge (1.0 = as much fine detail as the original; bicubic is
    well below): PSNR rewards blur, so it is the number that shows what the GAN phase buys.
    """
    from skimage.metrics import structural_similarity

    a, b = luma(sr), luma(hr)
    if border:
        a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    mse = float(np.mean((a - b) ** 2))
    ssim = structural_similarity(
        a, b, data_range=255.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )

    def grad(y: np.ndarray) -> float:
        return float(np.abs(np.diff(y, axis=0)).mean() + np.abs(np.diff(y, axis=1)).mean())

    return {
        "psnr": 10.0 * float(np.log10(255.0**2 / max(mse, 1e-10))),
        "ssim": float(ssim),
        "gradient_ratio": grad(a) / max(grad(b), 1e-10),
    }


class TorchBicubic(nn.Module):
    """The generator's own skip path alone (PyTorch bicubic, a=-0.75, sharper than PIL's a=-0.5).

    Reported beside PIL bicubic so the network's own gain over its starting point is visible.
    """

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=float(self.scale), mode="bicubic", align_corners=False)


@torch.no_grad()
def super_resolve(model: nn.Module, lr: np.ndarray, device: torch.device) -> np.ndarray:
    """(h, w, 3) uint8 -> (s*h, s*w, 3) uint8 with the generator, whole image in one pass."""
    model.eval()
    x = to_float(torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1)))[None]).to(device)
    return to_uint8(model(x))[0].cpu().numpy().transpose(1, 2, 0)


def evaluate(
    models: dict[str, nn.Module], images: list[HeldOutImage], scale: int, device: torch.device
) -> tuple[dict[str, Any], dict[str, list[np.ndarray]]]:
    """Metrics per image and their means for PIL bicubic (the baseline) and each model; also the SR images."""
    outputs: dict[str, list[np.ndarray]] = {"bicubic": [upscale_bicubic(im.lr, scale) for im in images]}
    for name, model in models.items():
        outputs[name] = [super_resolve(model, im.lr, device) for im in images]
    report: dict[str, Any] = {}
    for name, srs in outputs.items():
        per = {im.name: image_metrics(sr, im.hr, scale) for im, sr in zip(images, srs, strict=True)}
        report[name] = {
            key: float(np.mean([m[key] for m in per.values()])) for key in next(iter(per.values()))
        }
        report[name]["per_image"] = per
    return report, outputs


@torch.no_grad()
def val_psnr(model: nn.Module, lr: torch.Tensor, hr: torch.Tensor) -> float:
    """Mean RGB PSNR on a fixed batch of validation patches (training photos, separate seed): for curves."""
    model.eval()
    sr = to_uint8(model(to_float(lr))).float()
    mse = (sr - hr.float()).pow(2).mean((1, 2, 3)).clamp_min(1e-10)
    return float((10 * torch.log10(255.0**2 / mse)).mean())


def bicubic_val_psnr(lr: np.ndarray, hr: np.ndarray, scale: int) -> float:
    up = np.stack([upscale_bicubic(x.transpose(1, 2, 0), scale).transpose(2, 0, 1) for x in lr]).astype(
        np.float64
    )
    mse = np.maximum(((up - hr.astype(np.float64)) ** 2).mean((1, 2, 3)), 1e-10)
    return float((10 * np.log10(255.0**2 / mse)).mean())


def detail_crop(hr: np.ndarray, side: int) -> tuple[int, int]:
    """Top-left (y, x) of the ``side`` crop with the most gradient energy: where SR differences show."""
    g = luma(hr)
    energy = np.abs(np.diff(g, axis=0))[:, :-1] + np.abs(np.diff(g, axis=1))[:-1, :]
    best, pos = -1.0, (0, 0)
    step = max(side // 4, 1)
    for y in range(0, max(hr.shape[0] - side, 0) + 1, step):
        for x in range(0, max(hr.shape[1] - side, 0) + 1, step):
            e = float(energy[y : y + side, x : x + side].mean())
            if e > best:
                best, pos = e, (y, x)
    return pos


def plot_comparison(
    out: Path,
    images: list[HeldOutImage],
    outputs: dict[str, list[np.ndarray]],
    report: dict[str, Any],
    scale: int,
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [("bicubic", "bicubic"), ("psnr", "SRResNet"), ("gan", "SRGAN"), ("original", "original")]
    fig, axes = plt.subplots(len(images), 4, figsize=(12, 3.2 * len(images)), squeeze=False)
    for i, im in enumerate(images):
        side = min(im.hr.shape[0], im.hr.shape[1], 48 * scale)
        y, x = detail_crop(im.hr, side)
        for ax, (key, title) in zip(axes[i], columns, strict=True):
            img = im.hr if key == "original" else outputs[key][i]
            ax.imshow(img[y : y + side, x : x + side], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if key != "original":
                m = report[key]["per_image"][im.name]
                ax.set_xlabel(f"{m['psnr']:.2f} dB / {m['ssim']:.4f}", fontsize=9)
            else:
                ax.set_xlabel("PSNR (Y) / SSIM", fontsize=9)
            ax.set_title(f"{title}" if i else f"{title} (x{scale})")
        axes[i][0].set_ylabel(im.name)
    fig.tight_layout()
    path = out / COMPARISON_NAME
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


Batches = Callable[[], tuple[torch.Tensor, torch.Tensor]]
OnEpoch = Callable[[dict[str, float]], dict[str, float]]


def train_srresnet(
    gen: nn.Module,
    next_batch: Batches,
    steps: int,
    lr: float,
    steps_per_epoch: int,
    on_epoch: OnEpoch,
    bar: Any,
) -> None:
    """Phase 1 (SRResNet): L1 content loss, one-cycle schedule."""
    opt = torch.optim.Adam(gen.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    total = 0.0
    for step in bar:
        gen.train()
        lr_b, hr_b = next_batch()
        loss = F.l1_loss(gen(lr_b), hr_b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += loss.item()
        if (step + 1) % steps_per_epoch == 0:
            v = on_epoch({"content_loss": total / steps_per_epoch})
            bar.set_postfix(
                l1=f"{v['content_loss']:.4f}",
                val_psnr=f"{v['val_psnr']:.2f}",
                bicubic=f"{v['val_psnr_bicubic']:.2f}",
            )
            total = 0.0


def train_srgan(
    gen: nn.Module,
    disc: nn.Module,
    next_batch: Batches,
    steps: int,
    lr: float,
    steps_per_epoch: int,
    on_epoch: OnEpoch,
    bar: Any,
    content_weight: float = CONTENT_WEIGHT,
    fm_weight: float = FM_WEIGHT,
    adv_weight: float = ADV_WEIGHT,
) -> None:
    """Phase 2 (SRGAN): fine-tune ``gen`` against ``disc`` with content + feature matching + adversarial
    loss."""
    g_opt = torch.optim.Adam(gen.parameters(), lr=lr, betas=(0.9, 0.999))
    d_opt = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.9, 0.999))
    sums = {"content": 0.0, "fm": 0.0, "adv": 0.0, "d": 0.0}
    for step in bar:
        gen.train()
        disc.train()
        lr_b, hr_b = next_batch()
        sr = gen(lr_b)
        # Discriminator: real HR vs generated (one-sided label smoothing keeps it from saturating).
        d_real, d_fake = disc(hr_b), disc(sr.detach())
        d_loss = F.binary_cross_entropy_with_logits(
            d_real, torch.full_like(d_real, 0.9)
        ) + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        # Generator: content + feature matching on every discriminator stage + adversarial.
        with torch.no_grad():
            real_feats = disc.features(hr_b)
        fake_feats = disc.features(sr)
        fm = torch.stack([F.l1_loss(f, r) for f, r in zip(fake_feats, real_feats, strict=True)]).mean()
        adv_logits = disc.classifier(fake_feats[-1]).squeeze(1)
        adv = F.binary_cross_entropy_with_logits(adv_logits, torch.ones_like(adv_logits))
        content = F.l1_loss(sr, hr_b)
        g_loss = content_weight * content + fm_weight * fm + adv_weight * adv
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
        for key, val in (("content", content), ("fm", fm), ("adv", adv), ("d", d_loss)):
            sums[key] += val.item()
        if (step + 1) % steps_per_epoch == 0:
            n = steps_per_epoch
            v = on_epoch(
                {
                    "content_loss": sums["content"] / n,
                    "gan_d_loss": sums["d"] / n,
                    "gan_g_adv_loss": sums["adv"] / n,
                    "gan_feature_matching": sums["fm"] / n,
                }
            )
            bar.set_postfix(
                d=f"{v['gan_d_loss']:.3f}", adv=f"{v['gan_g_adv_loss']:.3f}", val_psnr=f"{v['val_psnr']:.2f}"
            )
            sums = dict.fromkeys(sums, 0.0)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = base_parser(__doc__.splitlines()[0], "build/artifacts/sr_x{scale}")
    p.add_argument("--scale", type=int, choices=[2, 4], default=2, help="upscaling factor")
    args = p.parse_args(argv)
    args.out = Path(str(args.out).replace("{scale}", str(args.scale)))
    device = setup_run(args)
    prof = PROFILES[args.profile]
    scale = args.scale
    epochs = args.epochs or max(
        1, round(prof["epochs"] * SCALE_STEP_FACTOR[scale])
    )  # --epochs: SRResNet phase
    gan_epochs = max(1, round(prof["gan_epochs"] * SCALE_STEP_FACTOR[scale]))
    spe, batch = prof["steps_per_epoch"], prof["batch"]
    lr_patch = prof["lr_patch"][scale]
    hr_patch = lr_patch * scale

    g_cfg = replace(config_class("srresnet")(), channels=3, scale=scale, **prof["model"])
    gen = build_model("srresnet", g_cfg).to(device)
    d_cfg = replace(config_class("srgan_discriminator")(), channels=3, **prof["disc"])
    disc = build_model("srgan_discriminator", d_cfg).to(device)

    sampler = PatchSampler(hr_patch, scale, seed=args.seed)
    val_lr_np, val_hr_np = PatchSampler(hr_patch, scale, seed=10_000 + args.seed).batch(prof["val_patches"])
    val_lr, val_hr = torch.from_numpy(val_lr_np).to(device), torch.from_numpy(val_hr_np).to(device)
    val_bicubic = bicubic_val_psnr(val_lr_np, val_hr_np, scale)
    hist = History()

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        lr_u8, hr_u8 = sampler.batch(batch)
        return to_float(torch.from_numpy(lr_u8)).to(device), to_float(torch.from_numpy(hr_u8)).to(device)

    def on_epoch(values: dict[str, float]) -> dict[str, float]:
        values = {"val_psnr": val_psnr(gen, val_lr, val_hr), "val_psnr_bicubic": val_bicubic, **values}
        hist.log(**values)
        return values

    with Timer() as psnr_timer:
        train_srresnet(
            gen,
            next_batch,
            epochs * spe,
            prof["lr"],
            spe,
            on_epoch,
            progress(range(epochs * spe), args.no_progress, desc=f"SRResNet x{scale}", unit="step"),
        )
    psnr_gen = copy.deepcopy(gen).cpu().eval()
    with Timer() as gan_timer:
        train_srgan(
            gen,
            disc,
            next_batch,
            gan_epochs * spe,
            prof["gan_lr"],
            spe,
            on_epoch,
            progress(range(gan_epochs * spe), args.no_progress, desc=f"SRGAN x{scale}", unit="step"),
        )
    gan_gen = gen.cpu().eval()

    images = held_out_images(scale, prof["eval_side"])
    report, outputs = evaluate(
        {"psnr": psnr_gen, "gan": gan_gen, "bicubic_torch": TorchBicubic(scale)},
        images,
        scale,
        torch.device("cpu"),
    )
    dataset = (
        f"random {hr_patch}px patches of {', '.join(TRAIN_SOURCES)}; held out (never trained on), "
        f"evaluated whole: {', '.join(HELD_OUT)}; LR = PIL antialiased bicubic / {scale}"
    )
    common = {
        "task": "super_resolution",
        "arch": "srresnet",
        "profile": args.profile,
        "scale": scale,
        "parameters": count_parameters(psnr_gen),
        "dataset": dataset,
        "metric_note": f"PSNR/SSIM on Y (BT.601), {scale}px border ignored, uint8 outputs",
        "eval_images": [im.name for im in images],
    }
    metrics: dict[str, Any] = {
        **common,
        "epochs": epochs,
        "gan_epochs": gan_epochs,
        "steps_per_epoch": spe,
        "train_seconds": round(psnr_timer.seconds + gan_timer.seconds, 2),
        "train_seconds_psnr": round(psnr_timer.seconds, 2),
        "train_seconds_gan": round(gan_timer.seconds, 2),
        "bicubic": report["bicubic"],
        "bicubic_torch": report["bicubic_torch"],
        "psnr": report["psnr"],
        "gan": report["gan"],
        "psnr_gain_db": report["psnr"]["psnr"] - report["bicubic"]["psnr"],
        "gan_psnr_gain_db": report["gan"]["psnr"] - report["bicubic"]["psnr"],
        "checkpoints": {v: f"{served_name(v, scale)}/{CHECKPOINT_NAME}" for v in VARIANTS},
    }
    for variant, model in (("psnr", psnr_gen), ("gan", gan_gen)):
        vm = {
            "test_psnr": report[variant]["psnr"],
            "test_ssim": report[variant]["ssim"],
            "bicubic_psnr": report["bicubic"]["psnr"],
            "bicubic_ssim": report["bicubic"]["ssim"],
            "profile": args.profile,
        }
        meta = {
            "scale": scale,
            "variant": variant,
            "channels": 3,
            "mean": MEAN,
            "std": STD,
            "lr_patch": lr_patch,
            "dataset": dataset,
            "metrics": vm,
        }
        folder = args.out / served_name(variant, scale)
        save_checkpoint(folder / CHECKPOINT_NAME, "srresnet", g_cfg, model, "super_resolution", meta)
        (folder / METRICS_NAME).write_text(
            json.dumps(
                {**common, "variant": variant, **vm, "per_image": report[variant]["per_image"]},
                indent=2,
                sort_keys=True,
            )
            + "\n"
        )
    write_metrics(args.out, metrics, hist)
    plot_curves(
        args.out,
        hist,
        f"SRResNet/SRGAN x{scale}: held-out PSNR {report['psnr']['psnr']:.2f} dB "
        f"(bicubic {report['bicubic']['psnr']:.2f})",
        groups=[
            ("content_loss",),
            ("val_psnr", "val_psnr_bicubic"),
            ("gan_d_loss", "gan_g_adv_loss", "gan_feature_matching"),
        ],
    )
    plot_comparison(args.out, images, outputs, report, scale)
    print(
        f"x{scale} held-out PSNR/SSIM: bicubic "
        f"{report['bicubic']['psnr']:.2f}/{report['bicubic']['ssim']:.4f}, "
        f"SRResNet {report['psnr']['psnr']:.2f}/{report['psnr']['ssim']:.4f}, "
        f"SRGAN {report['gan']['psnr']:.2f}/{report['gan']['ssim']:.4f} "
        f"({metrics['train_seconds']:.1f}s); wrote {args.out}"
    )
    return metrics


if __name__ == "__main__":
    main()

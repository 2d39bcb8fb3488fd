"""Train a U-Net to segment generated scenes (circles, squares, triangles on natural textures).

    python -m training.segment --profile quick --out build/artifacts/segmenter

Writes model.pt, metrics.json (mean IoU and per-class IoU on a held-out generated set),
training_curve.png and segmentation_examples.png (image | truth | prediction).

Recipe notes: shapes cover ~13% of the pixels, so plain cross-entropy lets the network sit on
"background" and never learn the rarest class. We weight the cross-entropy by inverse square
root class frequency and add a soft Dice loss (which scores every class equally), train on
freshly generated scenes with flips/rotations, and use a one-cycle schedule with AdamW.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
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
from training.data.shapes import CLASSES, PALETTE, make_scenes
from training.models import build_model, config_class

# Per-profile recipe: scene counts and side, epochs over the training scenes, batch, lr, model overrides.
PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {
        "epochs": 2,
        "train": 96,
        "val": 32,
        "test": 32,
        "size": 32,
        "batch": 16,
        "lr": 3e-3,
        "model": {"base_width": 8, "depth": 2},
    },
    "quick": {
        "epochs": 3,
        "train": 4500,
        "val": 200,
        "test": 500,
        "size": 64,
        "batch": 16,
        "lr": 3e-3,
        "model": {"base_width": 16, "depth": 3},
    },
    "full": {
        "epochs": 30,
        "train": 20000,
        "val": 500,
        "test": 2000,
        "size": 96,
        "batch": 32,
        "lr": 2e-3,
        "model": {"base_width": 32, "depth": 4},
    },
}
MEAN, STD = 0.5, 0.5  # normalisation baked into the exported graph: x/255 -> (x - MEAN) / STD
DICE_WEIGHT = 1.0
EXAMPLES_NAME = "segmentation_examples.png"


def to_float(x_u8: torch.Tensor) -> torch.Tensor:
    return (x_u8.float() / 255.0 - MEAN) / STD


def augment(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Same random flip / 90-degree rotation for a batch of images (N, C, S, S) and masks (N, S, S)."""
    k = int(rng.integers(4))
    x, y = torch.rot90(x, k, (2, 3)), torch.rot90(y, k, (1, 2))
    if rng.random() < 0.5:
        x, y = x.flip(3), y.flip(2)
    return x, y


def class_weights(masks: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse square-root frequency, normalised to mean 1: rare shapes count more, not absurdly more."""
    freq = np.bincount(masks.ravel(), minlength=num_classes).astype(np.float64) / masks.size
    w = 1.0 / np.sqrt(np.maximum(freq, 1e-4))
    return torch.tensor(w / w.mean(), dtype=torch.float32)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - mean soft Dice over classes, computed over the whole batch (N, K, H, W) vs (N, H, W)."""
    probs = logits.softmax(1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    inter = (probs * onehot).sum((0, 2, 3))
    denom = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    return 1.0 - ((2 * inter + eps) / (denom + eps)).mean()


@torch.no_grad()
def predict(model: torch.nn.Module, images: np.ndarray, device: torch.device, batch: int = 64) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(images), batch):
        x = to_float(torch.from_numpy(images[i : i + batch])).to(device)
        out.append(model(x).argmax(1).to(torch.uint8).cpu().numpy())
    return np.concatenate(out)


def confusion(pred: np.ndarray, truth: np.ndarray, k: int) -> np.ndarray:
    """(k, k) pixel counts, rows = truth, columns = prediction."""
    return np.bincount(truth.astype(np.int64).ravel() * k + pred.ravel(), minlength=k * k).reshape(k, k)


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU = TP / (TP + FP + FN) over the whole set (NaN for a class absent from both)."""
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.7) -> np.ndarray:
    """(3, H, W) uint8 + (H, W) class ids -> (H, W, 3) uint8: palette colours over a grey copy of the image.

    Grey underneath so the palette hue alone says the class, whatever the shape's own colour.
    """
    grey = image.astype(np.float32).mean(0)[..., None].repeat(3, axis=2)
    colours = np.array(PALETTE, dtype=np.float32)[mask]
    fg = (mask > 0)[..., None]
    return np.where(fg, (1 - alpha) * grey + alpha * colours, grey).round().astype(np.uint8)


def plot_examples(out: Path, images: np.ndarray, truth: np.ndarray, pred: np.ndarray, n: int = 6) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    n = min(n, len(images))
    fig, axes = plt.subplots(n, 3, figsize=(6.6, 2.2 * n), squeeze=False)
    for i in range(n):
        panels = [images[i].transpose(1, 2, 0), overlay(images[i], truth[i]), overlay(images[i], pred[i])]
        for j, (ax, panel, title) in enumerate(
            zip(axes[i], panels, ("image", "truth", "prediction"), strict=True)
        ):
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title)
            if j == 2:
                acc = (pred[i] == truth[i]).mean()
                ax.set_xlabel(f"pixel acc {acc:.3f}", fontsize=8)
    handles = [
        Patch(color=np.array(c) / 255, label=name) for name, c in zip(CLASSES[1:], PALETTE[1:], strict=True)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path = out / EXAMPLES_NAME
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = base_parser(__doc__.splitlines()[0], "build/artifacts/segmenter")
    p.add_argument("--arch", default="unet", help="registered segmentation model")
    args = p.parse_args(argv)
    device = setup_run(args)
    prof = PROFILES[args.profile]
    epochs = args.epochs or prof["epochs"]
    size, k = prof["size"], len(CLASSES)

    train = make_scenes(prof["train"], size, "train", args.seed)
    val = make_scenes(prof["val"], size, "val", args.seed)
    test = make_scenes(prof["test"], size, "test")
    cfg_cls = config_class(args.arch)
    overrides = {key: v for key, v in prof["model"].items() if key in cfg_cls.__dataclass_fields__}
    cfg = replace(cfg_cls(), in_channels=3, num_classes=k, **overrides)
    model = build_model(args.arch, cfg).to(device)
    multiple_of = int(getattr(cfg, "multiple_of", 1))
    if size % multiple_of:
        raise SystemExit(f"scene size {size} is not a multiple of the model's {multiple_of}")

    weights = class_weights(train.masks, k).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=prof["lr"], weight_decay=1e-4)
    steps_per_epoch = int(np.ceil(len(train.images) / prof["batch"]))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=prof["lr"], total_steps=epochs * steps_per_epoch, pct_start=0.15
    )
    x_train, y_train = torch.from_numpy(train.images), torch.from_numpy(train.masks).long()
    gen = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    hist = History()

    with Timer() as timer:
        bar = progress(
            range(epochs * steps_per_epoch), args.no_progress, desc=f"train {args.arch}", unit="step"
        )
        for step in bar:
            s = step % steps_per_epoch
            if s == 0:  # a new epoch: fresh order over the training scenes
                model.train()
                perm = torch.randperm(len(x_train), generator=gen)
                total = 0.0
            idx = perm[s * prof["batch"] : (s + 1) * prof["batch"]]
            xb, yb = augment(to_float(x_train[idx]), y_train[idx], rng)
            xb, yb = xb.to(device), yb.to(device)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb, weight=weights) + DICE_WEIGHT * dice_loss(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            if s == steps_per_epoch - 1:
                val_iou = iou_from_confusion(confusion(predict(model, val.images, device), val.masks, k))
                hist.log(train_loss=total / len(x_train), val_mean_iou=np.nanmean(val_iou))
                bar.set_postfix(loss=f"{total / len(x_train):.3f}", val_miou=f"{np.nanmean(val_iou):.3f}")
            elif s % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")

    pred = predict(model, test.images, device)
    cm = confusion(pred, test.masks, k)
    iou = iou_from_confusion(cm)
    model.cpu()
    dataset = (
        f"generated scenes (training.data.shapes): {size}x{size}, train seed {args.seed}, "
        f"held-out test split: {len(test.images)} scenes from the fixed test seed"
    )
    metrics: dict[str, Any] = {
        "task": "segmentation",
        "arch": args.arch,
        "profile": args.profile,
        "epochs": epochs,
        "parameters": count_parameters(model),
        "train_seconds": round(timer.seconds, 2),
        "test_mean_iou": float(np.nanmean(iou)),
        "test_pixel_accuracy": float(np.diag(cm).sum() / cm.sum()),
        "test_iou": {name: float(v) for name, v in zip(CLASSES, iou, strict=True)},
        "test_confusion": cm.tolist(),
        "test_size": len(test.images),
        "image_size": size,
        "dataset": dataset,
    }
    meta = {
        "classes": CLASSES,
        "palette": [list(c) for c in PALETTE],
        "channels": 3,
        "image_size": size,
        "multiple_of": multiple_of,
        "mean": MEAN,
        "std": STD,
        "dataset": dataset,
        "metrics": {
            key: metrics[key]
            for key in ("test_mean_iou", "test_iou", "test_pixel_accuracy", "profile", "epochs")
        },
    }
    save_checkpoint(args.out / CHECKPOINT_NAME, args.arch, cfg, model, "segmentation", meta)
    write_metrics(args.out, metrics, hist)
    plot_curves(
        args.out,
        hist,
        f"{args.arch} on generated scenes: test mIoU {metrics['test_mean_iou']:.3f}",
        groups=[("train_loss",), ("val_mean_iou",)],
    )
    plot_examples(args.out, test.images, test.masks, pred)
    per_class = ", ".join(f"{name} {v:.3f}" for name, v in metrics["test_iou"].items())
    print(
        f"test mIoU {metrics['test_mean_iou']:.4f} ({per_class}) on {len(test.images)} held-out scenes "
        f"({timer.seconds:.1f}s); wrote {args.out}"
    )
    return metrics


if __name__ == "__main__":
    main()

"""Train an image classifier on scikit-learn's bundled handwritten digits.

    python -m training.classify --profile quick --arch resnet --out build/artifacts/classifier

Writes model.pt (build arguments + weights), metrics.json and training_curve.png.
"""

from __future__ import annotations

from dataclasses import replace

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
from training.data.digits import CANONICALIZE, LABELS, NATIVE_SIZE, augmented_batch, load_digits_splits
from training.models import build_model, config_class

# Per-profile recipe: epochs, train-set limit, image size, batch size, lr, model overrides.
PROFILES = {
    "tiny": {
        "epochs": 2,
        "limit": 256,
        "image_size": 16,
        "batch": 64,
        "lr": 3e-3,
        "model": {"widths": (8, 16)},
    },
    "quick": {"epochs": 24, "limit": None, "image_size": 32, "batch": 64, "lr": 3e-3, "model": {}},
    "full": {
        "epochs": 60,
        "limit": None,
        "image_size": 32,
        "batch": 64,
        "lr": 2e-3,
        "model": {"widths": (32, 64, 128), "blocks_per_stage": 2},
    },
}
AUGMENT_FRACTION = 0.5  # share of each epoch's images drawn as a user might send them (perturb.augment)
MEAN, STD = 0.5, 0.5  # normalisation baked into the exported graph: x/255 -> (x - MEAN) / STD


def to_float(x_u8: torch.Tensor) -> torch.Tensor:
    return (x_u8.float() / 255.0 - MEAN) / STD


def augment(x: torch.Tensor, pad: int = 2) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels (pad with white paper, then crop): what is left of
    a digit's position after the canonical crop and centring."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), value=float((1.0 - MEAN) / STD))
    dx, dy = np.random.randint(0, 2 * pad + 1, size=2)
    return padded[:, :, dy : dy + h, dx : dx + w]


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, x: np.ndarray, y: np.ndarray, device: torch.device
) -> tuple[float, float]:
    model.eval()
    xs = to_float(torch.from_numpy(x)).to(device)
    logits = model(xs)
    loss = F.cross_entropy(logits, torch.from_numpy(y).to(device)).item()
    acc = (logits.argmax(1).cpu().numpy() == y).mean().item()
    return loss, acc


def main(argv: list[str] | None = None) -> dict:
    p = base_parser(__doc__.splitlines()[0], "build/artifacts/classifier")
    p.add_argument("--arch", default="resnet", help="registered classifier: resnet, lenet5, vgg")
    args = p.parse_args(argv)
    device = setup_run(args)
    prof = PROFILES[args.profile]
    epochs = args.epochs or prof["epochs"]

    data = load_digits_splits(prof["image_size"], prof["limit"])
    cfg_cls = config_class(args.arch)
    overrides = {k: v for k, v in prof["model"].items() if k in cfg_cls.__dataclass_fields__}
    cfg = replace(cfg_cls(), in_channels=1, num_classes=len(LABELS), **overrides)
    model = build_model(args.arch, cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=prof["lr"], weight_decay=1e-4)
    steps_per_epoch = int(np.ceil(len(data.x_train) / prof["batch"]))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=prof["lr"], total_steps=epochs * steps_per_epoch)
    y_train = torch.from_numpy(data.y_train)
    hist = History()
    gen = torch.Generator().manual_seed(args.seed)
    aug_rng = np.random.default_rng(args.seed)

    with Timer() as timer:
        bar = progress(range(epochs), args.no_progress, desc=f"train {args.arch}", unit="epoch")
        for _ in bar:
            model.train()
            # Fresh perturbed renderings every epoch (rotation, blur, noise, JPEG, size, shifts), each
            # through the same canonicalisation the gateway applies; the rest of the epoch stays clean.
            x_u8, _ = augmented_batch(data.raw_train, prof["image_size"], aug_rng, AUGMENT_FRACTION)
            x_train = to_float(torch.from_numpy(x_u8))
            perm = torch.randperm(len(x_train), generator=gen)
            total = 0.0
            for s in range(steps_per_epoch):
                idx = perm[s * prof["batch"] : (s + 1) * prof["batch"]]
                xb, yb = augment(x_train[idx]).to(device), y_train[idx].to(device)
                loss = F.cross_entropy(model(xb), yb, label_smoothing=0.05)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
            val_loss, val_acc = evaluate(model, data.x_val, data.y_val, device)
            hist.log(train_loss=total / len(x_train), val_loss=val_loss, val_accuracy=val_acc)
            bar.set_postfix(loss=f"{total / len(x_train):.3f}", val_acc=f"{val_acc:.3f}")

    test_loss, test_acc = evaluate(model, data.x_test, data.y_test, device)
    model.cpu()
    metrics = {
        "task": "classification",
        "arch": args.arch,
        "profile": args.profile,
        "epochs": epochs,
        "parameters": count_parameters(model),
        "train_seconds": round(timer.seconds, 2),
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        "test_size": len(data.y_test),
        "dataset": "sklearn.datasets.load_digits (fixed stratified 80/20 split, seed 0)",
    }
    meta = {
        "labels": LABELS,
        "image_size": prof["image_size"],
        "channels": 1,
        "mean": MEAN,
        "std": STD,
        "canonicalize": CANONICALIZE,
        "native_size": NATIVE_SIZE,
        "augmentation": f"{AUGMENT_FRACTION:g} of each epoch: training.data.perturb.augment",
        "metrics": {k: metrics[k] for k in ("test_accuracy", "test_loss", "profile", "epochs")},
        "dataset": metrics["dataset"],
    }
    save_checkpoint(args.out / CHECKPOINT_NAME, args.arch, cfg, model, "classification", meta)
    write_metrics(args.out, metrics, hist)
    plot_curves(
        args.out,
        hist,
        f"{args.arch} on digits: test accuracy {test_acc:.3f}",
        groups=[("train_loss", "val_loss"), ("val_accuracy",)],
    )
    print(
        f"test accuracy {test_acc:.4f} on {len(data.y_test)} held-out digits "
        f"({timer.seconds:.1f}s); wrote {args.out}"
    )
    return metrics


if __name__ == "__main__":
    main()

"""The robustness table of ``make quality``: task x perturbation, offline vs served, with targets.

Each cell sends the same perturbed inputs two ways:

* offline: the upload's bytes decoded in this process, the same preprocessing the gateway runs
  (``serving.imaging``) and the PyTorch checkpoint;
* served: the bytes a user would send (PNG in the image's own mode and size, or the JPEG file
  itself) posted to the task route of the running gateway.

Cells (``--robust-n`` items each; a few hundred requests in all):

* digits (classification): top-1 under every ``training.data.perturb.PERTURBATIONS`` case;
* anomaly: share of perturbed normal test digits flagged, share of perturbed anomalies caught
  (the model's own threshold, the one export writes);
* segmentation: mIoU of the test scenes as JPEG 50, resized up, down and to another aspect
  ratio, and its drop from the clean mIoU;
* super-resolution: PSNR gain over bicubic when the low-resolution input is a JPEG (75, 50).

Targets are judged on the served figures (issue 13); served and offline must agree per cell
within ``tolerance``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

# metric -> (comparison, bound): judged on the served figure.
TARGETS: dict[str, tuple[str, float]] = {
    "digits/top1": (">=", 0.97),
    "anomaly/normals_flagged": ("<=", 0.05),
    "anomaly/anomalies_caught": (">=", 0.95),
    "segmentation/miou_drop": ("<=", 0.05),
    "super_resolution/psnr_gain": (">", 0.0),
}
# Served vs offline per cell. Rates: the same pixels reach a float32 ONNX graph and eager PyTorch,
# which may flip a near-tie, so one item in the cell may differ (1/n, at least 0.005).
RATE_TOLERANCE = 0.005
MIOU_TOLERANCE = 0.01  # as make quality's mean_iou: a few boundary pixels may flip
PSNR_TOLERANCE = 0.05  # dB: uint8 rounding of x.5 values may differ by one level
SEG_PERTURBATIONS = ("clean", "jpeg50", "resize_up", "resize_down", "aspect")
SR_QUALITIES = (0, 75, 50)  # 0: the clean PNG (the reference the gain is compared with)


@dataclass
class Cell:
    task: str
    model: str
    metric: str
    perturbation: str
    offline: float
    served: float
    n: int
    tolerance: float

    @property
    def target(self) -> tuple[str, float] | None:
        return TARGETS.get(f"{self.task}/{self.metric}")

    @property
    def agree(self) -> bool:
        return abs(self.served - self.offline) <= self.tolerance + 1e-12

    @property
    def meets_target(self) -> bool | None:
        if self.target is None:
            return None
        op, bound = self.target
        return {">=": self.served >= bound, "<=": self.served <= bound, ">": self.served > bound}[op]

    def to_dict(self) -> dict[str, Any]:
        target = self.target
        return {
            "task": self.task,
            "model": self.model,
            "metric": self.metric,
            "perturbation": self.perturbation,
            "offline": self.offline,
            "served": self.served,
            "difference": self.served - self.offline,
            "tolerance": self.tolerance,
            "agree": self.agree,
            "target": None if target is None else f"{target[0]} {target[1]:g}",
            "pass": self.meets_target,
            "n": self.n,
        }


def rate_tolerance(n: int) -> float:
    return max(RATE_TOLERANCE, 1.0 / max(n, 1))


def decode(data: bytes) -> Image.Image:
    """The upload decoded as the gateway decodes it (no EXIF orientation in these images)."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def post(client: httpx.Client, route: str, data: bytes, ctype: str, **params: Any) -> httpx.Response:
    ext = "jpg" if ctype == "image/jpeg" else "png"
    r = client.post(route, files={"file": (f"x.{ext}", data, ctype)}, params=params)
    r.raise_for_status()
    return r


def digit_uploads(raws: np.ndarray, name: str) -> list[tuple[bytes, str]]:
    from training.data.perturb import upload

    return [upload(name, r, i) for i, r in enumerate(raws)]


def check_digits(client: httpx.Client, art: Path, n: int, names: list[str]) -> list[Cell]:
    import torch

    from training.classify import to_float
    from training.common import load_checkpoint
    from training.data.digits import prepare, raw_digit_images, split_indices

    path = art / "classifier" / "model.pt"
    if not path.exists():
        return []
    ckpt = load_checkpoint(path)
    size = int(ckpt.meta["image_size"])
    ckpt.model.eval()
    raw, y = raw_digit_images()
    test = split_indices(y)[2][:n]
    cells = []
    for name in names:
        ups = digit_uploads(raw[test], name)
        x = np.stack([prepare(decode(d), size) for d, _ in ups])
        with torch.no_grad():
            off = ckpt.model(to_float(torch.from_numpy(x))).argmax(1).numpy()
        srv = [
            post(client, "/v1/classify", d, c, top_k=1, model="classifier").json()["predictions"][0]["label"]
            for d, c in ups
        ]
        truth = y[test]
        cells.append(
            Cell(
                "digits",
                "classifier",
                "top1",
                name,
                float(np.mean(off == truth)),
                float(np.mean([s == str(t) for s, t in zip(srv, truth, strict=True)])),
                len(test),
                rate_tolerance(len(test)),
            )
        )
    return cells


def check_anomaly(client: httpx.Client, art: Path, n: int, names: list[str]) -> list[Cell]:
    from training.anomaly import scores
    from training.common import load_checkpoint
    from training.data.anomaly import raw_anomalies
    from training.data.digits import prepare, raw_digit_images, split_indices

    path = art / "anomaly" / "model.pt"
    if not path.exists():
        return []
    import torch

    ckpt = load_checkpoint(path)
    size, threshold = int(ckpt.meta["image_size"]), float(ckpt.meta["threshold"])
    raw, y = raw_digit_images()
    sets = {
        "normals_flagged": raw[split_indices(y)[2][:n]],
        "anomalies_caught": raw_anomalies(n)[0],  # the test anomalies' first n: kinds in turn
    }
    cells = []
    for name in names:
        for metric, raws in sets.items():
            ups = digit_uploads(raws, name)
            x = np.stack([prepare(decode(d), size) for d, _ in ups])
            off = scores(ckpt.model, x, torch.device("cpu")) > threshold
            srv = [post(client, "/v1/anomaly", d, c, model="anomaly").json()["is_anomaly"] for d, c in ups]
            cells.append(
                Cell(
                    "anomaly",
                    "anomaly",
                    metric,
                    name,
                    float(np.mean(off)),
                    float(np.mean(srv)),
                    len(raws),
                    rate_tolerance(len(raws)),
                )
            )
    return cells


def _seg_perturb(img: np.ndarray, mask: np.ndarray, name: str) -> tuple[bytes, str, np.ndarray]:
    """(H, W, 3) scene and (H, W) mask -> the upload and the mask at the upload's size."""
    from training.data.perturb import jpeg_bytes, png_bytes

    pil = Image.fromarray(img)
    h, w = mask.shape
    if name == "jpeg50":
        return jpeg_bytes(pil, 50), "image/jpeg", mask
    sizes = {"resize_up": (w * 3 // 2, h * 3 // 2), "resize_down": (w * 3 // 4, h * 3 // 4)}
    sizes["aspect"] = (w * 3 // 2, h)
    if name in sizes:
        wh = sizes[name]
        truth = np.asarray(Image.fromarray(mask).resize(wh, Image.Resampling.NEAREST))
        return png_bytes(pil.resize(wh, Image.Resampling.BICUBIC)), "image/png", truth
    return png_bytes(pil), "image/png", mask


def offline_segment(model: Any, img: Image.Image, multiple: int = 16) -> np.ndarray:
    """The gateway's run_segmentation in process: edge-pad to the U-Net's multiple, crop back."""
    import torch

    from serving.imaging import to_model_image
    from training.segment import predict

    arr = to_model_image(img, None, 3)
    _, h, w = arr.shape
    ph, pw = math.ceil(h / multiple) * multiple - h, math.ceil(w / multiple) * multiple - w
    arr = np.pad(arr, ((0, 0), (0, ph), (0, pw)), mode="edge")
    return predict(model, arr[None], torch.device("cpu"))[0][:h, :w]


def check_segmentation(client: httpx.Client, art: Path, n: int) -> list[Cell]:
    from training.common import load_checkpoint
    from training.data.shapes import make_scenes
    from training.segment import confusion, iou_from_confusion

    path = art / "segmenter" / "model.pt"
    if not path.exists():
        return []
    ckpt = load_checkpoint(path)
    k = len(ckpt.meta["classes"])
    multiple = int(ckpt.meta.get("multiple_of", 16))
    scenes = make_scenes(n, int(ckpt.meta.get("image_size", 64)), split="test")
    miou: dict[str, tuple[float, float]] = {}
    for name in SEG_PERTURBATIONS:
        cm_off, cm_srv = np.zeros((k, k), np.int64), np.zeros((k, k), np.int64)
        for img, mask in zip(scenes.images, scenes.masks, strict=True):
            data, ctype, truth = _seg_perturb(img.transpose(1, 2, 0), mask, name)
            off = offline_segment(ckpt.model, decode(data), multiple)
            body = post(client, "/v1/segment", data, ctype, output="mask", model="segmenter").content
            srv = np.asarray(Image.open(io.BytesIO(body)))
            cm_off += confusion(off, truth, k)
            cm_srv += confusion(srv, truth, k)
        miou[name] = (
            float(np.nanmean(iou_from_confusion(cm_off))),
            float(np.nanmean(iou_from_confusion(cm_srv))),
        )
    cells = []
    for name, (off, srv) in miou.items():
        cells.append(Cell("segmentation", "segmenter", "mean_iou", name, off, srv, n, MIOU_TOLERANCE))
        if name != "clean":
            c_off, c_srv = miou["clean"]
            cells.append(
                Cell(
                    "segmentation",
                    "segmenter",
                    "miou_drop",
                    name,
                    c_off - off,
                    c_srv - srv,
                    n,
                    2 * MIOU_TOLERANCE,
                )
            )
    return cells


def check_super_resolution(client: httpx.Client, art: Path, max_side: int) -> list[Cell]:
    import torch

    from training.common import load_checkpoint
    from training.data.perturb import jpeg_bytes, png_bytes
    from training.data.photos import held_out_images, upscale_bicubic
    from training.super_resolve import image_metrics, super_resolve

    cells = []
    for scale in (2, 4):
        images = held_out_images(scale, max_side=max_side)
        for variant in ("psnr", "gan"):
            name = f"sr_{variant}_x{scale}"
            path = art / f"sr_x{scale}" / name / "model.pt"
            if not path.exists():
                continue
            model = load_checkpoint(path).model
            for quality in SR_QUALITIES:
                off, srv = [], []
                for im in images:
                    pil = Image.fromarray(im.lr)
                    data = jpeg_bytes(pil, quality) if quality else png_bytes(pil)
                    ctype = "image/jpeg" if quality else "image/png"
                    lr = np.asarray(decode(data).convert("RGB"))
                    bicubic = image_metrics(upscale_bicubic(lr, scale), im.hr, scale)["psnr"]
                    out_off = super_resolve(model, lr, torch.device("cpu"))
                    off.append(image_metrics(out_off, im.hr, scale)["psnr"] - bicubic)
                    body = post(client, "/v1/super-resolve", data, ctype, scale=scale, model=variant).content
                    out_srv = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
                    srv.append(image_metrics(out_srv, im.hr, scale)["psnr"] - bicubic)
                cells.append(
                    Cell(
                        "super_resolution",
                        name,
                        "psnr_gain",
                        f"jpeg{quality}" if quality else "clean",
                        float(np.mean(off)),
                        float(np.mean(srv)),
                        len(images),
                        PSNR_TOLERANCE,
                    )
                )
    return cells


TASKS = ("classification", "anomaly", "segmentation", "super_resolution")


def run(
    client: httpx.Client,
    art: Path,
    n: int,
    tasks: list[str],
    perturbations: list[str] | None = None,
    max_side: int = 256,
) -> list[Cell]:
    """Every cell of the tasks asked for (of TASKS); ``perturbations`` limits the digit cases."""
    from training.data.perturb import PERTURBATIONS

    names = perturbations or list(PERTURBATIONS)
    checks: dict[str, Callable[[], list[Cell]]] = {
        "classification": lambda: check_digits(client, art, n, names),
        "anomaly": lambda: check_anomaly(client, art, n, names),
        "segmentation": lambda: check_segmentation(client, art, n),
        "super_resolution": lambda: check_super_resolution(client, art, max_side),
    }
    cells: list[Cell] = []
    for task in tasks:
        if task in checks:
            cells += checks[task]()
    return cells


def report(cells: list[Cell], n: int) -> dict[str, Any]:
    return {
        "n_per_cell": n,
        "targets": {k: f"{op} {v:g}" for k, (op, v) in TARGETS.items()},
        "tolerances": {
            "rates": f"max({RATE_TOLERANCE:g}, 1/n): one item may flip at a near-tie (float32 graph, eager)",
            "mean_iou": MIOU_TOLERANCE,
            "miou_drop": 2 * MIOU_TOLERANCE,
            "psnr_gain_db": PSNR_TOLERANCE,
        },
        "cells": [c.to_dict() for c in cells],
        "all_agree": all(c.agree for c in cells),
        "all_targets_met": all(c.meets_target is not False for c in cells),
        "failed_targets": [
            f"{c.task}/{c.metric}/{c.perturbation}: {c.served:.4f} (target {c.to_dict()['target']})"
            for c in cells
            if c.meets_target is False
        ],
    }


def table(cells: list[Cell]) -> str:
    head = f"{'task':<17} {'model':<11} {'metric':<17} {'perturbation':<12} {'offline':>8} {'served':>8}"
    lines = [f"{head}  {'target':<8} pass  agree"]
    for c in cells:
        t = c.to_dict()["target"] or ""
        ok = {None: "", True: "yes", False: "NO"}[c.meets_target]
        lines.append(
            f"{c.task:<17} {c.model:<11} {c.metric:<17} {c.perturbation:<12} {c.offline:8.4f} "
            f"{c.served:8.4f}  {t:<8} {ok:<4}  {'yes' if c.agree else 'NO'} (±{c.tolerance:.3g})"
        )
    return "\n".join(lines)


def plot(cells: list[Cell], out: Path) -> Path:
    """Heatmap: one row per (task, model, metric), one column per perturbation; the cell shows
    served (offline) and is green when it meets its target, red when not, grey without one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    rows = list(dict.fromkeys((c.task, c.model, c.metric) for c in cells))
    cols = list(dict.fromkeys(c.perturbation for c in cells))
    status = np.full((len(rows), len(cols)), np.nan)
    fig, ax = plt.subplots(figsize=(1.0 + 0.95 * len(cols), 0.9 + 0.55 * len(rows)))
    for c in cells:
        i, j = rows.index((c.task, c.model, c.metric)), cols.index(c.perturbation)
        status[i, j] = {None: 0.5, True: 1.0, False: 0.0}[c.meets_target]
        ax.text(
            j,
            i,
            f"{c.served:.3f}\n({c.offline:.3f})",
            ha="center",
            va="center",
            fontsize=6.5,
            color="k" if c.agree else "m",
        )
    cmap = ListedColormap(["#f4a6a6", "#dddddd", "#a6e3a6"])
    ax.imshow(np.where(np.isnan(status), 0.5, status), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=8)
    labels = [
        f"{m}: {metric}"
        + (f" {' '.join(map(str, TARGETS[f'{t}/{metric}']))}" if f"{t}/{metric}" in TARGETS else "")
        for t, m, metric in rows
    ]
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.set_title("robustness through the gateway: served (offline); green = meets target, red = misses")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out

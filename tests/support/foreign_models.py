"""Models nobody here trained, built as a user's own script would build them (random weights).

Other families than ours: a MobileNetV2-style net (inverted residuals, depthwise convolutions,
ReLU6), an EfficientNet-style net (MBConv with squeeze-and-excitation, SiLU) that takes NHWC float
input normalised with ImageNet's mean/std and returns probabilities, and a small fully convolutional
segmenter. Exported the way users export: ``torch.onnx.export`` with their own tensor names.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int = 4) -> None:
        super().__init__()
        mid = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.block = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU6(inplace=True),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False),  # depthwise
            nn.BatchNorm2d(mid),
            nn.ReLU6(inplace=True),
            nn.Conv2d(mid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.use_res else self.block(x)


class MobileNetLike(nn.Module):
    """(N, 3, H, W) float -> (N, classes) logits."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU6(inplace=True),
            InvertedResidual(8, 12, 2),
            InvertedResidual(12, 12, 1),
            InvertedResidual(12, 16, 2),
        )
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, r: int = 4) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Conv2d(c, c // r, 1), nn.SiLU(), nn.Conv2d(c // r, c, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean(dim=(2, 3), keepdim=True))


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        mid = cin * 4
        self.use_res = stride == 1 and cin == cout
        self.block = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.SiLU(),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            nn.SiLU(),
            SqueezeExcite(mid),
            nn.Conv2d(mid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.use_res else self.block(x)


class EfficientNetLikeNHWC(nn.Module):
    """(N, H, W, 3) float, ImageNet-normalised -> (N, classes) probabilities (softmax inside)."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.SiLU())
        self.blocks = nn.Sequential(MBConv(8, 12, 2), MBConv(12, 12, 1))
        self.head = nn.Linear(12, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x.permute(0, 3, 1, 2)))
        return torch.softmax(self.head(x.mean(dim=(2, 3))), dim=1)


class TinyFCN(nn.Module):
    """(N, 3, H, W) float -> (N, classes, H, W) logits; H and W multiples of 4."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
        self.up = nn.Sequential(
            nn.ConvTranspose2d(16, 8, 2, 2), nn.ReLU(), nn.ConvTranspose2d(8, classes, 2, 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


class Broken(nn.Module):
    """Returns NaN for every input: export must refuse it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x.mean(dim=(1, 2, 3))[:, None].expand(-1, 2) * 0 - 1)


def mobilenet_like() -> nn.Module:  # a factory, as `--torch module:factory` calls it
    torch.manual_seed(0)
    return MobileNetLike().eval()


def _randomise_bn(net: nn.Module) -> nn.Module:
    """Running statistics away from 0/1, so normalisation layers do real work in the graph."""
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return net.eval()


def export_user_onnx(
    net: nn.Module,
    path: Path,
    shape: tuple[int, ...],
    names: tuple[str, str],
    spatial_axes: tuple[int, ...] = (),
) -> Path:
    """What a user does: their own tensor names, a dynamic batch (and H/W where the net allows)."""
    axes = {0: "n", **{a: f"d{a}" for a in spatial_axes}}
    out_axes = {0: "n", **({2: "h", 3: "w"} if spatial_axes else {})}
    torch.onnx.export(
        net.eval(),
        (torch.rand(shape),),
        str(path),
        input_names=[names[0]],
        output_names=[names[1]],
        dynamic_axes={names[0]: axes, names[1]: out_axes},
        opset_version=17,
        dynamo=False,
    )
    return path


def write_foreign_models(folder: Path) -> dict[str, Path]:
    """ONNX files and label files for the foreign models, as a user would hand them to us."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    out = {
        "mobilenet": export_user_onnx(
            _randomise_bn(MobileNetLike()), folder / "mobilenet.onnx", (2, 3, 32, 32), ("input.1", "logits")
        ),
        "efficientnet_nhwc": export_user_onnx(
            _randomise_bn(EfficientNetLikeNHWC()), folder / "effnet.onnx", (2, 40, 40, 3), ("pixels", "probs")
        ),
        "fcn": export_user_onnx(TinyFCN(), folder / "fcn.onnx", (1, 3, 32, 32), ("x", "scores"), (2, 3)),
        "broken": export_user_onnx(Broken(), folder / "broken.onnx", (2, 3, 16, 16), ("x", "y")),
    }
    for name, n in {"mobilenet": 5, "efficientnet_nhwc": 4, "fcn": 3, "broken": 2}.items():
        (folder / f"{name}.labels").write_text("".join(f"class_{i}\n" for i in range(n)))
    torch.save(mobilenet_like().state_dict(), folder / "mobilenet.pt")
    return out

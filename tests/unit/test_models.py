"""Every registered architecture: builds from its defaults, runs a batch, has the expected output
shape, no NaN/inf, and a loss on the output reaches every parameter with a non-zero gradient.

Parametrised over ``training.models.list_models()``, so a newly registered model is covered the
moment it registers. Its example input comes from its module's ``example_input(cfg)`` when it
has one, else from ``EXAMPLES`` below; its expected output shape from ``EXPECTED``. A model with
neither fails with a message that says what to add (nothing is skipped silently).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import pytest
import torch

from training.models import build_model, config_class, list_models

Shape = tuple[int, ...]


def _image(cfg: Any) -> torch.Tensor:
    return torch.randn(2, cfg.in_channels, 32, 32)


def _tokens(cfg: Any) -> torch.Tensor:
    return torch.randint(
        0, cfg.vocab_size, (2, min(12, getattr(cfg, "context_length", 12))), dtype=torch.int64
    )


# Fallback inputs for modules without example_input(cfg).
EXAMPLES: dict[str, Callable[[Any], torch.Tensor]] = {
    "resnet": _image,
    "lenet5": _image,
    "vgg": _image,
    "lstm_lm": _tokens,
    "gpt": _tokens,
}
# Expected shape of the (first) output, from the config and the input.
EXPECTED: dict[str, Callable[[Any, torch.Tensor], Shape]] = {
    "resnet": lambda cfg, x: (x.shape[0], cfg.num_classes),
    "lenet5": lambda cfg, x: (x.shape[0], cfg.num_classes),
    "vgg": lambda cfg, x: (x.shape[0], cfg.num_classes),
    "unet": lambda cfg, x: (x.shape[0], cfg.num_classes, *x.shape[2:]),
    "srresnet": lambda cfg, x: (x.shape[0], cfg.channels, x.shape[2] * cfg.scale, x.shape[3] * cfg.scale),
    "srgan_discriminator": lambda cfg, x: (x.shape[0],),
    "autoencoder": lambda cfg, x: tuple(x.shape),
    "denoiser": lambda cfg, x: tuple(x.shape),
    "alexnet": lambda cfg, x: (x.shape[0], cfg.num_classes),
    "xception": lambda cfg, x: (x.shape[0], cfg.num_classes),
    "inception": lambda cfg, x: (x.shape[0], cfg.num_classes),
    "inception_resnet": lambda cfg, x: (x.shape[0], cfg.num_classes),
    "dcgan_generator": lambda cfg, x: (x.shape[0], cfg.channels, cfg.image_size, cfg.image_size),
    "dcgan_discriminator": lambda cfg, x: (x.shape[0],),
    "lstm_lm": lambda cfg, x: (*x.shape, cfg.vocab_size),
    "gpt": lambda cfg, x: (*x.shape, cfg.vocab_size),
    # seq2seq models take (src, tgt_in) and score every target position
    "seq2seq_attn": lambda cfg, x: (*x[1].shape, cfg.tgt_vocab),
    "transformer_seq2seq": lambda cfg, x: (*x[1].shape, cfg.tgt_vocab),
    # bert takes (tokens, attention_mask); its first output is the class logits
    "bert": lambda cfg, x: (x[0].shape[0], cfg.num_labels),
}
# Non-default configurations worth the same checks (a different code path each).
EXTRA_CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("autoencoder", {"variational": True}),
    ("denoiser", {"widths": (8, 16), "convs_per_stage": 1}),
    ("xception", {"widths": (16, 24), "middle_blocks": 1, "stem": 8, "exit_width": 32}),
    ("dcgan_generator", {"image_size": 64, "channels": 3, "latent_dim": 8, "width": 4}),
    ("dcgan_discriminator", {"image_size": 8, "channels": 3, "width": 4}),
    ("srresnet", {"scale": 2, "width": 16, "num_blocks": 2, "head_kernel": 3, "batch_norm": True}),
    ("srresnet", {"scale": 4, "width": 16, "num_blocks": 1, "bicubic_skip": False}),
    ("unet", {"depth": 4, "base_width": 8, "dropout": 0.1}),
    ("bert", {"pre_ln": False, "d_model": 32, "n_head": 2}),
]


def cases() -> list[Any]:
    registered = list_models()
    out = [pytest.param(name, {}, id=name) for name in registered]
    out += [
        pytest.param(name, over, id=f"{name}-{'-'.join(f'{k}={v}' for k, v in over.items())}")
        for name, over in EXTRA_CONFIGS
        if name in registered
    ]
    return out


def example_for(name: str, cfg: Any) -> torch.Tensor:
    module = importlib.import_module(config_class(name).__module__)
    if hasattr(module, "example_input"):
        return module.example_input(cfg)
    if name in EXAMPLES:
        return EXAMPLES[name](cfg)
    pytest.fail(
        f"no example input for registered model {name!r}: add `example_input(cfg)` to "
        f"{module.__name__} or an entry to EXAMPLES in {__file__}"
    )


def run(model: torch.nn.Module, x: Any) -> Any:
    """A tuple example is several positional inputs (seq2seq: src, tgt_in)."""
    return model(*x) if isinstance(x, tuple) else model(x)


def outputs_of(y: Any) -> list[torch.Tensor]:
    ys = list(y) if isinstance(y, (tuple, list)) else [y]
    return [t for t in ys if isinstance(t, torch.Tensor) and t.is_floating_point()]


@pytest.mark.parametrize(("name", "overrides"), cases())
def test_forward_shape_finite_and_gradients(name: str, overrides: dict[str, Any]) -> None:
    torch.manual_seed(0)
    cfg = config_class(name)(**overrides)
    model = build_model(name, cfg)
    x = example_for(name, cfg)
    if name not in EXPECTED:
        pytest.fail(
            f"no expected output shape for registered model {name!r}: add an entry to EXPECTED in {__file__}"
        )

    model.train()
    ys = outputs_of(run(model, x))
    assert ys, f"{name}: forward returned no floating-point tensor"
    assert tuple(ys[0].shape) == EXPECTED[name](cfg, x)
    assert all(torch.isfinite(y).all() for y in ys)
    # A fixed random weighting, so no symmetry (e.g. softmax summing to 1) can cancel a gradient.
    loss = sum((y * torch.randn_like(y)).sum() for y in ys)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    zero = [n for n, p in model.named_parameters() if p.grad is not None and not p.grad.abs().sum() > 0]
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not missing, f"{name}: no gradient reaches {missing}"
    assert not zero, f"{name}: all-zero gradient for {zero}"
    assert not bad, f"{name}: non-finite gradient for {bad}"

    model.eval()
    with torch.no_grad():
        a, b = outputs_of(run(model, x))[0], outputs_of(run(model, x))[0]
    assert torch.isfinite(a).all()
    assert torch.equal(a, b), f"{name}: eval mode is not deterministic"


def test_registry_lists_the_vision_models() -> None:
    assert {"unet", "srresnet", "srgan_discriminator", "autoencoder"} <= set(list_models())


def test_unet_records_multiple_of_and_takes_any_multiple() -> None:
    cfg = config_class("unet")(depth=3, base_width=4, num_classes=5)
    assert cfg.multiple_of == 8
    model = build_model("unet", cfg).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 24, 40)).shape == (1, 5, 24, 40)


def test_autoencoder_rejects_size_its_code_cannot_hold() -> None:
    with pytest.raises(ValueError):
        build_model("autoencoder", {"image_size": 20, "widths": (8, 16, 32)})


def test_srresnet_starts_near_bicubic() -> None:
    """The bicubic skip plus a small tail: before training the output is bicubic plus a little."""
    torch.manual_seed(0)
    model = build_model("srresnet", {"scale": 2, "width": 16, "num_blocks": 2, "head_kernel": 3}).eval()
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        bicubic = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="bicubic", align_corners=False)
        assert (model(x) - bicubic).abs().mean() < 0.1 * bicubic.abs().mean()


def test_cnn_family_parameter_counts_and_separable_convs() -> None:
    """Scaled as their files document: well under a million parameters; Xception is depthwise-separable."""
    counts = {
        name: sum(p.numel() for p in build_model(name).parameters()) for name in ("alexnet", "xception")
    }
    assert counts == {"alexnet": 578_602, "xception": 423_498}
    convs = [
        m
        for m in build_model("xception").modules()
        if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)
    ]
    assert (
        sum(m.groups == m.in_channels > 1 for m in convs) == len(convs) - 1
    )  # all but the stem are depthwise

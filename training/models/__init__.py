"""Model registry: architecture name -> (config dataclass, builder).

Every architecture lives in its own module and registers itself with ``@register``.
A checkpoint stores the registry name and the config as a plain dict, so a model is
rebuilt from code and weights only (never a pickled module).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

import torch.nn as nn

_REGISTRY: dict[str, tuple[type, Callable[[Any], nn.Module]]] = {}

# Modules that hold architectures; imported lazily so `list_models()` sees them all.
_MODULES = (
    "resnet",
    "lenet",
    "vgg",
    "unet",
    "lstm_lm",
    "gpt",
    "srgan",
    "autoencoder",
    "denoiser",
    "dcgan",
    "alexnet",
    "xception",
    "inception",
    "inception_resnet",
    "seq2seq_attn",
    "transformer_seq2seq",
    "bert",
)


def register(
    name: str, config_cls: type
) -> Callable[[Callable[[Any], nn.Module]], Callable[[Any], nn.Module]]:
    """Register ``builder(config) -> nn.Module`` under ``name`` with its dataclass config."""

    def wrap(builder: Callable[[Any], nn.Module]) -> Callable[[Any], nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = (config_cls, builder)
        return builder

    return wrap


def _load_all() -> None:
    for mod in _MODULES:
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as exc:  # a module not written yet is fine; a broken import is not
            if exc.name != f"{__name__}.{mod}":
                raise


def list_models() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def config_class(name: str) -> type:
    _load_all()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name][0]


def build_model(name: str, config: Any | dict[str, Any] | None = None) -> nn.Module:
    """Build a registered model from its config dataclass, a dict of its fields, or defaults."""
    cls = config_class(name)
    if config is None:
        config = cls()
    elif isinstance(config, dict):
        config = cls(**config)
    return _REGISTRY[name][1](config)


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)

"""Tiny character-level language models (seconds to train) for the text-generation tests, cached."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

from tests.support.models import cached_checkpoint
from tests.support.procs import ROOT

TEXT_ARGS = ["--profile", "tiny", "--no-progress", "--threads", "2"]
ARCHS = ("lstm_lm", "gpt")
SERVED = {"lstm_lm": "lstm", "gpt": "gpt"}


def text_checkpoint(arch: str) -> Path:
    from training import generate

    args = [*TEXT_ARGS, "--arch", arch]
    return cached_checkpoint(
        f"text-{arch}",
        lambda out: generate.main([*args, "--out", str(out)]),
        [ROOT / "serving" / "textgen.py"],
        " ".join(args),
    )


def load_generator_module(version_dir: Path) -> Any:
    """Import an exported ``model.py`` outside Triton, with a minimal stand-in for ``pb_utils``.

    Only for unit-testing the batching engines; everything about serving is tested against a
    real tritonserver in tests/integration.
    """
    if "triton_python_backend_utils" not in sys.modules:
        stub = types.ModuleType("triton_python_backend_utils")
        stub.TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1  # type: ignore[attr-defined]
        sys.modules["triton_python_backend_utils"] = stub
    spec = importlib.util.spec_from_file_location(
        f"generator_{abs(hash(version_dir))}", version_dir / "model.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


# Translation (spelled-out numbers -> digits): the tiny profile for one round, a few seconds per model.
TRANSLATION_ARGS = ["--profile", "tiny", "--epochs", "1", "--no-progress", "--threads", "2"]
TRANSLATION_SERVED = {"seq2seq_attn": "seq2seq", "transformer_seq2seq": "transformer"}


def translation_checkpoint(arch: str) -> Path:
    from training import translate

    args = [*TRANSLATION_ARGS, "--arch", arch]
    sources = [ROOT / "training" / f for f in ("translate.py", "data/numbers.py", f"models/{arch}.py")]
    return cached_checkpoint(
        f"translation-{arch}", lambda out: translate.main([*args, "--out", str(out)]), sources, " ".join(args)
    )


# Text encoder (BERT, MLM pre-training + genre fine-tuning): the tiny profile, a few seconds.
ENCODER_ARGS = ["--profile", "tiny", "--no-progress", "--threads", "2"]
ENCODER_SERVED = "bert"


def encoder_checkpoint() -> Path:
    from training import classify_text

    sources = [ROOT / "training" / f for f in ("classify_text.py", "data/shakespeare.py", "models/bert.py")]
    return cached_checkpoint(
        "text-encoder-bert",
        lambda out: classify_text.main([*ENCODER_ARGS, "--out", str(out)]),
        sources,
        " ".join(ENCODER_ARGS),
    )

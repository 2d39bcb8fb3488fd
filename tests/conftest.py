"""Session fixtures: one tiny model repository, one real Triton, one real gateway for the run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import models, procs


@pytest.fixture(scope="session")
def classifier_ckpt() -> Path:
    return models.classifier_checkpoint()


@pytest.fixture(scope="session")
def served_checkpoints(classifier_ckpt: Path) -> dict[str, Path]:
    """Served name -> checkpoint for every task: tiny models trained in seconds (cached by code hash)."""
    from tests.support.text_models import (
        ENCODER_SERVED,
        SERVED,
        TRANSLATION_SERVED,
        encoder_checkpoint,
        text_checkpoint,
        translation_checkpoint,
    )

    ckpts = {
        "classifier": classifier_ckpt,
        "segmenter": models.segmenter_checkpoint(),
        **models.sr_checkpoints(2),
        "anomaly": models.anomaly_checkpoint(),
        "denoiser": models.denoiser_checkpoint(),
        "sampler": models.sampler_checkpoint(),
    }
    ckpts.update({SERVED[arch]: text_checkpoint(arch) for arch in ("lstm_lm", "gpt")})
    ckpts.update({name: translation_checkpoint(arch) for arch, name in TRANSLATION_SERVED.items()})
    ckpts[ENCODER_SERVED] = encoder_checkpoint()
    return ckpts


@pytest.fixture(scope="session")
def model_repository(tmp_path_factory: pytest.TempPathFactory, served_checkpoints: dict[str, Path]) -> Path:
    """Both targets of a repository holding every tiny model the suite serves."""
    root = tmp_path_factory.mktemp("repo")
    return models.build_repository(root, served_checkpoints)


@pytest.fixture(scope="session")
def triton(tmp_path_factory: pytest.TempPathFactory, model_repository: Path) -> Iterator[procs.TritonHandle]:
    handle = procs.start_triton(model_repository / "cpu", tmp_path_factory.mktemp("triton"))
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, triton: procs.TritonHandle
) -> Iterator[procs.GatewayHandle]:
    handle = procs.start_gateway(triton.grpc_url, tmp_path_factory.mktemp("gateway"))
    yield handle
    handle.stop()

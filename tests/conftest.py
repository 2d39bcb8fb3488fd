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
def model_repository(tmp_path_factory: pytest.TempPathFactory, classifier_ckpt: Path) -> Path:
    """Both targets of a repository holding every tiny model the suite serves."""
    root = tmp_path_factory.mktemp("repo")
    return models.build_repository(root, {"classifier": classifier_ckpt})


@pytest.fixture(scope="session")
def triton(tmp_path_factory: pytest.TempPathFactory, model_repository: Path) -> Iterator[procs.TritonHandle]:
    handle = procs.start_triton(model_repository / "cpu", tmp_path_factory.mktemp("triton"))
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory, triton: procs.TritonHandle) -> Iterator[procs.GatewayHandle]:
    handle = procs.start_gateway(triton.grpc_url, tmp_path_factory.mktemp("gateway"))
    yield handle
    handle.stop()

"""A full stack for the front-door and lifecycle tests: Triton in explicit model-control mode with
versioned models, and the gateway with its gRPC front door and the admin API on free ports."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx

from export.repository import validate_repository
from serving import harness
from tests.support import models

ADMIN_KEY = "test-admin-key"
STREAM_MODEL_DIR = Path(__file__).resolve().parent / "triton_models" / "countdown"


def export_classifier_version(repo: Path, variant: int = 0) -> str:
    """Export the tiny classifier into ``repo/cpu/classifier`` as a retraining job would (version
    "auto": other weights -> the next version number); ``variant`` > 0 exports the classifier with
    seeded, slightly different weights. Returns the version written."""
    ckpt = models.classifier_checkpoint()
    if variant:
        ckpt = models.variant_checkpoint(ckpt, variant)
    before = set((repo / "cpu" / "classifier").glob("[0-9]*"))
    models.build_repository(repo, {"classifier": ckpt}, targets=("cpu",))
    after = set((repo / "cpu" / "classifier").glob("[0-9]*"))
    new = after - before
    return (new.pop() if new else max(after, key=lambda p: int(p.name))).name


def add_stream_model(repo: Path) -> None:
    """The decoupled ``countdown`` test model (N in, N streamed responses out)."""
    shutil.copytree(STREAM_MODEL_DIR, repo / "cpu" / "countdown", dirs_exist_ok=True)
    validate_repository(repo / "cpu")


class Stack(harness.Stack):
    def admin(self, timeout: float = 120.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-Admin-Key": ADMIN_KEY}, timeout=timeout)


def start_stack(repo: Path, workdir: Path, env: dict[str, str] | None = None) -> Stack:
    """Triton (explicit mode, every model loaded at start) + the gateway (HTTP, gRPC, admin)."""
    s = harness.start_stack(repo / "cpu", workdir, env=env, admin_key=ADMIN_KEY)
    return Stack(s.triton, s.gateway, s.grpc_port, s.admin_key)

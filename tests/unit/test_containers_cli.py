"""`make images` / `make up` / `make down` faults: one clear line saying what to do, never a traceback.

No Docker daemon is needed: the daemon, compose and the build are stood in for where a test says so;
the missing-daemon case runs the real command against a socket nobody listens on.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from deploy import containers

ROOT = Path(__file__).resolve().parents[2]


def one_line(exc: pytest.ExceptionInfo[SystemExit]) -> str:
    message = str(exc.value.code)
    assert message.startswith("containers: ") and "\n" not in message, message
    return message


def test_missing_daemon_is_one_line_and_exit_1(tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path / 'none.sock'}", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "deploy.containers", "images"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "containers: no Docker daemon answers: run `make system-deps` as root (starts dockerd)"
    ], done.stderr
    assert "Traceback" not in done.stderr + done.stdout


class Compose:
    """Stands in for the compose binary: records each command, answers with ``rc``."""

    def __init__(self, running: str = "", rc: int = 0) -> None:
        self.running, self.rc, self.calls = running, rc, []

    def __call__(self, cmd: list[str], **kwargs: object) -> SimpleNamespace:
        self.calls.append(cmd)
        if "ps" in cmd:
            return SimpleNamespace(returncode=0, stdout=self.running)
        return SimpleNamespace(returncode=self.rc, stdout="")


@pytest.fixture
def no_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(containers, "build_images", lambda with_builder=False: {})


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_port_taken_names_the_port_and_the_way_out(
    monkeypatch: pytest.MonkeyPatch, no_build: None, taken_port: int
) -> None:
    compose = Compose(running="")
    monkeypatch.setattr(containers.subprocess, "run", compose)
    with pytest.raises(SystemExit) as exc:
        containers.up("tiny", gpu=False, http_port=taken_port, grpc_port=taken_port)
    message = one_line(exc)
    assert f"127.0.0.1:{taken_port} is taken" in message and "--http-port" in message
    assert not [c for c in compose.calls if "up" in c], "nothing is started"


def test_up_twice_is_harmless(monkeypatch: pytest.MonkeyPatch, no_build: None, taken_port: int) -> None:
    """The stack's own gateway holds the ports: no fault, compose up (idempotent) runs again."""
    compose = Compose(running="triton\ngateway\nprometheus\n")
    monkeypatch.setattr(containers.subprocess, "run", compose)
    containers.up("tiny", gpu=False, http_port=taken_port, grpc_port=taken_port, models="classifier")
    (up,) = [c for c in compose.calls if "up" in c]
    assert up[-4:] == ["up", "-d", "--no-build", "--wait"]


def test_failed_compose_up_is_one_line(monkeypatch: pytest.MonkeyPatch, no_build: None) -> None:
    monkeypatch.setattr(containers.subprocess, "run", Compose(rc=1))
    monkeypatch.setattr(containers, "port_free", lambda port: True)
    with pytest.raises(SystemExit) as exc:
        containers.up("tiny", gpu=False, http_port=1, grpc_port=2)
    assert "make down cleans up" in one_line(exc)


def test_down_while_nothing_runs_is_harmless(monkeypatch: pytest.MonkeyPatch) -> None:
    compose = Compose(rc=0)  # compose down of an absent project succeeds
    monkeypatch.setattr(containers.subprocess, "run", compose)
    containers.down(gpu=False)
    (down,) = compose.calls
    assert down[-5:] == ["down", "-v", "--remove-orphans", "--timeout", "20"]
    monkeypatch.setattr(containers.subprocess, "run", Compose(rc=1))
    with pytest.raises(SystemExit) as exc:
        containers.down(gpu=False)
    assert one_line(exc) == "containers: compose down failed (see above)"


def test_failed_build_names_the_image_and_the_last_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def build(**kwargs: object) -> None:
        raise RuntimeError("Step 7/9 : RUN pip install ...\nERROR: No matching distribution found for x")

    def get(name: str) -> SimpleNamespace:  # the base exists; the image is not up to date
        return SimpleNamespace(id="sha256:base", labels={})

    images = SimpleNamespace(build=build, get=get)
    monkeypatch.setattr(containers, "client", lambda: SimpleNamespace(images=images))
    for step in ("debs", "base_image"):
        monkeypatch.setattr(containers, step, lambda *a: None)
    monkeypatch.setattr(containers.wheelhouse, "collect", lambda *a: None)
    with pytest.raises(SystemExit) as exc:
        containers.build_images()
    assert one_line(exc) == (
        "containers: building tritonstack/gateway:0.1.0 from deploy/docker/gateway.Dockerfile failed: "
        "ERROR: No matching distribution found for x"
    )


def test_each_image_context_holds_only_what_its_dockerfile_copies(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The classic builder sends the whole context on every build: each image gets its own, small."""
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "x.Dockerfile").write_text(
        "FROM base AS build\nCOPY wheels/ /wheels/\nCOPY pyproject.toml README.m[d] ./\n"
        "COPY src/ src/\nFROM base\nCOPY --from=build /opt/venv /opt/venv\n"
    )
    for rel in (
        "wheels/a.whl",
        "pyproject.toml",
        "src/m.py",
        "src/__pycache__/m.pyc",
        "tests/t.py",
        "big.onnx",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    monkeypatch.setattr(containers, "ROOT", tmp_path)
    context, size = containers.stage_context("x", "deploy/x.Dockerfile")
    staged = sorted(str(p.relative_to(context)) for p in context.rglob("*") if p.is_file())
    assert staged == ["deploy/x.Dockerfile", "pyproject.toml", "src/m.py", "wheels/a.whl"]
    assert size == sum((tmp_path / f).stat().st_size for f in staged)
    before = containers.fingerprint(context, {"BASE_IMAGE": "b"}, "sha256:1")
    assert before == containers.fingerprint(context, {"BASE_IMAGE": "b"}, "sha256:1")
    assert before != containers.fingerprint(context, {"BASE_IMAGE": "b"}, "sha256:2"), "a new base rebuilds"
    (tmp_path / "src" / "m.py").write_text("edited")
    (tmp_path / "src" / "gone.py").write_text("")
    context, _ = containers.stage_context("x", "deploy/x.Dockerfile")
    assert before != containers.fingerprint(context, {"BASE_IMAGE": "b"}, "sha256:1"), (
        "a source edit rebuilds"
    )
    (tmp_path / "src" / "gone.py").unlink()
    context, _ = containers.stage_context("x", "deploy/x.Dockerfile")
    assert not (context / "src" / "gone.py").exists(), "the context is made afresh"

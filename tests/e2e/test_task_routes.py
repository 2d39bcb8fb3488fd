"""Every task route end to end: real gateway process -> real Triton, tiny models, over sockets."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from httpx_sse import connect_sse
from PIL import Image

from tests.support.procs import GatewayHandle, TritonHandle, start_gateway

pytestmark = pytest.mark.slow


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def photo(h: int, w: int) -> np.ndarray:
    from training.data.photos import held_out_images

    hr = held_out_images(2)[0].hr
    return np.ascontiguousarray(hr[:h, :w])


def post(url: str, route: str, data: bytes, **params: object) -> httpx.Response:
    return httpx.post(
        f"{url}{route}", files={"file": ("x.png", data, "image/png")}, params=params, timeout=60
    )


# --- segmentation --------------------------------------------------------------------------------


def test_segment_json_fractions_and_palette_mask(gateway: GatewayHandle) -> None:
    img = photo(50, 37)  # not a multiple of the U-Net's 2**depth: padded, then cropped back
    r = post(gateway.url, "/v1/segment", png(img), include_overlay=True)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["width"], body["height"]) == (37, 50) and r.headers["x-model-version"] == "1"
    assert [c["label"] for c in body["classes"]][:1] == ["background"]
    assert abs(sum(c["fraction"] for c in body["classes"]) - 1.0) < 1e-6
    mask = Image.open(io.BytesIO(base64.b64decode(body["mask_png"])))
    assert mask.mode == "P" and mask.size == (37, 50)
    assert np.asarray(mask).max() < len(body["classes"])
    overlay = Image.open(io.BytesIO(base64.b64decode(body["overlay_png"])))
    assert overlay.mode == "RGB" and overlay.size == (37, 50)


def test_segment_png_by_accept_header_and_parameter(gateway: GatewayHandle) -> None:
    data = png(photo(32, 32))
    r = httpx.post(
        f"{gateway.url}/v1/segment",
        content=data,
        headers={"content-type": "image/png", "accept": "image/png"},
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).mode == "P"
    r = post(gateway.url, "/v1/segment", data, output="overlay")
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).mode == "RGB"


# --- super-resolution ----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["psnr", "gan"])
def test_super_resolve_png_out(gateway: GatewayHandle, variant: str) -> None:
    r = post(gateway.url, "/v1/super-resolve", png(photo(24, 30)), scale=2, model=variant)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.headers["x-model"] == f"sr_{variant}_x2"
    assert Image.open(io.BytesIO(r.content)).size == (60, 48)


def test_super_resolve_unserved_scale_is_422(gateway: GatewayHandle) -> None:
    r = post(gateway.url, "/v1/super-resolve", png(photo(16, 16)), scale=4)
    assert r.status_code == 422 and r.json()["error"]["code"] == "unsupported_scale"


@pytest.fixture(scope="module")
def tiling_gateway(tmp_path_factory: pytest.TempPathFactory, triton: TritonHandle) -> Iterator[GatewayHandle]:
    """A second gateway on the same Triton with tiny tiles and a small output limit."""
    handle = start_gateway(
        triton.grpc_url,
        tmp_path_factory.mktemp("tiling"),
        env={"GATEWAY_SR_TILE_SIZE": "32", "GATEWAY_SR_MAX_OUTPUT_PIXELS": "100000"},
    )
    yield handle
    handle.stop()


def test_tiled_equals_untiled_away_from_borders(
    gateway: GatewayHandle, tiling_gateway: GatewayHandle
) -> None:
    img = png(photo(100, 120))  # untiled on the default gateway (tile 128), 4x4-ish tiles on the other
    whole = np.asarray(
        Image.open(io.BytesIO(post(gateway.url, "/v1/super-resolve", img).content)), dtype=np.int16
    )
    tiled = np.asarray(
        Image.open(io.BytesIO(post(tiling_gateway.url, "/v1/super-resolve", img).content)), dtype=np.int16
    )
    assert whole.shape == tiled.shape == (200, 240, 3)
    diff = np.abs(whole - tiled)[8:-8, 8:-8]
    assert diff.max() <= 2 and diff.mean() < 0.05  # identical but for uint8 rounding at a few pixels


def test_super_resolve_output_limit_is_413(tiling_gateway: GatewayHandle) -> None:
    r = post(tiling_gateway.url, "/v1/super-resolve", png(photo(200, 200)), scale=2)
    assert r.status_code == 413 and "output would be 400x400" in r.json()["error"]["message"]


# --- denoising -----------------------------------------------------------------------------------


def test_denoise_png_out_equals_offline(gateway: GatewayHandle, served_checkpoints: dict[str, Path]) -> None:
    from training.common import load_checkpoint
    from training.denoise import add_noise, denoise

    noisy = add_noise(photo(40, 52), 25.0, np.random.default_rng(0))
    r = post(gateway.url, "/v1/denoise", png(noisy))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.headers["x-model"] == "denoiser"
    served = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"), dtype=np.int16)
    offline = denoise(load_checkpoint(served_checkpoints["denoiser"]).model, noisy).astype(np.int16)
    assert served.shape == offline.shape == (40, 52, 3)
    assert np.abs(served - offline).max() <= 1  # uint8 rounding of x.5 values only


def test_denoise_tiled_equals_untiled(gateway: GatewayHandle, tiling_gateway: GatewayHandle) -> None:
    img = png(photo(100, 120))  # one tile on the default gateway, several on the other
    whole, tiled = (
        np.asarray(Image.open(io.BytesIO(post(g.url, "/v1/denoise", img).content)), dtype=np.int16)
        for g in (gateway, tiling_gateway)
    )
    assert whole.shape == tiled.shape == (100, 120, 3)
    assert np.abs(whole - tiled).max() <= 1  # the margin covers the receptive field: no seams at all


def test_denoise_output_limit_is_413(tiling_gateway: GatewayHandle) -> None:
    r = post(tiling_gateway.url, "/v1/denoise", png(photo(300, 400)))  # 120,000 pixels > 100,000
    assert r.status_code == 413 and "output would be 400x300" in r.json()["error"]["message"]


def test_denoise_unknown_model_is_404(gateway: GatewayHandle) -> None:
    r = post(gateway.url, "/v1/denoise", png(photo(16, 16)), model="nope")
    assert r.status_code == 404 and "error" in r.json()


# --- GAN sampling --------------------------------------------------------------------------------


def sample(url: str, **body: object) -> httpx.Response:
    return httpx.post(f"{url}/v1/sample", json=body, timeout=60)


def test_sample_json_equals_offline_and_seed_is_deterministic(
    gateway: GatewayHandle, served_checkpoints: dict[str, Path]
) -> None:
    from serving.latent import latents
    from training.common import load_checkpoint
    from training.gan_sample import sample as offline_sample

    r = sample(gateway.url, n=5, seed=7, format="json")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "sampler" and body["seed"] == 7 and (body["width"], body["height"]) == (32, 32)
    served = np.stack([np.asarray(Image.open(io.BytesIO(base64.b64decode(b)))) for b in body["images"]])
    ckpt = load_checkpoint(served_checkpoints["sampler"])
    offline = offline_sample(ckpt.model, latents(7, 5, int(ckpt.meta["latent_dim"])))[:, 0]
    assert served.shape == offline.shape == (5, 32, 32)
    assert np.abs(served.astype(np.int16) - offline).max() <= 1  # uint8 rounding of x.5 values only
    again = sample(gateway.url, n=5, seed=7, format="json").json()["images"]
    assert again == body["images"]  # same seed, same images (byte for byte)
    assert sample(gateway.url, n=2, seed=7, format="json").json()["images"] == body["images"][:2]
    assert sample(gateway.url, n=5, seed=8, format="json").json()["images"] != body["images"]


def test_sample_png_grid_and_returned_seed(gateway: GatewayHandle) -> None:
    r = sample(gateway.url, n=16)  # no seed: one is drawn and returned
    assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
    assert r.headers["x-model"] == "sampler"
    grid = Image.open(io.BytesIO(r.content))
    assert grid.mode == "L" and grid.size == (4 * 34 + 2, 4 * 34 + 2)  # 4x4 tiles of 32 px, 2 px gaps
    replay = sample(gateway.url, n=16, seed=int(r.headers["x-seed"]))
    assert replay.content == r.content


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"n": 17}, 422, "invalid_parameter"),
        ({"n": 0}, 422, "invalid_parameter"),
        ({"n": "4"}, 422, "invalid_parameter"),
        ({"seed": -1}, 422, "invalid_parameter"),
        ({"format": "gif"}, 422, "invalid_parameter"),
        ({"nope": 1}, 422, "invalid_parameter"),
        ({"model": "classifier"}, 422, "wrong_task"),
        ({"model": "nope"}, 404, "model_not_found"),
    ],
)
def test_sample_bad_parameters(gateway: GatewayHandle, body: dict, status: int, code: str) -> None:
    r = sample(gateway.url, **body)
    assert r.status_code == status and r.json()["error"]["code"] == code, r.text


# --- anomaly -------------------------------------------------------------------------------------


def test_anomaly_score_threshold_verdict(gateway: GatewayHandle) -> None:
    from training.data.digits import raw_digit_images

    raw, _ = raw_digit_images()
    r = post(gateway.url, "/v1/anomaly", png(raw[0]), include_reconstruction=True)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "anomaly" and body["threshold"] > 0
    assert body["is_anomaly"] == (body["score"] > body["threshold"])
    assert Image.open(io.BytesIO(base64.b64decode(body["reconstruction_png"]))).mode == "L"


# --- text generation -----------------------------------------------------------------------------


def offline_greedy(ckpt: Path, prompt: str, n: int) -> str:
    from serving.textgen import CharVocab, SamplingParams
    from training.common import load_checkpoint
    from training.generate import generate

    c = load_checkpoint(ckpt)
    return generate(
        c.model, CharVocab.from_dict(c.meta["vocabulary"]), prompt, n, SamplingParams(temperature=0.0)
    ).text


@pytest.mark.parametrize("model", ["lstm", "gpt"])
def test_generate_greedy_equals_offline(
    gateway: GatewayHandle, served_checkpoints: dict[str, Path], model: str
) -> None:
    r = httpx.post(
        f"{gateway.url}/v1/generate",
        json={"prompt": "ROMEO:", "max_new_tokens": 30, "temperature": 0, "model": model},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == model and body["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 30
    assert body["text"] == offline_greedy(served_checkpoints[model], "ROMEO:", 30)


def test_generate_seeded_sampling_is_reproducible(gateway: GatewayHandle) -> None:
    req = {
        "prompt": "To be",
        "max_new_tokens": 25,
        "temperature": 1.0,
        "top_k": 10,
        "seed": 7,
        "model": "gpt",
    }
    a = httpx.post(f"{gateway.url}/v1/generate", json=req, timeout=60).json()["text"]
    b = httpx.post(f"{gateway.url}/v1/generate", json=req, timeout=60).json()["text"]
    assert a == b and len(a) == 25


def test_generate_stream_sse_matches_non_stream(gateway: GatewayHandle) -> None:
    req = {"prompt": "KING:", "max_new_tokens": 20, "temperature": 0, "model": "lstm"}
    whole = httpx.post(f"{gateway.url}/v1/generate", json=req, timeout=60).json()["text"]
    texts, done = [], None
    with (
        httpx.Client(timeout=60) as client,
        connect_sse(client, "POST", f"{gateway.url}/v1/generate", json={**req, "stream": True}) as events,
    ):
        assert events.response.headers["content-type"].startswith("text/event-stream")
        for ev in events.iter_sse():
            if ev.event == "done":
                done = ev.json()
                break
            texts.append(ev.json()["text"])
    # Chunks arrive as Triton sends them (one token each while the client keeps up; the generator
    # merges tokens into bigger chunks when the server is busy), and add up to the whole text.
    assert "".join(texts) == whole and texts
    assert done is not None and done["finish_reason"] == "length" and done["usage"]["completion_tokens"] == 20


def test_generate_stop_string(gateway: GatewayHandle) -> None:
    free = httpx.post(
        f"{gateway.url}/v1/generate", json={"prompt": "A", "max_new_tokens": 40, "temperature": 0}, timeout=60
    ).json()["text"]
    stop = free[5:7]
    r = httpx.post(
        f"{gateway.url}/v1/generate",
        json={"prompt": "A", "max_new_tokens": 40, "temperature": 0, "stop": [stop]},
        timeout=60,
    ).json()
    assert r["finish_reason"] == "stop" and r["text"] == free[: free.index(stop)]


def test_openai_sdk_completions_unchanged(gateway: GatewayHandle) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    done = client.completions.create(model="gpt", prompt="ROMEO:", max_tokens=12, temperature=0)
    assert done.choices[0].finish_reason == "length" and len(done.choices[0].text) == 12
    assert done.usage is not None and done.usage.completion_tokens == 12
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model="gpt", prompt="ROMEO:", max_tokens=12, temperature=0, stream=True
        )
    )
    assert streamed == done.choices[0].text


def test_client_disconnect_cancels_generation(gateway: GatewayHandle) -> None:
    req = {
        "prompt": "ROMEO:",
        "max_new_tokens": 500,
        "temperature": 1.0,
        "seed": 1,
        "stream": True,
        "model": "gpt",
    }
    with (
        httpx.Client(timeout=60) as client,
        connect_sse(client, "POST", f"{gateway.url}/v1/generate", json=req) as events,
    ):
        first = next(events.iter_sse())
        assert first.json()["text"]

    # Leaving the block closed the connection mid-stream: the gateway records the request as
    # closed by the client (499) and cancelled the Triton call; the service keeps serving.
    def cancelled_counted() -> bool:
        text = httpx.get(f"{gateway.url}/metrics").text
        return 'route="/v1/generate",status="499"' in text

    from tests.support.procs import poll

    poll(cancelled_counted, 10, "499 for the cancelled stream")
    ok = httpx.post(
        f"{gateway.url}/v1/generate", json={"prompt": "A", "max_new_tokens": 5, "temperature": 0}, timeout=60
    )
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"prompt": "", "max_new_tokens": 5}, "empty_prompt"),
        ({"prompt": "A", "max_new_tokens": 100000}, "invalid_parameter"),
        ({"prompt": "A", "temperature": -1}, "invalid_parameter"),
        ({"prompt": "A", "top_p": 0}, "invalid_parameter"),
        ({"prompt": "A", "model": "classifier"}, "wrong_task"),
    ],
)
def test_generate_bad_inputs_are_422(gateway: GatewayHandle, body: dict, code: str) -> None:
    r = httpx.post(f"{gateway.url}/v1/generate", json=body, timeout=30)
    assert r.status_code == 422 and r.json()["error"]["code"] == code, r.text


@pytest.mark.parametrize("route", ["/v1/segment", "/v1/super-resolve", "/v1/anomaly", "/v1/denoise"])
def test_image_routes_refuse_wrong_media_type(gateway: GatewayHandle, route: str) -> None:
    r = httpx.post(f"{gateway.url}{route}", content=b"{}", headers={"content-type": "application/json"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"


def test_oversized_image_is_413(gateway: GatewayHandle) -> None:
    r = httpx.post(
        f"{gateway.url}/v1/segment",
        content=b"\x89PNG" + b"\0" * (11 * 1024 * 1024),
        headers={"content-type": "image/png"},
    )
    assert r.status_code == 413

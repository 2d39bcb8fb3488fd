"""Gateway settings: one typed object, read from GATEWAY_* environment variables (or a .env file).

Routes reach it through the ``get_settings`` dependency, so tests override it per app.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.requests import HTTPConnection


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", env_file=".env", extra="ignore")

    # Upstream Triton
    triton_grpc_url: str = Field("127.0.0.1:8001", description="Triton's KServe v2 gRPC endpoint host:port")
    triton_http_url: str = Field(
        "127.0.0.1:8000", description="Triton's HTTP endpoint (KServe v2 HTTP proxy)"
    )
    triton_timeout_s: float = Field(30.0, gt=0, description="deadline passed to Triton for one inference")
    discovery_timeout_s: float = Field(5.0, gt=0, description="deadline for start-up model discovery calls")
    ready_cache_s: float = Field(1.0, ge=0, description="how long a /readyz answer is reused")

    # Input limits
    max_upload_bytes: int = Field(10 * 1024 * 1024, gt=0, description="413 above this request body size")
    max_image_pixels: int = Field(
        25_000_000, gt=0, description="decoded images above this are refused (decompression bombs)"
    )

    # Image-to-image routes
    segment_max_side: int = Field(
        1024, gt=0, description="larger images are segmented downscaled, mask upscaled"
    )
    sr_tile_size: int = Field(128, ge=32, description="super-resolution inputs larger than this run as tiles")
    sr_tile_margin: int = Field(
        16, ge=0, description="pixels discarded at each inner tile edge (>= receptive radius)"
    )
    sr_tiles_per_request: int = Field(
        8, gt=0, description="at most this many tiles stacked into one Triton request"
    )
    max_call_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024 * 1024,
        description="memory budget of one Triton call of a variable-size image model: tiles per call "
        "(and the tile size) follow from the model's stated bytes_per_pixel",
    )
    sr_max_output_pixels: int = Field(
        16_777_216, gt=0, description="413 when the upscaled image would be larger"
    )

    # Text generation (issue 18): each streamed sequence holds a decode row (KV cache) in Triton
    max_generation_streams: int = Field(
        256,
        ge=1,
        description="text sequences generated at once per gateway process (all text routes); beyond: "
        "429 + Retry-After; the generator's own caps are its max_active / max_pending parameters",
    )

    # Request coalescing (serving/gateway/coalesce.py)
    coalesce: bool = Field(
        True, description="merge concurrent requests to one batched model into one Triton call"
    )
    coalesce_max_calls: int = Field(
        0,
        ge=0,
        description="Triton calls in flight per model before requests queue "
        "to be merged; 0 = 2 x the model's instance count",
    )

    # Serving
    host: str = "127.0.0.1"
    port: int = 8080
    log_level: str = "info"
    access_log: bool = (
        False  # uvicorn's access log costs measurable CPU per request; structured logs cover it
    )

    # Front doors and model lifecycle (serving/gateway/grpc_front.py, routes/kserve_http.py, routes/admin.py)
    grpc_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="KServe v2 gRPC front door on host:grpc_port (8081 in the embedded stack); unset = off",
    )
    admin_key: SecretStr = Field(
        SecretStr(""), description="key for /admin (header X-Admin-Key); empty and no file = admin API off"
    )
    admin_key_file: Path | None = Field(None, description="secrets file holding the admin key (first line)")

    # Reliability and security (serving/gateway/auth.py, admission.py, validation.py; README)
    max_in_flight: int = Field(
        128, ge=1, description="requests served at once per process; beyond: 429 + Retry-After"
    )
    max_request_timeout_s: float = Field(60.0, gt=0, description="cap on a client's X-Request-Timeout header")
    graceful_shutdown_s: float = Field(10.0, ge=0, description="SIGTERM: seconds to drain in-flight requests")
    api_keys: SecretStr = Field(SecretStr(""), description="comma-separated API keys; empty = no auth")
    api_keys_file: Path | None = Field(
        None, description="secrets file: one key per line, optionally `key rate`"
    )
    rate_limit: str = Field(
        "", description="per key (or client IP without keys), e.g. '20/second;600/minute'"
    )
    rate_limit_storage: str = Field("memory://", description="limits storage URI; redis://... shares limits")
    cors_origins: str = Field("", description="comma-separated allowed origins; empty = CORS off")
    request_log: bool = Field(True, description="one structured JSON log line per request")
    log_json: bool = Field(True, description="JSON logs (structlog); false = human-readable console")
    max_prompt_chars: int = Field(4096, gt=0, description="text routes: longer prompts are refused (422)")
    max_tensor_elements: int = Field(16_777_216, gt=0, description="KServe inputs: elements per tensor")
    max_image_side: int = Field(16384, gt=0, description="images with a longer side are refused (422)")
    max_aspect_ratio: float = Field(
        64.0, ge=1, description="images more elongated than this are refused (422)"
    )


async def get_settings(conn: HTTPConnection) -> Settings:
    """Dependency: the app's settings (``app.dependency_overrides`` replaces it in tests).

    ``async`` on purpose: FastAPI runs a plain ``def`` dependency in its threadpool, a thread hop
    per request (measured with the bench: ~0.1-0.2 ms of gateway CPU per request each).
    """
    return conn.app.state.settings

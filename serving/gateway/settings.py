"""Gateway settings: one typed object, read from GATEWAY_* environment variables (or a .env file).

Routes reach it through the ``get_settings`` dependency, so tests override it per app.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.requests import HTTPConnection


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", env_file=".env", extra="ignore")

    # Upstream Triton
    triton_grpc_url: str = Field("127.0.0.1:8001", description="Triton's KServe v2 gRPC endpoint host:port")
    triton_http_url: str = Field("127.0.0.1:8000", description="Triton's HTTP endpoint (KServe v2 HTTP proxy)")
    triton_timeout_s: float = Field(30.0, gt=0, description="deadline passed to Triton for one inference")
    discovery_timeout_s: float = Field(5.0, gt=0, description="deadline for start-up model discovery calls")
    ready_cache_s: float = Field(1.0, ge=0, description="how long a /readyz answer is reused")

    # Input limits
    max_upload_bytes: int = Field(10 * 1024 * 1024, gt=0, description="413 above this request body size")
    max_image_pixels: int = Field(25_000_000, gt=0, description="decoded images above this are refused (decompression bombs)")
    max_top_k: int = 100

    # Serving
    host: str = "127.0.0.1"
    port: int = 8080
    log_level: str = "info"
    access_log: bool = False  # uvicorn's access log costs measurable CPU per request; structured logs cover it


def get_settings(conn: HTTPConnection) -> Settings:
    """Dependency: the app's settings (``app.dependency_overrides`` replaces it in tests)."""
    return conn.app.state.settings

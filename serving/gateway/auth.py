"""Who is calling: API keys for the public doors (HTTP and gRPC) and the admin key for /admin.

API keys: ``Authorization: Bearer <key>`` or ``X-API-Key`` (HTTP headers or gRPC metadata), from
``GATEWAY_API_KEYS`` and/or a secrets file (one key per line, optionally with its own rate
limit). Keys are kept as SHA-256 digests and a presented key is compared in constant time
against *every* key (``hmac.compare_digest``, no early exit). Logs and limits see a short hash.

The admin key (``GATEWAY_ADMIN_KEY`` or the first line of ``GATEWAY_ADMIN_KEY_FILE``) arrives in
``X-Admin-Key``: missing -> 401, wrong -> 403, none configured -> 403 (the admin API is off).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from limits import RateLimitItem, parse_many

from serving.gateway import errors
from serving.gateway.settings import Settings

ADMIN_HEADER = "x-admin-key"
log = logging.getLogger("gateway.admin")


def extract_key(pairs: Iterable[tuple[str, str]]) -> str | None:
    """The API key from ``Authorization: Bearer`` or ``X-API-Key`` (HTTP headers or gRPC metadata)."""
    for name, value in pairs:
        name = name.lower()
        if name == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == "x-api-key" and value.strip():
            return value.strip()
    return None


def key_id(key: str) -> str:
    """What logs and limits see of a key: a short hash, never the key."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key id (``anon:<address>`` without keys) and the rate limits that apply."""

    id: str
    limits: tuple[RateLimitItem, ...]


def parse_limits(spec: str) -> tuple[RateLimitItem, ...]:
    spec = spec.strip()
    if not spec:
        return ()
    try:
        items = parse_many(spec)
    except ValueError as exc:
        raise ValueError(f"invalid rate limit {spec!r} (e.g. '20/second;600/minute'): {exc}") from None
    return tuple(sorted(items, key=lambda i: i.get_expiry()))  # shortest window first


class ApiKeys:
    """Configured keys as SHA-256 digests; lookup compares against all of them in constant time."""

    def __init__(self, entries: dict[str, tuple[RateLimitItem, ...]]) -> None:
        self._digests = [(hashlib.sha256(k.encode()).digest(), key_id(k), lim) for k, lim in entries.items()]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys:
        default = parse_limits(settings.rate_limit)
        entries: dict[str, tuple[RateLimitItem, ...]] = {}
        for key in settings.api_keys.get_secret_value().split(","):
            if key.strip():
                entries[key.strip()] = default
        if settings.api_keys_file:
            entries.update(read_keys_file(Path(settings.api_keys_file), default))
        return cls(entries)

    def lookup(self, presented: str | None) -> Principal | None:
        if presented is None:
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        found: Principal | None = None
        for stored, kid, lim in self._digests:  # no early exit: every key is compared
            if hmac.compare_digest(digest, stored):
                found = Principal(kid, lim)
        return found

    def authenticate(self, presented: str | None) -> Principal:
        """The caller of a presented key; raises the 401 APIError for a missing or unknown key."""
        principal = self.lookup(presented)
        if principal is None:
            what = "missing" if presented is None else "invalid"
            raise errors.APIError(
                401,
                "unauthorized",
                f"API key {what}: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return principal


def read_keys_file(path: Path, default: tuple[RateLimitItem, ...]) -> dict[str, tuple[RateLimitItem, ...]]:
    """Secrets file: one key per line, optionally followed by its own rate limit; ``#`` comments."""
    entries: dict[str, tuple[RateLimitItem, ...]] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, _, rate = line.partition(" ")
        try:
            entries[key] = parse_limits(rate) if rate.strip() else default
        except ValueError as exc:
            raise ValueError(f"{path}:{n}: {exc}") from None
    return entries


def admin_key_digest(settings: Settings) -> bytes | None:
    """SHA-256 of the configured admin key (env first, else the first line of the file); None = off."""
    key = settings.admin_key.get_secret_value().strip()
    if not key and settings.admin_key_file:
        lines = settings.admin_key_file.read_text().splitlines()
        key = lines[0].strip() if lines else ""
    return hashlib.sha256(key.encode()).digest() if key else None


class AdminKey:
    """The admin API's key, read on first use and kept (a secrets file is not re-read per call)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._read = False
        self._digest: bytes | None = None

    def check(self, presented: str | None, client: str = "?") -> None:
        """Raise the 401/403 APIError unless ``presented`` is the admin key."""
        if not self._read:
            self._digest, self._read = admin_key_digest(self.settings), True
        if self._digest is None:
            raise errors.APIError(
                403,
                "admin_disabled",
                "the admin API is off: set GATEWAY_ADMIN_KEY (or GATEWAY_ADMIN_KEY_FILE) on the gateway",
            )
        if not presented:
            raise errors.APIError(
                401,
                "unauthorized",
                f"admin key missing: send the {ADMIN_HEADER} header",
                headers={"WWW-Authenticate": "X-Admin-Key"},
            )
        if not hmac.compare_digest(hashlib.sha256(presented.encode()).digest(), self._digest):
            log.warning("admin request with a wrong key from %s", client)
            raise errors.APIError(403, "forbidden", "admin key invalid")

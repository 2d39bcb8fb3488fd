"""Which version of a model serves a request, and the response header that says so.

Order of precedence, the same on every front door (task routes, KServe HTTP, gRPC):

1. a pinned version: ``?version=N`` on task routes, ``/versions/N/`` in KServe paths,
   ``model_version`` in a gRPC request;
2. the model's traffic split, set through the admin API: ``canary_percent`` of the requests go
   to ``canary``, the rest to ``stable``; sticky when a ``sticky_header`` is set and the request
   carries it (the header value is hashed to a bucket, so one user stays on one version, on every
   gateway replica);
3. nothing: Triton picks the newest READY version (its own rule for an empty version).

A split never sends traffic to a version the catalogue does not list as READY (or that the admin
API is about to unload): it falls back to the other version of the split, then to Triton's choice.
A canary that fails to load, or is unloaded, therefore costs no request. While the admin API
changes which versions Triton serves, routing is restricted to the versions that stay.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel, Field, field_validator, model_validator

from serving.gateway.triton import ModelInfo

_VERSION = re.compile(r"[1-9][0-9]{0,8}")
_HEADER = re.compile(r"[A-Za-z0-9-]{1,64}")

VersionQuery = Annotated[
    str | None,
    Query(
        pattern=r"^[1-9][0-9]{0,8}$",
        description="pin a model version (default: the model's traffic split, else the newest version)",
    ),
]


class TrafficSplit(BaseModel):
    """Canary split of one model's unpinned traffic between two loaded versions."""

    stable: str = Field(description="version that gets the rest of the traffic", examples=["1"])
    canary: str = Field(description="version that gets canary_percent of the traffic", examples=["2"])
    canary_percent: float = Field(ge=0, le=100, description="share of unpinned requests for the canary")
    sticky_header: str | None = Field(
        None,
        description="request header (gRPC: metadata key) whose value, hashed, picks the version; "
        "requests without it are split at random",
        examples=["X-Canary-Key"],
    )

    @field_validator("stable", "canary")
    @classmethod
    def _version(cls, v: str) -> str:
        if not _VERSION.fullmatch(v):
            raise ValueError("a version is a positive integer, e.g. '2'")
        return v

    @field_validator("sticky_header")
    @classmethod
    def _header(cls, v: str | None) -> str | None:
        if v is not None and not _HEADER.fullmatch(v):
            raise ValueError("a header name: letters, digits and '-', at most 64")
        return v.lower() if v else None

    @model_validator(mode="after")
    def _distinct(self) -> TrafficSplit:
        if self.stable == self.canary:
            raise ValueError("stable and canary must be different versions")
        return self

    def bucket(self, model: str, sticky_value: str | None) -> float:
        """A number in [0, 100): a stable hash of the sticky value, else random."""
        if not sticky_value:
            return random.random() * 100.0
        # blake2b, not hash(): Python's str hash differs per process, and replicas must agree.
        h = hashlib.blake2b(f"{model}\0{sticky_value}".encode(), digest_size=8).digest()
        return int.from_bytes(h, "big") / 2**64 * 100.0


class VersionRouter:
    """The traffic splits and the versions being unloaded; one per gateway process."""

    def __init__(self) -> None:
        self.splits: dict[str, TrafficSplit] = {}
        # During an admin load: the only versions that may get traffic (the others are leaving).
        self.restricted: dict[str, frozenset[str]] = {}

    def choose(
        self, model: str, info: ModelInfo | None, pinned: str | None, header: Callable[[str], str | None]
    ) -> str:
        """The version to ask Triton for; ``""`` lets Triton take the newest READY one."""
        if pinned:
            return pinned
        split = self.splits.get(model)
        allowed = self.restricted.get(model)
        if split is None and allowed is None:
            return ""  # the common case: two dict lookups per request
        ready = [v for v in (info.versions if info else ()) if allowed is None or v in allowed]
        if split is None:
            # Triton's "newest" may be a version being unloaded: name the newest that stays.
            return ready[-1] if ready else ""
        chosen = (
            split.canary
            if split.bucket(model, header(split.sticky_header) if split.sticky_header else None)
            < split.canary_percent
            else split.stable
        )
        if chosen in ready:
            return chosen
        other = split.stable if chosen == split.canary else split.canary
        if other in ready:
            return other
        return ready[-1] if ready else ""

    def describe(self, model: str) -> dict[str, Any] | None:
        split = self.splits.get(model)
        return split.model_dump() if split else None


def valid(version: str) -> bool:
    """A version as Triton names them: a positive integer."""
    return bool(_VERSION.fullmatch(version))


async def version_query(version: VersionQuery = None) -> str | None:
    """Router dependency: documents (and validates) ``?version=`` on task routes.

    ``deps.version_for`` reads the query parameter itself, so a task route honours a pin even without
    this dependency; with it the parameter shows up in the OpenAPI document.
    """
    return version

"""Text encoders (BERT, issue 14) for ``/v1/classify-text`` and ``/v1/embeddings``: the model's typed
parameters, tokenisation and the one Triton call both routes make.

Input rule (README): each text must be valid UTF-8 without NUL characters, 1 .. ``max_chars``
characters (the model's parameter: 64 for the quick model) after the generators' normalisation
(typographic quotes and dashes folded, accents dropped). Characters outside the model's vocabulary are
mapped to its fallback, a space, as the generators map them (the encoder was pre-trained on the same
alphabet): never refused, never a 500. The length rule is on the text as sent (what the OpenAPI
document can state); the rare normalisation that lengthens a text (a ligature) is cut at ``max_chars``.
Texts are padded to ``max_len`` so concurrent requests batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import Request

from serving.gateway import errors, validation
from serving.gateway.deps import infer
from serving.gateway.openapi import REFINERS
from serving.gateway.settings import Settings
from serving.gateway.triton import ModelCatalog, ModelInfo
from serving.textgen import CharVocab

TASK = "text_classification"
CLS = 1  # the recipe's [CLS] id (training/classify_text.py): specials are [PAD], [CLS], [MASK]


@dataclass(frozen=True)
class EncoderParams:
    """What export wrote into the config's parameters (export/tasks/text_classification.py)."""

    vocab: CharVocab
    labels: tuple[str, ...]
    char_offset: int
    pad_id: int
    max_len: int  # tokens, [CLS] included
    max_inputs: int  # texts per request
    embedding_dim: int

    @property
    def max_chars(self) -> int:
        return self.max_len - 1

    @classmethod
    def of(cls, info: ModelInfo) -> EncoderParams:
        """Parsed once per discovered model (cached with its JSON parameters); a broken one is a 502."""
        cached = info._json.get("__encoder__")
        if isinstance(cached, EncoderParams):
            return cached
        try:
            specials = list(info.param_json("specials", []))
            params = cls(
                vocab=CharVocab.from_dict(info.param_json("vocab")),
                labels=tuple(info.labels),
                char_offset=int(info.param("char_offset") or len(specials)),
                pad_id=int(info.param("pad_id") or 0),
                max_len=int(info.param("max_len") or 0),
                max_inputs=int(info.param("max_inputs") or info.max_batch_size or 1),
                embedding_dim=int(info.param("embedding_dim") or 0),
            )
            if params.max_len < 2 or not params.labels or specials[CLS] != "[CLS]":
                raise ValueError("max_len, labels or specials missing")
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            raise errors.APIError(
                502, "model_mismatch", f"model {info.name!r} has no usable text-encoder parameters: {exc}"
            ) from None
        info._json["__encoder__"] = params
        return params


async def pick_model(catalog: ModelCatalog, name: str | None) -> ModelInfo:
    return await catalog.for_task(TASK, name)


def encode(
    params: EncoderParams, texts: list[str], settings: Settings, what: str = "text"
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Texts -> tokens (N, max_len) int64, attention_mask (N, max_len) int64, characters per text.

    Refuses (422) empty, NUL-bearing, invalid or over-long texts, naming the index in a batch."""
    rows = []
    for i, text in enumerate(texts):
        where = what if len(texts) == 1 else f"{what}[{i}]"
        text = validation.check_prompt(text, settings.max_prompt_chars, what=where)
        if len(text) > params.max_chars:
            raise errors.unprocessable(
                "prompt_too_long",
                f"{where} has {len(text)} characters; the model reads at most {params.max_chars}",
            )
        rows.append(params.vocab.encode(text)[: params.max_chars])
    tokens = np.full((len(rows), params.max_len), params.pad_id, dtype=np.int64)
    tokens[:, 0] = CLS
    for n, ids in enumerate(rows):
        tokens[n, 1 : 1 + len(ids)] = ids + params.char_offset
    mask = (tokens != params.pad_id).astype(np.int64)
    return tokens, mask, [len(r) for r in rows]


async def run(
    request: Request, info: ModelInfo, tokens: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, str]:
    """One Triton call -> probs (N, labels), embedding (N, dim), the version that served."""
    result = await infer(request, info, {"tokens": tokens, "attention_mask": mask}, ["probs", "embedding"])
    probs, emb = result.outputs["probs"], result.outputs["embedding"]
    if probs.shape[0] != len(tokens) or emb.shape[0] != len(tokens):
        raise errors.APIError(502, "model_mismatch", f"model {info.name!r} returned {probs.shape[0]} rows")
    return probs, emb, result.model_version or info.version


NO_NUL = "^[^\\x00]*$"  # validation.check_prompt refuses NUL; minLength refuses the empty text


def document(
    op: dict[str, Any],
    body: dict[str, Any] | None,
    schemas: dict[str, Any],
    models: list[ModelInfo],
    settings: Settings,
) -> None:
    """Text bounds, batch size and ``dimensions`` in the document, from the served encoders."""
    if body is None or not models:
        return
    try:
        params = [EncoderParams.of(m) for m in models]
    except errors.APIError:
        return
    text = {
        "type": "string",
        "minLength": 1,
        "maxLength": min([settings.max_prompt_chars, *(p.max_chars for p in params)]),
        "pattern": NO_NUL,
    }
    props = body.get("properties", {})
    if "text" in props:
        props["text"].update(text)
    if "input" in props:
        items = min(p.max_inputs for p in params)
        branches = [text, {"type": "array", "items": dict(text), "minItems": 1, "maxItems": items}]
        props["input"] = {**{k: v for k, v in props["input"].items() if k != "anyOf"}, "anyOf": branches}
    if "dimensions" in props and len({p.embedding_dim for p in params}) == 1:
        for branch in props["dimensions"].get("anyOf", [props["dimensions"]]):
            if branch.get("type") == "integer":
                branch["minimum"] = branch["maximum"] = params[0].embedding_dim


REFINERS[TASK] = document


def whole_number(value: Any) -> Any:
    """A JSON number with no fraction (``55.0``) is an integer to JSON Schema, so to the document: accept
    it in strict models (pydantic's strict mode refuses every float)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value

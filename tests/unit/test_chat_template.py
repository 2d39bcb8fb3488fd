"""The chat template (serving.textgen.render_chat) and the chat route's OpenAI error shape, in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from serving.gateway.main import create_app
from serving.gateway.settings import Settings
from serving.textgen import DEFAULT_CHAT_TEMPLATE, check_chat_template, render_chat
from tests.support.procs import free_port


def test_render_chat_default_template() -> None:
    prompt = render_chat(
        [
            {"role": "system", "content": "Speak as a king."},
            {"role": "user", "content": "Who art thou?"},
            {"role": "assistant", "content": "A king."},
            {"role": "user", "content": "Of {where}?"},  # braces in content are text, not fields
        ]
    )
    assert prompt == (
        "Speak as a king.\n\nUSER:\nWho art thou?\n\n"
        "ASSISTANT:\nA king.\n\nUSER:\nOf {where}?\n\nASSISTANT:\n"
    )


def test_render_chat_custom_template_round_trips_through_json() -> None:
    template = {
        "format": 1,
        "turns": {"system": "[{content}]\n", "user": "{role}> {content}\n", "assistant": "bot> {content}\n"},
        "generation_prompt": "bot> ",
        "stop": ["\n"],
    }
    stored = json.loads(json.dumps(check_chat_template(template)))  # as the exporter writes it
    assert render_chat([{"role": "user", "content": "hi"}], stored) == "user> hi\nbot> "


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([], "empty"),
        ([{"role": "tool", "content": "x"}], r"messages\[0\].role"),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": 3}], r"messages\[1\].content"),
        ([{"content": "x"}], "role"),
    ],
)
def test_render_chat_rejects(messages: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        render_chat(messages)


@pytest.mark.parametrize(
    "template",
    [
        {**DEFAULT_CHAT_TEMPLATE, "format": 2},
        {**DEFAULT_CHAT_TEMPLATE, "turns": {"user": "{content}"}},
        {**DEFAULT_CHAT_TEMPLATE, "stop": [""]},
    ],
)
def test_check_chat_template_rejects(template: dict) -> None:
    with pytest.raises(ValueError):
        check_chat_template(template)


@pytest.fixture()
def client() -> Iterator[TestClient]:
    settings = Settings(
        triton_grpc_url=f"127.0.0.1:{free_port()}", discovery_timeout_s=0.3, triton_timeout_s=1.0
    )
    with TestClient(create_app(settings)) as c:
        yield c


def test_chat_validation_error_is_openai_shaped_400(client: TestClient) -> None:
    r = client.post(
        "/v1/chat/completions", json={"model": "gpt", "messages": [{"role": "user", "content": 1}]}
    )
    assert r.status_code == 400
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["param"].startswith("messages.0.content")


def test_chat_without_triton_is_openai_shaped_503(client: TestClient) -> None:
    r = client.post(
        "/v1/chat/completions", json={"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert r.status_code == 503 and r.headers["retry-after"]
    assert r.json()["error"]["type"] == "server_error"


def test_models_list_has_openai_shape(client: TestClient) -> None:
    body = client.get("/v1/models").json()
    assert body["object"] == "list" and body["data"] == [] and body["models"] == []

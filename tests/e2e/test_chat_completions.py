"""OpenAI's chat completions through the unchanged openai SDK, against the real gateway and Triton."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.support.procs import GatewayHandle

openai = pytest.importorskip("openai")

MESSAGES = [{"role": "system", "content": "A play."}, {"role": "user", "content": "Who is there?"}]


@pytest.fixture()
def client(gateway: GatewayHandle) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)


def test_chat_non_stream(client: openai.OpenAI) -> None:
    done = client.chat.completions.create(model="gpt", messages=MESSAGES, max_tokens=12, temperature=0)
    choice = done.choices[0]
    assert done.object == "chat.completion" and done.model == "gpt" and len(done.choices) == 1
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert done.usage is not None and done.usage.completion_tokens <= 12
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    # the prompt is the rendered template: system + user turns + generation prompt, in characters
    assert done.usage.prompt_tokens == len("A play.\n\nUSER:\nWho is there?\n\nASSISTANT:\n")
    if choice.finish_reason == "length":
        assert len(choice.message.content) == 12 and done.usage.completion_tokens == 12


def test_chat_stream_with_usage_equals_non_stream(client: openai.OpenAI) -> None:
    args = {"model": "lstm", "messages": MESSAGES, "max_tokens": 16, "temperature": 0}
    done = client.chat.completions.create(**args)
    chunks = list(client.chat.completions.create(**args, stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == done.choices[0].message.content and reasons == [done.choices[0].finish_reason]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.model_dump() == done.usage.model_dump()


def test_chat_n2_seeded_per_choice(client: openai.OpenAI) -> None:
    args = {"model": "gpt", "messages": MESSAGES, "max_tokens": 24, "temperature": 1.0, "seed": 7, "n": 2}
    a = client.chat.completions.create(**args)
    b = client.chat.completions.create(**args)
    assert [c.index for c in a.choices] == [0, 1]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]  # reproducible
    # choice i is seeded seed + i: choice 1 equals a single completion seeded 8
    one = client.chat.completions.create(**{**args, "n": 1, "seed": 8})
    assert one.choices[0].message.content == a.choices[1].message.content
    streamed = ["", ""]
    for c in client.chat.completions.create(**args, stream=True):
        for ch in c.choices:
            streamed[ch.index] += ch.delta.content or ""
    assert streamed == [c.message.content for c in a.choices]


def test_chat_stop(client: openai.OpenAI) -> None:
    # Seeded sampling is reproducible (test above), so the first seed whose free completion is long enough
    # gives a stop string that must cut the same completion; greedy output may end at once on a tiny model.
    base = {"model": "gpt", "messages": MESSAGES, "max_tokens": 40, "temperature": 1.0}
    for seed in range(16):
        free = client.chat.completions.create(**base, seed=seed).choices[0].message.content
        if len(free) >= 4:
            break
    else:
        pytest.fail("16 seeded completions all ended within 3 characters")
    stop = free[2:4]
    cut = client.chat.completions.create(**base, seed=seed, stop=[stop]).choices[0]
    assert cut.finish_reason == "stop" and cut.message.content == free[: free.index(stop)]


def test_chat_async_stream(gateway: GatewayHandle) -> None:
    async def run() -> str:
        client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
        stream = await client.chat.completions.create(
            model="gpt", messages=MESSAGES, max_tokens=8, temperature=0, stream=True
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    sync = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    done = sync.chat.completions.create(model="gpt", messages=MESSAGES, max_tokens=8, temperature=0)
    assert asyncio.run(run()) == done.choices[0].message.content


def test_chat_bad_role_is_openai_400(client: openai.OpenAI, gateway: GatewayHandle) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt", messages=[{"role": "wizard", "content": "hi"}])
    assert err.value.status_code == 400
    body = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "gpt", "messages": [{"role": "wizard", "content": "hi"}]},
        timeout=30,
    ).json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] == "messages"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt", messages=[])


def test_chat_unknown_model_is_openai_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="nope", messages=MESSAGES)
    body = err.value.body
    assert err.value.status_code == 404 and body["code"] == "model_not_found" and body["param"] == "model"


def test_models_list_via_sdk(client: openai.OpenAI, gateway: GatewayHandle) -> None:
    ids = [m.id for m in client.models.list()]
    assert "gpt" in ids and "lstm" in ids and ids == sorted(ids)
    assert client.models.retrieve("gpt").id == "gpt"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")
    legacy = httpx.get(f"{gateway.url}/v1/models").json()["models"]  # the gateway's own view stays
    assert {m["name"] for m in legacy} == set(ids)

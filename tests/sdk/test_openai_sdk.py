"""Compatibility check: the official OpenAI Python SDK against a running Cognitude proxy.

    python tests/sdk/test_openai_sdk.py http://127.0.0.1:PORT/v1

The proxy must route "gpt-4o-mini" to an OpenAI-protocol provider named "upstream" and
"claude-haiku-4-5" to an Anthropic-protocol provider, both served by mock-llm, which answers
"... You said: <the user's message>" and obeys `@mock{...}` directives in the message.
scripts/test sets all of this up.

Every `test_*` function runs in file order; each prints `ok NAME` or `FAIL NAME: error`, and
the last line is `sdk: N passed, N failed`. The exit status is 1 when any test failed.
"""

import json
import os
import sys
import traceback
from decimal import Decimal, InvalidOperation

import openai

OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-haiku-4-5"
# The provider (a key of [providers] in the proxy's config) that serves each model.
PROVIDER = {OPENAI_MODEL: "upstream", ANTHROPIC_MODEL: "claude"}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string", "description": "The city."}},
            "required": ["location"],
        },
    },
}

# Set by main(): one client for every test. No retries in the SDK, so every status the proxy
# answers reaches the test as it was sent (the proxy still retries its upstream on its own).
client: openai.OpenAI


def user(text):
    return [{"role": "user", "content": text}]


# --- Completions, both upstream protocols -------------------------------------------------------


def check_completion(model):
    words = f"Tell me about otters, {model}"
    raw = client.chat.completions.with_raw_response.create(model=model, messages=user(words))
    provider = raw.headers.get("x-cognitude-provider")
    assert provider == PROVIDER[model], f"answered by provider {provider!r}"
    r = raw.parse()
    content = r.choices[0].message.content
    assert content, f"empty content: {r!r}"
    assert words in content, f"the answer does not quote the prompt: {content!r}"
    assert r.model == model, f"model is {r.model!r}"
    assert r.choices[0].finish_reason == "stop", f"finish_reason {r.choices[0].finish_reason!r}"
    u = r.usage
    assert u is not None, "no usage"
    assert u.prompt_tokens > 0, f"prompt_tokens {u.prompt_tokens}"
    assert u.completion_tokens > 0, f"completion_tokens {u.completion_tokens}"
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens, f"usage does not add up: {u}"


def collect_stream(model, prompt, **kwargs):
    """Streams a completion; returns the chunks and the concatenated content deltas."""
    stream = client.chat.completions.create(
        model=model, messages=user(prompt), stream=True, **kwargs
    )
    chunks = list(stream)
    text = "".join(
        c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].delta
    )
    return chunks, text


def check_stream_matches_non_stream(model):
    prompt = f"Count the ducks in the pond, {model}"
    whole = client.chat.completions.create(model=model, messages=user(prompt))
    expected = whole.choices[0].message.content
    chunks, text = collect_stream(model, prompt)
    assert text == expected, f"stream {text!r} != non-stream {expected!r}"
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) > 1, f"the answer came in {len(content_chunks)} chunk(s)"
    assert all(c.usage is None for c in chunks), "a chunk carries usage without include_usage"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop", f"finish reasons {finishes}"
    assert all(c.model == model for c in chunks), f"models {sorted({c.model for c in chunks})}"


def check_stream_include_usage(model):
    chunks, text = collect_stream(
        model, f"Name three rivers, {model}", stream_options={"include_usage": True}
    )
    assert text, "no content streamed"
    last = chunks[-1]
    assert last.choices == [], f"the usage chunk has choices: {last.choices}"
    u = last.usage
    assert u is not None, "the last chunk has no usage"
    assert u.completion_tokens > 0, f"completion_tokens {u.completion_tokens}"
    assert u.prompt_tokens > 0, f"prompt_tokens {u.prompt_tokens}"
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens, f"usage does not add up: {u}"
    assert all(c.usage is None for c in chunks[:-1]), "usage before the last chunk"


def check_tool_call(model):
    r = client.chat.completions.create(
        model=model,
        messages=user('What is the weather in Paris? @mock{"tool_call": true}'),
        tools=[WEATHER_TOOL],
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", f"finish_reason {choice.finish_reason!r}"
    calls = choice.message.tool_calls
    assert calls, f"no tool calls: {choice.message!r}"
    assert calls[0].type == "function", f"type {calls[0].type!r}"
    assert calls[0].id, "the tool call has no id"
    assert calls[0].function.name == "get_weather", f"name {calls[0].function.name!r}"
    args = json.loads(calls[0].function.arguments)
    assert isinstance(args, dict), f"arguments are not an object: {args!r}"


def check_tool_call_stream(model):
    stream = client.chat.completions.create(
        model=model,
        messages=user('What is the weather in Paris? @mock{"tool_call": true}'),
        tools=[WEATHER_TOOL],
        stream=True,
    )
    calls = {}  # index -> {"id", "name", "arguments"}
    finish = None
    argument_deltas = 0
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for d in choice.delta.tool_calls or []:
            call = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = d.id or call["id"]
            if d.function is not None:
                call["name"] += d.function.name or ""
                if d.function.arguments:
                    call["arguments"] += d.function.arguments
                    argument_deltas += 1
    assert finish == "tool_calls", f"finish_reason {finish!r}"
    assert list(calls) == [0], f"tool call indexes {list(calls)}"
    call = calls[0]
    assert call["id"], "the streamed tool call has no id"
    assert call["name"] == "get_weather", f"name {call['name']!r}"
    args = json.loads(call["arguments"])
    assert isinstance(args, dict), f"arguments are not an object: {args!r}"
    assert argument_deltas > 1, f"the arguments came in {argument_deltas} delta(s)"


def test_chat_completion():
    check_completion(OPENAI_MODEL)


def test_stream_matches_non_stream():
    check_stream_matches_non_stream(OPENAI_MODEL)


def test_stream_include_usage():
    check_stream_include_usage(OPENAI_MODEL)


def test_anthropic_chat_completion():
    check_completion(ANTHROPIC_MODEL)


def test_anthropic_stream_matches_non_stream():
    check_stream_matches_non_stream(ANTHROPIC_MODEL)


def test_anthropic_stream_include_usage():
    check_stream_include_usage(ANTHROPIC_MODEL)


def test_tool_call():
    check_tool_call(OPENAI_MODEL)


def test_tool_call_stream():
    check_tool_call_stream(OPENAI_MODEL)


def test_anthropic_tool_call():
    check_tool_call(ANTHROPIC_MODEL)


def test_anthropic_tool_call_stream():
    check_tool_call_stream(ANTHROPIC_MODEL)


# --- Headers, errors, models --------------------------------------------------------------------


def test_raw_response_headers():
    raw = client.chat.completions.with_raw_response.create(
        model=OPENAI_MODEL, messages=user("What does this cost?")
    )
    h = raw.headers
    model, provider = h.get("x-cognitude-model"), h.get("x-cognitude-provider")
    assert model == OPENAI_MODEL, f"x-cognitude-model {model!r}"
    assert provider == PROVIDER[OPENAI_MODEL], f"x-cognitude-provider {provider!r}"
    assert h.get("x-request-id"), "no x-request-id"
    cost_header = h.get("x-cognitude-cost-usd")
    assert cost_header, "no x-cognitude-cost-usd"
    try:
        cost = Decimal(cost_header)
    except InvalidOperation:
        raise AssertionError(f"x-cognitude-cost-usd is not a decimal: {cost_header!r}") from None
    assert cost.is_finite() and cost > 0, f"x-cognitude-cost-usd {cost_header!r}"
    completion = raw.parse()
    assert completion.choices[0].message.content, "the parsed body has no content"


def test_client_request_id_is_echoed():
    raw = client.chat.completions.with_raw_response.create(
        model=OPENAI_MODEL,
        messages=user("Hello"),
        extra_headers={"x-request-id": "sdk-check-42"},
    )
    request_id = raw.headers.get("x-request-id")
    assert request_id == "sdk-check-42", f"x-request-id {request_id!r}"


def test_unknown_model_is_not_found():
    try:
        client.chat.completions.create(model="no-such-model", messages=user("Hello"))
    except openai.NotFoundError as e:
        assert e.status_code == 404, f"status {e.status_code}"
        assert "no-such-model" in e.message, f"message {e.message!r}"
        return
    raise AssertionError("no error for an unknown model")


def test_bad_parameter_is_bad_request():
    try:
        client.chat.completions.create(model=OPENAI_MODEL, messages=user("Hello"), temperature=5)
    except openai.BadRequestError as e:
        assert e.status_code == 400, f"status {e.status_code}"
        assert "temperature" in e.message, f"message {e.message!r}"
        return
    raise AssertionError("no error for temperature=5")


def test_models_list():
    ids = [m.id for m in client.models.list()]
    assert OPENAI_MODEL in ids, f"models {ids}"
    assert ANTHROPIC_MODEL in ids, f"models {ids}"


def test_upstream_fault_is_bad_gateway():
    try:
        client.chat.completions.create(
            model=OPENAI_MODEL, messages=user('Hello @mock{"status": 500}')
        )
    except openai.APIStatusError as e:
        assert e.status_code == 502, f"status {e.status_code}: {e.message!r}"
        return
    raise AssertionError("no error when the upstream answers 500")


def test_cache_hit_is_replayed_as_a_stream_the_sdk_parses():
    messages = user(f"cache replay check {os.getpid()}")
    first = client.chat.completions.with_raw_response.create(model=OPENAI_MODEL, messages=messages)
    assert first.headers["x-cognitude-cache"] == "miss", first.headers.get("x-cognitude-cache")
    answer = first.parse()
    raw = client.chat.completions.with_raw_response.create(
        model=OPENAI_MODEL, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers["x-cognitude-cache"] == "hit-memory", raw.headers.get("x-cognitude-cache")
    assert raw.headers["x-cognitude-cost-usd"] == "0"
    text, usage, finish = "", None, None
    for chunk in raw.parse():
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert text == answer.choices[0].message.content, f"{text!r} != {answer.choices[0].message.content!r}"
    assert finish == "stop", f"finish_reason {finish!r}"
    assert usage is not None and usage.total_tokens == answer.usage.total_tokens, f"usage {usage}"


def test_cached_tool_call_replays_its_deltas():
    messages = user(f'Weather in Oslo? {os.getpid()} @mock{{"tool_call": true}}')
    first = client.chat.completions.create(
        model=OPENAI_MODEL, messages=messages, tools=[WEATHER_TOOL]
    )
    raw = client.chat.completions.with_raw_response.create(
        model=OPENAI_MODEL, messages=messages, tools=[WEATHER_TOOL], stream=True
    )
    assert raw.headers["x-cognitude-cache"] == "hit-memory", raw.headers.get("x-cognitude-cache")
    name, arguments, call_id = "", "", None
    for chunk in raw.parse():
        for c in chunk.choices:
            for d in c.delta.tool_calls or []:
                call_id = d.id or call_id
                if d.function is not None:
                    name += d.function.name or ""
                    arguments += d.function.arguments or ""
    original = first.choices[0].message.tool_calls[0]
    assert call_id == original.id, f"{call_id!r} != {original.id!r}"
    assert name == original.function.name
    assert json.loads(arguments) == json.loads(original.function.arguments)


def test_wrong_key_raises_authentication_error():
    bad = openai.OpenAI(
        base_url=client.base_url, api_key="cgk_000000000000_" + "0" * 48, max_retries=0
    )
    try:
        bad.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    except openai.AuthenticationError as e:
        assert e.status_code == 401
        assert "API key" in str(e)
    else:
        raise AssertionError("a wrong key was accepted")


def test_auto_model_is_routed_for_sdk_users():
    # Smart routing without leaving the OpenAI SDK: the model name asks for it.
    raw = client.chat.completions.with_raw_response.create(
        model="cognitude/auto:quality", messages=user("Which model answers this?")
    )
    assert raw.headers["x-cognitude-route-mode"] == "quality"
    assert raw.headers["x-cognitude-complexity"].split(";")[0] in ("simple", "medium", "complex")
    chosen = raw.headers["x-cognitude-model"]
    assert chosen in PROVIDER, chosen
    r = raw.parse()
    assert "Which model answers this?" in r.choices[0].message.content
    # Streams too.
    stream = client.chat.completions.create(
        model="cognitude/auto", messages=user("stream me"), stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert "stream me" in text, text


def test_rate_limit_is_a_rate_limit_error_the_sdk_retries():
    # scripts/test made this organization with `cognitude orgs limits sdk-limited --rpm 120
    # --request-burst 2`: two requests at once, then one every half second.
    limited = openai.OpenAI(
        base_url=client.base_url, api_key=os.environ["COGNITUDE_LIMITED_API_KEY"], max_retries=0
    )
    messages = [{"role": "user", "content": "hi"}]
    for _ in range(2):
        raw = limited.chat.completions.with_raw_response.create(model=OPENAI_MODEL, messages=messages)
        assert raw.headers["x-ratelimit-limit-requests"] == "2", dict(raw.headers)
    try:
        limited.chat.completions.create(model=OPENAI_MODEL, messages=messages)
    except openai.RateLimitError as e:
        assert e.status_code == 429
        assert e.code == "rate_limit_exceeded", e.code
        assert e.type == "requests", e.type
        assert "requests per min" in e.message, e.message
        wait_ms = int(e.response.headers["retry-after-ms"])
        assert 0 < wait_ms <= 500, wait_ms
        assert e.response.headers["retry-after"] == "1"
        assert e.response.headers["x-ratelimit-remaining-requests"] == "0"
    else:
        raise AssertionError("the third request in a burst of two was admitted")
    # With retries on, the SDK waits as retry-after-ms says and gets through.
    patient = limited.with_options(max_retries=3)
    r = patient.chat.completions.create(model=OPENAI_MODEL, messages=messages)
    assert r.choices[0].message.content


# --- Runner -------------------------------------------------------------------------------------


def main(argv):
    global client
    if len(argv) != 2:
        print(f"usage: {argv[0]} BASE_URL (e.g. http://127.0.0.1:8080/v1)", file=sys.stderr)
        return 2
    if sys.flags.optimize:
        # The checks are assert statements, which -O (or PYTHONOPTIMIZE) removes.
        print("run without -O / PYTHONOPTIMIZE: the checks are assert statements", file=sys.stderr)
        return 2
    # The key scripts/test created with `cognitude keys create`.
    client = openai.OpenAI(
        base_url=argv[1], api_key=os.environ["COGNITUDE_API_KEY"], max_retries=0, timeout=30
    )
    print(f"openai {openai.__version__} against {argv[1]}")
    tests = [(name, f) for name, f in globals().items() if name.startswith("test_") and callable(f)]
    passed = failed = 0
    for name, test in tests:
        try:
            test()
        except Exception as e:  # noqa: BLE001 - every failure is reported, none stops the run
            failed += 1
            where = traceback.extract_tb(e.__traceback__)[-1]
            print(f"FAIL {name}: {type(e).__name__}: {e} (line {where.lineno})")
        else:
            passed += 1
            print(f"ok {name}")
    print(f"sdk: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""`bytecover serve` over HTTP with real clients (the `openai` package, raw llama.cpp payloads),
on SmolLM2-135M (left-to-right endpoints; it has no FIM tokens). FIM with Qwen2.5-Coder and the
llama.vim plugin: tests/test_server_fim.py."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from support.server_harness import running, stream_post

from bytecover import ByteLM
from bytecover.server.main import build_app
from bytecover.server.options import Settings

pytestmark = pytest.mark.model

CODE = "def add(a, b):\n    retu"


@pytest.fixture(scope="module")
def lm() -> ByteLM:
    return ByteLM.from_pretrained("smollm2-135m")


@pytest.fixture(scope="module")
def url(lm: ByteLM) -> Iterator[str]:
    with running(build_app(lm, Settings(model_id="smollm2-135m", max_n_predict=256, timeout_s=60))) as base:
        yield base


@pytest.fixture(scope="module")
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)


def post(url: str, path: str, body: object, **kw: object) -> httpx.Response:
    if isinstance(body, bytes):
        return httpx.post(url + path, content=body, headers={"content-type": "application/json"}, timeout=120, **kw)  # type: ignore[arg-type]
    return httpx.post(url + path, json=body, timeout=120, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- OpenAI client
def test_openai_completion_continues_a_prompt_that_ends_mid_token(client: openai.OpenAI, lm: ByteLM) -> None:
    out = client.completions.create(model="smollm2-135m", prompt=CODE, max_tokens=8, temperature=0, stop=["\n"])
    text = out.choices[0].text
    assert text == lm.generate(CODE, max_new_bytes=64, temperature=0, stop=["\n"], bytewise=False)
    assert text.startswith("rn")  # exact: "retu" finished as "return", not a new word
    assert out.choices[0].finish_reason == "stop" and out.usage is not None and out.usage.completion_tokens > 0


def test_openai_streaming_matches_the_whole_response(client: openai.OpenAI) -> None:
    whole = client.completions.create(model="smollm2-135m", prompt="The capital of Fra", max_tokens=12, temperature=0)
    pieces = []
    finish = None
    for chunk in client.completions.create(model="smollm2-135m", prompt="The capital of Fra", max_tokens=12, temperature=0, stream=True, stream_options={"include_usage": True}):
        for c in chunk.choices:
            pieces.append(c.text)
            finish = c.finish_reason or finish
    assert "".join(pieces) == whole.choices[0].text and whole.choices[0].text.startswith("nce")
    assert finish == "length" == whole.choices[0].finish_reason


def test_openai_n_and_prompt_lists_and_seeds(client: openai.OpenAI) -> None:
    out = client.completions.create(model="smollm2-135m", prompt=["x = np.arr", "for i in ran"], max_tokens=4, temperature=0.8, n=2, seed=7)
    assert [c.index for c in out.choices] == [0, 1, 2, 3]
    again = client.completions.create(model="smollm2-135m", prompt=["x = np.arr", "for i in ran"], max_tokens=4, temperature=0.8, n=2, seed=7)
    assert [c.text for c in out.choices] == [c.text for c in again.choices]  # seeded: reproducible


def test_openai_errors_are_the_clients_exceptions(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.completions.create(model="gpt-4", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="no fill-in-the-middle tokens"):
        client.completions.create(model="smollm2-135m", prompt="x", suffix="y", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model="smollm2-135m", prompt="x", max_tokens=100000)
    models = client.models.list()
    assert [m.id for m in models.data] == ["smollm2-135m"]


def test_unsupported_fields_are_reported_not_dropped(url: str) -> None:
    r = post(url, "/v1/completions", {"prompt": "a", "max_tokens": 1, "logprobs": 3, "presence_penalty": 0.5, "frobnicate": 1})
    assert r.status_code == 200
    w = " ".join(r.json()["warnings"])
    assert "logprobs" in w and "presence_penalty" in w and "frobnicate" not in w  # unknown: ignored


# ---------------------------------------------------------------------------- llama.cpp fields
def test_completion_fields_round_trip(url: str) -> None:
    base = {"prompt": CODE, "n_predict": 24, "temperature": 0}
    r = post(url, "/completion", base).json()
    assert r["stop"] is True and r["content"] and r["stop_type"] in ("eos", "limit")
    assert r["tokens_evaluated"] > 0 and r["timings"]["predicted_n"] == r["tokens_predicted"] <= 24
    first = r["content"]
    cut = first.index("\n") if "\n" in first else len(first) // 2
    word = first[cut:cut + 2]
    w = post(url, "/completion", {**base, "stop": [word]}).json()
    assert w["content"] == first[: first.index(word)] and w["stop_type"] == "word" and w["stopping_word"] == word
    few = post(url, "/completion", {**base, "n_predict": 3}).json()
    assert few["tokens_predicted"] == 3 and few["stop_type"] == "limit" and first.startswith(few["content"])
    zero = post(url, "/completion", {**base, "n_predict": 0}).json()
    assert zero["content"] == "" and zero["tokens_predicted"] == 0
    picked = post(url, "/completion", {**base, "response_fields": ["content", "timings/prompt_n", "tokens_cached", "nope"]}).json()
    assert set(picked) == {"content", "timings/prompt_n", "tokens_cached"} and picked["content"] == first


def test_sampling_fields_seed_top_k_top_p(url: str) -> None:
    body = {"prompt": "Once upon a time", "n_predict": 8, "temperature": 1.0, "top_k": 40, "top_p": 0.9, "seed": 3}
    a, b = (post(url, "/completion", body).json()["content"] for _ in range(2))
    assert a == b
    outs = {post(url, "/completion", {**body, "seed": s}).json()["content"] for s in range(4)}
    assert len(outs) > 1  # the seed is honoured: different seeds, different samples
    greedy = post(url, "/completion", {**body, "top_k": 1}).json()["content"]
    assert greedy == post(url, "/completion", {"prompt": "Once upon a time", "n_predict": 8, "temperature": 0}).json()["content"]


def test_n_indent_and_t_max_predict_ms(url: str) -> None:
    prompt = "def f(x):\n    if x:\n"
    free = post(url, "/completion", {"prompt": prompt, "n_predict": 48, "temperature": 0}).json()["content"]
    lines = free.split("\n")
    deeper = [i for i, line in enumerate(lines[1:], 1) if line.strip() and len(line) - len(line.lstrip()) < 8]
    if deeper:  # the greedy text leaves the `if` block: n_indent 8 cuts there
        cut = post(url, "/completion", {"prompt": prompt, "n_predict": 48, "temperature": 0, "n_indent": 8}).json()
        assert cut["content"] == "\n".join(lines[: deeper[0]]) + "\n" and cut["stop_type"] == "limit"
    quick = post(url, "/completion", {"prompt": "1\n2\n3\n", "n_predict": 200, "temperature": 0, "t_max_predict_ms": 1}).json()
    assert quick["stop_type"] == "limit" and quick["content"].count("\n") <= 2


def test_streamed_pieces_never_split_a_character(url: str) -> None:
    """Byte-by-byte decoding produces characters one byte at a time: no piece may hold half of one."""
    body = {"prompt": "Tokyo is the capital of Japan. In Japanese it is written 東", "n_predict": 12, "temperature": 0, "bytewise": True}
    events = stream_post(url + "/completion", {**body, "stream": True})
    pieces = [e["content"] for e in events if isinstance(e, dict) and not e["stop"]]
    whole = post(url, "/completion", body).json()["content"]
    assert "".join(pieces) == whole and any(ord(ch) > 127 for ch in whole)
    assert all("\ufffd" not in p for p in pieces)
    assert events[-1]["stop"] is True and events[-1]["content"] == ""


def test_tokenize_props_health(url: str, lm: ByteLM) -> None:
    r = post(url, "/tokenize", {"content": "hello<|endoftext|>", "with_pieces": True}).json()
    assert r["tokens"][-1] == {"id": 0, "piece": "<|endoftext|>"} and r["tokens"][0]["piece"] == "hello"
    ids = [t["id"] for t in r["tokens"]]
    assert post(url, "/detokenize", {"tokens": ids}).json()["content"] == "hello<|endoftext|>"
    props = httpx.get(url + "/props").json()
    assert props["default_generation_settings"]["n_ctx"] == lm.max_prompt_tokens and props["bytecover"]["exact"] is True
    assert httpx.get(url + "/health").json() == {"status": "ok"}


# ---------------------------------------------------------------------------- bad input
BAD = [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (b"", 400, "empty"),
    (b'{"prompt": "caf\xe9"}', 400, "not valid UTF-8"),
    (b'{"prompt": "\\ud800"}', 400, "surrogate"),
    ({"prompt": 5}, 400, "prompt: Input should be a valid string"),
    ({"prompt": "x", "n_predict": "5"}, 400, "n_predict"),
    ({"prompt": "x", "temperature": -1}, 400, "temperature"),
    ({"prompt": "x", "n_predict": -7}, 400, "n_predict must be >= 0"),
    ({"prompt": "x", "n_predict": 10**9}, 400, "--max-n-predict"),
    ({"n_predict": 4}, 400, "missing field: prompt"),
    ({"prompt": "x" * 40000}, 400, "context"),
    ({"prompt": "x", "stop": [1]}, 400, "stop"),
]


@pytest.mark.parametrize("body,status,needle", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_is_a_json_4xx_that_says_what_to_fix(url: str, body: object, status: int, needle: str) -> None:
    r = post(url, "/completion", body)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]
    assert httpx.get(url + "/health").status_code == 200


def test_bad_infill_and_routes(url: str) -> None:
    r = post(url, "/infill", {"input_prefix": "", "input_suffix": "", "n_predict": 4})
    assert r.status_code == 400 and "nothing to fill in" in r.json()["error"]["message"]
    r = post(url, "/infill", {"n_predict": 4})
    assert r.status_code == 400 and "missing" in r.json()["error"]["message"]
    r = post(url, "/v1/completions", {"prompt": "x<|endoftext|>y", "max_tokens": 2})
    assert r.status_code == 400 and "special-token text" in r.json()["error"]["message"]
    r = httpx.get(url + "/nope")
    assert r.status_code == 404 and "endpoints" in r.json()["error"]["message"]


def test_api_key_and_body_limit(lm: ByteLM) -> None:
    with running(build_app(lm, Settings(model_id="m", api_key="s3cret", max_request_bytes=2000))) as base:
        assert httpx.get(base + "/health").status_code == 200  # probes need no key
        r = post(base, "/completion", {"prompt": "a", "n_predict": 1})
        assert r.status_code == 401 and "Authorization: Bearer" in r.json()["error"]["message"]
        r = post(base, "/completion", {"prompt": "a", "n_predict": 1}, headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401 and "wrong" in r.json()["error"]["message"]
        r = post(base, "/completion", {"prompt": "a", "n_predict": 1}, headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200
        r = post(base, "/completion", {"prompt": "a" * 5000, "n_predict": 1}, headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 413 and "--max-request-bytes" in r.json()["error"]["message"]
        c = openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            c.completions.create(model="m", prompt="a", max_tokens=1)


# ---------------------------------------------------------------------------- many clients
def test_concurrent_requests_slow_and_vanishing_clients(url: str) -> None:
    """Four clients at once get what each gets alone; a client that stops reading and one that
    hangs up mid-stream hold nobody up, and the server stays healthy."""
    prompts = ["The capital of Fra", "import numpy as np\nx = np.arr", "for i in ran", CODE]
    alone = [post(url, "/completion", {"prompt": p, "n_predict": 10, "temperature": 0}).json()["content"] for p in prompts]
    results: dict[int, str] = {}

    def one(i: int) -> None:
        results[i] = post(url, "/completion", {"prompt": prompts[i], "n_predict": 10, "temperature": 0}).json()["content"]

    def stalled() -> None:  # reads one event, then sits on the open stream
        with httpx.stream("POST", url + "/completion", json={"prompt": "Once", "n_predict": 200, "temperature": 0, "stream": True}, timeout=60) as r:
            next(r.iter_lines())
            time.sleep(8)

    def hangs_up() -> None:
        with httpx.stream("POST", url + "/completion", json={"prompt": "Twice", "n_predict": 200, "temperature": 0, "stream": True}, timeout=60) as r:
            next(r.iter_lines())  # then the connection closes

    side = [threading.Thread(target=stalled), threading.Thread(target=hangs_up)]
    for t in side:
        t.start()
    t0 = time.monotonic()
    workers = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=120)
    took = time.monotonic() - t0
    assert [results.get(i) for i in range(len(prompts))] == alone
    assert took < 60, f"four short requests took {took:.1f} s beside a stalled stream"
    for t in side:
        t.join(timeout=30)
    assert httpx.get(url + "/health").status_code == 200
    # The server is idle again: the vanished client's generation was cancelled, not left running.
    deadline = time.monotonic() + 20
    while httpx.get(url + "/props").json()["bytecover"]["active_requests"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert httpx.get(url + "/props").json()["bytecover"]["active_requests"] == 0


def test_json_is_compact_as_llama_vim_expects(url: str) -> None:
    """llama.vim checks the raw response with the regex '"content"\\s*:"' before decoding it."""
    raw = post(url, "/completion", {"prompt": "a", "n_predict": 2, "temperature": 0}).text
    assert raw.startswith("{") and '"content":"' in raw and "\n" not in raw
    json.loads(raw)

"""Fill-in-the-middle through `bytecover serve` on Qwen2.5-Coder-0.5B: the exact middle over
HTTP, payloads exactly as llama.vim and llama.vscode send them, and the real llama.vim plugin in
Vim under tmux showing the suggestion for a cursor inside ``retu|``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from support import vim_llama
from support.server_harness import running, stream_post

from bytecover import ByteLM, fim
from bytecover.evaluation.infilling import infilling_tasks
from bytecover.server.main import build_app
from bytecover.server.options import Settings

pytestmark = pytest.mark.model

PREFIX = "def is_even(n):\n    retu"
SUFFIX = "\n\nprint(is_even(4))\n"
LLAMA_VIM_FIELDS = [
    "content", "timings/prompt_n", "timings/prompt_ms", "timings/prompt_per_token_ms", "timings/prompt_per_second",
    "timings/predicted_n", "timings/predicted_ms", "timings/predicted_per_token_ms", "timings/predicted_per_second",
    "truncated", "tokens_cached",
]


@pytest.fixture(scope="module")
def qwen() -> ByteLM:
    return ByteLM.from_pretrained("qwen2.5-coder-0.5b")


@pytest.fixture(scope="module")
def url(qwen: ByteLM) -> Iterator[str]:
    with running(build_app(qwen, Settings(model_id="qwen2.5-coder-0.5b", timeout_s=120))) as base:
        yield base


def infill(url: str, body: dict[str, object]) -> dict[str, object]:
    r = httpx.post(url + "/infill", json=body, timeout=120)
    assert r.status_code == 200, r.text
    out = r.json()
    assert isinstance(out, dict)
    return out


def test_mid_token_middle_is_fim_complete_bytes(url: str, qwen: ByteLM) -> None:
    """The cursor inside `retu`: /infill, the OpenAI client with `suffix`, and streaming all give
    `fim.complete(method="bytes")`'s middle."""
    want = fim.complete(qwen, PREFIX, SUFFIX, method="bytes", stop=["\n"], max_new_bytes=200)
    assert want.startswith("rn ")
    got = infill(url, {"input_prefix": PREFIX, "input_suffix": SUFFIX, "n_predict": 48, "stop": ["\n"], "temperature": 0})
    assert got["content"] == want and got["stop_type"] == "word"
    client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=120)
    oai = client.completions.create(model="qwen2.5-coder-0.5b", prompt=PREFIX, suffix=SUFFIX, max_tokens=48, stop=["\n"], temperature=0)
    assert oai.choices[0].text == want
    pieces = [c.choices[0].text for c in client.completions.create(model="qwen2.5-coder-0.5b", prompt=PREFIX, suffix=SUFFIX, max_tokens=48, stop=["\n"], temperature=0, stream=True) if c.choices]
    assert "".join(pieces) == want
    events = stream_post(url + "/infill", {"input_prefix": PREFIX, "input_suffix": SUFFIX, "n_predict": 48, "stop": ["\n"], "stream": True})
    assert "".join(e["content"] for e in events if isinstance(e, dict)) == want


def test_raw_prompt_with_sentinel_text_is_the_token_template(url: str, qwen: ByteLM) -> None:
    """/completion parses `<|fim_prefix|>`... as control tokens: the prompt is the plain token
    template (prefix encoded as it is), i.e. `fim.complete(method="token")`."""
    raw = f"<|fim_prefix|>{PREFIX}<|fim_suffix|>{SUFFIX}<|fim_middle|>"
    r = httpx.post(url + "/completion", json={"prompt": raw, "n_predict": 48, "stop": ["\n"]}, timeout=120).json()
    assert r["content"] == fim.complete(qwen, PREFIX, SUFFIX, method="token", stop=["\n"], max_new_bytes=200)
    toks = httpx.post(url + "/tokenize", json={"content": raw}).json()["tokens"]
    assert toks[0] == qwen.tokenizer.convert_tokens_to_ids("<|fim_prefix|>")


def test_llama_vim_payloads_prewarm_then_complete(url: str) -> None:
    """llama.vim's two requests, field for field (autoload/llama.vim): the ring-buffer prewarm
    (`n_predict: 0`, empty prefix and suffix) and the completion; the completion finds the
    prewarmed context in the cache and the response carries the fields the plugin reads."""
    extra = [{"text": "def is_odd(n):\n    return n % 2 == 1\n", "time": 1, "filename": "util.py"}]
    prewarm = {
        "id_slot": 0, "input_prefix": "", "input_suffix": "", "input_extra": extra, "prompt": "", "n_predict": 0,
        "temperature": 0.0, "samplers": [], "stream": False, "cache_prompt": True, "t_max_prompt_ms": 1,
        "t_max_predict_ms": 1, "response_fields": [""],
    }
    warm = infill(url, prewarm)
    assert set(warm) <= {"warnings"}  # response_fields [""] selects nothing
    body = {
        "id_slot": 0, "input_prefix": "def is_even(n):\n", "input_suffix": "\n\nprint(is_even(4))\n", "input_extra": extra,
        "prompt": "    retu", "n_predict": 128, "stop": [], "n_indent": 4, "top_k": 40, "top_p": 0.90,
        "samplers": ["top_k", "top_p", "infill"], "stream": False, "cache_prompt": True, "t_max_prompt_ms": 500,
        "t_max_predict_ms": 250, "response_fields": LLAMA_VIM_FIELDS,
    }
    out = infill(url, body)
    assert set(out) == set(LLAMA_VIM_FIELDS) | {"warnings"}
    assert str(out["content"]).startswith("rn ")
    assert int(out["tokens_cached"]) > 0  # type: ignore[call-overload]
    assert int(out["timings/prompt_n"]) + int(out["tokens_cached"]) > int(out["tokens_cached"])  # type: ignore[call-overload]
    warnings = " ".join(out["warnings"])  # type: ignore[arg-type]
    assert "'infill'" in warnings and "t_max_prompt_ms" in warnings


def test_llama_vscode_payload(url: str) -> None:
    """llama.vscode's completion request (src/llama-server.ts): defaultRequestParams spread in."""
    body = {
        "input_prefix": "import math\n\ndef area(r):\n", "input_suffix": "\n", "input_extra": [], "prompt": "    return math.p",
        "n_predict": 32, "top_k": 40, "top_p": 0.99, "stream": False, "samplers": ["top_k", "top_p", "infill"],
        "cache_prompt": True, "n_indent": 4, "t_max_prompt_ms": 500, "t_max_predict_ms": 2500,
    }
    out = infill(url, body)
    assert str(out["content"]).startswith("i")  # math.p|i: the identifier is finished, not restarted
    assert "timings" in out and out["stop"] is True and out["truncated"] is False


@pytest.mark.parametrize("task_index", [0, 1])
def test_sentinels_never_leak_on_benchmark_tasks(url: str, qwen: ByteLM, task_index: int) -> None:
    task = infilling_tasks("random-span-light", limit=2)[task_index]
    out = infill(url, {"input_prefix": task.prefix, "input_suffix": task.suffix, "n_predict": 40, "temperature": 0.7, "seed": 1})
    text = str(out["content"])
    specials = [qwen.core.token_string(i) for i in qwen.core.special_ids]
    assert not [s for s in specials if s and s in text]
    assert out["stop_type"] in ("eos", "limit", "word")


@pytest.mark.skipif(vim_llama.available() is not None, reason=str(vim_llama.available()))
def test_llama_vim_plugin_shows_the_exact_suggestion(url: str, tmp_path: Path) -> None:
    """The real plugin, unchanged, in Vim: type `u` after `    ret` so the cursor sits inside
    `retu|`; the plugin asks /infill and draws the suggestion; Tab accepts it."""
    src = tmp_path / "even.py"
    src.write_text("def is_even(n):\n    ret\n\nprint(is_even(4))\n")
    vim = vim_llama.VimSession(url + "/infill", src, tmp_path)
    try:
        vim.wait_for("is_even", 20)
        vim.keys("2G", "A")  # insert mode at the end of `    ret`
        vim.keys("u")  # the cursor moves: llama.vim sends its FIM request
        screen = vim.wait_for("return n % 2 == 0", 150)
        assert "    return n % 2 == 0" in screen, screen
        vim.keys("Tab")
        vim.keys("Escape")
        vim.keys(":wq", "Enter")
        for _ in range(40):  # Vim writes the file on :wq
            if "return n % 2 == 0" in src.read_text():
                break
            time.sleep(0.5)
        assert "    return n % 2 == 0" in src.read_text().splitlines()[1]
    finally:
        vim.close()

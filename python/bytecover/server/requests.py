"""Request bodies as the clients send them: parsing, validation and what cannot be honoured.

Fields are checked strictly (``"n_predict": "5"`` is an error, not 5), because a client that
sends the wrong type has a bug its user should hear about. Unknown fields are ignored, as
llama.cpp does. Fields we know but do not apply (other samplers, penalties, grammars, logprobs)
are *reported* in the response's ``warnings`` list, never dropped silently.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "RequestError",
    "ExtraChunk",
    "Sampling",
    "InfillRequest",
    "CompletionRequest",
    "OpenAICompletionRequest",
    "TokenizeRequest",
    "DetokenizeRequest",
    "parse_body",
    "parse_model",
    "unsupported_warnings",
    "HONOURED_SAMPLERS",
]


class RequestError(Exception):
    """A request the server refuses: HTTP `status` and a message that says what to fix."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class ExtraChunk(_Strict):
    """One piece of repository context (llama.vim's ring buffer, llama.vscode's open files)."""

    text: str = ""
    filename: str = "tmp"


class Sampling(_Strict):
    """Controls every generation endpoint shares. Greedy unless `temperature` > 0 is sent."""

    temperature: float | None = Field(default=None, ge=0.0)
    top_k: int | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    seed: int | None = None
    stream: bool = False
    stop: list[str] | str | None = None
    bytewise: bool = False
    """Decode every byte from the exact distribution (slower) instead of the exact cover followed
    by token decoding."""


class _LlamaCommon(Sampling):
    n_predict: int = -1
    n_indent: int = Field(default=0, ge=0)
    t_max_predict_ms: int = Field(default=0, ge=0)
    response_fields: list[str] = Field(default_factory=list)
    id_slot: int = -1
    cache_prompt: bool = True
    samplers: list[str] | str | None = None


class InfillRequest(_LlamaCommon):
    """llama.cpp ``POST /infill``: `prompt` is the text after the middle sentinel (llama.vim sends
    the cursor line's beginning there, the lines above as `input_prefix`)."""

    input_prefix: str = ""
    input_suffix: str = ""
    input_extra: list[ExtraChunk] = Field(default_factory=list)
    prompt: str = ""


class CompletionRequest(_LlamaCommon):
    """llama.cpp ``POST /completion``: a raw prompt; special-token text in it is control tokens."""

    prompt: str


class OpenAICompletionRequest(Sampling):
    """OpenAI ``POST /v1/completions`` (with `suffix` for fill-in-the-middle)."""

    model: str | None = None
    prompt: str | list[str]
    suffix: str | None = None
    max_tokens: int | None = 16
    n: int = Field(default=1, ge=1)
    stream_options: dict[str, Any] | None = None


class TokenizeRequest(_Strict):
    content: str
    add_special: bool = False
    with_pieces: bool = False


class DetokenizeRequest(_Strict):
    tokens: list[int]


HONOURED_SAMPLERS = frozenset({"top_k", "top_p", "temperature"})

# Fields a client may send that change what llama.cpp or OpenAI would generate, with the values
# at which they do nothing. Any other value is reported as not applied.
_SAMPLING = "bytecover samples the exact distribution with temperature, top_k and top_p only"
_SAMPLING_NO_OP: dict[str, tuple[Any, ...]] = {
    "min_p": (0, 0.0), "typical_p": (1, 1.0), "typ_p": (1, 1.0), "repeat_penalty": (1, 1.0),
    "presence_penalty": (0, 0.0), "frequency_penalty": (0, 0.0), "dry_multiplier": (0, 0.0),
    "xtc_probability": (0, 0.0), "mirostat": (0,), "dynatemp_range": (0, 0.0), "top_n_sigma": (-1, -1.0),
    "logit_bias": (None, {}, []), "ignore_eos": (False,), "best_of": (None, 1),
}
_NO_OP: dict[str, tuple[tuple[Any, ...], str]] = {
    **{name: (values, _SAMPLING) for name, values in _SAMPLING_NO_OP.items()},
    "grammar": (("", None), "grammars are not supported"),
    "json_schema": ((None, {}), "JSON schemas are not supported"),
    "n_probs": ((0,), "token probabilities are not returned"),
    "logprobs": ((None, 0, False), "token log-probabilities are not returned"),
    "post_sampling_probs": ((False,), "token probabilities are not returned"),
    "echo": ((False,), "the prompt is not echoed"),
    "lora": ((None, []), "LoRA adapters are not supported"),
    "n_keep": ((0, -1), "context shifting is not done (prompts longer than the context are refused)"),
    "t_max_prompt_ms": ((0,), "prompt time is not limited (a prefix cache keeps repeated context cheap)"),
}


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object in a request body, or a 400 that says what is wrong with it."""
    if not raw.strip():
        raise RequestError(400, "the request body is empty; send a JSON object")
    try:
        obj = json.loads(raw)
    except UnicodeDecodeError as e:
        raise RequestError(400, f"the request body is not valid UTF-8 (byte {e.start}); send UTF-8 JSON") from None
    except json.JSONDecodeError as e:
        raise RequestError(400, f"the request body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(obj, dict):
        raise RequestError(400, f"the request body must be a JSON object, got {type(obj).__name__}")
    _check_text(obj, "")
    return obj


def _check_text(value: Any, where: str) -> None:
    """JSON may carry lone surrogates (``"\\ud800"``), which are not text: refuse them here."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError(400, f"field {where or 'body'!r} holds a lone UTF-16 surrogate (not valid UTF-8 text); send whole characters") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_text(v, f"{where}/{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_text(v, f"{where}/{i}")


def parse_model(cls: type[_Strict], obj: dict[str, Any]) -> Any:
    """`obj` validated as `cls`; every problem named by its field, in one 400."""
    try:
        return cls.model_validate(obj)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = "/".join(str(p) for p in err["loc"]) or "body"
            got = err.get("input")
            shown = "" if err["type"] == "missing" else f" (got {json.dumps(got)[:60]})" if _jsonable(got) else ""
            problems.append(f"{loc}: {err['msg']}{shown}")
        raise RequestError(400, "invalid request: " + "; ".join(problems)) from None


def _jsonable(x: Any) -> bool:
    try:
        json.dumps(x)
        return True
    except (TypeError, ValueError):
        return False


def unsupported_warnings(obj: dict[str, Any], samplers: list[str] | str | None = None) -> list[str]:
    """What the request asks for that this server does not apply (field by field)."""
    out = []
    for name, (no_ops, why) in _NO_OP.items():
        if name in obj and obj[name] not in no_ops:
            out.append(f"{name}={json.dumps(obj[name])[:40]} is not applied: {why}")
    if isinstance(samplers, str):
        samplers = list(samplers)  # llama.cpp's one-letter form: "kpt" = top_k, top_p, temperature
        samplers = [{"k": "top_k", "p": "top_p", "t": "temperature"}.get(c, c) for c in samplers]
    for s in samplers or []:
        if s not in HONOURED_SAMPLERS:
            out.append(f"sampler {s!r} is not applied (honoured: top_k, top_p, temperature; order fixed)")
    return out


"""Responses shaped as OpenAI's ``/v1/completions`` and ``/v1/models`` (what the ``openai``
package, Continue and Tabby parse), plus ``warnings`` when a field was not applied."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from .worker import Result

__all__ = ["finish_reason", "completion_response", "completion_chunk", "usage_chunk", "models_response", "new_id"]


def new_id() -> str:
    return "cmpl-" + uuid.uuid4().hex[:24]


def finish_reason(res: Result) -> str:
    """``length`` when a limit ended the text (n_predict, time, indentation), else ``stop``."""
    return "length" if res.outcome.stop_type == "limit" else "stop"


def _usage(results: Sequence[Result], prompt_tokens: int) -> dict[str, int]:
    completion = sum(r.predicted_n for r in results)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


def completion_response(cid: str, model_id: str, results: Sequence[Result], prompt_tokens: int, warnings: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": cid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model_id,
        "choices": [{"index": i, "text": r.text, "logprobs": None, "finish_reason": finish_reason(r)} for i, r in enumerate(results)],
        "usage": _usage(results, prompt_tokens),
    }
    every = [*warnings, *(w for r in results for w in r.warnings)]
    if every:
        out["warnings"] = every
    return out


def completion_chunk(cid: str, model_id: str, index: int, text: str, finish: str | None, warnings: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": cid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model_id,
        "choices": [{"index": index, "text": text, "logprobs": None, "finish_reason": finish}],
    }
    if warnings:
        out["warnings"] = warnings
    return out


def usage_chunk(cid: str, model_id: str, results: Sequence[Result], prompt_tokens: int) -> dict[str, Any]:
    return {"id": cid, "object": "text_completion", "created": int(time.time()), "model": model_id, "choices": [], "usage": _usage(results, prompt_tokens)}


def models_response(model_id: str, n_ctx: int | None, created: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": model_id, "object": "model", "created": created, "owned_by": "bytecover", "meta": {"n_ctx_train": n_ctx}}],
    }

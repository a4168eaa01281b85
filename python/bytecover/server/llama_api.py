"""Responses shaped as llama.cpp's server sends them (``/infill``, ``/completion``), with two
additions clients ignore: ``warnings`` (what the request asked for that was not applied) and
``stop_reason`` (which stop rule ended the text)."""

from __future__ import annotations

from typing import Any

from .worker import Job, Result

__all__ = ["timings", "final_response", "partial_response", "select_fields"]


def timings(res: Result) -> dict[str, Any]:
    prompt_n, pred_n = res.prompt_n, res.predicted_n
    return {
        "cache_n": res.tokens_cached,
        "prompt_n": prompt_n,
        "prompt_ms": res.prompt_ms,
        "prompt_per_token_ms": res.prompt_ms / prompt_n if prompt_n else 0.0,
        "prompt_per_second": 1e3 * prompt_n / res.prompt_ms if res.prompt_ms > 0 else 0.0,
        "predicted_n": pred_n,
        "predicted_ms": res.predicted_ms,
        "predicted_per_token_ms": res.predicted_ms / pred_n if pred_n else 0.0,
        "predicted_per_second": 1e3 * pred_n / res.predicted_ms if res.predicted_ms > 0 else 0.0,
    }


def generation_settings(job: Job, model_id: str) -> dict[str, Any]:
    r = job.rules
    return {
        "model": model_id,
        "n_predict": r.max_tokens if r.max_tokens is not None else -1,
        "temperature": job.temperature,
        "top_k": job.top_k or 0,
        "top_p": job.top_p if job.top_p is not None else 1.0,
        "seed": job.seed if job.seed is not None else -1,
        "stop": list(r.stops),
        "n_indent": r.n_indent,
        "t_max_predict_ms": r.t_max_predict_ms,
        "bytewise": job.bytewise,
        "samplers": ["top_k", "top_p", "temperature"],
    }


def final_response(res: Result, job: Job, model_id: str, *, content: str | None = None, warnings: list[str] | None = None) -> dict[str, Any]:
    """The last object of a request: the whole content (non-streaming) or "" (streaming)."""
    text = res.text if content is None else content
    out: dict[str, Any] = {
        "index": 0,
        "content": text,
        "tokens": [],
        "id_slot": 0,
        "stop": True,
        "model": model_id,
        "tokens_predicted": res.predicted_n,
        "tokens_evaluated": res.n_prompt_tokens,
        "generation_settings": generation_settings(job, model_id),
        "has_new_line": "\n" in res.text,
        "truncated": job.prompt.truncated,
        "stop_type": res.outcome.stop_type,
        "stopping_word": res.outcome.stopping_word,
        "stop_reason": res.outcome.reason,
        "tokens_cached": res.tokens_cached,
        "timings": timings(res),
    }
    all_warnings = [*(warnings or []), *res.warnings]
    if all_warnings:
        out["warnings"] = all_warnings
    return out


def partial_response(piece: str) -> dict[str, Any]:
    return {"index": 0, "content": piece, "tokens": [], "stop": False, "id_slot": 0}


def select_fields(obj: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """llama.cpp's ``response_fields``: only the named paths (``timings/prompt_n``), each under
    its path as a flat key. ``warnings`` is kept whatever is asked: it is never dropped."""
    if not fields:
        return obj
    out: dict[str, Any] = {}
    for path in fields:
        node: Any = obj
        for part in path.split("/"):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            out[path] = node
    if "warnings" in obj:
        out["warnings"] = obj["warnings"]
    return out

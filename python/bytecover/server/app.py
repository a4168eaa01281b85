"""The ASGI app: routes, the bearer key, body limits and errors.

Every refusal is a JSON object ``{"error": {"code", "message", "type"}}`` (llama.cpp's and
OpenAI's shape) whose message says what to fix; no request can take the server down. A request
that fails while streaming ends with such an object as its last event.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import llama_api, openai_api
from .options import Settings
from .prompts import Prompt, fim_prompt, plain_prompt, raw_prompt, split_special
from .requests import (
    CompletionRequest,
    DetokenizeRequest,
    InfillRequest,
    OpenAICompletionRequest,
    RequestError,
    TokenizeRequest,
    parse_body,
    parse_model,
    unsupported_warnings,
)
from .stopping import StopRules
from .worker import Engine, Job, Result, Run

__all__ = ["create_app"]

log = logging.getLogger("bytecover.server")

PUBLIC_PATHS = frozenset({"/health", "/v1/health"})
"""Paths that answer without the key (load balancers and plugins probe them)."""


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"code": status, "message": message, "type": kind}}, status_code=status)


def _sse(obj: Any) -> str:
    return "data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n\n"


def create_app(engine: Engine, settings: Settings) -> FastAPI:
    """The app serving `engine`'s model under `settings`."""
    info = engine.info
    started = int(time.time())
    app = FastAPI(title="bytecover serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine
    app.state.settings = settings

    @app.exception_handler(RequestError)
    async def _refused(request: Request, exc: RequestError) -> JSONResponse:
        log.info("%s %s -> %d: %s", request.method, request.url.path, exc.status, exc.message)
        return _error(exc.status, exc.message, exc.kind)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        hint = " (endpoints: /infill, /completion, /v1/completions, /v1/models, /tokenize, /detokenize, /health, /props)" if exc.status_code == 404 else ""
        return _error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}{hint}", "not_found_error" if exc.status_code == 404 else "invalid_request_error")

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return _error(500, f"internal error ({type(exc).__name__}: {exc}); the server is still up", "server_error")

    def authorize(request: Request) -> None:
        if settings.api_key is None or request.url.path in PUBLIC_PATHS:
            return
        header = request.headers.get("authorization", "")
        key = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        if not key:
            raise RequestError(401, "this server needs an API key: send the header 'Authorization: Bearer KEY'", "authentication_error")
        if not hmac.compare_digest(key.encode(), settings.api_key.encode()):
            raise RequestError(401, "the API key is wrong: send the key the server was started with (--api-key)", "authentication_error")

    async def body(request: Request) -> dict[str, Any]:
        authorize(request)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > settings.max_request_bytes:
            raise RequestError(413, f"the request body is {declared} bytes; this server accepts at most {settings.max_request_bytes} (--max-request-bytes). Send less context")
        raw = bytearray()
        async for part in request.stream():
            raw += part
            if len(raw) > settings.max_request_bytes:
                raise RequestError(413, f"the request body is over {settings.max_request_bytes} bytes (--max-request-bytes). Send less context")
        return parse_body(bytes(raw))

    # ------------------------------------------------------------------ shared request logic
    def n_limit(value: int | None, field: str, prompt: Prompt, warnings: list[str]) -> int:
        """The token limit of a request: -1 (llama.cpp) or null (OpenAI) is the server's limit."""
        if value is None or value == -1:
            n = settings.max_n_predict
        elif value < 0:
            raise RequestError(400, f"{field} must be >= 0 (or -1 for the server's limit, {settings.max_n_predict}), got {value}")
        elif value > settings.max_n_predict:
            raise RequestError(400, f"{field}={value} is above this server's limit of {settings.max_n_predict} (bytecover serve --max-n-predict)")
        else:
            n = value
        if info.n_ctx is not None and prompt.n_tokens + n > info.n_ctx:
            room = max(0, info.n_ctx - prompt.n_tokens - 1)
            warnings.append(f"{field} lowered from {n} to {room}: the prompt ({prompt.n_tokens} tokens) leaves no more room in the model's context ({info.n_ctx})")
            n = room
        return n

    def make_job(prompt: Prompt, req: Any, n: int, stops: list[str] | str | None, *, n_indent: int = 0, t_max_predict_ms: int = 0, seed_offset: int = 0) -> Job:
        stop_list = [stops] if isinstance(stops, str) else list(stops or [])
        rules = StopRules(
            stops=tuple(s for s in stop_list if s),
            control_texts=tuple(info.specials),
            prefix=prompt.prefix,
            suffix=prompt.suffix,
            n_indent=n_indent,
            t_max_predict_ms=t_max_predict_ms,
            max_tokens=n,
        )
        temperature = float(req.temperature or 0.0)
        seed = None if req.seed is None or req.seed == -1 else req.seed + seed_offset
        return Job(
            prompt=prompt,
            rules=rules,
            temperature=temperature,
            top_k=req.top_k or None,  # 0 = off, as in llama.cpp
            top_p=req.top_p if req.top_p is not None and req.top_p < 1.0 else None,
            seed=seed,
            bytewise=req.bytewise,
            timeout_s=settings.timeout_s,
        )

    async def wait(request: Request, runs: list[Run], on_piece: Callable[[int, str], None] | None = None) -> list[Result]:
        """Results of `runs` (sharing one queue); a client that goes away cancels them."""
        queue = runs[0].events
        results: dict[int, Result] = {}
        try:
            while len(results) < len(runs):
                try:
                    tag, kind, value = await asyncio.wait_for(queue.get(), timeout=0.25)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        log.info("client went away from %s; generation cancelled", request.url.path)
                        raise RequestError(499, "the client closed the connection") from None
                    continue
                if kind == "piece" and on_piece is not None:
                    on_piece(tag, value)
                elif kind == "done":
                    results[tag] = value
                elif kind == "error":
                    raise _as_request_error(value)
        finally:
            for r in runs:
                if r.tag not in results:
                    r.cancel()
        return [results[i] for i in range(len(runs))]

    def start(jobs: list[Job]) -> list[Run]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, str, Any]] = asyncio.Queue()
        return [Run(engine, job, loop, queue, tag=i).start() for i, job in enumerate(jobs)]

    # ------------------------------------------------------------------ llama.cpp
    async def llama_generate(request: Request, job: Job, fields: list[str], stream: bool, warnings: list[str]) -> Any:
        if not stream:
            (res,) = await wait(request, start([job]))
            return JSONResponse(llama_api.select_fields(llama_api.final_response(res, job, settings.model_id, warnings=warnings), fields))

        async def events() -> AsyncIterator[str]:
            (run,) = start([job])
            try:
                while True:
                    _, kind, value = await run.events.get()
                    if kind == "piece":
                        yield _sse(llama_api.partial_response(value))
                    elif kind == "done":
                        yield _sse(llama_api.select_fields(llama_api.final_response(value, job, settings.model_id, content="", warnings=warnings), fields))
                        return
                    else:
                        err = _as_request_error(value)
                        yield _sse({"error": {"code": err.status, "message": err.message, "type": err.kind}})
                        return
            finally:
                run.cancel()  # the client went away (the stream was closed): stop generating

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/infill")
    async def infill(request: Request) -> Any:
        obj = await body(request)
        if not any(k in obj for k in ("input_prefix", "input_suffix", "prompt")):
            raise RequestError(400, "missing fields: send input_prefix and input_suffix (the text before and after the cursor)")
        req = parse_model(InfillRequest, obj)
        warnings = unsupported_warnings(obj, req.samplers)
        if req.id_slot > 0:
            warnings.append(f"id_slot={req.id_slot} is not applied: there is one slot (0); every request shares one prefix cache")
        if req.n_predict != 0 and not (req.input_prefix or req.input_suffix or req.prompt):
            raise RequestError(400, "input_prefix, input_suffix and prompt are all empty: there is nothing to fill in. Send the text around the cursor (or n_predict 0 to only cache input_extra)")
        prompt = fim_prompt(info, req.input_prefix, req.input_suffix, req.prompt, req.input_extra)
        n = n_limit(req.n_predict, "n_predict", prompt, warnings)
        job = make_job(prompt, req, n, req.stop, n_indent=req.n_indent, t_max_predict_ms=req.t_max_predict_ms)
        return await llama_generate(request, job, req.response_fields, req.stream, warnings)

    async def completion(request: Request) -> Any:
        obj = await body(request)
        if "prompt" not in obj:
            raise RequestError(400, "missing field: prompt (the text to continue)")
        req = parse_model(CompletionRequest, obj)
        warnings = unsupported_warnings(obj, req.samplers)
        prompt = raw_prompt(info, req.prompt)
        n = n_limit(req.n_predict, "n_predict", prompt, warnings)
        job = make_job(prompt, req, n, req.stop, n_indent=req.n_indent, t_max_predict_ms=req.t_max_predict_ms)
        return await llama_generate(request, job, req.response_fields, req.stream, warnings)

    app.add_api_route("/completion", completion, methods=["POST"])
    app.add_api_route("/completions", completion, methods=["POST"])

    # ------------------------------------------------------------------ OpenAI
    @app.post("/v1/completions")
    async def v1_completions(request: Request) -> Any:
        obj = await body(request)
        if "prompt" not in obj:
            raise RequestError(400, "missing field: prompt (the text before the cursor; suffix: the text after it)")
        req = parse_model(OpenAICompletionRequest, obj)
        if req.model is not None and req.model not in (settings.model_id, *settings.aliases):
            raise RequestError(404, f"model {req.model!r} is not served here; this server serves {settings.model_id!r} (GET /v1/models)", "model_not_found")
        if req.n > settings.max_n:
            raise RequestError(400, f"n={req.n} is above this server's limit of {settings.max_n}")
        texts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
        if not texts:
            raise RequestError(400, "prompt is an empty list; send a string")
        warnings = unsupported_warnings(obj)
        prompts = []
        for t in texts:
            if req.suffix is not None:
                if not t and not req.suffix and req.max_tokens != 0:
                    raise RequestError(400, "prompt and suffix are both empty: there is nothing to fill in. Send the text around the cursor")
                prompts.append(fim_prompt(info, t, req.suffix))
            else:
                prompts.append(plain_prompt(info, t))
        jobs = [make_job(p, req, n_limit(req.max_tokens, "max_tokens", p, warnings), req.stop, seed_offset=j) for p in prompts for j in range(req.n)]
        prompt_tokens = sum(p.n_tokens for p in prompts)
        cid = openai_api.new_id()
        if not req.stream:
            results = await wait(request, start(jobs))
            return JSONResponse(openai_api.completion_response(cid, settings.model_id, results, prompt_tokens, warnings))
        include_usage = bool((req.stream_options or {}).get("include_usage"))

        async def events() -> AsyncIterator[str]:
            runs = start(jobs)
            queue = runs[0].events
            done: dict[int, Result] = {}
            try:
                if warnings:
                    yield _sse(openai_api.completion_chunk(cid, settings.model_id, 0, "", None, warnings))
                while len(done) < len(runs):
                    tag, kind, value = await queue.get()
                    if kind == "piece":
                        yield _sse(openai_api.completion_chunk(cid, settings.model_id, tag, value, None))
                    elif kind == "done":
                        done[tag] = value
                        yield _sse(openai_api.completion_chunk(cid, settings.model_id, tag, "", openai_api.finish_reason(value), value.warnings or None))
                    else:
                        err = _as_request_error(value)
                        yield _sse({"error": {"code": err.status, "message": err.message, "type": err.kind}})
                        return
                if include_usage:
                    yield _sse(openai_api.usage_chunk(cid, settings.model_id, [done[i] for i in range(len(runs))], prompt_tokens))
                yield "data: [DONE]\n\n"
            finally:
                for r in runs:
                    r.cancel()

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def v1_models(request: Request) -> Any:
        authorize(request)
        return openai_api.models_response(settings.model_id, info.n_ctx, started)

    app.add_api_route("/v1/models", v1_models, methods=["GET"])
    app.add_api_route("/models", v1_models, methods=["GET"])

    # ------------------------------------------------------------------ the rest
    async def health(request: Request) -> Any:
        return {"status": "ok"}

    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/v1/health", health, methods=["GET"])

    @app.get("/props")
    async def props(request: Request) -> Any:
        authorize(request)
        t = info.template
        return {
            "default_generation_settings": {"n_ctx": info.n_ctx, "params": {"n_predict": -1, "temperature": 0.0, "top_k": 0, "top_p": 1.0}},
            "total_slots": 1,
            "model_path": settings.aliases[0] if settings.aliases else settings.model_id,
            "modalities": {"vision": False, "audio": False},
            "chat_template": "",
            "build_info": "bytecover serve",
            "bytecover": {
                "exact": True,
                "fim_template": t.name if t else None,
                "batched": engine.batched,
                "active_requests": engine.active,
                "max_n_predict": settings.max_n_predict,
                "timeout_s": settings.timeout_s,
            },
        }

    @app.post("/tokenize")
    async def tokenize(request: Request) -> Any:
        req = parse_model(TokenizeRequest, await body(request))
        ids: list[int] = list(info.start_ids) if req.add_special else []
        for part in split_special(info, req.content):
            ids += [part] if isinstance(part, int) else info.encode(part)
        if not req.with_pieces:
            return {"tokens": ids}
        return {"tokens": [{"id": i, "piece": _piece(info.lm.core, i)} for i in ids]}

    @app.post("/detokenize")
    async def detokenize(request: Request) -> Any:
        req = parse_model(DetokenizeRequest, await body(request))
        bad = [t for t in req.tokens if not 0 <= t < info.lm.core.n_ids]
        if bad:
            raise RequestError(400, f"token ids out of range 0..{info.lm.core.n_ids - 1}: {bad[:5]}")
        data = b"".join(p.encode() if isinstance(p := _piece(info.lm.core, t), str) else bytes(p) for t in req.tokens)
        return {"content": data.decode("utf-8", errors="replace")}

    return app


def _piece(core: Any, token: int) -> str | list[int]:
    """A token's text as llama.cpp's /tokenize shows it: a string when it is whole UTF-8, else
    its byte values; control tokens by their name."""
    data = core.token_bytes(token)
    if data is None:
        return str(core.token_string(token))
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return list(bytes(data))


def _as_request_error(exc: Exception) -> RequestError:
    """A worker's exception as a response: the library's ValueErrors (a prompt the exact model
    cannot take) are the client's to fix; anything else is ours."""
    if isinstance(exc, RequestError):
        return exc
    if isinstance(exc, ValueError):
        return RequestError(400, str(exc))
    log.error("generation failed: %r", exc)
    return RequestError(500, f"generation failed ({type(exc).__name__}: {exc}); the server is still up", "server_error")

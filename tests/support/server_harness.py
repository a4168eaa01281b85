"""A real `bytecover serve` for tests: uvicorn on a free loopback port, in a thread of the test
process (the model is loaded once and shared), plus helpers that speak raw HTTP and SSE."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(app: Any) -> Iterator[str]:
    """Serve `app` on 127.0.0.1:<free port> until the block ends; yields the base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def sse_events(response: httpx.Response) -> Iterator[dict[str, Any] | str]:
    """The ``data:`` payloads of a server-sent-event stream: JSON objects, or ``"[DONE]"``."""
    for line in response.iter_lines():
        if not line.startswith("data: "):
            assert line == "", f"unexpected line in the event stream: {line!r}"
            continue
        payload = line[len("data: "):]
        yield payload if payload == "[DONE]" else json.loads(payload)


def stream_post(url: str, body: dict[str, Any], **kw: Any) -> list[dict[str, Any] | str]:
    with httpx.stream("POST", url, json=body, timeout=120, **kw) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        return list(sse_events(r))

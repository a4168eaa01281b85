"""Server settings and the `bytecover serve` arguments.

Kept free of the web stack so that `bytecover --help` (which builds every sub-parser) does not
import FastAPI or uvicorn.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

__all__ = ["Settings", "add_arguments", "settings_from_args", "LOOPBACK"]

LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class Settings:
    """Limits and identity of one server (every default is the safe one)."""

    model_id: str = "bytecover"
    """The name `/v1/models` lists; OpenAI requests naming another model are refused."""
    aliases: tuple[str, ...] = ()
    """Other names accepted in the OpenAI ``model`` field (the registry name, the path)."""
    api_key: str | None = None
    """When set, every endpoint but /health needs ``Authorization: Bearer KEY``."""
    max_request_bytes: int = 4 << 20
    """Bodies above this are refused (413): an editor's whole-repository context is well below."""
    max_n_predict: int = 1024
    """Largest ``n_predict`` / ``max_tokens``; ``n_predict: -1`` means this many."""
    timeout_s: float = 120.0
    """A request (queueing included) ends after this long with what it has (``stop_type: limit``)."""
    max_n: int = 8
    """Largest OpenAI ``n`` (completions per prompt)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `bytecover serve` options."""
    parser.add_argument("--model", required=True, help="registry name (bytecover models) or a local HF model folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only; anything else needs --api-key or --insecure)")
    parser.add_argument("--port", type=int, default=8012, help="port (default 8012, llama.vim's default)")
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on every endpoint but /health")
    parser.add_argument("--alias", action="append", default=[], help="another model name OpenAI clients may send (repeatable)")
    parser.add_argument("--max-request-bytes", type=int, default=Settings.max_request_bytes)
    parser.add_argument("--max-n-predict", type=int, default=Settings.max_n_predict, help="largest n_predict / max_tokens (n_predict -1 means this many)")
    parser.add_argument("--timeout", type=float, default=Settings.timeout_s, help="seconds per request, waiting included; then it ends with what it has")
    parser.add_argument("--backend", choices=["hf", "vllm"], default="hf", help="transformers (default) or a vLLM engine (bytecover[vllm]; docs/backends.md)")
    parser.add_argument("--device", default="cpu", help="torch device for the model (cpu, cuda, ...)")
    parser.add_argument("--dtype", default=None, help="torch dtype (float32, bfloat16); default: the model's")
    parser.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without --api-key")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings for the parsed arguments; refuses an exposed server without a key unless asked."""
    if args.host not in LOOPBACK and not args.api_key and not args.insecure:
        raise SystemExit(
            f"refusing to listen on {args.host} without --api-key: anyone who can reach it could use the model. "
            "Pass --api-key KEY, or --insecure if the network is yours"
        )
    for name, value in (("--max-request-bytes", args.max_request_bytes), ("--max-n-predict", args.max_n_predict), ("--timeout", args.timeout)):
        if value <= 0:
            raise SystemExit(f"{name} must be positive, got {value}")
    return Settings(
        model_id=args.model.rstrip("/").rsplit("/", 1)[-1],
        aliases=tuple(dict.fromkeys([args.model, *args.alias])),
        api_key=args.api_key or None,
        max_request_bytes=args.max_request_bytes,
        max_n_predict=args.max_n_predict,
        timeout_s=args.timeout,
    )

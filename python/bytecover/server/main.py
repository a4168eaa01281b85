"""`bytecover serve`: load the model, build the app, run uvicorn."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from ..byte_lm import ByteLM
from .app import create_app
from .options import Settings, settings_from_args
from .prompts import ModelInfo
from .worker import Engine

__all__ = ["build_app", "run"]

log = logging.getLogger("bytecover.server")


def build_app(lm: ByteLM, settings: Settings | None = None) -> Any:
    """The ASGI app serving `lm` (for tests and for embedding in another ASGI server)."""
    return create_app(Engine(ModelInfo.of(lm)), settings or Settings())


def _dtype(name: str | None) -> Any:
    if name is None:
        return None
    import torch

    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise SystemExit(f"--dtype {name!r} is not a torch dtype (try float32 or bfloat16)")
    return value


def run(args: argparse.Namespace) -> int:
    import uvicorn

    settings = settings_from_args(args)
    log.info("loading %s ...", args.model)
    try:
        if args.backend == "vllm":  # the engine takes its dtype by name
            lm = ByteLM.from_pretrained(args.model, backend="vllm", dtype=args.dtype)
        else:
            lm = ByteLM.from_pretrained(args.model, device=args.device, dtype=_dtype(args.dtype))
    except (FileNotFoundError, KeyError, ValueError, OSError) as e:
        raise SystemExit(f"cannot load model {args.model!r}: {e}. Use a registry name (bytecover models) or a local HF model folder") from None
    app = build_app(lm, settings)
    info = app.state.engine.info
    log.info(
        "serving %s on http://%s:%d (FIM template: %s; %s; key: %s)",
        settings.model_id, args.host, args.port, info.template.name if info.template else "none",
        "batched scheduler" if app.state.engine.batched else "one generation at a time", "required" if settings.api_key else "none",
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=5)
    return 0

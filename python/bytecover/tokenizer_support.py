"""What bytecover reads off a Hugging Face tokenizer (and model config): the tokenizer JSON the
Rust core parses, the start tokens put before text, the end-of-text ids, the context length."""

from __future__ import annotations

from typing import Any

from . import _core

__all__ = ["detect_start_ids", "tokenizer_json", "default_eos_ids", "max_positions"]


def detect_start_ids(tokenizer: Any) -> list[int]:
    """The special tokens the tokenizer puts *before* text (usually just BOS).

    Read off by encoding "a" with and without special tokens, because `add_bos_token` flags and
    post-processors disagree across tokenizer families; the encoder's own behaviour is the truth.
    Trailing specials (an appended EOS) are not start context and are ignored.
    """
    try:
        with_special = list(tokenizer("a", add_special_tokens=True)["input_ids"])
        plain = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    except Exception:  # tokenizer-like objects without __call__
        bos = getattr(tokenizer, "bos_token_id", None)
        return [int(bos)] if bos is not None and getattr(tokenizer, "add_bos_token", False) else []
    for start in range(len(with_special) - len(plain) + 1):
        if with_special[start : start + len(plain)] == plain:
            return [int(t) for t in with_special[:start]]
    bos = getattr(tokenizer, "bos_token_id", None)
    return [int(bos)] if bos is not None and with_special[:1] == [bos] else []


def tokenizer_json(tokenizer: Any) -> str:
    """The tokenizer's `tokenizer.json` text (fast, Rust-backed tokenizers only)."""
    if isinstance(tokenizer, _core.Tokenizer):
        raise TypeError("pass the Hugging Face tokenizer, not a bytecover._core.Tokenizer")
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None and hasattr(tokenizer, "to_str"):
        backend = tokenizer
    if backend is None:
        raise _core.UnsupportedTokenizerError(
            f"{type(tokenizer).__name__} is not a fast (Rust-backed) Hugging Face tokenizer; load it with use_fast=True"
        )
    return str(backend.to_str())


def default_eos_ids(tokenizer: Any) -> list[int]:
    """The tokenizer's own end-of-text id(s); [] when it declares none."""
    ids = getattr(tokenizer, "eos_token_id", None)
    if ids is None:
        return []
    return list(ids) if isinstance(ids, (list, tuple)) else [int(ids)]


def max_positions(model: Any) -> int | None:
    """The model's context length from its config, when it declares one."""
    cfg = getattr(model, "config", None)
    n = getattr(cfg, "max_position_embeddings", None) if cfg is not None else None
    return int(n) if n else None

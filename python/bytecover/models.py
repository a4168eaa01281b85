"""Loading models: a registry name (installed and converted on first use) or a local Hugging Face
checkpoint folder. The registry is in `bytecover.registry`; ``bytecover prepare`` fills the cache
ahead of time."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cache import cache_root
from .convert import MANIFEST, ensure_model, is_converted, model_dir
from .install import verify_source
from .registry import ModelSpec, get_spec, is_registry_name, list_models

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# The registry, conversion and install helpers users reach through `bytecover.models` (as before
# the split into registry / install / convert / cache).
__all__ = [
    "ModelSpec",
    "cache_root",
    "list_models",
    "get_spec",
    "ensure_model",
    "is_converted",
    "model_dir",
    "verify_source",
    "load_tokenizer",
    "load_model",
    "tokenizer_json",
    "read_manifest",
    "prepare",
]


def _resolve(name_or_path: str | os.PathLike[str]) -> Path:
    """A registry name becomes its (converted) cache folder; anything else must be a folder."""
    text = os.fspath(name_or_path)
    if is_registry_name(text):
        return ensure_model(text)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    get_spec(text)  # raises the ValueError that lists the known names
    raise AssertionError("unreachable")


def read_manifest(name_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``bytecover.json`` written at conversion (registry entry, timings, BOS facts)."""
    return json.loads((_resolve(name_or_path) / MANIFEST).read_text())


def load_tokenizer(name_or_path: str | os.PathLike[str]) -> PreTrainedTokenizerBase:
    """The converted fast tokenizer of a registry model, or of any local checkpoint folder."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_resolve(name_or_path))


def load_model(
    name_or_path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> PreTrainedModel:
    """The converted causal LM in eval mode on ``device`` (default fp32 on the CPU)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        _resolve(name_or_path), dtype=dtype or torch.float32
    )
    return model.to(device).eval()  # type: ignore[arg-type]  # transformers types `.to` as a decorator


def tokenizer_json(name_or_path: str | os.PathLike[str]) -> str:
    """Text of the converted ``tokenizer.json`` (what ``Vocabulary.from_tokenizer_json`` reads)."""
    return (_resolve(name_or_path) / "tokenizer.json").read_text(encoding="utf-8")


def prepare(names: Sequence[str] | None = None) -> None:
    """Install, verify and convert every (or the named) registry model; say where each went."""
    for name in names or list_models():
        t0 = time.perf_counter()
        path = ensure_model(name)
        print(f"[bytecover] model {get_spec(name).name}: {path} ({time.perf_counter() - t0:.1f} s)")

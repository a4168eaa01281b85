"""Exact byte string of every token id, computed from a HF ``tokenizer.json`` (reference version).

Independent of ``bytecover._core``: this is the slow, obvious implementation that the Rust
vocabulary is tested against.  Three families are recognised, decided by the tokenizer's decoder:

* **byte-level BPE** (decoder ``ByteLevel``; GPT-2, Llama-3, Qwen, StarCoder, SmolLM): each
  character of a token string stands for one byte through GPT-2's printable bytes<->unicode table.
* **SentencePiece-style BPE** (decoder ``Sequence`` of ``Replace("▁", " ")``, ``ByteFallback``,
  ``Fuse``, ``Strip``, or ``Metaspace``; Llama-2, Mistral, Gemma): ``▁`` is the space byte 0x20,
  a piece spelled exactly ``<0xNN>`` is that single byte, any other character is its UTF-8.
  The decoder's ``Strip`` (which removes the dummy-prefix space from decoded *text*) is not applied:
  token bytes are *internal* bytes, see ``start_prefix``.
* **plain BPE** (no decoder): the token string's UTF-8.

Special added tokens map to ``None``.  Non-special added tokens (HF splits them out of the text
before the model runs, and decodes them as their literal content) map to their content's UTF-8,
unless a flag changes the text around them (lstrip/rstrip/single_word/normalized) or the tokenizer
has a dummy prefix (then they are controls, ``None``).
An added token takes precedence over a model-vocabulary entry with the same id (DeepSeek's
``<｜begin▁of▁sentence｜>`` is both, and is not a byte-level piece; Gemma's merges mention pieces
whose ids are added tokens).

``start_prefix`` is ``b" "`` when the tokenizer prepends a dummy ``▁`` to the text (a ``Prepend``
normalizer, or a ``Metaspace`` pre-tokenizer with ``prepend_scheme`` "first"/"always" or the
legacy ``add_prefix_space: true``), else ``b""``.  Internal bytes = start_prefix + UTF-8 text.

Anything else (WordPiece, Unigram, BPE with subword prefixes/suffixes, ``ByteLevel`` with
``add_prefix_space``) raises ``NotImplementedError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

SPM_SPACE = "\u2581"  # '▁'
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@lru_cache(maxsize=1)
def gpt2_unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's ``bytes_to_unicode``: printable bytes map to themselves, the other 68
    bytes to code points 256, 257, ... in increasing byte order."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    byte_to_char = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in byte_to_char:
            byte_to_char[b] = chr(256 + extra)
            extra += 1
    return {c: b for b, c in byte_to_char.items()}


@dataclass(frozen=True)
class VocabInfo:
    token_bytes: list[bytes | None]  # index = token id; None = special token or unused id
    start_prefix: bytes  # b" " for SentencePiece dummy-prefix tokenizers, else b""
    kind: str  # "byte_level" | "sentencepiece" | "plain"
    special_ids: frozenset[int]

    @property
    def n_tokens(self) -> int:
        return len(self.token_bytes)


def _components(node: dict | None, key: str) -> list[dict]:
    """Flatten a (possibly ``Sequence``) normalizer / pre-tokenizer / decoder into its parts."""
    if node is None:
        return []
    if node.get("type") == "Sequence":
        return [part for sub in node[key] for part in _components(sub, key)]
    return [node]


def _pattern_string(node: dict) -> str | None:
    pattern = node.get("pattern")
    if isinstance(pattern, dict):
        return pattern.get("String")
    return None


def _decoder_kind(tj: dict) -> tuple[str, bool]:
    """(kind, byte_fallback) from the decoder, refusing unknown decoders."""
    parts = _components(tj.get("decoder"), "decoders")
    types = [p["type"] for p in parts]
    if not parts:
        return "plain", False
    if set(types) <= {"ByteLevel"}:
        return "byte_level", False
    spm_ok = {"Replace", "ByteFallback", "Fuse", "Strip", "Metaspace"}
    if set(types) <= spm_ok:
        for p in parts:
            if p["type"] == "Replace" and (_pattern_string(p), p.get("content")) != (SPM_SPACE, " "):
                raise NotImplementedError(f"decoder Replace {p!r} is not '▁' -> ' '")
            if p["type"] == "Strip" and (p.get("content") != " " or p.get("stop", 0) != 0):
                raise NotImplementedError(f"decoder Strip {p!r} is not a leading-space strip")
            if p["type"] == "Metaspace" and p.get("replacement", SPM_SPACE) != SPM_SPACE:
                raise NotImplementedError(f"Metaspace replacement {p.get('replacement')!r}")
        if "Replace" in types or "Metaspace" in types:
            return "sentencepiece", "ByteFallback" in types
    raise NotImplementedError(f"unsupported decoder {types!r}")


def _start_prefix(tj: dict) -> bytes:
    for n in _components(tj.get("normalizer"), "normalizers"):
        if n.get("type") == "Prepend":
            if n.get("prepend") != SPM_SPACE:
                raise NotImplementedError(f"Prepend normalizer {n!r} is not '▁'")
            return b" "
    for p in _components(tj.get("pre_tokenizer"), "pretokenizers"):
        if p.get("type") == "Metaspace":
            scheme = p.get("prepend_scheme")
            if scheme is None:  # legacy format
                scheme = "always" if p.get("add_prefix_space", True) else "never"
            if scheme in ("first", "always"):
                return b" "
        if p.get("type") == "ByteLevel" and p.get("add_prefix_space"):
            raise NotImplementedError("ByteLevel add_prefix_space=true (no fixed start prefix)")
    return b""


def piece_bytes(piece: str, kind: str, byte_fallback: bool) -> bytes:
    """Bytes of one model-vocabulary token string."""
    if kind == "byte_level":
        table = gpt2_unicode_to_byte()
        return bytes(table[c] for c in piece)  # KeyError = not a byte-level piece
    if kind == "sentencepiece":
        m = _BYTE_PIECE.fullmatch(piece)
        if byte_fallback and m:
            return bytes([int(m.group(1), 16)])
        return piece.replace(SPM_SPACE, " ").encode("utf-8")
    return piece.encode("utf-8")


def vocab_info(tj: dict) -> VocabInfo:
    """Byte string of every token id plus the start prefix, from a parsed ``tokenizer.json``."""
    model = tj["model"]
    if model.get("type") != "BPE":
        raise NotImplementedError(f"model type {model.get('type')!r} (only BPE)")
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise NotImplementedError("BPE with continuing_subword_prefix / end_of_word_suffix")
    kind, byte_fallback = _decoder_kind(tj)
    byte_fallback = byte_fallback or bool(model.get("byte_fallback"))
    added = tj.get("added_tokens") or []
    n = max([*model["vocab"].values(), *(a["id"] for a in added), -1]) + 1
    token_bytes: list[bytes | None] = [None] * n
    added_ids = {a["id"] for a in added}
    for piece, tid in model["vocab"].items():
        if tid not in added_ids:  # an added token wins over a model entry with its id (as in HF)
            token_bytes[tid] = piece_bytes(piece, kind, byte_fallback)
    special = set()
    start = _start_prefix(tj)
    for a in added:
        flags = any(a.get(k, False) for k in ("special", "lstrip", "rstrip", "single_word", "normalized"))
        # Under a dummy prefix HF prepends another "▁" to the text after every added token
        # ("a</s>b" -> [▁a, </s>, ▁b]), which no byte string spells: such tokens stay controls.
        if flags or start or not a["content"]:
            token_bytes[a["id"]] = None
            special.add(a["id"])
        else:
            token_bytes[a["id"]] = a["content"].encode("utf-8")
    return VocabInfo(token_bytes, start, kind, frozenset(special))

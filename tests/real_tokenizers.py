"""Shared loading of the real tokenizers used by test_tokenizers_real.py and test_engine_oracle.py.

Every loader goes through the ensure functions (``bytecover.models.tokenizer_json`` converts the
model when the cache lacks it, ``support.tokenizer_assets.tokenizer_json`` builds the fixture),
so a fresh machine builds its cache. A fixture that cannot be built is skipped with the reason.
"""

from __future__ import annotations

import json
from functools import lru_cache

import pytest
from reference import ReferenceTokenizer

from bytecover import _core

MODEL_TOKENIZERS = ["smollm2-135m", "qwen2.5-coder-0.5b", "gemma3-270m"]

# Witnesses the Rust core tries beyond the reference's default set (combining accent, ",\n");
# giving the reference the same set makes its witness-based validity comparable.
EXTRA_WITNESSES = ("\u0301".encode(), b",\n")
# The reference's default cap of 64 UTF-8 completions misses witnesses of a lone 3-byte lead
# token (Qwen2.5 [0xE5] is valid: 0xE5 0x82 0xA4 = '傤'); 4096 covers every 3-byte character.
_REF_KW = {"max_completions": 4096}


def fixture_names() -> list[str]:
    from support import tokenizer_assets

    return list(tokenizer_assets.tokenizer_names())


def all_names() -> list[str]:
    return MODEL_TOKENIZERS + fixture_names()


#: Suffix for a model tokenizer with an NFC normaliser in front, as transformers'
#: ``Qwen2Tokenizer`` loads Qwen2.5 (the converted tokenizer.json has none).
NFC_SUFFIX = "+nfc"


@lru_cache(maxsize=None)
def tokenizer_json(name: str) -> str:
    """tokenizer.json text, building the cache entry when needed (skip when it cannot be built)."""
    if name.endswith(NFC_SUFFIX):
        tj = json.loads(tokenizer_json(name.removesuffix(NFC_SUFFIX)))
        tj["normalizer"] = {"type": "NFC"}
        return json.dumps(tj)
    try:
        if name in MODEL_TOKENIZERS:
            from bytecover import models

            return models.tokenizer_json(name)
        from support import tokenizer_assets

        return tokenizer_assets.tokenizer_json(name)
    except Exception as exc:  # noqa: BLE001 - any failure to build the asset is reported as a skip
        pytest.skip(f"tokenizer {name!r} could not be prepared: {exc!r}")


def _reference_json(tj: dict) -> dict:
    """HF semantics: an added token wins over a model-vocab entry with the same id (DeepSeek's
    ``<｜begin▁of▁sentence｜>`` is both, and its string is not a byte-level piece)."""
    added = {a["id"] for a in tj.get("added_tokens") or []}
    vocab = tj["model"]["vocab"]
    if any(i in added for i in vocab.values()):
        tj = dict(tj)
        tj["model"] = dict(tj["model"])
        tj["model"]["vocab"] = {p: i for p, i in vocab.items() if i not in added}
    return tj


@lru_cache(maxsize=None)
def loaded(name: str) -> tuple[_core.Tokenizer, ReferenceTokenizer]:
    text = tokenizer_json(name)
    core = _core.Tokenizer.from_json(text)
    tj = json.loads(text)
    fixed = _reference_json(tj)
    if fixed is tj:
        return core, ReferenceTokenizer(tj, extra_witnesses=EXTRA_WITNESSES, **_REF_KW)
    # Token bytes from the repaired copy; the HF oracle itself runs on the untouched file
    # (Gemma's merges use pieces whose ids are also added tokens).
    import reference.canonical as rc

    original = rc.vocab_info
    rc.vocab_info = lambda _tj: original(fixed)
    try:
        ref = ReferenceTokenizer(tj, extra_witnesses=EXTRA_WITNESSES, **_REF_KW)
    finally:
        rc.vocab_info = original
    return core, ref


def special_texts(ref: ReferenceTokenizer) -> list[str]:
    return [a["content"] for a in ref.tokenizer_json.get("added_tokens") or [] if a.get("special")]


def golden(name: str) -> list[tuple[str, list[int]]]:
    """Golden (text, ids): llama.cpp's / sentencepiece's for fixtures, HF's own for the models."""
    if name in MODEL_TOKENIZERS:
        _, ref = loaded(name)
        return [(t, ref.hf.encode(t, add_special_tokens=False).ids) for t in HARD_TEXTS]
    from support import tokenizer_assets

    return tokenizer_assets.golden_cases(name)


HARD_TEXTS = [
    "",
    " ",
    "  ",
    "\n",
    "\n\n",
    "\t\t",
    "Hello world",
    " Hello  world ",
    "a\n\nb",
    "a\n\n",
    "x  ",
    "don't I'll we've THEY'RE",
    "3333333 12 1.5e-7 0x1F",
    "def f(x):\n    return x**2  # sq\n",
    "if (a != b) { c += 1; }\r\n",
    "中文字符 日本語 한국어",
    "emoji 😀🚀👍🏽 end",
    "café naïve résumé e\u0301 Ångström",
    "    indented\n\t\ttabs\n \n",
    "...!!!??? ,,, ;;",
]

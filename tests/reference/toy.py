"""Toy tokenizers as HF ``tokenizer.json`` dicts (loadable by ``tokenizers.Tokenizer.from_str``).

Each entry of ``toy_tokenizers()`` is a tokenizer.json dict; ``TOYS`` describes each toy: the
text alphabet it is meant for, and its EOS id.

* ``ab_classic``: plain BPE, vocab {A, B, AA}, merge "A A".  encode("AA") = [AA], so a model that
  only saw canonical encodings never emits [A, A]; naive conditioning on encode("A") = [A] gives
  P(A | "A") = 0, while the text "AA" has positive probability.
* ``abc``: plain BPE over {a, b, c} with 5 merges whose ranks conflict (``b c`` before ``a b``).
* ``ab_overlap``: plain BPE over {a, b} with overlapping merges ``b a``, ``a b``, ``ab a``,
  ``b b``, ``a a``, ``bb a``.
* ``ws_bytelevel``: byte-level BPE (all 256 bytes) with GPT-2's regex pre-tokenizer (look-ahead
  ``\\s+(?!\\S)``), merges for ``\\n\\n``, `` a``, ``ab``, two spaces, `` ab``.  [a, \\n, \\n] is
  valid (encode("a\\n\\nb") = [a, \\n, \\n, b]) but not canonical (encode("a\\n\\n") = [a, \\n\\n]).
* ``sp_dummy``: SentencePiece-style BPE (Llama-2 layout): Prepend ``▁`` + Replace " " -> ``▁``
  normalizer, byte fallback ``<0xNN>`` pieces, decoder Replace/ByteFallback/Fuse/Strip; start
  prefix b" ".
"""

from __future__ import annotations

import copy

from .vocab_bytes import gpt2_unicode_to_byte


def _added(tid: int, content: str) -> dict:
    return {
        "id": tid,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": True,
    }


def _bpe(vocab: dict[str, int], merges: list[str], **model_extra) -> dict:
    model = {
        "type": "BPE",
        "dropout": None,
        "unk_token": None,
        "continuing_subword_prefix": None,
        "end_of_word_suffix": None,
        "fuse_unk": False,
        "byte_fallback": False,
        "ignore_merges": False,
        "vocab": vocab,
        "merges": merges,
    }
    model.update(model_extra)
    return model


def _tokenizer(model: dict, added: list[dict], normalizer=None, pre_tokenizer=None, decoder=None) -> dict:
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": None,
        "decoder": decoder,
        "model": model,
    }


def _plain(letters: str, merges: list[str], eos: str = "<eos>") -> dict:
    vocab: dict[str, int] = {}
    for c in letters:
        vocab[c] = len(vocab)
    for m in merges:
        vocab.setdefault(m.replace(" ", ""), len(vocab))
    vocab[eos] = len(vocab)
    return _tokenizer(_bpe(vocab, merges), [_added(vocab[eos], eos)])


def _ws_bytelevel() -> dict:
    to_char = {b: c for c, b in gpt2_unicode_to_byte().items()}
    vocab = {to_char[b]: b for b in range(256)}
    merges_text = [("\n", "\n"), (" ", "a"), ("a", "b"), (" ", " "), (" a", "b")]
    merges = []
    for left, right in merges_text:
        lc = "".join(to_char[b] for b in left.encode())
        rc = "".join(to_char[b] for b in right.encode())
        merges.append(f"{lc} {rc}")
        vocab.setdefault(lc + rc, len(vocab))
    eos = "<|endoftext|>"
    vocab[eos] = len(vocab)
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return _tokenizer(
        _bpe(vocab, merges),
        [_added(vocab[eos], eos)],
        pre_tokenizer=byte_level,
        decoder={"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    )


def _sp_dummy() -> dict:
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece in ["▁", "a", "b"]:
        vocab[piece] = len(vocab)
    merges = ["▁ a", "a b", "▁ ▁", "▁a b", "b ▁"]
    for m in merges:
        vocab.setdefault(m.replace(" ", ""), len(vocab))
    normalizer = {
        "type": "Sequence",
        "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
        ],
    }
    decoder = {
        "type": "Sequence",
        "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0},
        ],
    }
    model = _bpe(vocab, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    return _tokenizer(model, [_added(0, "<unk>"), _added(1, "<s>"), _added(2, "</s>")], normalizer, None, decoder)


# name -> (alphabet of texts the toy is meant for, EOS token content)
TOYS: dict[str, tuple[str, str]] = {
    "ab_classic": ("AB", "<eos>"),
    "abc": ("abc", "<eos>"),
    "ab_overlap": ("ab", "<eos>"),
    "ws_bytelevel": ("ab \n", "<|endoftext|>"),
    "sp_dummy": ("ab ", "</s>"),
}

_BUILT = {
    "ab_classic": _plain("AB", ["A A"]),
    "abc": _plain("abc", ["b c", "a b", "a bc", "c a", "ab c"]),
    "ab_overlap": _plain("ab", ["b a", "a b", "ab a", "b b", "a a", "bb a"]),
    "ws_bytelevel": _ws_bytelevel(),
    "sp_dummy": _sp_dummy(),
}


def toy_tokenizers() -> dict[str, dict]:
    """name -> tokenizer.json dict (fresh copies)."""
    return copy.deepcopy(_BUILT)


def toy_alphabet(name: str) -> str:
    return TOYS[name][0]


def toy_eos_id(name: str) -> int:
    tj = _BUILT[name]
    content = TOYS[name][1]
    return next(a["id"] for a in tj["added_tokens"] if a["content"] == content)

"""Reference canonical encoder, decoder and validity test (slow, obvious; no ``bytecover._core``).

The HF ``tokenizers`` library is the canonical encoder.  All byte strings here are *internal*
bytes (``start_prefix`` + UTF-8 text, see ``vocab_bytes``).

* ``encode(b)``: HF ``encode(text, add_special_tokens=False)`` of ``b[len(start_prefix):]``, with
  ``encode_special_tokens`` switched on so that text which happens to spell a special token is
  tokenized as ordinary text.
* ``decode(ids)``: concatenation of token bytes (``ValueError`` on special / unknown ids).
* ``is_canonical(ids)``: ``encode(decode(ids)) == ids``.
* ``is_valid(ids)``: some text ``s`` gives ``encode(decode(ids) + s)[:len(ids)] == ids``.  Decided
  with the finite witness set ``WITNESSES`` (plus per-tokenizer ``extra_witnesses``); when
  ``decode(ids)`` ends inside a UTF-8 character, each witness is tried after every completion of
  that character.  A witness found is a proof; none found means "treated as invalid".  Like true
  validity the relation is kept prefix-closed: ``is_valid(ids)`` requires a witness for every
  prefix ``ids[:k]`` (``has_witness`` checks just the whole sequence).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence

from tokenizers import Tokenizer

from .vocab_bytes import vocab_info

# Continuations tried when deciding validity: the empty string, one character of each class a
# pre-tokenizer regex tells apart (lower/upper letter, digit, space, newline, tab, punctuation,
# apostrophe, the "s" of "'s", CJK, emoji, accented letter), and a few two-character strings that
# end whitespace runs in different ways (GPT-2's `\s+(?!\S)` look-ahead).
WITNESSES: tuple[bytes, ...] = tuple(
    s.encode("utf-8")
    for s in ["", "a", "A", "1", " ", "\n", "\t", ".", "'", "s", "中", "😀", "é", " a", "\n\n", "  ", "a\n"]
)

_CONT = range(0x80, 0xC0)


def utf8_incomplete_tail(data: bytes) -> tuple[bool, bytes]:
    """(ok, tail): ``ok`` is False when ``data`` is not valid UTF-8 even allowing for a cut at the
    end; ``tail`` is the trailing bytes of an unfinished character (b"" when complete)."""
    for cut in range(0, min(3, len(data)) + 1):
        head, tail = data[: len(data) - cut], data[len(data) - cut :]
        try:
            head.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if cut == 0:
            return True, b""
        return (next(utf8_completions(tail), None) is not None), tail
    return False, b""


def _allowed(lead: int, position: int) -> range:
    """Bytes allowed at ``position`` (1, 2, 3) of a well-formed UTF-8 character starting with
    ``lead`` (Unicode table 3-7: no overlongs, no surrogates, nothing above U+10FFFF)."""
    if position == 1:
        special = {0xE0: range(0xA0, 0xC0), 0xED: range(0x80, 0xA0), 0xF0: range(0x90, 0xC0), 0xF4: range(0x80, 0x90)}
        return special.get(lead, _CONT)
    return _CONT


def _char_len(lead: int) -> int:
    """Length of the character a lead byte starts (0 if it cannot start one)."""
    return 2 if 0xC2 <= lead <= 0xDF else 3 if 0xE0 <= lead <= 0xEF else 4 if 0xF0 <= lead <= 0xF4 else 0


def _partials(start: bytes, depth: int) -> Iterator[bytes]:
    """Continuation-byte strings p of length ``depth``, increasing, with ``start + p`` still the
    beginning of a well-formed character (``start`` is one already)."""
    if depth == 0:
        yield b""
        return
    for c in _allowed(start[0], len(start)):
        for rest in _partials(start + bytes([c]), depth - 1):
            yield bytes([c]) + rest


def utf8_completions(tail: bytes) -> Iterator[bytes]:
    """Every byte string ``c`` such that ``tail + c`` is exactly one valid UTF-8 character, each
    once, in a *spread* order: first one completion per value of the next byte (the smallest
    rest), then one per value of the next two bytes, ..., finally all.  Values that BPE merges
    care about (usually the byte right after the lead) are thus all tried early."""
    need = (_char_len(tail[0]) if tail else 0) - len(tail)
    if need <= 0 or any(tail[i] not in _allowed(tail[0], i) for i in range(1, len(tail))):
        return
    seen = set()
    for r in range(1, need + 1):
        for p in _partials(tail, r):
            c = p + next(_partials(tail + p, need - r))
            if c not in seen:
                seen.add(c)
                yield c


class ReferenceTokenizer:
    def __init__(
        self,
        tokenizer_json: dict | str,
        extra_witnesses: Sequence[bytes] = (),
        max_completions: int | None = 64,
    ):
        """``extra_witnesses`` are tried after ``WITNESSES`` (toys pass their alphabet).
        ``max_completions`` caps the completions of an unfinished last character tried per
        sequence, in ``utf8_completions``' spread order.  The default 64 covers every value of
        the next byte, so it is exhaustive when one byte is missing; ``None`` tries all (up to
        196,608 for a lone 4-byte lead: ~4M encodes, minutes, to prove such a sequence invalid)."""
        text = tokenizer_json if isinstance(tokenizer_json, str) else json.dumps(tokenizer_json)
        tj = json.loads(tokenizer_json) if isinstance(tokenizer_json, str) else tokenizer_json
        self.tokenizer_json = tj
        self.hf = Tokenizer.from_str(text)
        self.hf.encode_special_tokens = True
        info = vocab_info(tj)
        self.info = info
        self.token_bytes: list[bytes | None] = info.token_bytes
        self.start_prefix: bytes = info.start_prefix
        self.special_ids = info.special_ids
        self.witnesses: tuple[bytes, ...] = WITNESSES + tuple(
            w for w in extra_witnesses if w not in WITNESSES
        )
        self.max_completions = max_completions
        self._witness_cache: dict[tuple[int, ...], bool] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.token_bytes)

    # -- encode / decode -------------------------------------------------------------------------
    def _text(self, data: bytes) -> str:
        """Internal bytes -> the text HF sees (ValueError if impossible)."""
        if not data.startswith(self.start_prefix):
            if self.start_prefix.startswith(data):  # b"" for a dummy-prefix tokenizer
                return ""
            raise ValueError(f"{data!r} does not start with the start prefix {self.start_prefix!r}")
        return data[len(self.start_prefix) :].decode("utf-8")

    def encode(self, data: bytes) -> list[int]:
        return self.hf.encode(self._text(data), add_special_tokens=False).ids

    def encode_many(self, datas: Sequence[bytes]) -> list[list[int]]:
        texts = [self._text(d) for d in datas]
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> bytes:
        out = []
        for i in ids:
            b = self.token_bytes[i] if 0 <= i < len(self.token_bytes) else None
            if b is None:
                raise ValueError(f"token id {i} has no bytes (special or unknown)")
            out.append(b)
        return b"".join(out)

    # -- canonicity / validity -------------------------------------------------------------------
    def is_canonical(self, ids: Sequence[int]) -> bool:
        try:
            return self.encode(self.decode(ids)) == list(ids)
        except (ValueError, UnicodeDecodeError):
            return False

    def is_valid(self, ids: Sequence[int]) -> bool:
        # Validity is prefix-closed; keep the witness-based relation prefix-closed too (and cheap:
        # an invalid prefix never reaches the expensive UTF-8 completion search).
        ids = tuple(ids)
        for k in range(1, len(ids) + 1):
            key = ids[:k]
            if key not in self._witness_cache:
                self._witness_cache[key] = self.has_witness(key)
            if not self._witness_cache[key]:
                return False
        return True

    def has_witness(self, ids: Sequence[int]) -> bool:
        """Some witness (after a completion of an unfinished last character) reproduces ``ids``
        as the first len(ids) tokens of the canonical encoding."""
        ids = tuple(ids)
        if not ids:
            return True
        try:
            data = self.decode(ids)
        except ValueError:
            return False
        if not data.startswith(self.start_prefix):
            return False
        ok, tail = utf8_incomplete_tail(data)
        if not ok:
            return False
        n = len(ids)
        target = list(ids)
        if not tail:
            return any(e[:n] == target for e in self.encode_many([data + w for w in self.witnesses]))
        # Unfinished character: try each completion followed by each witness, in batches of
        # growing size (a success usually comes with the first completion; proving invalidity
        # costs |completions| * |witnesses| encodes).
        completions = utf8_completions(tail)
        if self.max_completions is not None:
            completions = itertools.islice(completions, self.max_completions)
        size = 1
        while batch := list(itertools.islice(completions, size)):
            cands = [data + c + w for c in batch for w in self.witnesses]
            if any(e[:n] == target for e in self.encode_many(cands)):
                return True
            size = min(size * 4, 1024)
        return False

    def witness(self, ids: Sequence[int]) -> bytes | None:
        """A continuation proving ``ids`` valid (for debugging), or None."""
        data = self.decode(ids)
        ok, tail = utf8_incomplete_tail(data)
        if not ok:
            return None
        for c in utf8_completions(tail) if tail else [b""]:
            for w in self.witnesses:
                if self.encode(data + c + w)[: len(ids)] == list(ids):
                    return c + w
        return None

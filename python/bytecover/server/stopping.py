"""Where a completion ends, and which of its text may be shown yet.

Editor users complain about three things: the suffix written again inside the middle, sentinel
text in the suggestion, and completions that never stop. The rules, checked after every piece:

* **Control text.** Control tokens never reach the text (the decoder cannot draw a token without
  bytes), but a model can still *spell* ``<|fim_middle|>`` with ordinary tokens; the text of every
  special token is a stop string (``stop_type: eos``).
* **Stop strings** of the request (``stop_type: word``, ``stopping_word``).
* **The suffix again** (FIM only): the beginning of the suffix through its first complete line is a
  stop string (`bytecover.evaluation.stops.suffix_key`: it holds a whole line, so a correct middle
  is not cut), and a copy of the whole suffix that ends the output is dropped when generation ends
  (`drop_suffix_echo`). Both are the published-benchmark rules, reused, not re-derived.
* **n_indent** (llama.cpp): a line, after the first, whose indentation is below ``n_indent``
  once it has content ends the middle; the middle is cut at that line's start.
* **t_max_predict_ms** (llama.cpp): once a newline was generated, generation stops when this many
  milliseconds have passed since it started.
* **n_predict tokens**: the canonical encoding of the text is counted, so a middle holds exactly
  ``n_predict`` tokens at most, whatever path decoded it.

Streaming must never show text that a later rule removes, so `Stopper` holds back the tail that
could still become a stop string, the start of a suffix copy, or a line that ``n_indent`` may cut.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..evaluation.stops import drop_suffix_echo, suffix_key

__all__ = ["StopRules", "Stopper", "Outcome"]


@dataclass(frozen=True)
class StopRules:
    stops: tuple[str, ...] = ()
    """The request's stop strings."""
    control_texts: tuple[str, ...] = ()
    """Texts of the special tokens (a stop wherever they are spelled)."""
    prefix: str = ""
    """Text before the cursor (lines written twice are judged against it)."""
    suffix: str | None = None
    """Text after the cursor (None: left-to-right completion, no suffix rules)."""
    n_indent: int = 0
    t_max_predict_ms: int = 0
    max_tokens: int | None = None
    """Most tokens of the canonical encoding (None: no limit here)."""


@dataclass
class Outcome:
    stop_type: str = "none"
    """llama.cpp's names: ``eos`` (the model ended, or a sentinel/suffix rule), ``word``, ``limit``."""
    stopping_word: str = ""
    reason: str = ""
    """Which rule ended the text (``eos``, ``control``, ``suffix``, ``word``, ``n_indent``,
    ``t_max_predict_ms``, ``n_predict``, ``timeout``, ``cancelled``)."""


@dataclass
class Stopper:
    """Applies `StopRules` to a growing text. `count_tokens` gives the canonical token count of a
    text (the model's tokenizer); `clock` is injectable for tests."""

    rules: StopRules
    count_tokens: Callable[[str], int]
    clock: Callable[[], float] = time.perf_counter
    text: str = ""
    shown: int = 0
    done: bool = False
    outcome: Outcome = field(default_factory=Outcome)
    _t0: float | None = None
    _key: str | None = None

    def __post_init__(self) -> None:
        self._t0 = self.clock()
        self._key = suffix_key(self.rules.suffix) if self.rules.suffix else None

    # -- feeding ---------------------------------------------------------------------------------
    def feed(self, piece: str) -> str:
        """Add a piece of generated text; returns the new text that may be shown now."""
        if self.done or not piece:
            return ""
        self.text += piece
        self._apply_rules()
        return self._release(final=False)

    def finish(self, stop_type: str = "eos", reason: str = "eos") -> str:
        """Generation is over (EOS, or the caller stopped it); the rest of the text to show."""
        if not self.done:
            self.done = True
            self.outcome = Outcome(stop_type, "", reason)
        if self.rules.suffix is not None:
            kept = drop_suffix_echo(self.rules.prefix, self.text, self.rules.suffix)
            if len(kept) >= self.shown:  # always so: a possible copy is held back (`_held`)
                self.text = kept
        return self._release(final=True)

    # -- rules -----------------------------------------------------------------------------------
    def _stop(self, cut: int, stop_type: str, reason: str, word: str = "") -> None:
        self.text = self.text[:cut]
        self.done = True
        self.outcome = Outcome(stop_type, word, reason)

    def _apply_rules(self) -> None:
        r = self.rules
        hit = _first(self.text, [(s, "word") for s in r.stops] + [(s, "control") for s in r.control_texts] + ([(self._key, "suffix")] if self._key else []))
        if hit is not None:
            at, s, why = hit
            self._stop(at, "word" if why == "word" else "eos", why, s if why == "word" else "")
        cut = _indent_cut(self.text, r.n_indent)
        if cut is not None:
            self._stop(cut, "limit", "n_indent")
        if r.max_tokens is not None and self.count_tokens(self.text) >= r.max_tokens:
            self._cut_to_tokens(r.max_tokens)
        if not self.done and r.t_max_predict_ms > 0 and "\n" in self.text:
            assert self._t0 is not None
            if (self.clock() - self._t0) * 1000.0 > r.t_max_predict_ms:
                self._stop(len(self.text), "limit", "t_max_predict_ms")

    def _cut_to_tokens(self, n: int) -> None:
        """The longest prefix of the text, in whole characters, with at most `n` tokens."""
        lo, hi = 0, len(self.text)
        while lo < hi:  # binary search: token counts grow with the prefix length
            mid = (lo + hi + 1) // 2
            if self.count_tokens(self.text[:mid]) <= n:
                lo = mid
            else:
                hi = mid - 1
        self._stop(lo, "limit", "n_predict")

    # -- what may be shown -----------------------------------------------------------------------
    def _release(self, final: bool) -> str:
        end = max(self.shown, len(self.text) if final else len(self.text) - self._held())
        out = self.text[self.shown : end]
        self.shown = end
        return out

    def _held(self) -> int:
        """Characters at the end of the text that a later rule may still remove (once a rule has
        stopped the text only the echo rule, applied by `finish`, is left)."""
        r = self.rules
        t = self.text
        held = 0
        if not self.done:
            for s in (*r.stops, *r.control_texts, *([self._key] if self._key else [])):
                held = max(held, _partial_overlap(t, s))
            if r.n_indent > 0:
                line = t.rsplit("\n", 1)
                if len(line) == 2 and not line[1].strip():
                    held = max(held, len(line[1]))  # an indentation-only line may still be cut
        if r.suffix is not None and r.suffix.strip():
            held = max(held, _echo_overlap(t, r.suffix.rstrip()))
        return min(held, len(t) - self.shown)


def _first(text: str, stops: Sequence[tuple[str, str]]) -> tuple[int, str, str] | None:
    """(position, stop, kind) of the stop string that occurs first in `text`."""
    best: tuple[int, str, str] | None = None
    for s, kind in stops:
        if not s:
            continue
        i = text.find(s)
        if i != -1 and (best is None or i < best[0]):
            best = (i, s, kind)
    return best


def _partial_overlap(text: str, stop: str) -> int:
    """Length of the longest end of `text` that is a proper beginning of `stop`."""
    for k in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:k]):
            return k
    return 0


def _echo_overlap(text: str, tail: str) -> int:
    """Characters at the end of `text` that may belong to a copy of `tail` (the suffix without
    trailing blanks) followed by blanks: the copy would be dropped at the end."""
    body = text.rstrip()
    blanks = len(text) - len(body)
    if body.endswith(tail):
        return len(tail) + blanks
    for k in range(min(len(tail) - 1, len(body)), 0, -1):
        if body.endswith(tail[:k]):
            return k + blanks
    return blanks if tail and not body else 0


def _indent_cut(text: str, n_indent: int) -> int | None:
    """Start of the first line after the first whose content begins before column `n_indent`."""
    if n_indent <= 0:
        return None
    pos = text.find("\n")
    while pos != -1:
        start = pos + 1
        i = start
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] != "\n" and i - start < n_indent:
            return start
        pos = text.find("\n", start)
    return None

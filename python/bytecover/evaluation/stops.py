"""Where a generated completion ends: the stop rules every method's output goes through.

Left to right, a HumanEval body ends where the model reaches top-level code (`DEFAULT_STOPS`).

Fill-in-the-middle needs more. The model used here (Qwen2.5-Coder-0.5B-*Instruct*) seldom closes a
middle with its end token: it writes the middle, then the suffix again, then more code. A stop
rule that detects the rewritten suffix must never fire inside a *correct* middle, or no method
can pass that task (the earlier rule, "the suffix up to its first 8 non-blank characters", was as
short as ``")"`` and cut the correct middle of 4 of the 164 self-drawn tasks). The FIM rule
(`apply_fim_stops`), applied to the output of every method alike, including the ``reference``
and ``empty`` self-checks:

1. **Top-level code**: cut before the first of `DEFAULT_STOPS` (a middle lies inside one
   function body); a stop may begin in the prefix and end in the completion.
2. **Suffix key** (`suffix_key`): cut before the first occurrence of the suffix's beginning
   *through its first complete line with content that starts after a newline* — so the key always
   holds one whole line, indentation and line end included, anchored at a line start. A correct
   middle would have to contain that exact line after the exact rest of the gap's line to be cut;
   ``tests/test_published_fim.py`` checks that none of the 2,837 published reference middles
   (and none of the self-drawn ones) is cut. Suffixes without such a line (the gap is on the last
   line, or the suffix is empty) have no key.
3. **Echo at the end** (`drop_suffix_echo`): when the output ends (trailing whitespace aside)
   with the whole suffix, that copy is dropped if (a) it starts at a line start (a whole line
   written twice), or (b) the suffix is the rest of one line with a letter or digit in it (not
   just closing brackets), the copy follows non-blank text on its line and the output has a
   line break after the copy (the line's end written twice: the file's own copy would then
   stand alone at the start of a line), or (c) the program does not parse with the copy and
   does parse without it (``compile`` only; nothing runs). (c) only changes an output whose
   program does not parse, which fails anyway; (a) and (b) are checked on every reference
   middle, alone and followed by line breaks or top-level code, like rule 2.

Rules 1-2 are plain stop strings, so generation uses them to end early (`fim_stop_strings`);
applying the whole rule again afterwards changes nothing that generation already cut. The
generation budget (``max_new_bytes``) is not part of the rule: it limits what a model can write,
and ``bytecover eval fim`` warns when it is shorter than some reference middle.
"""

from __future__ import annotations

import warnings
from typing import Sequence

__all__ = [
    "DEFAULT_STOPS",
    "truncate_at_stops",
    "suffix_key",
    "fim_stop_strings",
    "drop_suffix_echo",
    "apply_fim_stops",
]

#: Stop strings for a HumanEval function body: top-level code follows it.
DEFAULT_STOPS: tuple[str, ...] = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\nassert ", '\n"""', "\n#")


def truncate_at_stops(text: str, stops: Sequence[str], context: str = "") -> str:
    """Cut ``text`` before the earliest stop string.

    A stop may begin inside the last ``len(stop) - 1`` characters of ``context`` (what precedes
    ``text``) as long as it ends inside ``text``; the text is then cut at position 0.
    """
    stops = [s for s in stops if s]
    if not stops:
        return text
    k = max(len(s) for s in stops) - 1
    tail = context[-k:] if k > 0 else ""
    joined = tail + text
    best = len(text)
    for s in stops:
        start = max(0, len(tail) - len(s) + 1)  # the match must end after the tail
        i = joined.find(s, start)
        if i != -1:
            best = min(best, max(0, i - len(tail)))
    return text[:best]


def suffix_key(suffix: str) -> str | None:
    """The beginning of `suffix` through its first complete line (ending in a newline) that
    starts after a newline and has non-blank content; None when there is no such line."""
    seen = 0
    for i, line in enumerate(suffix.splitlines(keepends=True)):
        seen += len(line)
        if i >= 1 and line.endswith("\n") and line.strip():
            return suffix[:seen]
    return None


def fim_stop_strings(suffix: str, top_level: Sequence[str] = DEFAULT_STOPS) -> tuple[str, ...]:
    """Stop strings of the FIM rule for one task: the top-level stops and the suffix key."""
    key = suffix_key(suffix)
    return (*top_level, *([key] if key else []))


def _parses(source: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile(source, "<fim>", "exec", dont_inherit=True)
    except Exception:  # noqa: BLE001 - SyntaxError, ValueError (NUL), RecursionError, MemoryError
        return False
    return True


def drop_suffix_echo(prefix: str, completion: str, suffix: str) -> str:
    """Rule 4 of the module doc: drop a copy of the whole suffix that ends the completion."""
    tail = suffix.rstrip()
    body = completion.rstrip()
    if not tail.strip() or not body.endswith(tail):
        return completion
    kept = body[: len(body) - len(tail)]
    before = prefix + kept
    if before == "" or before.endswith("\n"):  # (a) a whole line written twice
        return kept
    line_start = before.rsplit("\n", 1)[-1]
    wordy = any(ch.isalnum() for ch in tail)  # closing brackets alone are too common to tell
    if wordy and "\n" not in tail and line_start.strip() and "\n" in completion[len(body):]:
        return kept  # (b) the end of a line with content written twice
    if not _parses(prefix + completion + suffix) and _parses(before + suffix):
        return kept
    return completion


def apply_fim_stops(prefix: str, suffix: str, completion: str, stops: Sequence[str]) -> str:
    """The FIM stop rule (module doc): stop strings, then the echo of the suffix.

    `stops` are the task's stop strings (`fim_stop_strings`); those in `DEFAULT_STOPS` may begin
    in the prefix, the suffix key must lie wholly in the completion.
    """
    top = [s for s in stops if s in DEFAULT_STOPS]
    own = [s for s in stops if s not in DEFAULT_STOPS]
    text = truncate_at_stops(completion, top, context=prefix)
    text = truncate_at_stops(text, own)
    return drop_suffix_echo(prefix, text, suffix)

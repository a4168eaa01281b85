"""How a request becomes what the exact model conditions on: fixed context tokens (sentinels, the
encoded suffix, repository context) and a byte prompt that the middle continues exactly.

FIM (``/infill``, ``/v1/completions`` with ``suffix``) follows `bytecover.fim.complete` in PSM
order: the prefix's unfinished tail (the `TokenHealer` plan, e.g. ``retu`` of ``    retu``) moves
behind the middle sentinel, where the exact model weighs every tokenization of it; the rest of the
prefix and the suffix are encoded canonically. llama.cpp's ``prompt`` field (text after the middle
sentinel) follows that tail. With ``input_extra`` the repository layout llama.cpp uses is put in
front (``<|repo_name|>myproject\\n``, then ``<|file_sep|>{filename}\\n{text}`` per chunk, then
``<|file_sep|>filename\\n``) when the model has those tokens, and llama.cpp's snippet separator
otherwise. Without ``input_extra`` the prompt is exactly `fim.complete`'s.

``/completion`` takes a raw prompt: special-token text in it is the model's control token (as
llama.cpp parses it); the text after the last one is the byte prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..byte_lm import ByteLM
from ..fim_templates import FimTemplate, detect_in_vocab
from ..healing import heal_prompt
from .requests import ExtraChunk, RequestError

__all__ = ["ModelInfo", "Prompt", "fim_prompt", "plain_prompt", "raw_prompt", "split_special"]

# Repository-level tokens of the families that have them: (repo name, file separator).
_REPO_TOKENS = (("<|repo_name|>", "<|file_sep|>"), ("<repo_name>", "<file_sep>"), ("<reponame>", "<file_sep>"))
# llama.cpp's separator between context chunks for models without a file separator.
SNIPPET_SEPARATOR = "\n\n--- snippet ---\n\n"


@dataclass(frozen=True)
class ModelInfo:
    """What prompt building needs to know about the served model (read once at start-up)."""

    lm: ByteLM
    template: FimTemplate | None
    """The FIM sentinels (None: the model cannot fill in the middle)."""
    vocab: dict[str, int]
    specials: dict[str, int]
    """Text of every special token -> its id."""
    start_ids: tuple[int, ...]
    n_ctx: int | None

    @classmethod
    def of(cls, lm: ByteLM) -> ModelInfo:
        vocab = dict(lm.tokenizer.get_vocab())
        try:
            template: FimTemplate | None = detect_in_vocab(vocab)
        except ValueError:
            template = None
        specials = {s: int(i) for i in lm.core.special_ids if (s := lm.core.token_string(i))}
        start = tuple(int(t) for t in getattr(lm.token_lm, "start_ids", ()))
        return cls(lm, template, vocab, specials, start, lm.max_prompt_tokens)

    def encode(self, text: str) -> list[int]:
        return list(self.lm.core.encode(text.encode())) if text else []

    def count_tokens(self, text: str) -> int:
        return len(self.lm.core.encode(text.encode())) if text else 0

    @property
    def end_ids(self) -> tuple[int, ...]:
        """Ids that end a middle: the model's end of text and the template's end tokens."""
        ends = [self.vocab[e] for e in (self.template.end if self.template else ()) if e in self.vocab]
        return tuple(sorted(set(self.lm.eos_ids) | set(ends)))


@dataclass(frozen=True)
class Prompt:
    context: list[int]
    """Token ids in front of the byte prompt (after the model's start tokens)."""
    text: bytes
    """Bytes the middle continues exactly."""
    eos_ids: tuple[int, ...]
    prefix: str
    """Text before the cursor, as the stop rules judge it."""
    suffix: str | None
    """Text after the cursor (None: left to right)."""
    n_tokens: int
    """Tokens the model sees before the middle (start tokens included)."""
    truncated: bool = False
    """Repository context was dropped to fit the model's context."""


def _refuse_specials(info: ModelInfo, fields: Sequence[tuple[str, str]]) -> None:
    for name, text in fields:
        for s in info.specials:
            if s in text:
                raise RequestError(
                    400,
                    f"{name} contains the special-token text {s!r}, which this model reads as a control token; "
                    "remove it (or send a raw prompt to /completion, where such text is parsed as control tokens)",
                )


def _check_fits(info: ModelInfo, n_tokens: int, what: str) -> None:
    if info.n_ctx is not None and n_tokens >= info.n_ctx:
        raise RequestError(400, f"the prompt is {n_tokens} tokens; the model's context is {info.n_ctx}. Shorten {what}", "exceed_context_size_error")


def _extra_tokens(info: ModelInfo, extra: Sequence[ExtraChunk]) -> list[int]:
    if not extra:
        return []
    repo = next(((info.vocab[r], info.vocab[f]) for r, f in _REPO_TOKENS if r in info.vocab and f in info.vocab), None)
    out: list[int] = []
    if repo:
        out += [repo[0]] + info.encode("myproject\n")
    for chunk in extra:
        out += ([repo[1]] + info.encode(chunk.filename + "\n")) if repo else info.encode(SNIPPET_SEPARATOR)
        out += info.encode(chunk.text)
    if repo:
        out += [repo[1]] + info.encode("filename\n")
    return out


def _heal_split(info: ModelInfo, text: str) -> tuple[list[int], bytes]:
    """(kept tokens, unfinished tail bytes) of the prefix, as `bytecover.fim` splits it."""
    if not text:
        return [], b""
    core = info.lm.core
    kept, removed = heal_prompt(core, text.encode())
    sp = core.start_prefix  # with nothing kept the tail begins with the dummy prefix, if any
    if not kept and sp and removed.startswith(sp):
        removed = removed[len(sp):]
    return kept, removed


def fim_prompt(info: ModelInfo, prefix: str, suffix: str, middle: str = "", extra: Sequence[ExtraChunk] = ()) -> Prompt:
    """The FIM prompt (module doc): `prefix` before the cursor, `suffix` after it, `middle` the
    llama.cpp ``prompt`` (text after the middle sentinel), `extra` repository context."""
    t = info.template
    if t is None:
        raise RequestError(400, "this model has no fill-in-the-middle tokens; use /completion or /v1/completions without suffix")
    _refuse_specials(info, [("input_prefix", prefix), ("input_suffix", suffix), ("prompt", middle)] + [(f"input_extra/{i}/text", c.text) for i, c in enumerate(extra)] + [(f"input_extra/{i}/filename", c.filename) for i, c in enumerate(extra)])
    kept, removed = _heal_split(info, prefix)
    core = [info.vocab[t.prefix]] + kept + [info.vocab[t.suffix]] + info.encode(suffix) + [info.vocab[t.middle]]
    text = removed + middle.encode()
    n_text = len(info.lm.core.encode(text)) if text else 0
    chunks = list(extra)
    truncated = False
    while True:
        context = _extra_tokens(info, chunks) + core
        n = len(info.start_ids) + len(context) + n_text
        if info.n_ctx is None or n < info.n_ctx or not chunks:
            break
        chunks.pop(0)  # the oldest context goes first, as llama.cpp drops it
        truncated = True
    _check_fits(info, n, "input_prefix / input_suffix")
    return Prompt(context, text, info.end_ids, prefix + middle, suffix, n, truncated)


def plain_prompt(info: ModelInfo, prompt: str) -> Prompt:
    """Left to right: the whole prompt is the byte prompt (no template)."""
    _refuse_specials(info, [("prompt", prompt)])
    n = len(info.start_ids) + info.count_tokens(prompt)
    _check_fits(info, n, "the prompt")
    return Prompt([], prompt.encode(), tuple(info.lm.eos_ids), prompt, None, n)


def split_special(info: ModelInfo, text: str) -> list[str | int]:
    """`text` as plain-text pieces and special-token ids (the longest special text wins)."""
    out: list[str | int] = []
    i = start = 0
    names = sorted(info.specials, key=len, reverse=True)
    firsts = {s[0] for s in names}
    while i < len(text):
        hit = next((s for s in names if text.startswith(s, i)), None) if text[i] in firsts else None
        if hit is None:
            i += 1
            continue
        if i > start:
            out.append(text[start:i])
        out.append(info.specials[hit])
        i = start = i + len(hit)
    if start < len(text):
        out.append(text[start:])
    return out


def raw_prompt(info: ModelInfo, prompt: str) -> Prompt:
    """``/completion``: control-token text parsed; the text after the last control token is the
    byte prompt. A FIM layout in it (prefix, suffix, middle sentinels) gets the FIM stop rules."""
    parts = split_special(info, prompt)
    tail = parts.pop() if parts and isinstance(parts[-1], str) else ""
    assert isinstance(tail, str)
    context: list[int] = []
    for p in parts:
        context += [p] if isinstance(p, int) else info.encode(p)
    prefix, suffix, eos = tail, None, tuple(info.lm.eos_ids)
    t = info.template
    if t is not None and parts and parts[-1] == info.vocab[t.middle]:
        # <pre> P <suf> S <mid> M: the middle follows P + M and must stop before S.
        ids = [p if isinstance(p, int) else None for p in parts]
        pre, suf = info.vocab[t.prefix], info.vocab[t.suffix]
        if pre in ids and suf in ids and ids.index(pre) < ids.index(suf):
            text_after = {k: parts[i + 1] if i + 1 < len(parts) and isinstance(parts[i + 1], str) else "" for k, i in ((pre, ids.index(pre)), (suf, ids.index(suf)))}
            prefix, suffix = str(text_after[pre]) + tail, str(text_after[suf])
        eos = info.end_ids
    n = len(info.start_ids) + len(context) + info.count_tokens(tail)
    _check_fits(info, n, "the prompt")
    return Prompt(context, tail.encode(), eos, prefix, suffix, n)

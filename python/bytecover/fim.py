"""Fill-in-the-middle with the model's own template, for a split at any byte.

A FIM prompt is a token sequence: sentinel tokens around the separately encoded prefix and
suffix, after which the model writes the middle and closes it with an end token. When the
cursor sits inside a token (``"def fibo|nacci"``), the encoded prefix ends in a token the model
rarely saw there, and naive decoding inherits that bias. Three methods:

``"token"``
    The plain template; the middle is decoded token by token after it.
``"heal"``
    Token healing: the prefix's last tokens (the `TokenHealer` plan) are taken out of the
    prefix and the middle is constrained to start with their bytes, which are then dropped.
``"bytes"``
    Exact: where the middle continues the prefix directly (SPM order), the whole prefix is the
    byte prompt of the exact model, so every tokenization of its end is weighed by the model;
    in PSM order the prefix is closed by the suffix sentinel, so (as with healing) its unfinished
    tail moves to the start of the middle, and the cover of that tail is drawn exactly. Then
    decoding hands off to tokens (`bytewise=True` decodes every byte exactly instead).

Generation stops at EOS, at one of the template's end tokens, at a stop string or after
``max_new_bytes``; the returned text is the middle only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from . import _core
from .byte_lm import ByteLM
from .byte_model import DEFAULT_BATCH
from .concurrency import map_batched
from .fim_templates import TEMPLATES, FimTemplate, detect_in_vocab
from .handoff import decode_tokens
from .healing import heal_prompt
from .sampling import SamplingConfig
from .streaming import Text, as_bytes, emit

__all__ = ["FimTemplate", "TEMPLATES", "detect_template", "complete", "METHODS"]

METHODS = ("token", "heal", "bytes")


def detect_template(tokenizer: Any) -> FimTemplate:
    """The template whose three sentinels are all tokens of `tokenizer`."""
    return detect_in_vocab(dict(tokenizer.get_vocab()))


@dataclass(frozen=True)
class _Plan:
    head: list[int]  # context tokens, the last thing before the text being continued
    prompt: bytes  # bytes the exact model continues (bytes method)
    kept: list[int]  # token-level prompt after the head (token and heal methods)
    owed: bytes  # bytes the middle must start with (heal method); dropped from the output


def _plan(lm: ByteLM, sentinels: tuple[int, int, int] | None, prefix: bytes, suffix: bytes | None, method: str, order: str) -> _Plan:
    """`sentinels`: the template's (prefix, suffix, middle) token ids; None left to right."""
    core = lm.core
    if method == "token":
        kept, removed = (core.encode(prefix) if prefix else []), b""
    else:
        kept, removed = _heal_split(core, prefix)
    if suffix is None:  # left to right: the prompt is all there is
        if method == "bytes":
            return _Plan(head=[], prompt=prefix, kept=[], owed=b"")
        return _Plan(head=[], prompt=b"", kept=kept, owed=removed)
    assert sentinels is not None
    pre, suf, mid = sentinels
    enc_suffix = core.encode(suffix) if suffix else []
    if order == "psm":
        head = [pre] + kept + [suf] + enc_suffix + [mid]
        return _Plan(head=head, prompt=removed, kept=[], owed=removed)
    # SPM: the middle continues the prefix directly, so the exact model takes all of it.
    head = [pre, suf] + enc_suffix + [mid]
    if method == "bytes":
        return _Plan(head=head, prompt=prefix, kept=[], owed=b"")
    return _Plan(head=head, prompt=b"", kept=kept, owed=removed)


def _heal_split(core: _core.Tokenizer, text: bytes) -> tuple[list[int], bytes]:
    if not text:
        return [], b""
    kept, removed = heal_prompt(core, text)
    # The plan speaks internal bytes; with nothing kept they begin with the dummy prefix, if any.
    sp = core.start_prefix
    if not kept and sp and removed.startswith(sp):
        removed = removed[len(sp):]
    return kept, removed


@overload
def complete(lm: ByteLM, prefix: Text, suffix: Text | None, *, method: str = ..., order: str = ..., template: FimTemplate | None = ..., max_new_bytes: int = ..., temperature: float = ..., top_k: int | None = ..., top_p: float | None = ..., seed: int | None = ..., stop: Sequence[Text] | None = ..., bytewise: bool = ..., batch: int = ...) -> Text: ...
@overload
def complete(lm: ByteLM, prefix: list[str] | list[bytes] | tuple[Text, ...], suffix: Sequence[Text | None] | Text | None, *, method: str = ..., order: str = ..., template: FimTemplate | None = ..., max_new_bytes: int = ..., temperature: float = ..., top_k: int | None = ..., top_p: float | None = ..., seed: int | None = ..., stop: Sequence[Text] | None = ..., bytewise: bool = ..., batch: int = ...) -> list[Text]: ...


def complete(
    lm: ByteLM,
    prefix: Text | Sequence[Text],
    suffix: Text | None | Sequence[Text | None],
    *,
    batch: int = DEFAULT_BATCH,
    method: str = "bytes",
    order: str = "psm",
    template: FimTemplate | None = None,
    max_new_bytes: int = 256,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop: Sequence[Text] | None = None,
    bytewise: bool = False,
) -> Text | list[Text]:
    """The middle between `prefix` and `suffix` (`str` in, `str` out; bytes in, bytes out).

    ``suffix=None`` is left-to-right completion of `prefix` (any model, no template). `method`
    is ``"token"``, ``"heal"`` or ``"bytes"`` (see the module doc); `order` ``"psm"`` or
    ``"spm"`` where the template has it. Greedy by default (`temperature=0`); sampling controls
    act on tokens, or on bytes with ``bytewise=True`` (bytes method only: every byte is chosen
    from the exact distribution; about 1.5-2x the hand-off's time on a CPU).

    Lists of prefixes and suffixes (same length; a suffix None: left to right) give the list of
    middles, up to `batch` tasks live at once, served by one forward per step; each middle is
    what the one-task call gives.
    """
    kw: dict[str, Any] = dict(method=method, order=order, template=template, max_new_bytes=max_new_bytes, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, stop=stop, bytewise=bytewise)
    if isinstance(prefix, (list, tuple)):
        suffixes = list(suffix) if isinstance(suffix, (list, tuple)) else [suffix] * len(prefix)
        if len(suffixes) != len(prefix):
            raise ValueError(f"got {len(prefix)} prefixes but {len(suffixes)} suffixes")
        tasks = list(zip(prefix, suffixes))
        return map_batched(lambda task: _complete_one(lm, task[0], task[1], **kw), tasks, batch=batch, enter=lm.batched)
    return _complete_one(lm, prefix, suffix, **kw)  # type: ignore[arg-type]


def _complete_one(lm: ByteLM, prefix: Text, suffix: Text | None, *, method: str, order: str, template: FimTemplate | None, max_new_bytes: int, temperature: float, top_k: int | None, top_p: float | None, seed: int | None, stop: Sequence[Text] | None, bytewise: bool) -> Text:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if bytewise and method != "bytes":
        raise ValueError("bytewise=True applies to method='bytes' only")
    as_str = isinstance(prefix, str)
    pre = as_bytes(prefix)
    ends: list[int] = []
    sentinels = None
    if suffix is not None:
        vocab = dict(lm.tokenizer.get_vocab())  # read once: a large vocabulary costs milliseconds to copy
        template = template or detect_in_vocab(vocab)
        if order not in template.orders:
            raise ValueError(f"{template.name} is trained with {'/'.join(template.orders)} order only, not {order!r}")
        ends = [vocab[e] for e in template.end if e in vocab]
        sentinels = (vocab[template.prefix], vocab[template.suffix], vocab[template.middle])
    plan = _plan(lm, sentinels, pre, None if suffix is None else as_bytes(suffix), method, order)
    twin = lm.with_context(plan.head, eos_ids=sorted(set(lm.eos_ids) | set(ends)))
    stops = [as_bytes(s) for s in (stop or [])]
    if method == "bytes":
        out = twin.generate(plan.prompt, max_new_bytes=max_new_bytes, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, stop=stops, bytewise=bytewise)
        text = out if isinstance(out, bytes) else out.encode()
    else:
        twin.spec.check_prompt(pre)
        cfg = SamplingConfig(temperature, top_k, top_p)
        # Text that starts a new segment starts with the tokenizer's dummy prefix, if it has one.
        owed = plan.owed if plan.kept else lm.core.start_prefix + plan.owed
        chunks = decode_tokens(twin.spec, list(plan.kept), cfg, np.random.default_rng(seed), owed=owed)
        text = b"".join(as_bytes(p) for p in emit(chunks, max_new_bytes, stops, False))
    return text.decode("utf-8", errors="replace") if as_str else text

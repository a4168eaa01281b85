"""`ByteModel`: what every byte-level model offers once it can make states: next-byte
distributions, sampling, streaming and scoring. `ByteLM`, `Ensemble` and `ProxyTuned` share it."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, cast, overload

import numpy as np

from .concurrency import iter_batched, map_batched
from .sampling import EOS, SamplingConfig
from .scheduler import Scheduler
from .state_protocol import ByteStep, DistributionState
from .streaming import Text, as_bytes, emit

__all__ = ["ByteModel", "Score", "chosen_bytes", "DEFAULT_BATCH"]

DEFAULT_BATCH = 16
"""Sequences live at once in the list forms of `generate` / `stream`."""

_STREAM_DEFAULTS: dict[str, Any] = dict(max_new_bytes=256, temperature=1.0, top_k=None, top_p=None, seed=None, stop=None, bytewise=None)


def _is_batch(prompt: object) -> bool:
    """A list or tuple of prompts (a str or bytes prompt is one prompt)."""
    return isinstance(prompt, (list, tuple))


@dataclass
class Score:
    """Byte-level likelihood of a text (natural logs; `per_byte` in bits). See docs/scoring.md.

    By default (`ByteModel.score(normalise=False)`) every value comes from the prefix
    probabilities P(x[:j]...) (the total probability of the covers of the first j bytes):
    exact, at about the cost of one model row per valid token prefix along the text. With
    ``normalise=True`` each byte is instead read from the normalised next-byte distribution,
    which also removes the mass the model puts on token sequences no text encodes to."""

    logprob: float
    """log P(text, then end of text). Default: log p(encode(text)) + log p(EOS | encode(text)),
    the canonical token sequence's log-likelihood plus end of text (with windows: `prefix_logprob`
    plus the last window's log P(EOS | its text)). Normalised: `prefix_logprob` plus the
    normalised end-of-text log-probability."""
    prefix_logprob: float
    """log P(the text starts with these bytes). Default: exactly log P(x...) (the sum of
    `per_byte` in nats). Normalised: the sum of normalised next-byte log-probabilities (lower than
    log P(x...) by `noncanonical_nats` up to the last byte)."""
    per_byte: np.ndarray | None
    """Surprisal of each byte in bits. Default: log2 P(x[:j]...) - log2 P(x[:j+1]...), the ratio of
    consecutive prefix probabilities. Normalised: -log2 of the byte's probability in the
    normalised 257-way next-byte distribution after x[:j]. None with ``score(per_byte=False)``."""
    noncanonical_nats: float
    """Mass the model put on token sequences no text encodes to, removed by the engine (nats;
    summed over the bytes). 0 by default: the prefix-probability ratios remove nothing."""
    n_bytes: int = field(default=0)
    normalised: bool = False
    """Whether the values come from the normalised next-byte distributions (`normalise=True`)."""
    windows: int = 1
    """Windows the text was scored in (more than 1 when it exceeds the model's context; see
    `bytecover.prefix_scoring`)."""

    @property
    def bits_per_byte(self) -> float:
        """-log2 P(x...) / bytes: `prefix_logprob` in bits per byte (end of text not counted)."""
        return float(-self.prefix_logprob / (max(self.n_bytes, 1) * math.log(2)))


def chosen_bytes(state: ByteStep, cfg: SamplingConfig, rng: np.random.Generator) -> Iterator[bytes]:
    """One byte at a time as `state.choose` picks it, until EOS. `state.advance` runs only when
    the consumer asks for another byte, so no model call is spent on a byte nobody reads."""
    while True:
        b = state.choose(cfg, rng)
        if b == EOS:
            return
        yield bytes((b,))
        state.advance(b)


class ByteModel:
    """Base of every byte-level model: subclasses say how to make states."""

    last_state: ByteStep | None = None
    """The state of the most recent `stream`/`generate` call (its `stats` say what it cost)."""

    supports_handoff = False
    """Whether `stream` can hand off to token-level decoding (one model, see `ByteLM`)."""

    def state(self, prefix: Text = b"") -> DistributionState:  # pragma: no cover - abstract
        """The state after `prefix`, giving the whole next-byte distribution."""
        raise NotImplementedError

    def scoring_state(self, data: bytes) -> DistributionState:
        """The empty-prefix state `score` advances through `data` (subclasses may prefetch the
        model rows the whole text needs)."""
        return self.state(b"")

    def choice_state(self, prompt: bytes, cfg: SamplingConfig) -> ByteStep:
        """The state byte-by-byte decoding chooses from (subclasses may choose lazily)."""
        return self.state(prompt)

    def handoff_chunks(self, prompt: Text, cfg: SamplingConfig, rng: np.random.Generator) -> Iterator[bytes]:  # pragma: no cover - abstract
        """Bytes after `prompt` from one exact cover and then token decoding (`supports_handoff`)."""
        raise NotImplementedError

    def next_byte_logprobs(self, prefix: Text = b"") -> np.ndarray:
        """Exact natural-log next-byte distribution, shape (257,): bytes 0-255, then EOS."""
        return np.asarray(self.state(prefix).distribution().logprobs)

    def schedulers(self) -> list[Scheduler]:  # pragma: no cover - abstract
        """The schedulers of the token models this byte model calls (one per model)."""
        raise NotImplementedError

    @contextmanager
    def batched(self) -> Iterator[None]:
        """Inside this block, the calling thread's model calls join one forward per step with
        every other thread inside a `batched()` block of the same models (`bytecover.scheduler`).
        The list forms of `generate` / `stream` and `fim.complete` use it; call it yourself to
        serve sequences from threads of your own (a server). Outside it, calls from several
        threads are safe and served one at a time."""
        with ExitStack() as stack:
            for s in self.schedulers():
                stack.enter_context(s.member())
            yield

    @overload
    def stream(self, prompt: Text, *, max_new_bytes: int = ..., temperature: float = ..., top_k: int | None = ..., top_p: float | None = ..., seed: int | None = ..., stop: Sequence[Text] | None = ..., bytewise: bool | None = ..., batch: int = ...) -> Iterator[Text]: ...
    @overload
    def stream(self, prompt: list[str] | list[bytes] | tuple[Text, ...], *, max_new_bytes: int = ..., temperature: float = ..., top_k: int | None = ..., top_p: float | None = ..., seed: int | None = ..., stop: Sequence[Text] | None = ..., bytewise: bool | None = ..., batch: int = ...) -> Iterator[tuple[int, Text]]: ...

    def stream(self, prompt: Text | Sequence[Text], *, max_new_bytes: int = 256, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None, seed: int | None = None, stop: Sequence[Text] | None = None, bytewise: bool | None = None, batch: int = DEFAULT_BATCH) -> Iterator[Text] | Iterator[tuple[int, Text]]:
        """Yield the continuation piece by piece as it is decided (str pieces hold whole characters).

        Two paths give the same distribution: byte by byte (every byte drawn from the exact
        next-byte distribution), and the hand-off (one cover of the prompt drawn exactly, then
        ordinary token decoding; `ByteLM` only). ``bytewise=None`` takes the hand-off whenever it
        is the same distribution: plain sampling (temperature 1, no top-k/top-p). With other
        controls it decodes byte by byte, since they act on bytes; ``bytewise=False`` forces the
        hand-off and applies them to tokens instead (like ``model.generate``; greedy then takes
        the most likely cover and then the most likely tokens).

        A list of prompts yields ``(index, piece)`` pairs as the pieces are decided, up to
        `batch` prompts live at once, all served by one forward per step; each prompt gets what
        it would get alone with the same `seed`.
        """
        kw: dict[str, Any] = dict(max_new_bytes=max_new_bytes, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, stop=stop, bytewise=bytewise)
        if _is_batch(prompt):
            prompts = cast(list[Text], list(prompt))
            for p in prompts:
                self.check_prompt(p)
            return iter_batched(lambda p: self._stream_one(p, **kw), prompts, batch=batch, enter=self.batched)
        return self._stream_one(prompt, **kw)  # type: ignore[arg-type]

    def check_prompt(self, prompt: Text) -> None:
        """Raise ValueError (saying what to fix) for a prompt this model cannot condition on;
        batched calls check every prompt before starting any."""
        as_bytes(prompt)

    def _stream_one(self, prompt: Text, *, max_new_bytes: int, temperature: float, top_k: int | None, top_p: float | None, seed: int | None, stop: Sequence[Text] | None, bytewise: bool | None) -> Iterator[Text]:
        cfg = SamplingConfig(temperature, top_k, top_p)
        plain = temperature == 1.0 and top_k is None and top_p is None
        handoff = (not bytewise) if bytewise is not None else (plain and self.supports_handoff)
        if handoff and not self.supports_handoff:
            raise ValueError(f"{type(self).__name__} decides every byte jointly across its members; it has no hand-off path (use bytewise=True)")
        if max_new_bytes < 0:
            raise ValueError(f"max_new_bytes must be >= 0, got {max_new_bytes}")
        stops = [as_bytes(s) for s in (stop or [])]
        rng = np.random.default_rng(seed)
        chunks = self.handoff_chunks(prompt, cfg, rng) if handoff else self._byte_chunks(as_bytes(prompt), cfg, rng)
        yield from emit(chunks, max_new_bytes, stops, isinstance(prompt, str))

    def generate(self, prompt: Text | Sequence[Text], *, n: int | None = None, batch: int = DEFAULT_BATCH, seed: int | None = None, **kw: Any) -> Any:
        """The continuation of `prompt`: `str` for a `str` prompt (whole characters), else bytes.
        Keywords as for `stream`.

        Many at once, all served by one forward per step (up to `batch` live sequences; a
        finished one frees its slot for the next): a list of prompts gives a list of
        continuations; ``n=k`` gives k samples of each prompt (a list for one prompt, a list of
        lists for a list), sample j drawn with seed ``seed + j`` (fresh randomness when `seed`
        is None). Each continuation is what the one-prompt call with the same seed gives."""
        many = _is_batch(prompt)
        prompts = cast(list[Text], list(prompt) if many else [prompt])
        k = 1 if n is None else int(n)
        if k < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        for p in prompts:
            self.check_prompt(p)
        if seed is None and k > 1:
            seeds: list[int | None] = [int(x) for x in np.random.SeedSequence().generate_state(k)]
        else:
            seeds = [None if seed is None else seed + j for j in range(k)]
        jobs = [(p, s) for p in prompts for s in seeds]
        outs = map_batched(lambda job: self._generate_one(job[0], seed=job[1], **kw), jobs, batch=batch, enter=self.batched)
        if n is None:
            return outs if many else outs[0]
        grouped = [outs[i * k : (i + 1) * k] for i in range(len(prompts))]
        return grouped if many else grouped[0]

    def _generate_one(self, prompt: Text, **kw: Any) -> Text:
        pieces = list(self._stream_one(prompt, **{**_STREAM_DEFAULTS, **kw}))
        if isinstance(prompt, str):
            return "".join(str(p) for p in pieces)
        return b"".join(bytes(p) for p in pieces)  # type: ignore[arg-type]

    def _byte_chunks(self, prompt: bytes, cfg: SamplingConfig, rng: np.random.Generator) -> Iterator[bytes]:
        state = self.choice_state(prompt, cfg)
        self.last_state = state
        yield from chosen_bytes(state, cfg, rng)

    @overload
    def score(self, text: Text, *, normalise: bool = ..., per_byte: bool = ...) -> Score: ...
    @overload
    def score(self, text: list[Text] | tuple[Text, ...], *, normalise: bool = ..., per_byte: bool = ...) -> list[Score]: ...
    def score(self, text: Text | list[Text] | tuple[Text, ...], *, normalise: bool = False, per_byte: bool = True) -> Score | list[Score]:
        """Exact byte-level likelihood of `text`, or of each text of a list (see `Score` for what
        each field is).

        Default: prefix probabilities (`bytecover.prefix_scoring`): one model row per valid
        token prefix along the text, validity decided only for tokens starting with each
        prefix's next byte; a list's rows are fetched in shared requests.
        ``per_byte=False``: only `logprob`, `prefix_logprob` and `bits_per_byte` (`per_byte` is
        None), the same values at about the cost of one forward: the rows of the canonical
        encoding's prefixes and of the few token prefixes that can end a cover of the whole text.
        ``normalise=True``: the full 257-way next-byte distribution at every byte (the whole
        vocabulary's validity at every fresh token prefix, and a row for every token prefix;
        tens to hundreds of times slower), which also reports the non-canonical mass; it costs
        the same with ``per_byte=False``."""
        batch = _is_batch(text)
        texts = [as_bytes(t) for t in (cast(Sequence[Text], text) if batch else [cast(Text, text)])]
        if normalise:
            scores = [self._normalised_score(d, per_byte=per_byte) for d in texts]
        else:
            scores = self.prefix_scores(texts, per_byte=per_byte)
        return scores if batch else scores[0]

    def prefix_scores(self, texts: list[bytes], *, per_byte: bool = True) -> list[Score]:
        """`score` from prefix probabilities; models without them (ensembles, whose per-byte
        values are combinations of normalised distributions) use the normalised form."""
        return [self._normalised_score(d, per_byte=per_byte) for d in texts]

    def _normalised_score(self, data: bytes, *, per_byte: bool = True) -> Score:
        state = self.scoring_state(data)
        surprisal = np.empty(len(data))
        removed = 0.0
        for i, b in enumerate(data):
            d = state.distribution()
            removed += d.removed_nats
            surprisal[i] = -float(d.logprobs[b]) / math.log(2)
            state.advance(b)
        d = state.distribution()
        removed += d.removed_nats
        prefix_lp = float(-surprisal.sum() * math.log(2))
        return Score(logprob=prefix_lp + float(d.logprobs[EOS]), prefix_logprob=prefix_lp, per_byte=surprisal if per_byte else None,
                     noncanonical_nats=removed, n_bytes=len(data), normalised=True)

"""`ByteLM`: any token language model as an exact byte-level model.

The Rust engine keeps the covers of the current byte prefix and says which token prefixes it
needs next-token rows for; `ByteState` answers those requests with one batched call to the
`TokenLM` per step and hands the rows over without copying.
"""

from __future__ import annotations

import math
import time
import copy
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _core
from .sampling import EOS, SamplingConfig, sample
from .token_lm import ContextTokenLM, HFTokenLM, TokenLM, detect_start_ids

Text = str | bytes


@dataclass
class CallStats:
    """What the model and the engine cost (for benchmarks and the one-call-per-byte contract)."""

    model_calls: int = 0
    rows: int = 0
    scores: int = 0
    model_seconds: float = 0.0
    engine_seconds: float = 0.0


class ByteState:
    """The exact next-byte distribution after a byte prefix, advanced one byte at a time."""

    def __init__(self, lm: ByteLM, prefix: bytes, tolerance: float = 0.0, row_cache: dict[tuple[int, ...], np.ndarray] | None = None) -> None:
        self.lm = lm
        self.stats = CallStats()
        self._row_cache = row_cache
        t0 = time.perf_counter()
        self.engine = _core.CoverEngine(lm.core, prefix, lm.eos_ids, tolerance=tolerance)
        self.stats.engine_seconds += time.perf_counter() - t0
        self._ready = False

    def _fulfil(self) -> None:
        """Answer the engine's requests: scores, then rows in one batched call."""
        rows, scores = self.engine.requests()
        if scores:
            t0 = time.perf_counter()
            values = shared_trunk_logprob(self.lm.token_lm, [toks for _, toks in scores])
            self.stats.model_seconds += time.perf_counter() - t0
            self.stats.scores += len(scores)
            self.engine.provide_scores([n for n, _ in scores], [float(v) for v in values])
        if rows:
            seqs = [tuple(toks) for _, toks in rows]
            t0 = time.perf_counter()
            if self._row_cache is not None and all(s in self._row_cache for s in seqs):
                block = np.stack([self._row_cache[s] for s in seqs])
            else:
                block = self.lm.token_lm.logprobs([list(s) for s in seqs])
                self.stats.model_calls += 1
            self.stats.model_seconds += time.perf_counter() - t0
            self.stats.rows += len(rows)
            self._provide_rows([n for n, _ in rows], block)
        self._ready = True

    def _provide_rows(self, nodes: list[int], block: np.ndarray) -> None:
        t0 = time.perf_counter()
        self.engine.provide_rows(nodes, np.ascontiguousarray(block))
        self.stats.engine_seconds += time.perf_counter() - t0

    def fulfil_for_cover(self) -> None:
        """What drawing a cover needs, in one batched model call: rows of the groups whose
        tokens cross the end of the text (not of those spelling it exactly: a cover needs only
        their probability, and their rows would make the engine decide validity for every token
        after them), and the groups' probabilities relative to the trunk all covers share (see
        `fetch_relative`). Afterwards `distribution()` still gives the right next-byte
        probabilities, but its log P(prefix...) and log Σ are relative to that trunk."""
        fetch_relative(self, exact_rows=False)

    def distribution(self) -> tuple[np.ndarray, float, float, float]:
        """(257 log-probabilities, log Σ numerators, log P(prefix...), skipped-mass bound)."""
        self.ready()
        t0 = time.perf_counter()
        out = self.engine.distribution()
        self.stats.engine_seconds += time.perf_counter() - t0
        return out

    def logprobs(self) -> np.ndarray:
        return self.distribution()[0]

    def ready(self) -> None:
        """Fetch what the current step needs from the model (rows and scores), if not done yet."""
        if not self._ready:
            self._fulfil()

    def advance(self, byte: int) -> None:
        self.ready()
        t0 = time.perf_counter()
        self.engine.advance(byte)
        self.stats.engine_seconds += time.perf_counter() - t0
        self._ready = False

    @property
    def text(self) -> bytes:
        """User bytes so far (the tokenizer's start prefix removed)."""
        return bytes(self.engine.text)[len(self.lm.core.start_prefix):]


def fetch_relative(state: Any, exact_rows: bool) -> None:
    """Scores of the engine's groups and their rows (those spelling the text exactly only if
    `exact_rows`) in one batched model call. The scores are *relative to the trunk all groups
    share*, from rows after that trunk: the prompt is fed once, on the KV cache, and the shared
    factor cancels in every choice made from them. `state` has `engine`, `lm`, `stats`."""
    engine = state.engine
    rows, scores = engine.requests()
    # Rows of groups spelling the text exactly are fetched either way (in a tree-mask forward
    # they cost one token each): token decoding after such a cover starts from that row.
    fetch_only = {tuple(t) for _, t in rows}
    if not exact_rows:
        n = len(engine.text)
        exact = {node for node, end in engine.groups() if end == n}
        rows = [r for r in rows if r[0] not in exact]
    score_seqs = [list(toks) for _, toks in scores]
    # The trunk every group shares (groups whose probability is already known included, so
    # that all of them are relative to the same thing).
    trunk = _common_prefix([list(engine.tokens(node)) for node, _ in engine.groups()]) if score_seqs else 0
    needed = _tail_prefixes(score_seqs, trunk) | fetch_only
    if not needed:
        return
    t0 = time.perf_counter()
    fetched = rows_by_prefix(state.lm.token_lm, needed, batch=len(needed))  # one call
    state.stats.model_seconds += time.perf_counter() - t0
    state.stats.model_calls += 1
    state.stats.rows += len(needed)
    if scores:
        state.stats.scores += len(scores)
        engine.provide_scores([node for node, _ in scores], _tail_logprobs(fetched, score_seqs, trunk))
    if rows:
        t0 = time.perf_counter()
        engine.provide_rows([node for node, _ in rows], np.ascontiguousarray(np.stack([fetched[tuple(t)] for _, t in rows])))
        state.stats.engine_seconds += time.perf_counter() - t0


@dataclass
class Score:
    """Byte-level likelihood of a text."""

    logprob: float
    """Natural log of P(text, then end of text)."""
    prefix_logprob: float
    """Natural log of P(the text starts with these bytes)."""
    per_byte: np.ndarray
    """Surprisal of each byte in bits, given the bytes before it."""
    noncanonical_nats: float
    """Mass the model put on token sequences no text encodes to, removed by the engine (nats)."""
    n_bytes: int = field(default=0)

    @property
    def bits_per_byte(self) -> float:
        return float(-self.prefix_logprob / (max(self.n_bytes, 1) * math.log(2)))


def _as_bytes(text: Text) -> bytes:
    if isinstance(text, str):
        return text.encode("utf-8")
    if isinstance(text, (bytes, bytearray, memoryview)):
        return bytes(text)
    raise TypeError(f"expected str or bytes, got {type(text).__name__}")


class ByteModel:
    """What every byte-level model offers once it can make a `state`: sampling, streaming and
    scoring. `ByteLM`, `Ensemble` and `ProxyTuned` share this code."""

    last_state: Any = None
    """The state of the most recent `stream`/`generate` call (its `stats` say what it cost)."""

    def state(self, prefix: Text = b"") -> Any:  # pragma: no cover - abstract
        """An object with `distribution()` -> (257 log-probs, log Σ, log P(prefix...), bound) and `advance(byte)`."""
        raise NotImplementedError

    def _scoring_state(self, data: bytes) -> Any:
        """State used by `score` (subclasses may prefetch all model rows in batches)."""
        return self.state(b"")

    def next_byte_logprobs(self, prefix: Text = b"") -> np.ndarray:
        """Exact natural-log next-byte distribution, shape (257,): bytes 0-255, then EOS."""
        return np.asarray(self.state(prefix).distribution()[0])

    supports_handoff = False
    """Whether `stream` can hand off to token-level decoding (one model, see `ByteLM`)."""

    def stream(self, prompt: Text, *, max_new_bytes: int = 256, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None, seed: int | None = None, stop: Sequence[Text] | None = None, bytewise: bool | None = None) -> Iterator[Text]:
        """Yield the continuation piece by piece as it is decided (str pieces hold whole characters).

        Two paths give the same distribution: byte by byte (every byte drawn from the exact
        next-byte distribution), and the hand-off (one cover of the prompt drawn exactly, then
        ordinary token decoding; `ByteLM` only). ``bytewise=None`` takes the hand-off whenever it
        is the same distribution: plain sampling (temperature 1, no top-k/top-p). With other
        controls it decodes byte by byte, since they act on bytes; ``bytewise=False`` forces the
        hand-off and applies them to tokens instead (like ``model.generate``; greedy then takes
        the most likely cover and then the most likely tokens).
        """
        cfg = SamplingConfig(temperature, top_k, top_p)
        plain = temperature == 1.0 and top_k is None and top_p is None
        handoff = (not bytewise) if bytewise is not None else (plain and self.supports_handoff)
        if handoff and not self.supports_handoff:
            raise ValueError(f"{type(self).__name__} decides every byte jointly across its members; it has no hand-off path (use bytewise=True)")
        if max_new_bytes < 0:
            raise ValueError(f"max_new_bytes must be >= 0, got {max_new_bytes}")
        rng = np.random.default_rng(seed)
        chunks = self._handoff_chunks(prompt, cfg, rng) if handoff else self._byte_chunks(prompt, cfg, rng)
        yield from _emit(chunks, max_new_bytes, [_as_bytes(s) for s in (stop or [])], isinstance(prompt, str))

    def generate(self, prompt: Text, **kw: Any) -> Text:
        """The continuation of `prompt`: `str` for a `str` prompt (whole characters), else bytes.
        Keywords as for `stream`."""
        pieces = list(self.stream(prompt, **kw))
        return "".join(pieces) if isinstance(prompt, str) else b"".join(pieces)  # type: ignore[arg-type]

    def _byte_chunks(self, prompt: Text, cfg: SamplingConfig, rng: np.random.Generator) -> Generator[bytes, None, None]:
        """One byte at a time from the exact next-byte distribution, until EOS."""
        state = self.state(prompt)
        self.last_state = state
        yield from chosen_bytes(state, lambda: sample(state.distribution()[0], cfg, rng))

    def _handoff_chunks(self, prompt: Text, cfg: SamplingConfig, rng: np.random.Generator) -> Generator[bytes, None, None]:  # pragma: no cover - abstract
        raise NotImplementedError

    def score(self, text: Text) -> Score:
        """Exact byte-level log-likelihood of `text` (all token prefixes evaluated in batches)."""
        data = _as_bytes(text)
        state = self._scoring_state(data)
        per_byte = np.empty(len(data))
        removed = 0.0
        for i, b in enumerate(data):
            lp, log_total, log_prefix, _ = state.distribution()
            removed += log_prefix - log_total
            per_byte[i] = -lp[b] / math.log(2)
            state.advance(b)
        lp, log_total, log_prefix, _ = state.distribution()
        removed += log_prefix - log_total
        prefix_lp = float(-per_byte.sum() * math.log(2))
        return Score(logprob=prefix_lp + float(lp[EOS]), prefix_logprob=prefix_lp, per_byte=per_byte, noncanonical_nats=removed, n_bytes=len(data))


class ByteLM(ByteModel):
    """An exact byte-level view of a token language model.

    ``ByteLM(model, tokenizer)`` wraps a transformers causal LM and its tokenizer;
    ``ByteLM(token_lm, tokenizer)`` any object with the `TokenLM` protocol;
    ``ByteLM.from_pretrained(name)`` a registry name (see `bytecover.models`) or a local HF directory.

    ``tolerance`` > 0 selects the bounded-error mode; ``speculate`` is the length of the
    prompt-lookup drafts whose rows generation fetches ahead in calls it makes anyway
    (`bytecover.speculation`; 0 turns them off; exactness does not depend on it).
    """

    def __init__(self, model: Any, tokenizer: Any, *, eos_ids: Sequence[int] | None = None, tolerance: float = 0.0, max_prompt_tokens: int | None = None, speculate: int = 3) -> None:
        self.tokenizer = tokenizer
        if hasattr(model, "logprobs") and hasattr(model, "vocab_size"):
            self.token_lm: TokenLM = model
            self.model = getattr(model, "model", None)
        else:
            # A document starts after BOS; tokenizers without one (SmolLM2, Qwen, GPT-2) separate
            # documents with their end-of-text token, so that is the start context here.
            start = detect_start_ids(tokenizer) or _default_eos(tokenizer)[:1]
            self.token_lm = HFTokenLM(model, tokenizer, bos_ids=start)
            self.model = model
        self.core = _core.Tokenizer.from_json(_tokenizer_json(tokenizer), n_logits=int(self.token_lm.vocab_size))
        self.eos_ids = list(eos_ids) if eos_ids is not None else _default_eos(tokenizer)
        self.tolerance = tolerance
        self.speculate = int(speculate)
        """Draft length for speculative rows in generation (`bytecover.speculation`; 0: off)."""
        self.max_prompt_tokens = max_prompt_tokens or _max_positions(self.model)
        self._special_texts = [s for s in (self.core.token_string(i) for i in self.core.special_ids) if s]
        self._context_len = 0

    supports_handoff = True

    def with_context(self, context_ids: Sequence[int], *, eos_ids: Sequence[int] | None = None) -> ByteLM:
        """This model continuing text that follows the tokens `context_ids` (after the start
        tokens): a FIM template, a chat turn, an earlier document. Shares model and tokenizer;
        `eos_ids` replaces the tokens that end the text (e.g. a FIM end token)."""
        twin = copy.copy(self)
        if eos_ids is not None:
            twin.eos_ids = [int(t) for t in eos_ids]
        twin.token_lm = ContextTokenLM(self.token_lm, context_ids)
        twin._context_len = self._context_len + len(twin.token_lm.context)
        return twin

    def _byte_chunks(self, prompt: Text, cfg: SamplingConfig, rng: np.random.Generator) -> Generator[bytes, None, None]:
        """Byte by byte. Greedy and temperature sampling choose each byte with the lazy engine
        (`ChoiceState`: the same byte the full distribution gives, at a fraction of the model
        calls; with a tolerance, the bounded-error version); top-k / top-p need the whole
        distribution."""
        if cfg.top_k is not None or cfg.top_p is not None:
            yield from super()._byte_chunks(prompt, cfg, rng)
            return
        from .choice import ChoiceState

        data = _as_bytes(prompt)
        self._check_prompt(data)
        state = ChoiceState(self, data, tolerance=self.tolerance)
        self.last_state = state
        yield from chosen_bytes(state, lambda: state.choose(cfg, rng))

    def _handoff_chunks(self, prompt: Text, cfg: SamplingConfig, rng: np.random.Generator) -> Generator[bytes, None, None]:
        from .handoff import handoff_chunks

        state = self.state(prompt)
        self.last_state = state
        return handoff_chunks(self, state, cfg, rng)

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, device: str = "cpu", dtype: Any = None, **kw: Any) -> ByteLM:
        from . import models

        model = models.load_model(name_or_path, device=device, dtype=dtype) if dtype is not None else models.load_model(name_or_path, device=device)
        tokenizer = models.load_tokenizer(name_or_path)
        return cls(model, tokenizer, **kw)

    # -- input checks -------------------------------------------------------------------------
    def _check_prompt(self, prompt: bytes) -> None:
        for s in self._special_texts:
            if s.encode() in prompt:
                raise ValueError(
                    f"the prompt contains the special-token text {s!r}; the tokenizer would turn it into a control "
                    "token, which has no bytes. Remove it, or feed control tokens through the token-level API"
                )
        if self.max_prompt_tokens is not None:
            n = len(self.core.encode(prompt)) + self._context_len
            if n >= self.max_prompt_tokens:
                raise ValueError(f"the prompt is {n} tokens long; the model accepts at most {self.max_prompt_tokens}. Shorten it")

    def state(self, prefix: Text = b"", *, tolerance: float | None = None) -> ByteState:
        data = _as_bytes(prefix)
        self._check_prompt(data)
        return ByteState(self, data, tolerance=self.tolerance if tolerance is None else tolerance)

    def _scoring_state(self, data: bytes) -> ByteState:
        self._check_prompt(data)
        return ByteState(self, b"", row_cache=self._rows_for(data))

    def _rows_for(self, data: bytes) -> dict[tuple[int, ...], np.ndarray]:
        """Rows for every valid token prefix spelling a prefix of `data`, in batched calls."""
        seqs = {tuple(t) for t in _core.CoverEngine.prefixes_along(self.core, data)}
        seqs.add(())
        return rows_by_prefix(self.token_lm, seqs, batch=16)


def sequence_logprob(lm: Any, seqs: list[list[int]]) -> np.ndarray:
    """log p(seq) for each seq: the backend's own method when it has one, else a sum of rows."""
    if hasattr(lm, "sequence_logprob"):
        return np.asarray(lm.sequence_logprob(seqs), dtype=np.float64)
    prefixes = [s[:k] for s in seqs for k in range(len(s))]
    rows = lm.logprobs(prefixes) if prefixes else np.empty((0, 0))
    out, i = np.zeros(len(seqs)), 0
    for j, s in enumerate(seqs):
        for t in s:
            out[j] += float(rows[i][t])
            i += 1
    return out


def chosen_bytes(state: Any, choose: Callable[[], int]) -> Generator[bytes, None, None]:
    """One byte at a time as `choose()` picks it from `state`, until EOS. `state.advance` runs
    only when the consumer asks for another byte, so no model call is spent on a byte nobody
    reads."""
    while True:
        b = choose()
        if b == EOS:
            return
        yield bytes((b,))
        state.advance(b)


def _emit(chunks: Generator[bytes, None, None], max_new_bytes: int, stops: list[bytes], as_str: bool) -> Iterator[Text]:
    """Turn a stream of byte chunks into output pieces: cut at `max_new_bytes` and at the first
    stop string (not included), hold back bytes that may begin a stop string and, for `str`
    output, partial UTF-8 characters."""
    out = bytearray()
    emitted = 0
    hold = max((len(s) for s in stops), default=1) - 1
    done = max_new_bytes == 0
    while not done:
        chunk = next(chunks, None)
        if chunk is None:
            break
        for b in chunk:
            out.append(b)
            hit = _find_stop(out, stops)
            if hit is not None:
                del out[hit:]
                done = True
                break
            if len(out) >= max_new_bytes:
                done = True
                break
        if done:
            break
        ready = _safe_end(out, emitted, len(out) - hold if stops else len(out), as_str)
        if ready > emitted:
            yield _piece(out[emitted:ready], as_str)
            emitted = ready
    chunks.close()  # stops the producer before it spends another model call
    if len(out) > emitted:
        yield _piece(out[emitted:], as_str)


def shared_trunk_logprob(lm: Any, seqs: list[list[int]], batch: int = 32) -> np.ndarray:
    """log p(seq) for sequences that share a long trunk (the covers of one prompt): the trunk is
    scored once, each remainder from next-token rows (batched; with KV reuse they cost a few
    tokens each). Scoring each whole sequence on its own would feed the prompt once per sequence."""
    if len(seqs) <= 1:
        return sequence_logprob(lm, seqs)
    n = _common_prefix(seqs)
    base = float(sequence_logprob(lm, [seqs[0][:n]])[0]) if n else 0.0
    rows = rows_by_prefix(lm, _tail_prefixes(seqs, n), batch=batch)
    return base + np.asarray(_tail_logprobs(rows, seqs, n), dtype=np.float64)


def rows_by_prefix(lm: Any, prefixes: Any, batch: int) -> dict[tuple[int, ...], np.ndarray]:
    """Next-token rows for a set of token prefixes, `batch` per call, shortest first (so that
    KV reuse finds each trunk already computed)."""
    ordered = sorted({tuple(p) for p in prefixes}, key=lambda p: (len(p), p))
    rows: dict[tuple[int, ...], np.ndarray] = {}
    for i in range(0, len(ordered), batch):
        chunk = ordered[i : i + batch]
        for p, r in zip(chunk, lm.logprobs([list(c) for c in chunk])):
            rows[p] = np.asarray(r)
    return rows


def _tail_prefixes(seqs: list[list[int]], start: int) -> set[tuple[int, ...]]:
    """The prefixes whose rows score each sequence's tokens from position `start` on."""
    return {tuple(s[:k]) for s in seqs for k in range(start, len(s))}


def _tail_logprobs(rows: Any, seqs: list[list[int]], start: int) -> list[float]:
    """sum_{k >= start} log p(s[k] | s[:k]) for each sequence, from rows keyed by prefix."""
    return [sum(float(rows[tuple(s[:k])][s[k]]) for k in range(start, len(s))) for s in seqs]


def _common_prefix(seqs: list[list[int]]) -> int:
    n = min(len(s) for s in seqs)
    first = seqs[0]
    for s in seqs[1:]:
        n = next((i for i in range(n) if s[i] != first[i]), n)
    return n


def _find_stop(out: bytearray, stops: list[bytes]) -> int | None:
    for s in stops:
        if s and out.endswith(s):
            return len(out) - len(s)
    return None


def _safe_end(out: bytearray, start: int, limit: int, as_str: bool) -> int:
    """End of the longest piece out[start:end] that can be emitted now (whole characters)."""
    end = max(start, min(limit, len(out)))
    if not as_str:
        return end
    while end > start:
        try:
            bytes(out[start:end]).decode("utf-8")
            return end
        except UnicodeDecodeError:
            end -= 1
    return start


def _piece(b: bytearray, as_str: bool) -> Text:
    return bytes(b).decode("utf-8", errors="replace") if as_str else bytes(b)


def _tokenizer_json(tokenizer: Any) -> str:
    if isinstance(tokenizer, _core.Tokenizer):
        raise TypeError("pass the Hugging Face tokenizer, not a bytecover._core.Tokenizer")
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None and hasattr(tokenizer, "to_str"):
        backend = tokenizer
    if backend is None:
        raise _core.UnsupportedTokenizerError(
            f"{type(tokenizer).__name__} is not a fast (Rust-backed) Hugging Face tokenizer; load it with use_fast=True"
        )
    return str(backend.to_str())


def _default_eos(tokenizer: Any) -> list[int]:
    ids = getattr(tokenizer, "eos_token_id", None)
    if ids is None:
        return []
    return list(ids) if isinstance(ids, (list, tuple)) else [int(ids)]


def _max_positions(model: Any) -> int | None:
    cfg = getattr(model, "config", None)
    n = getattr(cfg, "max_position_embeddings", None) if cfg is not None else None
    return int(n) if n else None

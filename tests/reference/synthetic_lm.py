"""Token LMs for tests (float64 rows, natural-log next-token distributions; see docs/design.md).

* ``RandomTokenLM``: pseudo-random rows, each a pure function of (seed, prefix).
* ``CanonicalOnlyTokenLM``: a base LM with all mass on non-valid continuations removed (and EOS
  only after canonical prefixes), renormalised.
* ``MarkovTextLM``: a byte-level Markov chain over a small alphabet that surely stops within
  ``max_len`` bytes.  Exposes its exact byte conditionals and the exactly induced token LM over
  canonical encodings under a ``ReferenceTokenizer``.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from .canonical import ReferenceTokenizer


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    m = np.max(z)
    if not np.isfinite(m):
        return np.full_like(z, -np.inf)
    return z - (m + np.log(np.sum(np.exp(z - m))))


def sequence_logprob(lm, seq: Sequence[int]) -> float:
    """log p(seq) = sum_j log p(t_j | t_<j) under ``lm``."""
    seq = list(seq)
    if not seq:
        return 0.0
    rows = np.asarray(lm.logprobs([seq[:j] for j in range(len(seq))]), dtype=np.float64)
    return float(sum(rows[j, t] for j, t in enumerate(seq)))


class RandomTokenLM:
    """Deterministic pseudo-random LM: row(prefix) = log_softmax(N(0,1) draws / temperature), the
    draws seeded by blake2b(seed, prefix).  ``eos_ids`` are recorded for callers; ``eos_bias`` is
    added to their logits (before normalising) so that EOS has a useful amount of mass."""

    def __init__(
        self,
        vocab_size: int,
        seed: int = 0,
        temperature: float = 1.0,
        eos_ids: Iterable[int] = (),
        eos_bias: float = 0.0,
    ):
        self.vocab_size = vocab_size
        self.seed = seed
        self.temperature = temperature
        self.eos_ids = tuple(eos_ids)
        self.eos_bias = eos_bias
        self.calls = 0
        self.rows_served = 0

    def row(self, prefix: Sequence[int]) -> np.ndarray:
        key = repr((self.seed, tuple(int(t) for t in prefix))).encode()
        digest = hashlib.blake2b(key, digest_size=16).digest()
        rng = np.random.default_rng(np.frombuffer(digest, dtype=np.uint32))
        z = rng.standard_normal(self.vocab_size) / self.temperature
        for e in self.eos_ids:
            z[e] += self.eos_bias
        return log_softmax(z)

    def logprobs(self, prefixes: list[Sequence[int]]) -> np.ndarray:
        self.calls += 1
        self.rows_served += len(prefixes)
        out = np.empty((len(prefixes), self.vocab_size), dtype=np.float64)
        for i, p in enumerate(prefixes):
            out[i] = self.row(p)
        return out


class CanonicalOnlyTokenLM:
    """``base`` restricted to valid continuations: token t after prefix is kept iff prefix + [t] is
    valid (EOS iff prefix is canonical), then renormalised.  If nothing survives (the prefix is
    itself invalid) the base row is returned unchanged; it is multiplied by p(prefix) = 0 anyway."""

    def __init__(self, ref: ReferenceTokenizer, base, eos_ids: Iterable[int] | None = None):
        self.ref = ref
        self.base = base
        self.vocab_size = base.vocab_size
        self.eos_ids = tuple(eos_ids if eos_ids is not None else getattr(base, "eos_ids", ()))
        self.calls = 0
        self.rows_served = 0
        self._cache: dict[tuple[int, ...], np.ndarray] = {}

    def _mask(self, prefix: tuple[int, ...]) -> np.ndarray:
        keep = np.zeros(self.vocab_size, dtype=bool)
        for t in range(self.vocab_size):
            if t in self.eos_ids:
                keep[t] = self.ref.is_canonical(prefix)
            elif self.ref.token_bytes[t] is not None:
                keep[t] = self.ref.is_valid(prefix + (t,))
        return keep

    def logprobs(self, prefixes: list[Sequence[int]]) -> np.ndarray:
        self.calls += 1
        self.rows_served += len(prefixes)
        out = np.empty((len(prefixes), self.vocab_size), dtype=np.float64)
        base_rows = np.asarray(self.base.logprobs(prefixes), dtype=np.float64)
        for i, p in enumerate(prefixes):
            key = tuple(int(t) for t in p)
            if key not in self._cache:
                keep = self._mask(key)
                row = np.where(keep, base_rows[i], -np.inf)
                self._cache[key] = log_softmax(row) if keep.any() else base_rows[i]
            out[i] = self._cache[key]
        return out


class MarkovTextLM:
    """First-order byte Markov chain over ``alphabet`` (bytes, each a single ASCII byte).

    From state ``last`` (the previous byte, or None at the start) the text stops with probability
    ``stop[last]``, otherwise emits byte b with probability ``trans[last][b]``; after ``max_len``
    bytes it stops surely.  Parameters are drawn from ``seed``."""

    def __init__(self, alphabet: bytes | str, max_len: int = 6, seed: int = 0, stop_range=(0.1, 0.35)):
        self.alphabet = alphabet.encode() if isinstance(alphabet, str) else bytes(alphabet)
        assert all(b < 0x80 for b in self.alphabet), "ASCII alphabet only"
        self.max_len = max_len
        rng = np.random.default_rng(seed)
        states = [None, *self.alphabet]
        self.stop = {s: float(rng.uniform(*stop_range)) for s in states}
        self.trans = {s: dict(zip(self.alphabet, rng.dirichlet(np.ones(len(self.alphabet))).tolist())) for s in states}

    # -- exact byte-level conditionals ------------------------------------------------------------
    def next_byte_probs(self, text: bytes) -> np.ndarray:
        """(257,) probabilities of the next byte (index 256 = EOS) after user text ``text``."""
        out = np.zeros(257)
        if len(text) >= self.max_len:
            out[256] = 1.0
            return out
        last = text[-1] if text else None
        out[256] = self.stop[last]
        for b, p in self.trans[last].items():
            out[b] = (1.0 - self.stop[last]) * p
        return out

    def next_byte_logprobs(self, text: bytes) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.next_byte_probs(text))

    def text_prob(self, text: bytes) -> float:
        """Probability that the whole text is exactly ``text``."""
        p = 1.0
        for i in range(len(text) + 1):
            probs = self.next_byte_probs(text[:i])
            p *= probs[text[i]] if i < len(text) else probs[256]
        return p

    def prefix_prob(self, text: bytes) -> float:
        """P(text...): probability that the text starts with ``text``."""
        p = 1.0
        for i in range(len(text)):
            p *= self.next_byte_probs(text[:i])[text[i]]
        return p

    def texts(self):
        """Every text with positive probability, with that probability (they sum to 1)."""
        for n in range(self.max_len + 1):
            for chars in itertools.product(self.alphabet, repeat=n):
                text = bytes(chars)
                yield text, self.text_prob(text)

    def token_lm(self, ref: ReferenceTokenizer, eos_id: int) -> "InducedTokenLM":
        return InducedTokenLM(self, ref, eos_id)


class InducedTokenLM:
    """The token LM that a Markov text model induces over canonical encodings: p(t | prefix) =
    mass of texts whose encoding starts with prefix + [t] / mass of those starting with prefix;
    p(EOS | prefix) = mass of texts whose encoding is exactly prefix / the same denominator.
    Unreachable prefixes get a uniform row."""

    def __init__(self, markov: MarkovTextLM, ref: ReferenceTokenizer, eos_id: int):
        self.vocab_size = ref.vocab_size
        self.eos_ids = (eos_id,)
        self.calls = 0
        self.rows_served = 0
        self.prefix_mass: dict[tuple[int, ...], float] = defaultdict(float)
        self.end_mass: dict[tuple[int, ...], float] = defaultdict(float)
        for text, p in markov.texts():
            ids = tuple(ref.encode(ref.start_prefix + text))
            # The empty text is encoded as [], which spells b"" rather than the start prefix.
            assert ref.decode(ids) == (ref.start_prefix + text if ids else b""), (text, ids)
            for j in range(len(ids) + 1):
                self.prefix_mass[ids[:j]] += p
            self.end_mass[ids] += p
        self._rows: dict[tuple[int, ...], np.ndarray] = {}

    def row(self, prefix: Sequence[int]) -> np.ndarray:
        key = tuple(int(t) for t in prefix)
        if key in self._rows:
            return self._rows[key]
        total = self.prefix_mass.get(key, 0.0)
        if total <= 0.0:
            row = np.full(self.vocab_size, -math.log(self.vocab_size))
        else:
            probs = np.zeros(self.vocab_size)
            for t in range(self.vocab_size):
                probs[t] = self.prefix_mass.get(key + (t,), 0.0)
            probs[self.eos_ids[0]] += self.end_mass.get(key, 0.0)
            with np.errstate(divide="ignore"):
                row = np.log(probs / total)
        self._rows[key] = row
        return row

    def logprobs(self, prefixes: list[Sequence[int]]) -> np.ndarray:
        self.calls += 1
        self.rows_served += len(prefixes)
        return np.stack([self.row(p) for p in prefixes]) if prefixes else np.zeros((0, self.vocab_size))

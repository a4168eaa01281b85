"""HFTokenLM against plain uncached forwards on tiny random models (plus SmolLM2 when present)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

try:
    from bytecover.backends.hf import HFTokenLM
    from bytecover.backends.protocol import TokenLM, TokenLMBase
    from bytecover.tokenizer_support import detect_start_ids
except ImportError:  # source checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
    from bytecover.backends.hf import HFTokenLM
    from bytecover.backends.protocol import TokenLM, TokenLMBase
    from bytecover.tokenizer_support import detect_start_ids

BOS = 1
SMOLLM2 = Path.home() / ".cache" / "bytecover" / "models" / "smollm2-135m"


def tiny_llama(vocab: int = 50, seed: int = 0, **overrides):
    """A seeded 2-layer Llama small enough to run hundreds of forwards per test."""
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512, **overrides,
    )
    return transformers.AutoModelForCausalLM.from_config(cfg).eval()


class FakeTokenizer:
    """Tokenizer-shaped object: `len` gives the id count, encoding "a" shows the BOS it adds."""

    def __init__(self, n_ids: int, bos: int | None = BOS):
        self.n_ids, self.bos_token_id = n_ids, bos

    def __len__(self) -> int:
        return self.n_ids

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        ids = [5]
        return {"input_ids": ([self.bos_token_id] if add_special_tokens and self.bos_token_id is not None else []) + ids}


def _bytes_per_token(model) -> int:
    """Keys + values of one token over all layers (float32), as the prefix cache sizes its arena."""
    cfg = model.config
    dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * dim * 4


_REFERENCE: dict = {}


def reference_rows(model, prefixes, start=(BOS,), width=None) -> np.ndarray:
    """One full forward per prefix, no cache: the ground truth (memoised: forwards are slow here)."""
    rows = []
    with torch.inference_mode():
        for p in prefixes:
            key = (model, tuple(start), tuple(int(t) for t in p), width)
            if key not in _REFERENCE:
                logits = model(torch.tensor([list(start) + list(p)])).logits[0, -1].float()
                _REFERENCE[key] = torch.log_softmax(logits[:width], dim=-1).numpy()
            rows.append(_REFERENCE[key])
    return np.stack(rows)


@pytest.fixture(scope="module")
def llama():
    return tiny_llama()


def test_protocol_and_shapes(llama):
    lm = HFTokenLM(llama, FakeTokenizer(50))
    assert isinstance(lm, TokenLM)
    assert lm.start_ids == [BOS] and lm.vocab_size == 50
    out = lm.logprobs([[3, 4], [], [7]])
    assert out.shape == (3, 50) and out.dtype == np.float32
    np.testing.assert_allclose(np.logaddexp.reduce(out.astype(np.float64), axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(out, reference_rows(llama, [[3, 4], [], [7]]), atol=1e-5)
    assert lm.logprobs([]).shape == (0, 50)


# A call sequence: each step moves a "trunk" (grow / branch back / jump to unrelated text) and
# asks for a batch of 1-8 prefixes = trunk + 0-3 extra tokens, like the byte engine does.
token = st.integers(0, 49)
step = st.tuples(
    st.sampled_from(["grow", "back", "jump", "same"]),
    st.lists(token, min_size=1, max_size=4),
    st.integers(0, 30),
    st.lists(st.lists(token, max_size=3), min_size=1, max_size=8),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    start=st.lists(token, max_size=25),
    steps=st.lists(step, min_size=1, max_size=8),
    memo=st.sampled_from([0, 64]),
    budget_tokens=st.sampled_from([64, 100, 4096]),
)
def test_cached_rows_equal_full_forward(llama, start, steps, memo, budget_tokens):
    """Whatever the cache holds (a budget of 64 tokens forces eviction and compaction), rows
    equal uncached forwards."""
    lm = HFTokenLM(llama, bos_ids=[BOS], vocab_size=50, memo_size=memo, kv_budget_mb=budget_tokens * _bytes_per_token(llama) / 2**20)
    trunk = list(start)
    for kind, new, back, tails in steps:
        if kind == "grow":
            trunk += new
        elif kind == "back":
            trunk = trunk[: max(0, len(trunk) - back)] + new[:1]
        elif kind == "jump":
            trunk = new * 3
        prefixes = [trunk + t for t in tails]
        out = lm.logprobs(prefixes)
        np.testing.assert_allclose(out, reference_rows(llama, prefixes), atol=1e-5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    trunks=st.lists(st.lists(token, min_size=0, max_size=12), min_size=1, max_size=5),
    rounds=st.lists(st.lists(st.tuples(st.integers(0, 4), st.lists(token, min_size=0, max_size=3)), min_size=1, max_size=6), min_size=1, max_size=4),
    budget_tokens=st.sampled_from([48, 4096]),
)
def test_batches_from_many_trunks_equal_full_forward(llama, trunks, rounds, budget_tokens):
    """Requests of unrelated sequences (several trunks, each with tails) in one call: rows equal
    uncached forwards, one forward per call, and the cache stays within its budget."""
    budget = budget_tokens * _bytes_per_token(llama)
    lm = HFTokenLM(llama, bos_ids=[BOS], vocab_size=50, memo_size=0, kv_budget_mb=budget / 2**20, max_tree_tokens=10_000)
    for batch in rounds:
        prefixes = [trunks[i % len(trunks)] + tail for i, tail in batch]
        calls = lm.n_calls
        out = lm.logprobs(prefixes)
        np.testing.assert_allclose(out, reference_rows(llama, prefixes), atol=1e-5)
        assert lm.n_calls - calls <= 1 or budget_tokens < 64  # a tiny arena may not hold a batch
        assert lm.cache_stats()["bytes"] <= budget
        trunks = [t + tail for t, (_, tail) in zip(trunks, batch)] or trunks


def test_cache_reports_hits_and_feeds_only_new_tokens(llama):
    lm = HFTokenLM(llama, bos_ids=[BOS], vocab_size=50, memo_size=0)
    a, b = list(range(2, 22)), list(range(22, 42))
    lm.logprobs([a, b])
    assert lm.cache_stats()["tokens_fed"] == 41  # the start token once, then both trunks
    lm.logprobs([a + [3], b + [4], b + [5]])
    stats = lm.cache_stats()
    assert stats["tokens_fed"] == 44 and stats["tokens_cached"] == 21 + 21 + 21
    assert 0 < stats["hit_rate"] < 1 and stats["nodes"] == 44


def test_uncached_path_matches(llama):
    lm = HFTokenLM(llama, bos_ids=[BOS], vocab_size=50, cache_reuse=False, max_batch_tokens=10)
    prefixes = [[1, 2, 3], [4], [], [9] * 12, [1, 2, 3, 4, 5]]
    np.testing.assert_allclose(lm.logprobs(prefixes), reference_rows(llama, prefixes), atol=1e-5)


def test_gemma3_layer_types_match():
    """Models with sliding and full layers get one tree mask per layer type."""
    torch.manual_seed(2)
    cfg = transformers.Gemma3TextConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                                        num_key_value_heads=1, head_dim=16, sliding_window=4, max_position_embeddings=256,
                                        layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"])
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    lm = HFTokenLM(model, bos_ids=[BOS], vocab_size=50)
    rng = np.random.default_rng(3)
    trunks = [list(rng.integers(0, 50, 9)), list(rng.integers(0, 50, 5))]
    for _ in range(6):
        for t in trunks:
            t.append(int(rng.integers(50)))
        prefixes = [t + list(rng.integers(0, 50, k)) for t in trunks for k in (0, 2)]
        np.testing.assert_allclose(lm.logprobs(prefixes), reference_rows(model, prefixes), atol=1e-5)


def test_sliding_window_model_matches():
    """Cache reuse stays exact when layers only see a window of 3 past tokens."""
    torch.manual_seed(1)
    cfg = transformers.MistralConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=2, num_key_value_heads=1, sliding_window=3)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    lm = HFTokenLM(model, bos_ids=[BOS], vocab_size=50)
    rng = np.random.default_rng(0)
    trunk = list(rng.integers(0, 50, 8))
    for _ in range(10):
        trunk.append(int(rng.integers(50)))
        prefixes = [trunk + list(rng.integers(0, 50, k)) for k in (0, 1, 2, 1)]
        np.testing.assert_allclose(lm.logprobs(prefixes), reference_rows(model, prefixes), atol=1e-5)


def test_padding_columns_trimmed():
    model = tiny_llama(vocab=40)
    lm = HFTokenLM(model, FakeTokenizer(37))
    assert lm.vocab_size == 37 and lm.n_logits == 40
    prefixes = [[3, 36], [], [5, 6, 7]]
    out = lm.logprobs(prefixes)
    assert out.shape == (3, 37)
    np.testing.assert_allclose(out, reference_rows(model, prefixes, width=37), atol=1e-5)
    np.testing.assert_allclose(np.logaddexp.reduce(out.astype(np.float64), axis=1), 0.0, atol=1e-5)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        lm.logprobs([[38]])


def test_narrower_logits_raise():
    with pytest.raises(ValueError, match=r"30 logits.*37 ids"):
        HFTokenLM(tiny_llama(vocab=30), FakeTokenizer(37))


def test_nan_logits_raise():
    model = tiny_llama(seed=3)
    model.lm_head.register_forward_hook(lambda mod, inp, out: out * float("nan"))
    lm = HFTokenLM(model, bos_ids=[BOS], vocab_size=50)
    with pytest.raises(FloatingPointError, match=r"\[4, 2\]"):
        lm.logprobs([[4, 2]])


def test_nan_row_in_a_block_names_its_prefix():
    # Rows of one request are normalised as one block; the error still names the bad row's prefix.
    model = tiny_llama(seed=3)

    def poison_second_row(mod, inp, out):
        out = out.clone()
        out[:, 1] = float("nan")
        return out

    model.lm_head.register_forward_hook(poison_second_row)
    lm = HFTokenLM(model, bos_ids=[BOS], vocab_size=50)
    with pytest.raises(FloatingPointError, match=r"\[7, 7, 7\]"):
        lm.logprobs([[4, 2], [7, 7, 7], [9]])


@pytest.mark.parametrize(("poison", "message"), [
    (lambda out: out.index_fill(-1, torch.tensor([5]), float("inf")), "NaN/inf logits"),
    (lambda out: torch.full_like(out, float("-inf")), "all logits are -inf"),
])
def test_posinf_or_all_neg_inf_logits_raise(poison, message):
    # A +inf logit and a row with no finite logit are refused like NaN, each with its own cause.
    model = tiny_llama(seed=3)
    model.lm_head.register_forward_hook(lambda mod, inp, out: poison(out))
    lm = HFTokenLM(model, bos_ids=[BOS], vocab_size=50)
    with pytest.raises(FloatingPointError, match=message):
        lm.logprobs([[4, 2], [9]])


def test_bfloat16_model_runs():
    model = tiny_llama(seed=4).to(torch.bfloat16)
    lm = HFTokenLM(model, bos_ids=[BOS], vocab_size=50)
    trunk = [3, 1, 4, 1, 5, 9, 2, 6]
    lm.logprobs([trunk])
    out = lm.logprobs([trunk + [5], trunk + [3, 5]])
    assert out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_allclose(np.logaddexp.reduce(out.astype(np.float64), axis=1), 0.0, atol=1e-5)
    ref = reference_rows(model, [trunk + [5], trunk + [3, 5]])
    np.testing.assert_allclose(out, ref, atol=0.1)  # bf16 rounding differs between cached/uncached


def test_sequence_logprob(llama):
    lm = HFTokenLM(llama, bos_ids=[BOS], vocab_size=50, max_batch_tokens=12)
    seqs = [[3, 4, 5], [], [7], [8, 8, 8, 8, 8, 8, 2], [3, 4]]
    got = lm.sequence_logprob(seqs)
    assert got.dtype == np.float64 and got[1] == 0.0
    expected = [sum(reference_rows(llama, [s[:j]])[0, t] for j, t in enumerate(s)) for s in seqs]
    np.testing.assert_allclose(got, expected, atol=1e-4)
    default = TokenLMBase.sequence_logprob(HFTokenLM(llama, bos_ids=[BOS], vocab_size=50), seqs)
    np.testing.assert_allclose(default, expected, atol=1e-4)


def test_counters_and_memo(llama):
    lm = HFTokenLM(llama, bos_ids=[BOS], vocab_size=50)
    trunk = list(range(2, 42))
    lm.logprobs([trunk])
    assert (lm.n_calls, lm.n_tokens_fed) == (1, 41)
    lm.logprobs([trunk + [t] for t in (3, 4, 5, 6)])  # trunk extended by one token, batch 4
    assert (lm.n_calls, lm.n_tokens_fed) == (2, 45)
    lm.logprobs([trunk + [4, t] for t in (7, 8)])  # next byte: one of them grew
    assert (lm.n_calls, lm.n_tokens_fed) == (3, 47)
    lm.logprobs([trunk + [4, 7], trunk + [4, 8]])  # repeated request: memo, no forward
    assert (lm.n_calls, lm.n_tokens_fed) == (3, 47)
    lm.logprobs([trunk[:10] + [1], trunk[:10] + [2]])  # diverge: crop back, feed only the tails
    assert (lm.n_calls, lm.n_tokens_fed) == (4, 49)


def test_start_tokens():
    assert detect_start_ids(FakeTokenizer(50)) == [BOS]
    assert detect_start_ids(FakeTokenizer(50, bos=None)) == []
    lm = HFTokenLM(tiny_llama(), FakeTokenizer(50, bos=None))
    assert lm.start_ids == []
    with pytest.raises(ValueError, match="start tokens"):
        lm.logprobs([[]])
    with pytest.raises(ValueError, match="start tokens"):
        lm.sequence_logprob([[3, 4]])
    np.testing.assert_allclose(lm.logprobs([[3, 4]]), reference_rows(lm.model, [[3, 4]], start=()), atol=1e-5)


@pytest.mark.model
@pytest.mark.skipif(not (SMOLLM2 / "config.json").exists(), reason="SmolLM2-135M not converted yet")
def test_smollm2_knows_paris():
    tok = transformers.AutoTokenizer.from_pretrained(SMOLLM2)
    model = transformers.AutoModelForCausalLM.from_pretrained(SMOLLM2, dtype=torch.float32)
    lm = HFTokenLM(model, tok)
    assert lm.vocab_size == len(tok)
    ids = tok("The capital of France is", add_special_tokens=False)["input_ids"]
    row = lm.logprobs([ids])[0]
    assert tok.decode([int(row.argmax())]) == " Paris"
    np.testing.assert_allclose(row, reference_rows(model, [ids], start=lm.start_ids)[0], atol=1e-4)


def test_fast_linears_give_the_same_rows_and_leave_the_model_as_it_was(llama):
    """`W @ x.T` in place of torch's linear (forced on, whatever the start-up timing chose):
    the same rows up to float32 rounding, one row or several, and the model untouched after."""
    from bytecover.backends.fast_linear import FastLinears

    lm = HFTokenLM(llama, bos_ids=[BOS], vocab_size=50)
    assert lm.fast_linears is not None and len(lm.fast_linears.modules) == 2 * 7 + 1  # q k v o gate up down per layer + head
    fl = lm.fast_linears
    fl.force(True)
    swapped: list[int] = []
    project = fl._project
    fl._project = lambda x, w, b: swapped.append(x.shape[-2]) or project(x, w, b)  # type: ignore[method-assign]
    trunk = [3, 4, 5, 6, 7, 8]
    many = [[a, b] for a in range(9, 17) for b in range(20, 28)]  # 64 prefixes, 72 new tokens: torch's path
    for extra in ([[]], [[9]], [[9], [10], [11, 12]], [[t] for t in range(20)], many):  # 1, 1, 3, 20 and 72 rows
        prefixes = [trunk + e for e in extra]
        np.testing.assert_allclose(lm.logprobs(prefixes), reference_rows(llama, prefixes), atol=1e-5)
        trunk.append(13)
    assert {1, 3, 20, 72} <= set(swapped)  # each band ran, and the prefill size too
    assert [fl.swaps(n) for n in (1, 3, 8, 20, 48, 49, 72)] == [True] * 5 + [False] * 2
    assert not any("forward" in vars(m) for m in llama.modules())
    # A second model of the same shapes reuses this process's verdicts: no probe forwards.
    calibrate = FastLinears._calibrate
    FastLinears._calibrate = lambda self, model: pytest.fail("calibrated twice")  # type: ignore[method-assign]
    try:
        again = FastLinears(llama)
    finally:
        FastLinears._calibrate = calibrate  # type: ignore[method-assign]
    assert again.timings == lm.fast_linears.timings and again.wins is not fl.wins
    off = FastLinears(llama)
    off.force(False)
    with off.active():
        assert not any("forward" in vars(m) for m in llama.modules())
    half = tiny_llama().to(torch.bfloat16)
    assert FastLinears(half).modules == [] and not FastLinears(half).enabled

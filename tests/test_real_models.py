"""Real models end to end (the quick subset CI always runs; the long ones are marked slow)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bytecover import ByteLM, Ensemble, models


def _load(name: str) -> ByteLM:
    if not models.is_converted(name):
        pytest.skip(f"{name} is not in the cache; run `bytecover prepare`")
    return ByteLM.from_pretrained(name)


@pytest.fixture(scope="module")
def smol() -> ByteLM:
    return _load("smollm2-135m")


def test_smollm2_mid_token_prompt_continues_the_word(smol: ByteLM) -> None:
    # The prompt ends inside "France": the exact byte model finishes the word, greedy.
    out = smol.generate("The capital of Fra", max_new_bytes=12, temperature=0)
    assert out.startswith("nce is Paris"), out


def test_smollm2_chain_rule_and_reported_noncanonical_mass(smol: ByteLM) -> None:
    """Σ per-byte log-probs + log P(EOS) = canonical token log-likelihood + removed mass (1e-4)."""
    text = "Hello, world!"
    sc = smol.score(text)
    ids = list(smol.core.encode(text.encode()))
    tl = smol.token_lm
    rows = tl.logprobs([ids[:k] for k in range(len(ids) + 1)])
    canon = sum(float(rows[k][t]) for k, t in enumerate(ids)) + float(np.logaddexp.reduce(rows[len(ids)][smol.eos_ids]))
    assert sc.noncanonical_nats >= -1e-9
    assert abs(sc.logprob - (canon + sc.noncanonical_nats)) <= 1e-4, (sc.logprob, canon, sc.noncanonical_nats)
    assert abs(sc.prefix_logprob / (len(text) * math.log(2)) + sc.bits_per_byte) <= 1e-12


def test_smollm2_distribution_is_normalised_inside_whitespace_and_characters(smol: ByteLM) -> None:
    for prefix in [b"def f(x):\n    ", "caf\u00e9".encode()[:4], b"x  "]:
        lp = smol.next_byte_logprobs(prefix)
        assert lp.shape == (257,)
        assert abs(np.logaddexp.reduce(lp)) <= 1e-9


def test_gemma3_newlines_are_text() -> None:
    gemma = _load("gemma3-270m")
    lp = gemma.next_byte_logprobs("def f(x):\n    return x\n")
    assert abs(np.logaddexp.reduce(lp)) <= 1e-9
    assert lp[ord("\n")] > -30  # Gemma's "\n" tokens are text, not control tokens


def test_real_two_model_ensemble_quick(smol: ByteLM) -> None:
    gemma = _load("gemma3-270m")
    ens = Ensemble([smol, gemma], mode="mixture")
    out = ens.generate("The capital of Fra", max_new_bytes=6, temperature=0)
    assert isinstance(out, str) and out.startswith("nce")
    sc = ens.score(b"Hi there")
    assert np.isfinite(sc.per_byte).all() and 0 < sc.bits_per_byte < 8


def test_smollm2_lazy_greedy_equals_full_distribution_greedy(smol: ByteLM) -> None:
    # Greedy byte by byte goes through the lazy engine (bounds, rows on demand); it must pick the
    # argmax of the full exact distribution at every byte, and needs well under a call per byte.
    prompt = b"def fibonacci(n):\n    if n <= 1:\n        retu"
    smol.token_lm.reset_cache()  # type: ignore[attr-defined]
    lazy = smol.generate(prompt, max_new_bytes=20, temperature=0)
    calls = smol.last_state.stats.model_calls
    state, full = smol.state(prompt), b""
    for _ in range(20):
        b = int(np.argmax(state.distribution().logprobs))
        if b == 256:
            break
        full += bytes((b,))
        state.advance(b)
    assert lazy == full, (lazy, full)
    assert calls <= 0.6 * len(lazy), (calls, len(lazy))


def test_smollm2_speculative_rows_change_calls_not_text(smol: ByteLM) -> None:
    # Drafts only fetch rows ahead; the bytes chosen (lazy byte by byte, and the hand-off) must
    # not change, and on repetitive code the drafts must save calls.
    prompt = b"a = np.array([1, 2, 3])\nb = np.array([4, 5, 6])\nc = np.arr"
    out: dict[tuple[int, bool], tuple[bytes, int]] = {}
    for speculate in (0, 3):
        for bytewise in (True, False):
            smol.speculate = speculate
            smol.token_lm.reset_cache()  # type: ignore[attr-defined]
            calls0 = smol.token_lm.n_calls  # type: ignore[attr-defined]
            text = smol.generate(prompt, max_new_bytes=24, temperature=0, bytewise=bytewise)
            out[speculate, bytewise] = (text, smol.token_lm.n_calls - calls0)  # type: ignore[attr-defined]
    smol.speculate = 3
    for bytewise in (True, False):
        assert out[0, bytewise][0] == out[3, bytewise][0]
    assert out[3, True][1] + out[3, False][1] < out[0, True][1] + out[0, False][1], out


def test_smollm2_batched_generation_and_scoring_equal_one_at_a_time(smol: ByteLM) -> None:
    """The scheduler and the prefix cache on a real model: a batch of mid-token prompts gives
    each prompt's greedy continuation alone, and a list of texts scores as each text alone."""
    prompts = ["The capital of Fra", "def add(a, b):\n    retu", "x = np.arr", "Hello wor"]
    alone = [smol.generate(p, max_new_bytes=10, temperature=0) for p in prompts]
    assert smol.generate(prompts, max_new_bytes=10, temperature=0, batch=4) == alone
    stats = smol.token_lm.cache_stats()  # type: ignore[attr-defined]
    assert stats["tokens_cached"] > 0 and stats["bytes"] <= stats["budget_bytes"]
    texts = ["Hello, world!", "def f(x):\n    return x + 1\n", "  two  spaces"]
    one = [smol.score(t) for t in texts]
    many = smol.score(texts)
    for a, b in zip(one, many):
        np.testing.assert_allclose(b.per_byte, a.per_byte, atol=1e-4)
        assert abs(a.logprob - b.logprob) < 1e-4
    # Whole-text values without per-byte surprisal: the same numbers (float32 rows computed in
    # different forwards differ in the last bits), from about one row per canonical token.
    whole = smol.score(texts, per_byte=False)
    for t, a, w in zip(texts, one, whole):
        assert w.per_byte is None
        assert abs(a.prefix_logprob - w.prefix_logprob) < 1e-4 and abs(a.logprob - w.logprob) < 1e-4
        assert smol.last_score_stats.rows <= sum(len(smol.core.encode(x.encode())) + 8 for x in texts)


def test_score_cli_writes_one_json_line_per_file(smol: ByteLM, tmp_path: Path) -> None:
    """`bytecover score` on real files: the library's values, per-byte surprisal only when
    asked; a missing file is a clear error before any model is loaded."""
    texts = {"a.txt": "Hello, world!\n", "b.py": "def f(x):\n    return  x\n"}
    for name, text in texts.items():
        (tmp_path / name).write_text(text)
    files = [str(tmp_path / n) for n in texts]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bytecover", "score", *args], capture_output=True, text=True, timeout=300)

    for extra in ([], ["--per-byte"]):
        run = cli(*files, "--model", "smollm2-135m", *extra)
        assert run.returncode == 0, run.stderr
        recs = [json.loads(line) for line in run.stdout.splitlines()]
        assert [r["file"] for r in recs] == files
        for r, text in zip(recs, texts.values()):
            want = smol.score(text)
            assert r["bytes"] == len(text.encode()) and abs(r["bits_per_byte"] - want.bits_per_byte) < 1e-5
            assert abs(r["logprob"] - want.logprob) < 1e-4
            if extra:
                assert len(r["per_byte"]) == r["bytes"] and abs(sum(r["per_byte"]) - r["bits_per_byte"] * r["bytes"]) < 1e-3
            else:
                assert "per_byte" not in r
    bad = cli(str(tmp_path / "nope.txt"), "--model", "smollm2-135m")
    assert bad.returncode == 2 and "not a readable file" in bad.stderr and "nope.txt" in bad.stderr

"""How close are the vLLM backend's float32 rows to the transformers backend's, and how close is
either to the same model computed in float64?

The vLLM tests compare rows with `HFTokenLM` to 1e-4. This measures what that bound means: for
random batches of token prefixes, drawn as `tests/test_vllm_backend.py` draws them (a trunk, up to
8 prefixes cut from it with up to 4 extra tokens each), the largest difference between

  vLLM float32 - HF float32,   HF float32 - HF float64,   vLLM float32 - HF float64

in log-probabilities and in probabilities, over the whole vocabulary, the log-probability of
the token where the vLLM-HF gap is largest, and the log-probability gaps over the tokens with
probability >= 1e-4 only. Two kinds of trunk alternate: uniformly random
ordinary token ids (what the hypothesis test used to draw), and windows of tokenized text (what
the byte engine asks for). HF rows are computed one prefix per forward (the vLLM environment's
transformers 5.19 pads batches wrongly, see docs/backends.md).

Runs in the vLLM environment:

    ./.ci/vllm-env python benches/bench_row_accuracy.py --model smollm2-135m --batches 24

Writes benches/results/backends/<model>-row-accuracy.json (provenance inside) and a plot.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bytecover import ByteLM, models
from bytecover.backends.hf import HFTokenLM
from bytecover.evaluation.provenance import provenance

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "benches" / "results" / "backends"
TEXT = ROOT / "README.md"  # ordinary prose and code, tokenized as the byte engine would see it


def _batch(rng: random.Random, trunk: list[int], ordinary: list[int]) -> list[list[int]]:
    prefixes = []
    for _ in range(rng.randint(1, 8)):
        cut = rng.randint(0, len(trunk))
        prefixes.append(trunk[:cut] + [rng.choice(ordinary) for _ in range(rng.randint(0, 4))])
    return prefixes


def run(model: str, n_batches: int, seed: int) -> dict[str, Any]:
    tok = models.load_tokenizer(model)
    v = ByteLM.from_pretrained(model, backend="vllm")
    tl = v.token_lm
    start = list(tl.start_ids)  # type: ignore[attr-defined]
    h32 = HFTokenLM(models.load_model(model), tok, bos_ids=start, cache_reuse=False)
    h64 = HFTokenLM(models.load_model(model).double(), tok, bos_ids=start, cache_reuse=False)
    special = set(v.core.special_ids)
    ordinary = [t for t in range(tl.vocab_size) if t not in special]
    text_ids = tok.encode(TEXT.read_text(encoding="utf-8")[:20000])
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for k in tqdm(range(n_batches), desc=f"row accuracy {model}", unit="batch"):
        if k % 2 == 0:
            kind, trunk = "random ids", [rng.choice(ordinary) for _ in range(rng.randint(0, 40))]
        else:
            at = rng.randrange(len(text_ids) - 60)
            kind, trunk = "text", text_ids[at : at + rng.randint(0, 40)]
        prefixes = _batch(rng, trunk, ordinary if kind == "random ids" else text_ids)
        tl._memo.clear()  # type: ignore[attr-defined]  # a memoised row would skip the engine
        a = tl.logprobs(prefixes).astype(np.float64)
        b = np.stack([h32.logprobs([p])[0] for p in prefixes]).astype(np.float64)
        c = np.stack([h64.logprobs([p])[0] for p in prefixes]).astype(np.float64)
        worst = np.unravel_index(int(np.argmax(np.abs(a - b))), a.shape)
        rows.append({"kind": kind, "prefixes": len(prefixes), "longest": max(map(len, prefixes)),
                     "logprob": {"vllm_hf32": float(np.abs(a - b).max()), "hf32_hf64": float(np.abs(b - c).max()),
                                 "vllm_hf64": float(np.abs(a - c).max())},
                     "prob": {"vllm_hf32": float(np.abs(np.exp(a) - np.exp(b)).max()), "hf32_hf64": float(np.abs(np.exp(b) - np.exp(c)).max()),
                              "vllm_hf64": float(np.abs(np.exp(a) - np.exp(c)).max())},
                     "logprob_where_vllm_hf32_is_largest": float(c[worst]),
                     # the same gap restricted to tokens that carry mass (p >= 1e-4 in float64)
                     "logprob_p_ge_1e-4": {"vllm_hf32": float(np.abs(a - b)[c >= np.log(1e-4)].max()),
                                           "hf32_hf64": float(np.abs(b - c)[c >= np.log(1e-4)].max())}})
    summary = {kind: {space: {pair: max(r[space][pair] for r in rows if r["kind"] == kind) for pair in rows[0][space]}
                      for space in ("logprob", "prob", "logprob_p_ge_1e-4")} for kind in ("random ids", "text")}
    return {"model": model, "batches": n_batches, "seed": seed, "rows": rows, "max": summary}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    pairs = ("vllm_hf32", "hf32_hf64", "vllm_hf64")
    for ax, space in zip(axes, ("logprob", "prob")):
        for i, kind in enumerate(("random ids", "text")):
            vals = [r[space][p] for r in result["rows"] if r["kind"] == kind for p in pairs]
            xs = [j + 0.2 * (i - 0.5) for r in result["rows"] if r["kind"] == kind for j in range(len(pairs))]
            ax.scatter(xs, vals, s=12, label=kind)
        ax.set_xticks(range(len(pairs)), ["vLLM - HF32", "HF32 - HF64", "vLLM - HF64"])
        ax.set_yscale("log")
        ax.axhline(1e-4, color="grey", linestyle="--", linewidth=0.8)
        ax.set_title(f"max |difference| per batch ({'log-probabilities' if space == 'logprob' else 'probabilities'})")
        ax.legend()
    fig.suptitle(f"{result['model']}: float32 rows, vLLM vs transformers vs float64")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batches", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    result = run(args.model, args.batches, args.seed)
    result["provenance"] = provenance(shlex.join(["benches/bench_row_accuracy.py", *(argv if argv is not None else sys.argv[1:])]), args.model)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / f"{args.model}-row-accuracy.json"
    out.write_text(json.dumps(result, indent=1))
    plot(result, out.with_suffix(".png"))
    for kind, per in result["max"].items():
        print(kind, "  ".join(f"{space} {pair} {v:.1e}" for space, d in per.items() for pair, v in d.items()))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One forward of our own, with torch's linear layers and with `bytecover.backends.fast_linear`.

For each token count k, the prompt is cached first, then one call asks for k sibling rows (k
tokens fed in one tree-mask forward, k rows of logits), as the byte engine does. Both variants
alternate, `--repeats` times each; the median goes to benches/results/forward/<model>.json with a
plot next to it.

    ./.ci/bootstrap python benches/bench_forward.py --model smollm2-135m
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bytecover import ByteLM, models
from bytecover.backends.fast_linear import BANDS

OUT_DIR = Path(__file__).resolve().parent / "results" / "forward"
PROMPT = b"Once upon a time there was a little girl named Emma who lived in a small village. She"


def run(model_name: str, counts: list[int], repeats: int) -> dict[str, Any]:
    lm = ByteLM.from_pretrained(model_name)
    tl: Any = lm.token_lm
    fast = tl.fast_linears
    base = list(lm.core.encode(PROMPT))
    times: dict[str, dict[int, list[float]]] = {"torch": {k: [] for k in counts}, "fast": {k: [] for k in counts}}
    bar = tqdm(total=repeats * len(counts) * 2, desc=f"forwards {model_name}", unit="call")
    for r in range(repeats):
        for k in counts:
            for variant in ("fast", "torch"):
                tl.fast_linears = fast if variant == "fast" else None
                tl.reset_cache()
                tl.logprobs([base])  # the cached prompt
                prefixes = [base + [1000 + 7 * i + r] for i in range(k)]
                t0 = time.perf_counter()
                tl.logprobs(prefixes)
                times[variant][k].append(time.perf_counter() - t0)
                bar.update()
    bar.close()
    tl.fast_linears = fast
    median = {v: {k: 1000 * float(np.median(ts)) for k, ts in per.items()} for v, per in times.items()}
    return {"model": model_name, "prompt_tokens": len(base), "repeats": repeats,
            "calibration": {f"rows<={upto}": bool(fast and fast.wins[upto]) for upto, _ in BANDS},
            "median_ms": median}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for variant, label in (("torch", "torch linear (x @ W.T)"), ("fast", "bytecover.backends.fast_linear")):
        ks = sorted(int(k) for k in result["median_ms"][variant])
        ax.plot(ks, [result["median_ms"][variant][k] for k in ks], marker="o", label=label)
    ax.set_xlabel("tokens fed (rows kept) in one call")
    ax.set_ylabel("ms per call (median)")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.set_title(f"{result['model']}: one forward on a cached {result['prompt_tokens']}-token prompt, CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", choices=models.list_models())
    ap.add_argument("--tokens", type=int, nargs="*", default=[1, 2, 3, 4, 6, 8])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    result = run(args.model, args.tokens, args.repeats)
    path = args.out / f"{args.model}.json"
    path.write_text(json.dumps(result, indent=2))
    plot(result, path.with_suffix(".png"))
    print(f"{'tokens':>6} {'torch ms':>9} {'fast ms':>8}")
    for k in args.tokens:
        print(f"{k:6d} {result['median_ms']['torch'][k]:9.1f} {result['median_ms']['fast'][k]:8.1f}")
    print(f"wrote {path} and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How well the scheduler batches FIM tasks: `fim.complete` over the first N published Light tasks
at each batch size, with the scheduler's step statistics (steps, how many ran with every live
sequence waiting, requests per step, time inside model calls) and the prefix cache's counters.

This is the run behind the scheduler's "wait from the end of the running step" change (16 tasks,
Qwen2.5-Coder-0.5B-Instruct, bytes method: 101 of 150 steps short before it, 99 of 101 full after).
The whole-benchmark timing is `bytecover eval fim --batch` (benches/results/batch/README.md).

    ./.ci/bootstrap python benches/bench_fim_steps.py --model qwen2.5-coder-0.5b --tasks 16 --batches 1 16
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from bytecover import ByteLM, fim
from bytecover.evaluation.completion_eval import build_tasks
from bytecover.evaluation.provenance import provenance

OUT_DIR = Path(__file__).resolve().parent / "results" / "batch"


def run(model: str, n_tasks: int, batches: list[int], method: str) -> dict[str, Any]:
    tasks = build_tasks("fim", "random-span-light", seed=0, limit=n_tasks, max_new_bytes=None)
    out: dict[str, Any] = {}
    for b in batches:
        lm = ByteLM.from_pretrained(model)  # a fresh model per batch size: no cache carried over
        t0 = time.perf_counter()
        texts = fim.complete(lm, [t.prefix for t in tasks], [t.suffix for t in tasks], method=method,
                             max_new_bytes=tasks[0].max_new_chars, stop=list(tasks[0].stop), batch=b)
        wall = time.perf_counter() - t0
        stats = [s.stats.as_dict() for s in lm.schedulers()]
        cache = lm.token_lm.cache_stats() if hasattr(lm.token_lm, "cache_stats") else None
        out[str(b)] = {"wall_s": wall, "forwards": lm.token_lm.n_calls, "tokens_fed": lm.token_lm.n_tokens_fed,
                       "scheduler": stats, "prefix_cache": cache, "bytes_out": sum(len(t) for t in texts), "texts": texts}
        print(f"batch {b}: {wall:.1f} s, {lm.token_lm.n_calls} forwards, scheduler {stats}", file=sys.stderr)
    return {"model": model, "n_tasks": n_tasks, "method": method, "benchmark": "random-span-light", "results": out}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bs = list(result["results"])
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    ax[0].bar(bs, [result["results"][b]["wall_s"] for b in bs])
    ax[0].set_title("wall seconds")
    ax[1].bar(bs, [result["results"][b]["forwards"] for b in bs])
    ax[1].set_title("model forwards")
    for a in ax:
        a.set_xlabel("tasks at once (batch)")
    fig.suptitle(f"{result['model']}, {result['n_tasks']} Light tasks, {result['method']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--tasks", type=int, default=16)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--method", default="bytes")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    result = run(args.model, args.tasks, args.batches, args.method)
    result["provenance"] = provenance(" ".join(["python", *sys.argv]), args.model)
    out = args.out or OUT_DIR / f"fim-steps-{args.model}-{args.tasks}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    plot(result, out.with_suffix(".png"))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

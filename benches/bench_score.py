"""Scoring throughput: exact `score` against one plain token-level forward over the same text.

For each model, text kind (prose, code, the indentation-heavy heap diagram of the stdlib's
heapq.py) and size, one run times (same process, same text):

* ``forward``: one forward of the model over the text's canonical tokens (HF, no cache), the
  yardstick;
* ``score``: `ByteLM.score(text)` (exact prefix probabilities), with its engine and model time
  and rows;
* ``whole``: `ByteLM.score(text, per_byte=False)` (the same logprob, P(x...) and bits per byte,
  no per-byte surprisal), timed the same way;
* ``batch``: with ``--batch N``, N copies of the kind's texts (different slices) scored by one
  ``score(list)`` call against N calls one at a time, with and without ``per_byte``.

Results go to benches/results/score/<model>.json (with provenance) and a plot beside it.

    ./.ci/bootstrap python benches/bench_score.py --model smollm2-135m --sizes 256 1024 4096

On a GPU machine add ``--device cuda`` (and ``--dtype bfloat16`` for half-width weights); the
forward yardstick then waits for the GPU before and after it.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bytecover import ByteLM
from bytecover.evaluation.provenance import provenance

OUT_DIR = Path(__file__).resolve().parent / "results" / "score"
README = Path(__file__).resolve().parents[1] / "README.md"


def corpus(kind: str) -> bytes:
    """Real layout, nothing flattened: the repository README (prose), heapq.py's code, and its
    docstring's heap diagram (runs of up to 35 spaces)."""
    import heapq

    src = inspect.getsource(heapq)
    if kind == "prose":
        return README.read_bytes()
    if kind == "code":
        return src[src.index("def heappush") :].encode()
    if kind == "indent":
        i = src.index("                                   0")
        return src[i - 200 :].encode()
    raise ValueError(kind)


def _sync(device: str) -> None:
    """Wait for queued GPU work, so that a wall time covers it."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def forward_seconds(lm: ByteLM, data: bytes, device: str = "cpu") -> tuple[float, int]:
    import torch

    ids = list(lm.spec.gateway.token_lm.start_ids) + list(lm.core.encode(data))  # type: ignore[attr-defined]
    model: Any = lm.model
    with torch.inference_mode():
        _sync(device)
        t0 = time.perf_counter()
        model(input_ids=torch.tensor([ids], device=device))
        _sync(device)
        return time.perf_counter() - t0, len(ids)


T = TypeVar("T")


def from_cold(lm: ByteLM, work: Callable[[], T]) -> tuple[float, T]:
    """Seconds `work` takes from a cold prefix cache and an empty verdict memo (no K/V, rows or
    verdicts kept from the arm before), and what it returned."""
    lm.token_lm.reset_cache()  # type: ignore[attr-defined]
    lm.core.clear_verdict_memo()
    t0 = time.perf_counter()
    out = work()
    return time.perf_counter() - t0, out


def score_arm(lm: ByteLM, data: bytes, forward_s: float, *, per_byte: bool) -> dict[str, Any]:
    """One `score` of `data` from cold, against the forward's time (keys prefixed `whole_` for
    ``per_byte=False``)."""
    sec, s = from_cold(lm, lambda: lm.score(data, per_byte=per_byte))
    st = lm.last_score_stats
    p = "" if per_byte else "whole_"
    return {("score_s" if per_byte else "whole_s"): sec, p + "ratio": sec / forward_s, p + "bytes_per_s": len(data) / sec,
            p + "engine_s": st.engine_seconds, p + "model_s": st.model_seconds, p + "rows": st.rows, p + "model_calls": st.model_calls,
            p + "bits_per_byte": s.bits_per_byte}


def run(model_name: str, kinds: list[str], sizes: list[int], batch: int, device: str = "cpu", dtype: str | None = None) -> dict[str, Any]:
    import torch

    lm = ByteLM.from_pretrained(model_name, device=device, dtype=getattr(torch, dtype) if dtype else None)
    forward_seconds(lm, b"warm up: the first forward of a process pays one-off set-up costs", device)
    rows: list[dict[str, Any]] = []
    for kind in kinds:
        text = corpus(kind)
        for size in sizes:
            data = text[:size]
            fwd, n_tok = forward_seconds(lm, data, device)
            rec = {"kind": kind, "bytes": len(data), "tokens": n_tok, "forward_s": fwd}
            rec.update(score_arm(lm, data, fwd, per_byte=True))
            rec.update(score_arm(lm, data, fwd, per_byte=False))
            print(json.dumps(rec), flush=True)
            rows.append(rec)
    out: dict[str, Any] = {"model": model_name, "device": device, "dtype": dtype or "float32", "results": rows}
    if batch > 1:
        text = corpus("prose")
        size = sizes[0]
        texts = [text[i * size : (i + 1) * size] for i in range(batch)]
        # Every arm starts from a cold prefix cache and an empty verdict memo: before 2026-12-06
        # the one `score(list)` call ran right after the one-at-a-time arm and found every
        # text's K/V cached (not its rows), so it re-fed each row's last token over a window of
        # all 16 texts. Within an arm the texts share the tokenizer's verdict memo (as a data set
        # scored text after text does), except in the first arm, which clears it before each
        # text (what every text cost before the memo).
        def each_with_memo_cleared() -> None:
            for t in texts:
                lm.core.clear_verdict_memo()
                lm.score(t)

        each_cold, _ = from_cold(lm, each_with_memo_cleared)
        one, _ = from_cold(lm, lambda: [lm.score(t) for t in texts])
        many, _ = from_cold(lm, lambda: lm.score(texts))
        whole_one, _ = from_cold(lm, lambda: [lm.score(t, per_byte=False) for t in texts])
        whole_many, _ = from_cold(lm, lambda: lm.score(texts, per_byte=False))
        out["batch"] = {"n": batch, "bytes_each": size, "one_at_a_time_no_memo_s": each_cold, "one_at_a_time_s": one, "together_s": many,
                        "speedup": one / many, "memo_speedup": each_cold / one, "whole_one_at_a_time_s": whole_one,
                        "whole_together_s": whole_many, "whole_speedup": whole_one / whole_many}
        print(json.dumps(out["batch"]), flush=True)
    return out


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for kind in sorted({r["kind"] for r in result["results"]}):
        rs = [r for r in result["results"] if r["kind"] == kind]
        line = ax.plot([r["bytes"] for r in rs], [r["ratio"] for r in rs], marker="o", label=f"{kind}, per byte")[0]
        if all("whole_ratio" in r for r in rs):
            ax.plot([r["bytes"] for r in rs], [r["whole_ratio"] for r in rs], marker="s", linestyle=":", color=line.get_color(),
                    label=f"{kind}, whole text (per_byte=False)")
    ax.axhline(3.0, color="grey", linestyle="--", label="target (3x one forward)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("text bytes")
    ax.set_ylabel("score time / one forward")
    ax.set_title(f"exact scoring, {result['model']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--kinds", nargs="+", default=["prose", "code", "indent"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[256, 1024, 4096])
    ap.add_argument("--batch", type=int, default=16, help="texts in the batch comparison (1: skip it)")
    ap.add_argument("--device", default="cpu", help="where the model runs (cuda on a GPU machine)")
    ap.add_argument("--dtype", default=None, help="torch dtype name, e.g. bfloat16 (default: float32)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    result = run(args.model, args.kinds, args.sizes, args.batch, args.device, args.dtype)
    result["provenance"] = provenance(" ".join(["benches/bench_score.py", *(argv if argv is not None else sys.argv[1:])]), args.model)
    out = args.out or OUT_DIR / f"{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    plot(result, out.with_suffix(".png"))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

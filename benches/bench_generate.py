"""Byte-level generation against plain `model.generate`, same model, same machine, same run.

For each prompt (prose and code, several ending mid-token) every method produces N bytes greedily:

  generate    transformers `model.generate` on the prompt's canonical tokens (the baseline)
  generate-fastlin  the same, its linear layers computing ``W @ x.T`` as ours do on a CPU
              (`bytecover.backends.fast_linear`): the like-for-like baseline
  healed      the token-healing baseline (`bytecover.healing`), also through `model.generate`
  handoff     exact prompt healing: the most likely cover of the prompt, then greedy tokens
              (`ByteLM.generate(..., temperature=0, bytewise=False)`, the hand-off path)
  exact       `ByteLM.generate(..., temperature=0)`: the exact byte-level distribution
  *-nodraft   hand-off / exact without speculative rows (`bytecover.speculation`)
  eps=1e-4/6  the bounded-error mode (reports its bound on any step's total-variation error)
  ensemble    the byte-level mixture of this model and `--ensemble-with` (greedy byte by byte;
              each byte chosen from bounds on both members' distributions, `EnsembleChoice`)

Reported per method: wall time, bytes/s, ratio to `generate` and to `generate-fastlin`, model calls and tokens fed per byte,
engine (Rust) time per byte and its share of the wall time, the bounded-error modes' error bound,
and the process's peak resident memory (methods run interleaved, so the peak is the run's).
Each prompt runs every method `--repeats` times (median kept), methods interleaved.
Results go to benches/results/generate/<model>.json and a bar plot next to it.

`--tokens K` measures the healing paths at equal token counts instead: `generate`, `healed` and
`handoff` each produce exactly K new tokens (no early stop), so the ratio is the cost of healing
itself, not of what the healed prompt goes on to say (a healed prompt can continue with text that
takes more tokens per byte, e.g. `np.arr` -> `ay([1, 2, 3])` instead of a random identifier).

    ./.ci/bootstrap python benches/bench_generate.py --model smollm2-135m --bytes 48
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from bytecover import ByteLM, Ensemble, models
from bytecover.evaluation.provenance import provenance
from bytecover.healing import generate_ids, heal_prompt

PROMPTS = [
    "The capital of France is",
    "import numpy as np\nx = np.arr",
    "def fibonacci(n):\n    if n <= 1:\n        retu",
    "Once upon a time, there was a little gi",
    "The meeting was postponed because the weather",
]

OUT_DIR = Path(__file__).resolve().parent / "results" / "generate"


class _StopAfterBytes:
    """transformers StoppingCriteria: stop once the new tokens spell `n` bytes past `skip`."""

    def __init__(self, core: Any, prompt_len: int, n: int, skip: int = 0) -> None:
        self.core, self.prompt_len, self.n, self.skip = core, prompt_len, n, skip

    def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> Any:
        new = input_ids[0, self.prompt_len:].tolist()
        got = sum(len(self.core.token_bytes(t) or b"") for t in new) - self.skip
        return torch.full((input_ids.shape[0],), got >= self.n, dtype=torch.bool)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _model_generate(lm: ByteLM, prompt: str, n_bytes: int, heal: bool, fast_linears: bool = False) -> dict[str, Any]:
    from transformers import StoppingCriteriaList

    data = prompt.encode()
    start = list(lm.token_lm.start_ids)  # type: ignore[attr-defined]
    kept, removed = heal_prompt(lm.core, data) if heal else (list(lm.core.encode(data)), b"")
    n_input = len(start) + len(kept)
    stop = StoppingCriteriaList([_StopAfterBytes(lm.core, n_input, n_bytes, skip=len(removed))])
    fl = lm.token_lm.fast_linears if fast_linears else None  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    with fl.active() if fl is not None else nullcontext():
        new = generate_ids(lm.model, lm.tokenizer, lm.core, kept, removed, start_ids=start,
                           max_new_tokens=n_bytes, stopping_criteria=stop)
    wall = time.perf_counter() - t0
    text = b"".join(lm.core.token_bytes(t) or b"" for t in new)[len(removed):]
    # One forward per new token; the first one feeds the whole prompt.
    return {"wall_s": wall, "bytes": len(text), "model_calls": len(new), "tokens_fed": n_input + len(new) - 1,
            "engine_s": 0.0, "text": text.decode("utf-8", "replace")}


def _byte_generate(lm: ByteLM, prompt: str, n_bytes: int, tolerance: float, bytewise: bool = True, speculate: int = 3) -> dict[str, Any]:
    lm.tolerance = tolerance
    lm.speculate = speculate
    tl = lm.token_lm
    tl.reset_cache()  # type: ignore[attr-defined]
    calls0, fed0 = tl.n_calls, tl.n_tokens_fed  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    text = lm.generate(prompt.encode(), max_new_bytes=n_bytes, temperature=0.0, bytewise=bytewise)
    wall = time.perf_counter() - t0
    st = lm.last_state.stats
    bound = float(lm.last_state.error_bound) if tolerance > 0 and bytewise else 0.0
    return {"wall_s": wall, "bytes": len(text), "model_calls": tl.n_calls - calls0,  # type: ignore[attr-defined]
            "tokens_fed": tl.n_tokens_fed - fed0, "engine_s": st.engine_seconds,  # type: ignore[attr-defined]
            "error_bound": bound, "text": bytes(text).decode("utf-8", "replace")}


def _ensemble_generate(ens: Ensemble, prompt: str, n_bytes: int) -> dict[str, Any]:
    members = [m.token_lm for m in ens.models]
    for tl in members:
        tl.reset_cache()
    calls0, fed0 = [tl.n_calls for tl in members], [tl.n_tokens_fed for tl in members]
    t0 = time.perf_counter()
    text = ens.generate(prompt.encode(), max_new_bytes=n_bytes, temperature=0.0)
    wall = time.perf_counter() - t0
    engine = ens.last_state.stats.engine_seconds
    return {"wall_s": wall, "bytes": len(text), "model_calls": sum(tl.n_calls - c for tl, c in zip(members, calls0)),
            "tokens_fed": sum(tl.n_tokens_fed - f for tl, f in zip(members, fed0)), "engine_s": engine,
            "text": bytes(text).decode("utf-8", "replace")}


def _tokens_generate(lm: ByteLM, prompt: str, k: int, heal: bool, fast_linears: bool = False) -> dict[str, Any]:
    data = prompt.encode()
    start = list(lm.token_lm.start_ids)  # type: ignore[attr-defined]
    kept, removed = heal_prompt(lm.core, data) if heal else (list(lm.core.encode(data)), b"")
    fl = lm.token_lm.fast_linears if fast_linears else None  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    with fl.active() if fl is not None else nullcontext():
        new = generate_ids(lm.model, lm.tokenizer, lm.core, kept, removed, start_ids=start, max_new_tokens=k, min_new_tokens=k)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "new_tokens": len(new), "model_calls": len(new), "tokens_fed": len(start) + len(kept) + len(new) - 1}


def _tokens_handoff(lm: ByteLM, prompt: str, k: int) -> dict[str, Any]:
    """The hand-off path (most likely cover, then greedy tokens) stopped after k new tokens: the
    cover's token that crosses the end of the prompt counts as the first."""
    from bytecover.handoff import decode_tokens, draw_cover
    from bytecover.sampling import SamplingConfig

    tl = lm.token_lm
    tl.reset_cache()  # type: ignore[attr-defined]
    calls0, fed0 = tl.n_calls, tl.n_tokens_fed  # type: ignore[attr-defined]
    cfg, rng = SamplingConfig(temperature=0.0), np.random.default_rng(0)
    t0 = time.perf_counter()
    state = lm.state(prompt.encode())
    tokens = list(draw_cover(state, cfg, rng).tokens)
    spelled = sum(len(lm.core.token_bytes(t) or b"") for t in tokens)
    new = 1 if spelled > len(state.engine.text) else 0
    decoder = decode_tokens(lm.spec, tokens, cfg, rng, stats=state.stats)
    while new < k:
        before = len(tokens)
        if next(decoder, None) is None and len(tokens) == before:
            break  # end of text
        new += len(tokens) - before
    decoder.close()
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "new_tokens": new, "model_calls": tl.n_calls - calls0, "tokens_fed": tl.n_tokens_fed - fed0}  # type: ignore[attr-defined]


def run_tokens(model_name: str, k: int, prompts: list[str], repeats: int) -> dict[str, Any]:
    """Equal token counts: each method makes exactly k new tokens per prompt; wall times are the
    median of `repeats` runs, methods interleaved so that machine noise hits them alike."""
    lm = ByteLM.from_pretrained(model_name)
    methods = {"generate": lambda p: _tokens_generate(lm, p, k, heal=False),
               "generate-fastlin": lambda p: _tokens_generate(lm, p, k, heal=False, fast_linears=True),
               "healed": lambda p: _tokens_generate(lm, p, k, heal=True),
               "healed-fastlin": lambda p: _tokens_generate(lm, p, k, heal=True, fast_linears=True),
               "handoff": lambda p: _tokens_handoff(lm, p, k)}
    _tokens_generate(lm, prompts[0], 4, heal=False)  # warm-up
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    bar = tqdm(total=len(methods) * len(prompts) * repeats, desc=f"bench {model_name} ({k} tokens)", unit="run")
    for p in prompts:
        for name, fn in methods.items():
            trials = []
            for _ in range(repeats):
                trials.append(fn(p))
                bar.update()
            best = sorted(trials, key=lambda x: x["wall_s"])[len(trials) // 2]
            runs[name].append({"prompt": p, **best})
    bar.close()
    summary = {}
    for name, r in runs.items():
        summary[name] = {"wall_s": sum(x["wall_s"] for x in r), "new_tokens": sum(x["new_tokens"] for x in r),
                         "model_calls": sum(x["model_calls"] for x in r), "tokens_fed": sum(x["tokens_fed"] for x in r)}
    for s in summary.values():
        s["time_ratio_vs_generate"] = s["wall_s"] / summary["generate"]["wall_s"]
        s["time_ratio_vs_generate_fastlin"] = s["wall_s"] / summary["generate-fastlin"]["wall_s"]
    return {"model": model_name, "new_tokens_per_prompt": k, "repeats": repeats, "prompts": prompts,
            "torch_threads": torch.get_num_threads(), "summary": summary, "runs": runs}


def run(model_name: str, n_bytes: int, prompts: list[str], tolerances: list[float], only: list[str] | None = None,
        ensemble_with: str | None = None, repeats: int = 3) -> dict[str, Any]:
    lm = ByteLM.from_pretrained(model_name)
    methods: dict[str, Any] = {"generate": lambda p: _model_generate(lm, p, n_bytes, heal=False),
                               "generate-fastlin": lambda p: _model_generate(lm, p, n_bytes, heal=False, fast_linears=True),
                               "healed": lambda p: _model_generate(lm, p, n_bytes, heal=True),
                               "handoff": lambda p: _byte_generate(lm, p, n_bytes, 0.0, bytewise=False),
                               "exact": lambda p: _byte_generate(lm, p, n_bytes, 0.0),
                               "handoff-nodraft": lambda p: _byte_generate(lm, p, n_bytes, 0.0, bytewise=False, speculate=0),
                               "exact-nodraft": lambda p: _byte_generate(lm, p, n_bytes, 0.0, speculate=0)}
    for eps in tolerances:
        methods[f"eps={eps:g}"] = (lambda e: (lambda p: _byte_generate(lm, p, n_bytes, e)))(eps)
    if ensemble_with and (not only or "ensemble" in only):
        ens = Ensemble([lm, ByteLM.from_pretrained(ensemble_with)])
        methods["ensemble"] = lambda p: _ensemble_generate(ens, p, n_bytes)
    if only:
        methods = {k: v for k, v in methods.items() if k in only or k == "generate"}
    # Warm-up: first forwards pay for allocation and thread start-up.
    _model_generate(lm, prompts[0], 8, heal=False)
    rows: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    # Methods interleaved per prompt and the median of `repeats` runs kept, so that drift in the
    # machine's speed hits every method alike (the ensemble, loading a second model, runs once).
    times = {m: (1 if m == "ensemble" else repeats) for m in methods}
    bar = tqdm(total=sum(times.values()) * len(prompts), desc=f"bench {model_name}", unit="run")
    for p in prompts:
        for name, fn in methods.items():
            trials = []
            for _ in range(times[name]):
                trials.append(fn(p))
                bar.update()
            rows[name].append({"prompt": p, **sorted(trials, key=lambda x: x["wall_s"])[len(trials) // 2]})
    bar.close()
    summary: dict[str, dict[str, float]] = {}
    for name in methods:
        r = rows[name]
        wall, nb = sum(x["wall_s"] for x in r), sum(x["bytes"] for x in r)
        summary[name] = {"wall_s": wall, "bytes": nb, "bytes_per_s": nb / wall,
                         "model_calls_per_byte": sum(x["model_calls"] for x in r) / nb,
                         "tokens_fed_per_byte": sum(x["tokens_fed"] for x in r) / nb,
                         "engine_ms_per_byte": 1000 * sum(x["engine_s"] for x in r) / nb,
                         "engine_share": sum(x["engine_s"] for x in r) / wall,
                         "error_bound_max": max(x.get("error_bound", 0.0) for x in r),
                         "peak_rss_mb": _peak_rss_mb()}
    base = summary["generate"]["bytes_per_s"]
    same = summary.get("generate-fastlin", {}).get("bytes_per_s")
    for s in summary.values():
        s["time_ratio_vs_generate"] = base / s["bytes_per_s"]
        if same:  # like for like: model.generate with the same matrix products as ours
            s["time_ratio_vs_generate_fastlin"] = same / s["bytes_per_s"]
    return {"model": model_name, "n_bytes": n_bytes, "repeats": repeats, "prompts": prompts, "torch_threads": torch.get_num_threads(),
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "summary": summary, "runs": rows}


def _bar_pair(result: dict[str, Any], calls_key: str, calls_label: str, calls_fmt: str, title: str, path: Path) -> None:
    """Two labelled bar charts per method: wall time relative to `generate`, and model calls."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["summary"])
    ratio = [result["summary"][n]["time_ratio_vs_generate"] for n in names]
    calls = [result["summary"][n][calls_key] for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.25 * len(names)), 3.6))
    axes[0].bar(names, ratio, color="#4c72b0")
    axes[0].axhline(1.0, color="k", lw=0.8)
    if "generate-fastlin" in result["summary"]:
        same = result["summary"]["generate-fastlin"]["time_ratio_vs_generate"]
        axes[0].axhline(same, color="k", lw=0.8, ls="--", label="model.generate, same matrix products")
        axes[0].legend(fontsize=7, loc="upper left")
    axes[0].set_ylabel("wall time / model.generate")
    axes[1].bar(names, calls, color="#dd8452")
    axes[1].set_ylabel(calls_label)
    for ax, values, fmt in ((axes[0], ratio, "{:.2f}x"), (axes[1], calls, calls_fmt)):
        for i, v in enumerate(values):
            ax.annotate(fmt.format(v), (i, v), ha="center", va="bottom", fontsize=8)
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot(result: dict[str, Any], path: Path) -> None:
    """Equal-byte mode: every method's bytes/s relative to `generate`, and calls per byte."""
    _bar_pair(result, "model_calls_per_byte", "model calls per byte", "{:.2f}",
              f"{result['model']}: {result['n_bytes']} bytes x {len(result['prompts'])} prompts, CPU", path)


def plot_tokens(result: dict[str, Any], path: Path) -> None:
    """Equal-token mode: wall time relative to `generate` and model calls, per method."""
    k, n = result["new_tokens_per_prompt"], len(result["prompts"])
    _bar_pair(result, "model_calls", "model calls (all prompts)", "{:d}",
              f"{result['model']}: exactly {k} new tokens x {n} prompts, median of {result['repeats']}, CPU", path)


def _command_line(argv: list[str] | None) -> str:
    """The command as a user would type it (inside the project's environment)."""
    return " ".join(["python", "benches/bench_generate.py", *(sys.argv[1:] if argv is None else argv)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", choices=models.list_models())
    ap.add_argument("--bytes", type=int, default=48, help="new bytes per prompt")
    ap.add_argument("--prompts", type=int, default=len(PROMPTS), help="how many of the fixed prompts")
    ap.add_argument("--tolerance", type=float, nargs="*", default=[1e-4, 1e-6])
    ap.add_argument("--methods", nargs="*", default=None, help="only these (generate always runs): healed handoff exact eps=...")
    ap.add_argument("--tokens", type=int, default=None, help="equal-token mode: K new tokens per prompt (generate, healed, handoff)")
    ap.add_argument("--repeats", type=int, default=3, help="runs per prompt and method (median kept; the ensemble runs once)")
    ap.add_argument("--ensemble-with", default="gemma3-270m", help="second model of the ensemble row ('none': no ensemble)")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--name", default=None, help="stem of the output files (default: model, bytes and methods)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.tokens:
        result = run_tokens(args.model, args.tokens, PROMPTS[: args.prompts], args.repeats)
        result["provenance"] = provenance(_command_line(argv), args.model)
        path = args.out / f"{args.model}-tokens{args.tokens}.json"
        path.write_text(json.dumps(result, indent=2, ensure_ascii=False))
        plot_tokens(result, path.with_suffix(".png"))
        print(f"{'method':16} {'wall s':>8} {'x gen':>6} {'x gen-fl':>8} {'tokens':>7} {'calls':>6} {'fed':>5}")
        for name, s in result["summary"].items():
            print(f"{name:16} {s['wall_s']:8.2f} {s['time_ratio_vs_generate']:6.2f} {s['time_ratio_vs_generate_fastlin']:8.2f} {s['new_tokens']:7d} {s['model_calls']:6d} {s['tokens_fed']:5d}")
        print(f"wrote {path}")
        return 0
    other = None if args.ensemble_with == "none" else args.ensemble_with
    result = run(args.model, args.bytes, PROMPTS[: args.prompts], args.tolerance, args.methods, other, args.repeats)
    result["provenance"] = provenance(_command_line(argv), args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.name or (args.model if not args.methods else f"{args.model}-{args.bytes}B-" + "-".join(args.methods))
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    plot(result, args.out / f"{stem}.png")
    print(f"{'method':16} {'bytes/s':>8} {'x gen':>6} {'x gen-fl':>8} {'calls/B':>8} {'tok/B':>6} {'engine ms/B':>12} {'engine %':>9} {'error bound':>12} {'peak MB':>8}")
    for name, s in result["summary"].items():
        print(f"{name:16} {s['bytes_per_s']:8.2f} {s['time_ratio_vs_generate']:6.2f} {s.get('time_ratio_vs_generate_fastlin', float('nan')):8.2f} {s['model_calls_per_byte']:8.3f} "
              f"{s['tokens_fed_per_byte']:6.2f} {s['engine_ms_per_byte']:12.1f} {100 * s['engine_share']:8.1f}% "
              f"{s['error_bound_max']:12.2e} {s['peak_rss_mb']:8.0f}")
    print(f"wrote {args.out / (stem + '.json')} and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())

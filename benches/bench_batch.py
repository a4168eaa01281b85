"""Throughput with many sequences at once: batch sizes 1, 4, 16 (and 64 with --gpu) over one fixed
prompt set, N greedy output bytes per prompt, every method in the same run on the same model.

  (a) generate   transformers `model.generate` on the prompts' canonical tokens, left padding and
                 its K/V cache, the same linear-layer products as ours (`fast_linear`): the baseline
  (b) handoff    exact prompt healing, then token decoding (`ByteLM.generate(prompts,
                 temperature=0, bytewise=False, batch=B)`)
  (c) exact      exact byte-by-byte greedy (`ByteLM.generate(prompts, temperature=0, batch=B)`)
  (d) ensemble   the byte-level mixture of the model and `--ensemble-with` (greedy, batched)
  (e) ByteSampler  the public exact byte sampler's `generate_batched` (greedy, special tokens
                 blocked, the same start token), in its own environment (transformers 4.53,
                 `.ci/bytesampler-env`) on the transformers-4 copy of the same weights:
                 benches/peers/bytesampler_batch.py, run as a subprocess after every in-process
                 method has finished, never beside them. It processes fixed batches of B prompts
                 (no continuous batching). Its greedy outputs are checked against (c)'s, prompt
                 by prompt. Runs by default when its environment exists (--no-bytesampler skips
                 it; --bytesampler builds the environment when it is missing).

Each method processes all prompts with at most B live sequences (B=1: one after the other).
Reported per method and batch size: bytes/s, the ratio to (a) at the same batch size, model calls
and tokens fed per output byte, the share of wall time spent inside model calls (the rest is the
Rust engine, the scheduler and Python), and the process's peak resident memory ((e): its own
process's). Torch threads: the peer gets this process's count (set it with OMP_NUM_THREADS).

    ./.ci/bootstrap python benches/bench_batch.py --model smollm2-135m --bytes 32
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from bytecover import ByteLM, Ensemble
from bytecover.cache import cache_root
from bytecover.evaluation.provenance import provenance

PROMPTS = [
    "The capital of France is",
    "import numpy as np\nx = np.arr",
    "def fibonacci(n):\n    if n <= 1:\n        retu",
    "Once upon a time, there was a little gi",
    "The meeting was postponed because the weather",
    "for i in ran",
    "The quick brown fox jumps over the la",
    "class Stack:\n    def __init__(self):\n        self.ite",
    "Water boils at 100 degrees Cel",
    "with open(path) as f:\n    data = json.lo",
    "The most important thing about learning a new langu",
    "    return sorted(items, key=lambda x: x[1], rev",
    "She opened the door and saw",
    "if __name__ == \"__main__\":\n    ma",
    "Photosynthesis converts light energy into chem",
    "SELECT name, COUNT(*) FROM users GROUP BY na",
]

OUT_DIR = Path(__file__).resolve().parent / "results" / "batch"
ROOT = Path(__file__).resolve().parents[1]
PEER_ENV = ROOT / ".ci" / "bytesampler-env"
PEER_SCRIPT = Path(__file__).resolve().parent / "peers" / "bytesampler_batch.py"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _counters(models: list[ByteLM]) -> tuple[int, int, float]:
    """Forwards, tokens fed and seconds inside backend calls so far, summed over models."""
    calls = sum(int(getattr(m.token_lm, "n_calls", 0)) for m in models)
    fed = sum(int(getattr(m.token_lm, "n_tokens_fed", 0)) for m in models)
    secs = sum(m.spec.gateway.scheduler.stats.model_seconds for m in models)
    return calls, fed, secs


def _model_generate(lm: ByteLM, prompts: list[str], n_bytes: int, batch: int, device: str = "cpu") -> dict[str, Any]:
    """(a): `model.generate` in batches of `batch` prompts, left padded, each row stopped once it
    has n_bytes (a finished row is padded while the others go on, as `generate` does)."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    core, model = lm.core, lm.model
    start = list(lm.token_lm.start_ids)  # type: ignore[attr-defined]
    pad = int(lm.eos_ids[0])

    class EnoughBytes(StoppingCriteria):
        def __init__(self, width: int) -> None:
            self.width = width

        def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> Any:
            return torch.tensor([sum(len(core.token_bytes(int(t)) or b"") for t in row[self.width :]) >= n_bytes for row in input_ids])

    total_bytes = calls = fed = 0
    t0 = time.perf_counter()
    fl = lm.token_lm.fast_linears  # type: ignore[attr-defined]
    with fl.active() if fl is not None else nullcontext():
        for i in range(0, len(prompts), batch):
            encoded = [start + list(core.encode(p.encode())) for p in prompts[i : i + batch]]
            width = max(len(e) for e in encoded)
            ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded], device=device)
            mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], device=device)
            with torch.inference_mode():
                out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n_bytes, do_sample=False, pad_token_id=pad,
                                     stopping_criteria=StoppingCriteriaList([EnoughBytes(width)]))
            steps = out.shape[1] - width
            calls += steps
            fed += int(mask.sum()) + steps * len(encoded)
            for row in out[:, width:]:
                text = b"".join(core.token_bytes(int(t)) or b"" for t in row if int(t) != pad)
                total_bytes += min(len(text), n_bytes)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "bytes": total_bytes, "model_calls": calls, "tokens_fed": fed, "model_s": wall}


def _byte_generate(model: ByteLM | Ensemble, members: list[ByteLM], prompts: list[str], n_bytes: int, batch: int, **kw: Any) -> dict[str, Any]:
    for m in members:
        m.token_lm.reset_cache()  # type: ignore[attr-defined]
    calls0, fed0, secs0 = _counters(members)
    t0 = time.perf_counter()
    outs = model.generate([p.encode() for p in prompts], max_new_bytes=n_bytes, temperature=0.0, batch=batch, **kw)
    wall = time.perf_counter() - t0
    calls, fed, secs = _counters(members)
    return {"wall_s": wall, "bytes": sum(len(o) for o in outs), "model_calls": calls - calls0, "tokens_fed": fed - fed0, "model_s": secs - secs0,
            "texts": [bytes(o).decode("utf-8", "replace") for o in outs]}


def _peer_venv() -> Path:
    """Where .ci/bytesampler-env builds ByteSampler's environment."""
    return cache_root() / "venv-bytesampler"


def _bytesampler(model_src: Path, start_ids: list[int], prompts: list[str], n_bytes: int, batches: list[int],
                 repeats: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(e): benches/peers/bytesampler_batch.py in the peer environment, on the transformers-4 copy of
    the model bytecover loaded. Returns its rows per batch size and what describes the run; raises
    on failure (the caller records why and keeps the in-process results)."""
    if len(start_ids) != 1:
        raise RuntimeError(f"ByteSampler takes one start token; this model starts with {start_ids}")
    # Makes the environment when missing (only reached then with an explicit --bytesampler) and the
    # transformers-4 copy when missing or stale; its progress goes to stderr, the folder to stdout.
    model_dir = subprocess.run([str(PEER_ENV), "model-dir", str(model_src)], check=True, stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1]
    # The peer must run on its own code: nothing of this checkout on its import path.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with tempfile.TemporaryDirectory(prefix="bench-batch-e-") as tmp:
        prompts_json, out = Path(tmp) / "prompts.json", Path(tmp) / "bytesampler.json"
        prompts_json.write_text(json.dumps(prompts))
        cmd = [str(PEER_ENV), str(_peer_venv() / "bin" / "python"), str(PEER_SCRIPT), "--model-dir", model_dir, "--prompts-json", str(prompts_json),
               "--bytes", str(n_bytes), "--batches", *map(str, batches), "--start-token-id", str(start_ids[0]),
               "--threads", str(torch.get_num_threads()), "--repeats", str(repeats), "--out", str(out)]
        subprocess.run(cmd, check=True, env=env)
        peer = json.loads(out.read_text())
    shared = Path(os.environ.get("BYTECOVER_SHARED", ROOT.parent / "shared"))
    commit_file = shared / "peers" / "byte-sampler" / "COMMIT"
    info = {"ran": True, "model_dir": model_dir, "venv": str(_peer_venv()),
            "commit": commit_file.read_text().strip() if commit_file.exists() else None,
            "batching": "fixed batches of B prompts (no continuous batching)",
            **{k: peer[k] for k in ("start_token_id", "torch_threads", "device", "versions")}}
    return peer["results"], info


def _agreement(rows: dict[str, Any], exact: dict[str, Any], prompts: list[str]) -> None:
    """Adds to each (e) row how many greedy outputs equal (c)'s at the same batch size, and the
    first prompt where they differ (both are exact greedy, so any difference is a finding)."""
    for b, r in rows.items():
        pairs = list(zip(exact[b]["texts"], r["texts"]))
        r["agree_with_exact"] = sum(x == y for x, y in pairs)
        diff = next((i for i, (x, y) in enumerate(pairs) if x != y), None)
        r["first_diff_with_exact"] = None if diff is None else {"index": diff, "prompt": prompts[diff], "exact": pairs[diff][0], "bytesampler": pairs[diff][1]}


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median wall time (the lower middle one for an even count), with every
    run's wall time beside it: on two shared cores one 5-second run of a batch can be 30% off."""
    ranked = sorted(runs, key=lambda r: r["wall_s"])
    chosen = dict(ranked[(len(ranked) - 1) // 2])
    chosen["wall_s_runs"] = [r["wall_s"] for r in runs]
    return chosen


def run(model_name: str, n_bytes: int, batches: list[int], prompts: list[str], ensemble_with: str | None,
        bytesampler: bool | None = None, repeats: int = 1, device: str = "cpu", dtype: str | None = None) -> dict[str, Any]:
    torch_dtype = getattr(torch, dtype) if dtype else None
    lm = ByteLM.from_pretrained(model_name, device=device, dtype=torch_dtype)
    methods: dict[str, Any] = {
        "generate": lambda b: _model_generate(lm, prompts, n_bytes, b, device),
        "handoff": lambda b: _byte_generate(lm, [lm], prompts, n_bytes, b, bytewise=False),
        "exact": lambda b: _byte_generate(lm, [lm], prompts, n_bytes, b),
    }
    if ensemble_with:
        other = ByteLM.from_pretrained(ensemble_with, device=device, dtype=torch_dtype)
        ens = Ensemble([lm, other])
        methods["ensemble"] = lambda b: _byte_generate(ens, [lm, other], prompts, n_bytes, b)
    _model_generate(lm, prompts[:2], 4, 2, device)  # warm-up: allocation, thread start-up
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    bar = tqdm(total=repeats * len(methods) * len(batches), desc=f"bench batch {model_name}", unit="run")
    # Methods interleaved per batch size, and repeats outermost: drift in machine speed hits every
    # method and batch size alike.
    for _ in range(repeats):
        for b in batches:
            for name, fn in methods.items():
                runs.setdefault((name, b), []).append(fn(b))
                runs[(name, b)][-1]["peak_rss_mb"] = _peak_rss_mb()
                bar.update()
    bar.close()
    results: dict[str, dict[str, Any]] = {}
    for b in batches:
        for name in methods:
            r = _median_run(runs[(name, b)])
            r["bytes_per_s"] = r["bytes"] / r["wall_s"]
            r["model_calls_per_byte"] = r["model_calls"] / max(1, r["bytes"])
            r["tokens_fed_per_byte"] = r["tokens_fed"] / max(1, r["bytes"])
            r["model_share"] = min(1.0, r["model_s"] / r["wall_s"])
            results.setdefault(name, {})[str(b)] = r
    # (e) only now, with every in-process method finished: the two must never share the machine.
    if bytesampler is None and not (_peer_venv() / "bin" / "python").exists():
        status: dict[str, Any] = {"ran": False, "why": f"no environment at {_peer_venv()} (.ci/bytesampler-env builds it)"}
    elif bytesampler is False:
        status = {"ran": False, "why": "--no-bytesampler"}
    else:
        assert lm.model is not None  # the HF backend: its folder is what the peer's copy is made from
        try:
            start_ids = list(lm.token_lm.start_ids)  # type: ignore[attr-defined]
            rows, status = _bytesampler(Path(lm.model.name_or_path), start_ids, prompts, n_bytes, batches, repeats)
            _agreement(rows, results["exact"], prompts)
            results["bytesampler"] = rows
        except (subprocess.CalledProcessError, RuntimeError, OSError, ValueError, KeyError) as e:
            print(f"(e) ByteSampler did not run: {e}", file=sys.stderr)
            status = {"ran": False, "why": f"{type(e).__name__}: {e}"}
    for name, per in results.items():
        for b, r in per.items():
            r["ratio_to_generate"] = r["bytes_per_s"] / results["generate"][b]["bytes_per_s"]
            r["speedup_vs_batch1"] = r["bytes_per_s"] / per[str(batches[0])]["bytes_per_s"]
    return {"model": model_name, "ensemble_with": ensemble_with, "n_bytes": n_bytes, "batches": batches, "prompts": prompts, "repeats": repeats,
            "torch_threads": torch.get_num_threads(), "device": device, "dtype": dtype or "float32", "results": results, "bytesampler": status}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for name, per in result["results"].items():
        bs = [int(b) for b in per]
        ax[0].plot(bs, [per[str(b)]["bytes_per_s"] for b in bs], marker="o", label=name)
        ax[1].plot(bs, [per[str(b)]["model_calls_per_byte"] for b in bs], marker="o", label=name)
    for a, title in zip(ax, ["output bytes/s", "model calls per output byte"]):
        a.set_xscale("log", base=2)
        a.set_xlabel("live sequences (batch)")
        a.set_title(title)
        a.legend()
    fig.suptitle(f"{result['model']}, {result['n_bytes']} greedy bytes per prompt, {len(result['prompts'])} prompts")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--bytes", type=int, default=32)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--prompts", type=int, default=len(PROMPTS), help="use the first K prompts")
    ap.add_argument("--ensemble-with", default="gemma-3-270m", help="second member of (d); '' to skip")
    ap.add_argument("--bytesampler", action=argparse.BooleanOptionalAction, default=None,
                    help="method (e); default: run it when its environment exists")
    ap.add_argument("--repeats", type=int, default=1,
                    help="run every method this many times ((a)-(d) interleaved) and report each one's median-wall run")
    ap.add_argument("--device", default="cpu", help="where the models run (cuda on a GPU machine; (e) stays on the CPU)")
    ap.add_argument("--dtype", default=None, help="torch dtype name, e.g. bfloat16 (default: float32)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    result = run(args.model, args.bytes, args.batches, PROMPTS[: args.prompts], args.ensemble_with or None, args.bytesampler, args.repeats,
                 args.device, args.dtype)
    result["provenance"] = provenance(" ".join(["python", *sys.argv]), args.model)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = args.out or OUT_DIR / f"{args.model}-{args.bytes}B.json"
    out.write_text(json.dumps(result, indent=1))
    plot(result, out.with_suffix(".png"))
    for name, per in result["results"].items():
        print(name, "  ".join(f"B={b}: {r['bytes_per_s']:.1f} B/s ({r['ratio_to_generate']:.2f}x, {r['model_calls_per_byte']:.2f} calls/B)" for b, r in per.items()))
    if "bytesampler" in result["results"]:
        print("bytesampler vs exact: " + "  ".join(f"B={b}: {r['agree_with_exact']}/{len(r['texts'])} equal" for b, r in result["results"]["bytesampler"].items()))
    else:
        print(f"bytesampler: not run ({result['bytesampler']['why']})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

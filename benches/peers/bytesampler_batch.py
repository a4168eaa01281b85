"""Method (e) of benches/bench_batch.py: ByteSampler's `generate_batched` (the public exact byte
sampler, MIT, ../shared/peers/byte-sampler) on the same prompts, model, batch sizes and number of
greedy output bytes as bytecover's methods.

Run it with the PEER environment's python (`.ci/bytesampler-env python benches/peers/...`), never
the main one: ByteSampler needs transformers 4.53, and this script must not import bytecover, so
nothing of ours is measured on its side. bench_batch.py runs it as a subprocess after its own
methods have finished; it can also be run alone:

    .ci/bytesampler-env python benches/peers/bytesampler_batch.py \
        --model-dir "$(.ci/bytesampler-env model-dir)" --prompts-json P.json --bytes 16 \
        --batches 1 4 16 --start-token-id 2 --threads 2 --out E.json

How it is run, and why (the fairness notes of ../shared/peers/README.md):
  * `generate_batched(sampler, chunk, max_new_bytes=N, do_sample=False, allow_special=False)` per
    chunk of at most B prompts. ByteSampler processes a fixed batch: all B sequences start and
    stop together and a chunk's slots are not refilled when a sequence ends (no continuous
    batching); with special tokens blocked every sequence runs all N bytes, so nothing idles.
  * The start token is the one bytecover uses (`--start-token-id`; `<|im_end|>`, id 2, for
    SmolLM2), set as `bc.bos` before any sampler is made (ByteSampler's default is BOS, id 1).
  * Model calls are counted by wrapping `model.forward` (its radix cache calls `forward`, not
    `__call__`); tokens fed are the width of each call's input ids, padding included, as bytecover
    counts them; seconds inside those calls give the model share of wall time.
  * The model is the transformers-4 copy of bytecover's converted checkpoint (same fp32 weights,
    logits equal), with plain torch linear layers (no `fast_linear`, which is bytecover's).
  * One tiny warm-up run (the first 2 prompts, 4 bytes) before timing, as bench_batch does.
  * Every chunk gets a fresh sampler, so no K/V survives from one run to the next (bytecover
    resets its prefix cache per run likewise). Tokenizer-level caches of the ByteConditioning
    object persist across runs, as bytecover's tokenizer tables do.

Output bytes are recorded exactly as fed back to the sampler (the library's returned strings drop
an incomplete UTF-8 tail); texts are those bytes decoded with errors="replace", as bench_batch
decodes bytecover's, so the two can be compared prompt by prompt.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch
import transformers
from byte_sampling import ByteConditioning, generate_batched
from transformers import AutoModelForCausalLM, AutoTokenizer


class ForwardCounter:
    """Wraps `model.forward` in place: calls, input ids fed and seconds spent inside."""

    def __init__(self, model: Any) -> None:
        self.calls = self.fed = 0
        self.seconds = 0.0
        inner = model.forward

        def counted(*args: Any, **kw: Any) -> Any:
            ids = kw.get("input_ids", args[0] if args else None)
            t0 = time.perf_counter()
            try:
                return inner(*args, **kw)
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += 1
                self.fed += int(ids.numel()) if ids is not None else 0

        model.forward = counted

    def snapshot(self) -> tuple[int, int, float]:
        return self.calls, self.fed, self.seconds


def _generate(bc: ByteConditioning, prompts: list[str], n_bytes: int) -> list[bytes]:
    """One fixed batch through `generate_batched`, returning each sequence's output bytes.

    The sampler is made here rather than by `generate_batched` (which would call the same
    `bc.get_bytewise_sampler(batch_size=len(prompts))`) only so that the bytes it is fed can be
    recorded: the first `add_context` call carries the prompts, every later one the new bytes."""
    sampler = bc.get_bytewise_sampler(batch_size=len(prompts))
    fed: list[list[bytes]] = []
    add = sampler.add_context

    def recording(batch: list[Any]) -> None:
        fed.append([b if isinstance(b, bytes) else str(b).encode() for b in batch])
        add(batch)

    sampler.add_context = recording
    generate_batched(sampler, prompts, max_new_bytes=n_bytes, do_sample=False, allow_special=False)
    return [b"".join(step[i] for step in fed[1:]) for i in range(len(prompts))]


def _peak_rss_mb() -> float:
    """This process's own peak resident memory. Not getrusage's ru_maxrss: Linux keeps that across
    fork and exec, so a peer started by bench_batch.py would report the parent's peak (the first
    run here did: 1733 MB, the parent's figure)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(model_dir: Path, prompts: list[str], n_bytes: int, batches: list[int], start_id: int, repeats: int = 1) -> dict[str, Any]:
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    bc = ByteConditioning(model, tokenizer)
    bc.bos = start_id
    counter = ForwardCounter(model)

    _generate(bc, prompts[:2], 4)  # warm-up: allocation, thread start-up (not counted below)
    runs: dict[str, list[dict[str, Any]]] = {}
    for b in [b for _ in range(repeats) for b in batches]:  # repeats outermost, as bench_batch.py
        calls0, fed0, secs0 = counter.snapshot()
        t0 = time.perf_counter()
        outs: list[bytes] = []
        for i in range(0, len(prompts), b):
            outs += _generate(bc, prompts[i : i + b], n_bytes)
        wall = time.perf_counter() - t0
        calls, fed, secs = counter.snapshot()
        n_out = sum(len(o) for o in outs)
        runs.setdefault(str(b), []).append({
            "wall_s": wall, "bytes": n_out, "model_calls": calls - calls0, "tokens_fed": fed - fed0, "model_s": secs - secs0,
            "texts": [o.decode("utf-8", "replace") for o in outs],
            "bytes_per_s": n_out / wall,
            "model_calls_per_byte": (calls - calls0) / max(1, n_out),
            "tokens_fed_per_byte": (fed - fed0) / max(1, n_out),
            "model_share": min(1.0, (secs - secs0) / wall),
            "peak_rss_mb": _peak_rss_mb(),
        })
        print(f"[bytesampler] B={b}: {n_out / wall:.1f} B/s, {(calls - calls0) / max(1, n_out):.3f} calls/B", file=sys.stderr, flush=True)
    results: dict[str, Any] = {}
    for b, rs in runs.items():  # the median-wall run, every run's wall beside it
        results[b] = dict(sorted(rs, key=lambda r: r["wall_s"])[(len(rs) - 1) // 2], wall_s_runs=[r["wall_s"] for r in rs])
    return {"model_dir": str(model_dir), "start_token_id": start_id, "repeats": repeats, "n_bytes": n_bytes, "batches": batches, "n_prompts": len(prompts),
            "torch_threads": torch.get_num_threads(), "device": str(model.device),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__}, "results": results}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, required=True, help="the transformers-4 copy (.ci/bytesampler-env model-dir)")
    ap.add_argument("--prompts-json", type=Path, required=True, help="a JSON list of prompt strings")
    ap.add_argument("--bytes", type=int, required=True, help="greedy output bytes per prompt")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--start-token-id", type=int, required=True, help="bytecover's start token (SmolLM2: 2, <|im_end|>)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per batch size; the median-wall one is reported")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    prompts = json.loads(args.prompts_json.read_text())
    if not (isinstance(prompts, list) and all(isinstance(p, str) for p in prompts)):
        ap.error("--prompts-json must hold a list of strings")
    result = run(args.model_dir, prompts, args.bytes, args.batches, args.start_token_id, args.repeats)
    result["argv"] = sys.argv
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

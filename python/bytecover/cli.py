"""The one command line: `bytecover demo | prepare | models | verify | score | eval fim | eval ensemble | serve`."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from . import convert, install, models, registry
from .byte_lm import ByteLM
from .healing import generate_healed, generate_naive

DEMO_PROMPTS = [
    "import numpy as np\nx = np.arr",
    "The capital of Fra",
    "def fibonacci(n):\n    if n <= 1:\n        retu",
    "The quick brown fox jumps over the la",
    "for i in ran",
]


def demo(args: argparse.Namespace) -> int:
    """Naive token-level vs token healing vs exact byte-level continuations of mid-token prompts."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    print(f"loading {args.model} (first run converts the GGUF into the cache)...", flush=True)
    model = models.load_model(args.model)
    tokenizer = models.load_tokenizer(args.model)
    lm = ByteLM(model, tokenizer)
    start = list(getattr(lm.token_lm, "start_ids", []))
    print(f"loaded in {time.perf_counter() - t0:.1f}s\n", flush=True)
    prompts = args.prompt or DEMO_PROMPTS
    rows = []
    for p in tqdm(prompts, desc="prompts", unit="prompt"):
        naive = generate_naive(model, tokenizer, lm.core, p, args.max_new_tokens, start)
        healed = generate_healed(model, tokenizer, lm.core, p, args.max_new_tokens, start)
        exact = lm.generate(p, max_new_bytes=args.max_new_bytes, temperature=0)
        rows.append((p, naive, healed, exact))
    for p, naive, healed, exact in rows:
        print("=" * 72)
        print(f"prompt : {p!r}")
        print(f"naive  : {naive[: args.max_new_bytes]!r}")
        print(f"healed : {healed[: args.max_new_bytes]!r}")
        print(f"exact  : {exact!r}")
    return 0


def prepare(args: argparse.Namespace) -> int:
    models.prepare(args.names or None)
    return 0


def list_registry(args: argparse.Namespace) -> int:
    for name in registry.list_models():
        spec = registry.get_spec(name)
        state = "converted" if convert.is_converted(name) else "not converted"
        print(f"{name:22} {state:14} {spec.description}")
    return 0


def verify(args: argparse.Namespace) -> int:
    for name in args.names or registry.list_models():
        print(f"{name}: sha256 {install.verify_source(name)} ok")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bytecover", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="naive vs token healing vs exact byte-level continuations")
    d.add_argument("--model", default="smollm2-135m")
    d.add_argument("--prompt", action="append", help="prompt (repeatable); default: built-in mid-token prompts")
    d.add_argument("--max-new-bytes", type=int, default=40)
    d.add_argument("--max-new-tokens", type=int, default=16)
    d.set_defaults(func=demo)
    p = sub.add_parser("prepare", help="install the offline models, check their sha256 and convert them into the cache")
    p.add_argument("names", nargs="*", help="registry models to prepare (default: all)")
    p.set_defaults(func=prepare)
    ls = sub.add_parser("models", help="list the registry and what is converted")
    ls.set_defaults(func=list_registry)
    v = sub.add_parser("verify", help="re-check the sha256 of the installed GGUF packages")
    v.add_argument("names", nargs="*")
    v.set_defaults(func=verify)
    e = sub.add_parser("eval", help="evaluations: fim | fim-report | ensemble (remaining arguments go to the harness; `bytecover eval fim --help`)")
    e.add_argument("which", choices=["fim", "fim-report", "ensemble"])
    e.add_argument("rest", nargs=argparse.REMAINDER)
    e.set_defaults(func=_eval)
    sc = sub.add_parser("score", help="exact byte-level log-likelihood of files: one JSON line per file (bits per byte, logprob, ...)")
    sc.add_argument("files", nargs="+", help="files to score (their bytes as they are)")
    sc.add_argument("--model", default="smollm2-135m", help="registry name or local HF folder")
    sc.add_argument("--batch", type=int, default=16, help="files scored together (their rows share model calls)")
    sc.add_argument("--normalise", action="store_true", help="normalised next-byte distributions instead (much slower; reports non-canonical mass)")
    sc.add_argument("--per-byte", action="store_true",
                    help="include each byte's surprisal in bits (2-5x the time: without it a file costs about one forward)")
    sc.set_defaults(func=_score)
    from .server.options import add_arguments as add_serve_arguments

    sv = sub.add_parser("serve", help="llama.cpp- and OpenAI-compatible completion / fill-in-the-middle server for editors")
    add_serve_arguments(sv)
    sv.set_defaults(func=_serve)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[bytecover] %(message)s")
    return int(args.func(args))


def _eval(args: argparse.Namespace) -> int:
    if args.which == "ensemble":
        from .evaluation.ensemble_eval import main_ensemble

        return int(main_ensemble(args.rest) or 0)
    if args.which == "fim-report":
        from .evaluation.fim_report import main as main_report

        return int(main_report(args.rest) or 0)
    from .evaluation.completion_eval import main_fim

    return int(main_fim(args.rest) or 0)


def _score(args: argparse.Namespace) -> int:
    """JSON lines on stdout (one per file, in order), a progress bar on stderr."""
    import json
    from pathlib import Path

    from tqdm import tqdm

    paths = [Path(f) for f in args.files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"bytecover score: not a readable file: {', '.join(missing)}", file=sys.stderr)
        return 2
    lm = ByteLM.from_pretrained(args.model)
    with tqdm(total=sum(p.stat().st_size for p in paths), unit="B", unit_scale=True, desc=f"score {args.model}", file=sys.stderr) as bar:
        for i in range(0, len(paths), max(1, args.batch)):
            group = paths[i : i + max(1, args.batch)]
            t0 = time.perf_counter()
            scores = lm.score([p.read_bytes() for p in group], normalise=args.normalise, per_byte=args.per_byte)
            seconds = time.perf_counter() - t0
            for p, s in zip(group, scores):
                rec = {"file": str(p), "model": args.model, "bytes": s.n_bytes, "bits_per_byte": s.bits_per_byte, "logprob": s.logprob,
                       "prefix_logprob": s.prefix_logprob, "normalised": s.normalised, "windows": s.windows,
                       "batch_seconds": round(seconds, 3)}
                if args.normalise:
                    rec["noncanonical_nats"] = s.noncanonical_nats
                if s.per_byte is not None:
                    rec["per_byte"] = [round(float(v), 6) for v in s.per_byte]
                print(json.dumps(rec), flush=True)
                bar.update(s.n_bytes)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .server.main import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())

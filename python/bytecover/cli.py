"""Command line: `bytecover demo`, `bytecover prepare`, `bytecover eval fim|ensemble`."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

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

    from . import models
    from .byte_lm import ByteLM
    from .healing import generate_healed, generate_naive

    t0 = time.perf_counter()
    print(f"loading {args.model} (first run converts the GGUF into the cache)...", flush=True)
    model = models.load_model(args.model)
    tokenizer = models.load_tokenizer(args.model)
    lm = ByteLM(model, tokenizer)
    start = list(lm.token_lm.start_ids)  # type: ignore[attr-defined]
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
    from . import models

    models.prepare()
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
    p = sub.add_parser("prepare", help="install the offline models and convert them into the cache")
    p.set_defaults(func=prepare)
    e = sub.add_parser("eval", help="evaluations: fim | ensemble (remaining arguments go to the harness)")
    e.add_argument("which", choices=["fim", "ensemble"])
    e.add_argument("rest", nargs=argparse.REMAINDER)
    e.set_defaults(func=_eval)
    args = parser.parse_args(argv)
    return int(args.func(args))


def _eval(args: argparse.Namespace) -> int:
    if args.which == "ensemble":
        from .evaluation.ensemble_eval import main_ensemble

        return int(main_ensemble(args.rest) or 0)
    from .evaluation.completion_eval import main_fim

    return int(main_fim(args.rest) or 0)


if __name__ == "__main__":
    sys.exit(main())

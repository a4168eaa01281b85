"""Self-check of the harness without a model: ``python -m bytecover.evaluation --out DIR``.

Runs the reference completion (must pass everywhere) and an empty completion (a weak baseline)
on the chosen tasks and prints the summary table.
"""

from __future__ import annotations

import argparse
import sys

from .harness import run_eval, summarize
from .humaneval import make_tasks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bytecover.evaluation", description=__doc__)
    ap.add_argument("--mode", choices=("fim", "l2r"), default="fim")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="first N problems only")
    ap.add_argument("--max-middle-chars", type=int, default=120)
    ap.add_argument("--out", required=True, help="output directory (results.json, results.png)")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--no-resume", action="store_true")
    args = ap.parse_args(argv)
    kw = {"seed": args.seed, "limit": args.limit}
    if args.mode == "fim":
        kw["max_middle_chars"] = args.max_middle_chars
    tasks = make_tasks(args.mode, **kw)
    results = run_eval(
        tasks,
        {"reference": lambda t: t.reference, "empty": lambda t: ""},
        args.out,
        seed=args.seed,
        model_name="(none: reference and empty completions)",
        exec_workers=args.workers,
        resume=not args.no_resume,
    )
    sys.stdout.write(summarize(results))
    ref = results["summary"]["methods"]["reference"]
    return 0 if ref["passed"] == ref["n"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

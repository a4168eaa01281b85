"""`bytecover eval fim`: HumanEval infilling / left-to-right completion with token, heal, bytes.

Each method completes every task with the same greedy decoding; only the treatment of the
prompt boundary differs (see `bytecover.fim`). Generated programs run with the problem's tests
in the sandbox; results, a summary table and a plot go to ``--out``.

The model used here (Qwen2.5-Coder-0.5B-*Instruct*) rarely closes a FIM middle with its end
token; it writes the middle, then the suffix again, then more code. So FIM generation also stops
where the model starts to repeat the suffix (`suffix_stop`) and, as in left-to-right mode, where
it reaches top-level code (a middle lies inside one function body): the same rule for every
method.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .harness import run_eval, summarize
from .humaneval import DEFAULT_STOPS, Task, make_tasks

MODEL_METHODS = ("token", "heal", "bytes")
CHECK_METHODS = ("reference", "empty")


def suffix_stop(suffix: str, min_chars: int = 8, max_chars: int = 40) -> str | None:
    """The text whose appearance in a FIM middle means the model is writing the suffix again:
    the suffix from its start through its first line with content (at least `min_chars` non-blank
    characters, at most `max_chars` characters). None for an all-blank suffix."""
    if not suffix.strip():
        return None
    out, seen = [], 0
    for line in suffix.splitlines(keepends=True):
        out.append(line)
        seen += len(line.strip())
        if seen >= min_chars:
            break
    key = "".join(out).rstrip("\n")
    return key[:max_chars] if key.strip() else None


def model_methods(model: str, names: Sequence[str], *, max_new_bytes: int | None, order: str) -> dict[str, Callable[[Task], str]]:
    """`task -> completion` for each method name, sharing one loaded model."""
    from .. import fim
    from ..byte_lm import ByteLM

    lm = ByteLM.from_pretrained(model)

    def make(method: str) -> Callable[[Task], str]:
        def run(task: Task) -> str:
            budget = max_new_bytes or task.max_new_chars
            if task.mode == "fim":
                # Inside a function body a middle never reaches top-level code (the L2R stops).
                key = suffix_stop(task.suffix)
                stops = [*DEFAULT_STOPS, *([key] if key else [])]
                out = fim.complete(lm, task.prefix, task.suffix, method=method, order=order, max_new_bytes=budget, stop=stops)
            else:
                out = fim.complete(lm, task.prefix, None, method=method, max_new_bytes=budget, stop=list(task.stop))
            assert isinstance(out, str)
            return out

        return run

    return {m: make(m) for m in names}


def main_fim(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bytecover eval fim", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b", help="registry name or local HF directory")
    ap.add_argument("--mode", choices=("fim", "l2r"), default="fim")
    ap.add_argument("--methods", default=",".join(MODEL_METHODS), help=f"comma-separated from {MODEL_METHODS + CHECK_METHODS}")
    ap.add_argument("--order", choices=("psm", "spm"), default="psm", help="FIM order (the model must be trained with it)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="first N problems only (164 in all)")
    ap.add_argument("--max-middle-chars", type=int, default=120)
    ap.add_argument("--max-new-bytes", type=int, default=None, help="generation budget (default: the task's)")
    ap.add_argument("--out", default=None, help="output directory (default benches/results/<mode>/<model>)")
    ap.add_argument("--workers", type=int, default=2, help="sandboxed executions in parallel")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per program")
    ap.add_argument("--no-resume", action="store_true")
    args = ap.parse_args(argv)

    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODEL_METHODS + CHECK_METHODS]
    if unknown or not names:
        ap.error(f"unknown methods {unknown}; choose from {MODEL_METHODS + CHECK_METHODS}")
    kw: dict[str, Any] = {"seed": args.seed, "limit": args.limit}
    if args.mode == "fim":
        kw["max_middle_chars"] = args.max_middle_chars
        kw["max_new_chars"] = 2 * args.max_middle_chars + 16
    else:
        kw["max_new_chars"] = 384
    tasks = make_tasks(args.mode, **kw)

    methods: dict[str, Callable[[Task], str]] = {}
    if "reference" in names:
        methods["reference"] = lambda t: t.reference
    if "empty" in names:
        methods["empty"] = lambda t: ""
    wanted = [m for m in names if m in MODEL_METHODS]
    if wanted:
        methods.update(model_methods(args.model, wanted, max_new_bytes=args.max_new_bytes, order=args.order))
    methods = {m: methods[m] for m in names}
    out = Path(args.out or Path("benches/results") / args.mode / args.model)
    results = run_eval(
        tasks,
        methods,
        out,
        seed=args.seed,
        model_name=args.model if wanted else "(none)",
        config={"order": args.order, "max_new_bytes": args.max_new_bytes, "max_middle_chars": args.max_middle_chars, "decoding": "greedy"},
        command_line=shlex.join(["bytecover", "eval", "fim", *(argv if argv is not None else sys.argv[1:])]),
        timeout_s=args.timeout,
        exec_workers=args.workers,
        resume=not args.no_resume,
    )
    sys.stdout.write(summarize(results))
    sys.stdout.write(f"\nwrote {out}/results.json and results.png\n")
    if "reference" in methods:
        ref = results["summary"]["methods"]["reference"]
        if ref["passed"] != ref["n"]:
            print("the reference completion failed somewhere: the harness is broken", file=sys.stderr)
            return 1
    return 0

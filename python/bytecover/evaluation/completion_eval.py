"""`bytecover eval fim`: HumanEval infilling / left-to-right completion with token, heal, bytes.

Tasks (``--benchmark``, FIM mode):

* ``random-span-light`` (default; 164 tasks), ``random-span`` (1,640), ``single-line`` (1,033):
  the published HumanEval infilling benchmarks (Bavarian et al. 2022), scored with their own
  rule: ``prompt + completion + suffix``, then the problem's test and ``check(entry_point)``;
* ``self-drawn``: one random character span (1-120 characters) of each canonical solution (seed
  ``--seed``), as in the earlier results under ``benches/results/fim/``.

``--mode l2r`` is left-to-right completion from a random point of each solution (self-drawn).

Each method completes every task with the same greedy decoding; only the treatment of the
prompt boundary differs (see `bytecover.fim`). ``reference`` (the canonical middle) and ``empty``
are harness self-checks without a model: their outputs go through the same stop rules as the
model's and must pass 100% / nearly 0%. Generated programs run with the problem's tests in the
sandbox; results (with commit, date, machine, command line and model variant), a summary table
and a plot go to ``--out``.

The model used here (Qwen2.5-Coder-0.5B-*Instruct*) rarely closes a FIM middle with its end
token; it writes the middle, then the suffix again, then more code. So FIM outputs also go
through the stop rule of `bytecover.evaluation.stops` (top-level code, the suffix's first whole
line, an echo of the whole suffix at the end), built so that it cannot cut a correct middle:
the same rule for every method.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from .harness import run_eval, summarize
from .humaneval import Task, make_tasks
from .infilling import BENCHMARKS, DEFAULT_BUDGET_BYTES, infilling_tasks

MODEL_METHODS = ("token", "heal", "bytes")
CHECK_METHODS = ("reference", "empty")
SELF_DRAWN = "self-drawn"
DEFAULT_BENCHMARK = "random-span-light"
#: Name of the stop rule recorded with results (bump when `stops` changes what it cuts).
STOP_RULE = "suffix-line-key+echo/v2"


def model_methods(model: str, names: Sequence[str], *, order: str) -> dict[str, Callable[[Task], str]]:
    """`task -> completion` for each method name, sharing one loaded model. Generation stops at
    the task's stop strings and its budget (``task.max_new_chars`` bytes)."""
    from .. import fim
    from ..byte_lm import ByteLM

    lm = ByteLM.from_pretrained(model)

    def make(method: str) -> Callable[[Task], str]:
        def run(task: Task) -> str:
            suffix = task.suffix if task.mode == "fim" else None
            with lm.batched():  # concurrent tasks (`--batch`) share one forward per step
                out = fim.complete(lm, task.prefix, suffix, method=method, order=order,
                                   max_new_bytes=task.max_new_chars, stop=list(task.stop))
            assert isinstance(out, str)
            return out

        return run

    return {m: make(m) for m in names}


def build_tasks(mode: str, benchmark: str, *, seed: int, limit: int | None, max_new_bytes: int | None,
                max_middle_chars: int = 120) -> list[Task]:
    """The tasks of one run (see the module doc)."""
    if mode == "l2r":
        if benchmark != SELF_DRAWN:
            raise ValueError("left-to-right tasks are self-drawn only (--benchmark self-drawn)")
        return make_tasks("l2r", seed=seed, limit=limit, max_new_chars=max_new_bytes or 384)
    if benchmark == SELF_DRAWN:
        return make_tasks("fim", seed=seed, limit=limit, max_middle_chars=max_middle_chars,
                          max_new_chars=max_new_bytes or 2 * max_middle_chars + 16)
    return infilling_tasks(benchmark, limit=limit, max_new_chars=max_new_bytes or DEFAULT_BUDGET_BYTES)


def default_out(mode: str, benchmark: str, model: str) -> Path:
    if mode == "fim" and benchmark != SELF_DRAWN:
        return Path("benches/results/fim-published") / benchmark / model
    return Path("benches/results") / mode / model


def main_fim(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bytecover eval fim", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b", help="registry name or local HF directory")
    ap.add_argument("--mode", choices=("fim", "l2r"), default="fim")
    ap.add_argument("--benchmark", choices=(*BENCHMARKS, SELF_DRAWN), default=None,
                    help=f"FIM tasks (default {DEFAULT_BENCHMARK}; l2r: {SELF_DRAWN})")
    ap.add_argument("--methods", default=",".join(MODEL_METHODS), help=f"comma-separated from {MODEL_METHODS + CHECK_METHODS}")
    ap.add_argument("--order", choices=("psm", "spm"), default="psm", help="FIM order (the model must be trained with it)")
    ap.add_argument("--seed", type=int, default=0, help="span draw of the self-drawn tasks")
    ap.add_argument("--limit", type=int, default=None, help="first N tasks (self-drawn: first N problems)")
    ap.add_argument("--max-middle-chars", type=int, default=120, help="self-drawn FIM spans only")
    ap.add_argument("--max-new-bytes", type=int, default=None,
                    help=f"generation budget (default: published {DEFAULT_BUDGET_BYTES}, self-drawn FIM 2*max-middle-chars+16, l2r 384)")
    ap.add_argument("--out", default=None, help="output directory (default benches/results/fim-published/<benchmark>/<model>, "
                    "benches/results/<mode>/<model> for self-drawn tasks)")
    ap.add_argument("--workers", type=int, default=2, help="sandboxed executions in parallel")
    ap.add_argument("--batch", type=int, default=1, help="tasks generated at once, sharing one forward per step (the batching scheduler)")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per program")
    ap.add_argument("--no-resume", action="store_true")
    ap.add_argument("--ray", metavar="ADDRESS", default=None,
                    help="spread the tasks over a Ray cluster (\"auto\", host:port; each worker loads its own model)")
    ap.add_argument("--ray-workers", type=int, default=None, help="Ray workers (default: one per CPU of the cluster)")
    args = ap.parse_args(argv)

    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODEL_METHODS + CHECK_METHODS]
    if unknown or not names:
        ap.error(f"unknown methods {unknown}; choose from {MODEL_METHODS + CHECK_METHODS}")
    benchmark = args.benchmark or (DEFAULT_BENCHMARK if args.mode == "fim" else SELF_DRAWN)
    try:
        tasks = build_tasks(args.mode, benchmark, seed=args.seed, limit=args.limit,
                            max_new_bytes=args.max_new_bytes, max_middle_chars=args.max_middle_chars)
    except ValueError as e:
        ap.error(str(e))
    long_refs = [t.task_id for t in tasks if len(t.reference.encode("utf-8")) > t.max_new_chars]
    if long_refs:
        print(f"note: the budget ({tasks[0].max_new_chars} bytes) is shorter than {len(long_refs)} reference "
              f"middles (e.g. {long_refs[0]}); no model can pass those", file=sys.stderr)

    methods: dict[str, Callable[[Task], str]] = {}
    if "reference" in names:
        methods["reference"] = lambda t: t.reference
    if "empty" in names:
        methods["empty"] = lambda t: ""
    wanted = [m for m in names if m in MODEL_METHODS]
    if wanted and not args.ray:  # with --ray, each worker loads the model instead
        methods.update(model_methods(args.model, wanted, order=args.order))
    methods = {m: methods[m] for m in names if m in methods}
    out = Path(args.out) if args.out else default_out(args.mode, benchmark, args.model)
    config: dict[str, Any] = {
        "benchmark": benchmark,
        "order": args.order,
        "max_new_bytes": tasks[0].max_new_chars if tasks else args.max_new_bytes,
        "decoding": "greedy",
        "stop_rule": STOP_RULE if args.mode == "fim" else "l2r-top-level",
        "limit": args.limit,
    }
    if benchmark == SELF_DRAWN and args.mode == "fim":
        config["max_middle_chars"] = args.max_middle_chars
    run: Callable[..., dict[str, Any]]
    if args.ray:
        from .ray_shards import run_sharded

        # Workers build their own methods (a model each); `methods` above stays the driver's.
        def make_methods() -> dict[str, Callable[[Task], str]]:
            built: dict[str, Callable[[Task], str]] = {"reference": lambda t: t.reference, "empty": lambda t: ""}
            if wanted:
                built.update(model_methods(args.model, wanted, order=args.order))
            return {m: built[m] for m in names}

        run = partial(run_sharded, make_methods=make_methods, method_names=names, address=args.ray,
                      workers=args.ray_workers)
    else:
        run = partial(run_eval, methods=methods, batch=args.batch)
    results = run(
        tasks,
        out_dir=out,
        seed=args.seed if benchmark == SELF_DRAWN else None,
        model_name=args.model if wanted else "(none)",
        config=config,
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

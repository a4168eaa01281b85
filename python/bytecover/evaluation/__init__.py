"""Reproducible evaluation harnesses: the published HumanEval infilling benchmarks (random span,
random span light, single line), self-drawn spans and left-to-right completion.

Everything here is pure Python (no model needed)::

    from bytecover.evaluation import infilling_tasks, run_eval, summarize
    tasks = infilling_tasks("random-span-light")
    results = run_eval(tasks, {"token": f1, "bytes": f2}, "benches/results/tmp/fim", model_name=name)
    print(summarize(results))

Every method's output goes through the task's stop rule (`stops`) before it is scored.
"""

from .harness import evaluate_completion, load_results, plot_results, run_eval, summarize
from .humaneval import Problem, Task, fim_tasks, humaneval_path, l2r_tasks, load_problems, make_tasks
from .infilling import BENCHMARKS, infilling_tasks, load_infilling
from .metrics import (
    PairedComparison,
    PassRate,
    mcnemar_exact,
    paired_comparison,
    pass_at_k,
    pass_rate,
    wilson_interval,
)
from .sandbox import ExecResult, run_many, run_program
from .stops import DEFAULT_STOPS, apply_fim_stops, fim_stop_strings, suffix_key, truncate_at_stops

__all__ = [
    "BENCHMARKS",
    "DEFAULT_STOPS",
    "ExecResult",
    "apply_fim_stops",
    "fim_stop_strings",
    "infilling_tasks",
    "load_infilling",
    "suffix_key",
    "PairedComparison",
    "PassRate",
    "Problem",
    "Task",
    "evaluate_completion",
    "fim_tasks",
    "humaneval_path",
    "l2r_tasks",
    "load_problems",
    "load_results",
    "make_tasks",
    "mcnemar_exact",
    "paired_comparison",
    "pass_at_k",
    "pass_rate",
    "plot_results",
    "run_eval",
    "run_many",
    "run_program",
    "summarize",
    "truncate_at_stops",
    "wilson_interval",
]

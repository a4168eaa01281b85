"""Reproducible evaluation harnesses (HumanEval random-span infilling and left-to-right completion).

Everything here is pure Python (no model, no native core needed)::

    from bytecover.evaluation import fim_tasks, run_eval, summarize
    tasks = fim_tasks(seed=0)
    results = run_eval(tasks, {"token": f1, "bytes": f2}, "benches/results/fim", seed=0, model_name=name)
    print(summarize(results))
"""

from .harness import evaluate_completion, load_results, plot_results, run_eval, summarize
from .humaneval import (
    DEFAULT_STOPS,
    Problem,
    Task,
    fim_tasks,
    humaneval_path,
    l2r_tasks,
    load_problems,
    make_tasks,
    truncate_at_stops,
)
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

__all__ = [
    "DEFAULT_STOPS",
    "ExecResult",
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

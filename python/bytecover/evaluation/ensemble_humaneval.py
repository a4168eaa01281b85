"""Pass@1 on HumanEval left-to-right completion: each member alone vs their byte-level ensemble.

Every system decodes greedily byte by byte from the same prompt (the prompt ends at a random
character of the canonical solution, as in `bytecover eval fim --mode l2r`), so the only
difference is the next-byte distribution: one model's, or the members' combination. Every system
chooses each byte exactly by default (lazy engines: `ChoiceState`, `EnsembleChoice`); a positive
`tolerance` puts the single members in bounded-error mode (the lazy ensemble stays exact).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .harness import run_eval, summarize
from .humaneval import Task, l2r_tasks


def humaneval_methods(lms: Mapping[str, Any], modes: Sequence[str], weights: Sequence[float] | None, tolerance: float, max_new_bytes: int) -> dict[str, Callable[[Task], str]]:
    """`task -> completion` for every member and every ensemble mode."""
    from ..ensemble import Ensemble

    for lm in lms.values():
        lm.tolerance = tolerance
    systems: dict[str, Any] = dict(lms)
    for mode in modes:
        systems[f"{mode}({'+'.join(lms)})"] = Ensemble(list(lms.values()), weights=weights, mode="product" if mode == "product" else "mixture")

    def make(system: Any) -> Callable[[Task], str]:
        def run(task: Task) -> str:
            out = system.generate(task.prefix, max_new_bytes=max_new_bytes, temperature=0, stop=list(task.stop))
            assert isinstance(out, str)
            return out

        return run

    return {name: make(s) for name, s in systems.items()}


def run_humaneval(lms: Mapping[str, Any], out: Path, *, n_problems: int, modes: Sequence[str], weights: Sequence[float] | None, tolerance: float, max_new_bytes: int, seed: int, command_line: str) -> dict:
    tasks = l2r_tasks(seed=seed, limit=n_problems, max_new_chars=max_new_bytes)
    results = run_eval(
        tasks,
        humaneval_methods(lms, modes, weights, tolerance, max_new_bytes),
        out,
        seed=seed,
        model_name=" + ".join(lms),
        config={"tolerance": tolerance, "max_new_bytes": max_new_bytes, "decoding": "greedy, byte by byte"},
        command_line=command_line,
        exec_workers=2,
    )
    print(summarize(results))
    return results

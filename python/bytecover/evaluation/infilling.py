"""The published HumanEval infilling benchmarks (Bavarian et al. 2022, "Efficient Training of
Language Models to Fill in the Middle"; data MIT, OpenAI).

Three task sets built from the 164 HumanEval problems; each record has ``task_id``,
``entry_point``, ``prompt`` (the text before the gap), ``suffix`` (the text after it),
``canonical_solution`` (the middle) and ``test``:

=====================  ===========================================  =====
name                   file                                         tasks
=====================  ===========================================  =====
``random-span``        ``HumanEval-RandomSpanInfilling.jsonl.gz``   1,640
``random-span-light``  ``HumanEval-RandomSpanInfillingLight...``      164
``single-line``        ``HumanEval-SingleLineInfilling.jsonl.gz``   1,033
=====================  ===========================================  =====

The benchmark's own scoring: a completion passes when ``prompt + completion + suffix``, followed
by ``test`` and ``check(entry_point)``, runs clean (`Task.program` and the sandbox do exactly
that). The files ship inside the package (``bytecover/evaluation/data/human-eval-infilling/``,
with their licence); ``BYTECOVER_INFILLING_DIR`` may point at another copy.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
from pathlib import Path
from typing import Iterable

from .humaneval import Task
from .stops import fim_stop_strings

__all__ = ["BENCHMARKS", "EXPECTED_COUNTS", "DEFAULT_BUDGET_BYTES", "infilling_dir", "infilling_path", "load_infilling", "infilling_tasks"]

BENCHMARKS: dict[str, str] = {
    "random-span": "HumanEval-RandomSpanInfilling.jsonl.gz",
    "random-span-light": "HumanEval-RandomSpanInfillingLight.jsonl.gz",
    "single-line": "HumanEval-SingleLineInfilling.jsonl.gz",
}
EXPECTED_COUNTS: dict[str, int] = {"random-span": 1640, "random-span-light": 164, "single-line": 1033}

#: Generation budget per middle (bytes). It covers every reference middle of the Light (longest
#: 417 bytes) and SingleLine (141) sets and all but 3 of the 1,640 RandomSpan middles (longest
#: 620); `bytecover eval fim` names the tasks a budget rules out. A model that never stops
#: spends the whole budget on each method, so it sets the run time.
DEFAULT_BUDGET_BYTES = 512

_FIELDS = ("task_id", "entry_point", "prompt", "suffix", "canonical_solution", "test")


def infilling_dir() -> Path:
    """Folder holding the three ``.jsonl.gz`` files (``$BYTECOVER_INFILLING_DIR`` or the package's)."""
    env = os.environ.get("BYTECOVER_INFILLING_DIR")
    return Path(env) if env else Path(__file__).resolve().parent / "data" / "human-eval-infilling"


def infilling_path(benchmark: str) -> Path:
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose from {sorted(BENCHMARKS)}")
    path = infilling_dir() / BENCHMARKS[benchmark]
    if not path.exists():
        raise FileNotFoundError(f"{path} not found (set BYTECOVER_INFILLING_DIR to the folder of the published files)")
    return path


@functools.lru_cache(maxsize=8)
def _read(path: str) -> tuple[dict[str, str], ...]:
    rows = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            r = json.loads(line)
            missing = [k for k in _FIELDS if not isinstance(r.get(k), str)]
            if missing:
                raise ValueError(f"{path}:{n}: missing or non-text fields {missing}")
            rows.append({k: r[k] for k in _FIELDS})
    return tuple(rows)


def load_infilling(benchmark: str) -> list[dict[str, str]]:
    """The records of one benchmark, in file order (a fresh list of fresh dicts)."""
    rows = [dict(r) for r in _read(str(infilling_path(benchmark)))]
    ids = [r["task_id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{benchmark}: duplicate task ids")
    return rows


def _problem_id(task_id: str) -> str:
    # "RandomSpanInfilling/HumanEval/0/1" -> "HumanEval/0"
    parts = task_id.split("/")
    if len(parts) >= 3 and parts[1] == "HumanEval":
        return "/".join(parts[1:3])
    return task_id


def infilling_tasks(
    benchmark: str = "random-span-light",
    *,
    limit: int | None = None,
    task_ids: Iterable[str] | None = None,
    max_new_chars: int = DEFAULT_BUDGET_BYTES,
    stops: bool = True,
) -> list[Task]:
    """The benchmark's tasks as FIM `Task`s (task ids as published; ``limit``: the first N).

    ``prefix`` is the published prompt, ``suffix`` the published suffix, ``reference`` the
    canonical middle; ``cut`` holds the middle's character offsets in ``prompt + middle + suffix``.
    With ``stops`` each task carries the FIM stop rule (`bytecover.evaluation.stops`), applied to
    every method's output alike; ``max_new_chars`` is the generation budget (UTF-8 bytes).
    """
    rows = load_infilling(benchmark)
    if task_ids is not None:
        wanted = set(task_ids)
        rows = [r for r in rows if r["task_id"] in wanted]
    if limit is not None:
        rows = rows[:limit]
    out = []
    for r in rows:
        a = len(r["prompt"])
        out.append(
            Task(
                task_id=r["task_id"],
                problem_id=_problem_id(r["task_id"]),
                mode="fim",
                prefix=r["prompt"],
                suffix=r["suffix"],
                reference=r["canonical_solution"],
                test=r["test"],
                entry_point=r["entry_point"],
                cut=(a, a + len(r["canonical_solution"])),
                stop=fim_stop_strings(r["suffix"]) if stops else (),
                max_new_chars=max_new_chars,
            )
        )
    return out

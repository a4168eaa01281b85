"""Evaluations spread over a Ray cluster: `bytecover eval fim --ray ADDRESS`.

Each worker is a Ray actor holding its own model; the driver hands it a few tasks at a time
(`CHUNK_TASKS`), so a slow task never leaves the other workers idle. A worker scores its chunk
with the ordinary single-process harness (`run_eval`, execution in the sandbox included) and
sends the rows back through Ray's object store, so workers on other machines need no shared
disk. The driver appends every returned row to ``results.partial.jsonl`` in ``out_dir`` at once,
which is exactly what a single-process run writes after each task: a run stopped half way (the
driver killed, a node lost) resumes from there, with or without Ray, and rows written by a
single-process run are not computed again. When every row is in, the driver calls `run_eval`
once more over all tasks; it finds every row done and writes the same ``results.json`` (summary,
plot, provenance) a single process would.

Rows keep the worker's own generation and execution times; their ``run_started`` names the
Ray run, whose ``runs.jsonl`` entry lists the workers (node, pid, threads).

`map_sharded` is the one actor loop: it also serves `bytecover eval ensemble --ray` (one
(member, chunk) pair of rows per request).

`ray` is an optional dependency (``pip install bytecover[ray]``); it is imported only here.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial as partial_fn
from pathlib import Path
from typing import Any

from .harness import PARTIAL_JSONL, RESULTS_JSON, RUNS_JSONL, Method, run_eval
from .humaneval import Task
from .provenance import provenance
from .sandbox import DEFAULT_MEMORY_BYTES, DEFAULT_TIMEOUT_S

__all__ = ["CHUNK_TASKS", "run_sharded", "done_keys", "map_sharded"]

CHUNK_TASKS = 2
"""Tasks per request to a worker: small, so the work stays balanced and little is lost when a
worker dies; each request costs a round trip and a `run_eval` set-up (milliseconds)."""


def done_keys(out_dir: Path, tasks: Sequence[Task], method_names: Sequence[str]) -> set[tuple[str, str]]:
    """(task id, method) pairs that `run_eval(resume=True)` would reuse from `out_dir`: rows of
    ``results.json`` and ``results.partial.jsonl`` whose task fingerprint is unchanged."""
    fps = {t.task_id: t.fingerprint for t in tasks}
    rows: list[dict[str, Any]] = []
    final = out_dir / RESULTS_JSON
    if final.exists():
        try:
            rows.extend(json.loads(final.read_text(encoding="utf-8")).get("rows", []))
        except (OSError, json.JSONDecodeError):
            pass
    partial = out_dir / PARTIAL_JSONL
    if partial.exists():
        for line in partial.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a crash
                continue
    return {(str(r.get("task_id")), str(r.get("method"))) for r in rows
            if r.get("method") in method_names and fps.get(str(r.get("task_id"))) == r.get("fingerprint")}


def _set_threads(threads: int | None) -> None:
    if threads:
        # Set before the model loads: two workers on two cores each with one thread beat two
        # workers each spinning two threads on the same cores.
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)


def _chunk_runner(make_methods: Callable[[], Mapping[str, Method]], timeout_s: float, memory_bytes: int | None,
                  exec_workers: int) -> Callable[[tuple[list[Task], list[str]]], list[dict[str, Any]]]:
    """Built on each worker (`map_sharded`): loads the methods' model once, then scores chunks of
    tasks with the single-process harness and returns their rows."""
    methods = dict(make_methods())

    def run(chunk: tuple[list[Task], list[str]]) -> list[dict[str, Any]]:
        tasks, names = chunk
        with tempfile.TemporaryDirectory(prefix="bytecover-shard-") as tmp:
            results = run_eval(tasks, {m: methods[m] for m in names}, tmp, resume=False, progress=False,
                               plot=False, timeout_s=timeout_s, memory_bytes=memory_bytes,
                               exec_workers=exec_workers, command_line="ray shard")
        return list(results["rows"])

    return run


def _lost(name: str) -> Method:
    def method(task: Task) -> str:
        raise RuntimeError(f"{task.task_id}/{name}: no Ray worker returned this row; rerun to resume")

    return method


def run_sharded(
    tasks: Sequence[Task],
    make_methods: Callable[[], Mapping[str, Method]],
    method_names: Sequence[str],
    out_dir: str | os.PathLike[str],
    *,
    address: str,
    workers: int | None = None,
    threads_per_worker: int | None = 1,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    seed: int | None = None,
    model_name: str | None = None,
    config: Mapping[str, Any] | None = None,
    command_line: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_bytes: int | None = DEFAULT_MEMORY_BYTES,
    exec_workers: int = 1,
    resume: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """`run_eval` with the generation spread over Ray actors (see the module doc).

    `make_methods` runs on each worker and returns ``name -> f(task)`` (it loads the model there,
    so it must be picklable by cloudpickle: a module-level function or a closure over plain data).
    `workers` defaults to the cluster's CPUs divided by `cpus_per_worker` (or its GPUs divided by
    `gpus_per_worker`). `address` is what ``ray.init`` takes (``"auto"``, ``"127.0.0.1:6379"``,
    ``"ray://host:10001"``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(method_names)
    if not resume:
        (out / PARTIAL_JSONL).unlink(missing_ok=True)
        (out / RESULTS_JSON).unlink(missing_ok=True)
    done = done_keys(out, tasks, names)
    todo = [t for t in tasks if any((t.task_id, m) not in done for m in names)]
    # The run's identity in runs.jsonl and in every row: microseconds, so that a run resumed
    # within the same second as the one it resumes (a short run) is still a different run.
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")
    command_line = command_line if command_line is not None else shlex.join([sys.executable, *sys.argv])

    ray_info: dict[str, Any] = {"address": address, "tasks_sent": len(todo), "chunk_tasks": CHUNK_TASKS,
                                "rows_sent": sum(1 for t in todo for m in names if (t.task_id, m) not in done)}
    if todo:
        chunks: list[tuple[list[Task], list[str]]] = []
        for i in range(0, len(todo), CHUNK_TASKS):
            part = todo[i : i + CHUNK_TASKS]
            chunks.append((part, [m for m in names if any((t.task_id, m) not in done for t in part)]))
        with open(out / PARTIAL_JSONL, "a", encoding="utf-8") as partial:

            def keep(chunk: tuple[list[Task], list[str]], rows: list[dict[str, Any]]) -> None:
                for row in rows:
                    if (row["task_id"], row["method"]) not in done:
                        row["run_started"] = started
                        partial.write(json.dumps(row, ensure_ascii=False) + "\n")
                partial.flush()

            facts = map_sharded(chunks, partial_fn(_chunk_runner, make_methods, timeout_s, memory_bytes, exec_workers), keep,
                                address=address, workers=workers, threads_per_worker=threads_per_worker,
                                cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker, progress=progress,
                                desc=f"eval, {CHUNK_TASKS} tasks a request, on Ray workers")
        ray_info.update(workers=facts["workers"], wall_s=facts["wall_s"])
        with open(out / RUNS_JSONL, "a", encoding="utf-8") as f:  # the run the Ray rows name
            entry = {"started_at": started, **provenance(command_line, model_name), "ray": ray_info}
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")

    # Every row is in results.partial.jsonl now: this call only merges, summarises and plots.
    return run_eval(tasks, {m: _lost(m) for m in names}, out, seed=seed, model_name=model_name,
                    config={**(config or {}), "ray": ray_info}, command_line=command_line,
                    timeout_s=timeout_s, resume=True, progress=False)


class _MapWorker:
    """An actor holding the function `make_fn()` built once (models loaded once per worker)."""

    def __init__(self, make_fn: Callable[[], Callable[[Any], Any]], threads: int | None) -> None:
        _set_threads(threads)
        self.threads = threads
        self.fn = make_fn()

    def info(self) -> dict[str, Any]:
        import platform

        return {"node": platform.node(), "pid": os.getpid(), "threads": self.threads}

    def apply(self, item: Any) -> Any:
        return self.fn(item)


def map_sharded(items: Sequence[Any], make_fn: Callable[[], Callable[[Any], Any]], on_result: Callable[[Any, Any], None], *,
                address: str, workers: int | None = None, threads_per_worker: int | None = 1, cpus_per_worker: float = 1.0,
                gpus_per_worker: float = 0.0, progress: bool = True, desc: str = "on Ray workers") -> dict[str, Any]:
    """Apply ``make_fn()`` (built once on each Ray actor: it may load models) to every item, one
    item per request so the work stays balanced; ``on_result(item, value)`` runs on the driver as
    each value comes back (completion order), so the caller can persist it at once and a stopped
    run loses only what was in flight. `make_fn` must be picklable by cloudpickle (a module-level
    function or a `functools.partial` of one). Returns the run's Ray facts (workers, wall time)."""
    import ray as ray_module

    ray: Any = ray_module  # untyped: ray's stubs do not know actor classes made at run time

    if not items:
        return {"address": address, "items": 0}
    owns = not ray.is_initialized()
    if owns:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    try:
        if workers is None:
            res = ray.cluster_resources()
            workers = int(res.get("GPU", 0) // gpus_per_worker) if gpus_per_worker > 0 else int(res.get("CPU", 1) // cpus_per_worker)
        workers = max(1, min(int(workers), len(items)))
        actor_cls = ray.remote(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker)(_MapWorker)
        actors = [actor_cls.remote(make_fn, threads_per_worker) for _ in range(workers)]
        infos = ray.get([a.info.remote() for a in actors])
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(items), desc=f"{desc} ({workers})", unit="item", dynamic_ncols=True, file=sys.stderr)
        t0 = time.perf_counter()
        queue = list(reversed(items))
        running: dict[Any, tuple[Any, Any]] = {}

        def submit(actor: Any) -> None:
            if queue:
                item = queue.pop()
                running[actor.apply.remote(item)] = (actor, item)

        try:
            for a in actors:
                submit(a)
            while running:
                ready, _ = ray.wait(list(running), num_returns=1)
                actor, item = running.pop(ready[0])
                on_result(item, ray.get(ready[0]))
                if bar is not None:
                    bar.update(1)
                submit(actor)
        finally:
            if bar is not None:
                bar.close()
            for a in actors:
                ray.kill(a)
        return {"address": address, "items": len(items), "workers": infos, "wall_s": round(time.perf_counter() - t0, 3)}
    finally:
        if owns:
            ray.shutdown()

"""Run completion methods on evaluation tasks, execute the results, write JSON + a plot.

``run_eval`` calls each method on each task in the calling thread (a model usually lives there),
while the generated programs are executed in sandboxed subprocesses on a small thread pool, so
execution overlaps generation. Every finished (task, method) row is appended to
``results.partial.jsonl`` at once; a rerun with the same ``out_dir`` skips rows already there
(``resume=True``) provided the task's fingerprint is unchanged. At the end ``results.json`` and
``results.png`` are written and the partial file is removed.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .humaneval import Task
from .metrics import paired_comparison, pass_rate
from .provenance import machine, provenance
from .sandbox import DEFAULT_MEMORY_BYTES, DEFAULT_TIMEOUT_S, ExecResult, run_program

__all__ = ["Method", "run_eval", "evaluate_completion", "summarize", "load_results", "plot_results"]

Method = Callable[[Task], "str | bytes"]

RESULTS_JSON = "results.json"
PARTIAL_JSONL = "results.partial.jsonl"
PLOT_PNG = "results.png"
RUNS_JSONL = "runs.jsonl"
_STDERR_KEEP = 600


def evaluate_completion(
    task: Task,
    completion: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_bytes: int | None = DEFAULT_MEMORY_BYTES,
) -> ExecResult:
    """Execute ``task.program(completion)`` with the task's tests in the sandbox."""
    return run_program(task.program(completion), task.test, task.entry_point, timeout_s=timeout_s, memory_bytes=memory_bytes)


def _as_text(out: Any) -> str:
    if isinstance(out, (bytes, bytearray)):
        return bytes(out).decode("utf-8", errors="replace")
    if not isinstance(out, str):
        raise TypeError(f"a method must return str or bytes, got {type(out).__name__}")
    return out


def _read_rows(out_dir: Path) -> list[dict]:
    rows: list[dict] = []
    final = out_dir / RESULTS_JSON
    if final.exists():
        try:
            rows.extend(json.loads(final.read_text(encoding="utf-8")).get("rows", []))
        except (OSError, json.JSONDecodeError):
            pass
    partial = out_dir / PARTIAL_JSONL
    if partial.exists():
        with open(partial, encoding="utf-8") as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut short by a crash
                    continue
    return rows


def _read_runs(out_dir: Path) -> list[dict]:
    runs = []
    path = out_dir / RUNS_JSONL
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                runs.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return runs


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def run_eval(
    tasks: Sequence[Task],
    methods: Mapping[str, Method],
    out_dir: str | os.PathLike,
    *,
    seed: int | None = None,
    model_name: str | None = None,
    config: Mapping[str, Any] | None = None,
    command_line: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    memory_bytes: int | None = DEFAULT_MEMORY_BYTES,
    exec_workers: int = 4,
    resume: bool = True,
    progress: bool = True,
    plot: bool = True,
    on_method_error: str = "raise",
    batch: int = 1,
) -> dict:
    """Run every method on every task; return (and write) the results dict.

    ``batch`` > 1 runs up to that many generations at once, each in a thread of its own (methods
    that enter their model's `batched()` then share one forward per step; `model_methods` does).

    ``methods`` maps a name to ``f(task) -> completion`` (``str``, or ``bytes`` decoded as UTF-8).
    The completion is what goes between ``task.prefix`` and ``task.suffix`` (for L2R tasks it is
    cut at the task's stop strings first). Wall time of each call is recorded as ``gen_time_s``.

    ``on_method_error="record"`` records an exception raised by a method as a failed row
    (status ``"method_error"``) instead of propagating it.

    Resuming (``resume=True``) reuses rows of ``out_dir`` keyed by (task id, method name) whose
    task fingerprint matches; it cannot tell that a method's *implementation* changed under the
    same name, so use a fresh ``out_dir`` (or ``resume=False``) after changing a method.

    Results layout: ``{"config": {...}, "tasks": [...], "rows": [...], "summary": {...}}``;
    ``config["provenance"]`` records commit (and whether the checkout was dirty), source digests,
    date, machine, command line and model variant (`bytecover.evaluation.provenance`). Each run
    also appends its provenance to ``runs.jsonl`` in ``out_dir``; every row names the run that
    produced it (``run_started``) and ``config["runs"]`` lists the earlier runs whose rows were
    resumed.
    """
    if on_method_error not in ("raise", "record"):
        raise ValueError("on_method_error must be 'raise' or 'record'")
    ids = [t.task_id for t in tasks]
    if len(set(ids)) != len(ids):
        raise ValueError("task ids must be unique")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    method_names = list(methods)
    fps = {t.task_id: t.fingerprint for t in tasks}

    done: dict[tuple[str, str], dict] = {}
    if resume:
        for r in _read_rows(out):
            key = (str(r.get("task_id")), str(r.get("method")))
            if key[1] in methods and fps.get(key[0]) == r.get("fingerprint"):
                done[key] = r
    else:
        (out / PARTIAL_JSONL).unlink(missing_ok=True)

    todo = [(t, m) for t in tasks for m in method_names if (t.task_id, m) not in done]
    # The run's identity in runs.jsonl and in every row: microseconds, so that a run resumed
    # within the same second as the one it resumes (a short run) is still a different run.
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")
    command_line = command_line if command_line is not None else shlex.join([sys.executable, *sys.argv])
    cfg: dict[str, Any] = {
        "seed": seed,
        "model_name": model_name,
        "command_line": command_line,
        "methods": method_names,
        "n_tasks": len(tasks),
        "modes": sorted({t.mode for t in tasks}),
        "timeout_s": timeout_s,
        "memory_bytes": memory_bytes,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "started_at": started,
        "resumed_rows": len(done),
        **({"extra": dict(config)} if config else {}),
        # commit (and dirty files), source digests, date, machine, command line, model variant
        "provenance": provenance(command_line, model_name if model_name and model_name != "(none)" else None),
    }
    with open(out / RUNS_JSONL, "a", encoding="utf-8") as f:  # one line per (resumed) run
        f.write(json.dumps({"started_at": started, **cfg["provenance"]}, ensure_ascii=False) + "\n")

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="eval", unit="run", dynamic_ncols=True, file=sys.stderr)
    n_pass = {m: sum(1 for (_, mm), r in done.items() if mm == m and r["passed"]) for m in method_names}
    n_done = {m: sum(1 for (_, mm) in done if mm == m) for m in method_names}

    partial_f = open(out / PARTIAL_JSONL, "a", encoding="utf-8")
    pending: deque[tuple[dict, Future]] = deque()

    def finish(row: dict, fut: Future) -> None:
        res: ExecResult = fut.result()
        row.update(
            passed=res.passed,
            status=res.status,
            detail=res.detail,
            stderr_tail=res.stderr_tail[-_STDERR_KEEP:],
            exec_time_s=round(res.duration_s, 4),
        )
        _finish_row(row)

    def _finish_row(row: dict) -> None:
        done[(row["task_id"], row["method"])] = row
        partial_f.write(json.dumps(row, ensure_ascii=False) + "\n")
        partial_f.flush()
        m = row["method"]
        n_done[m] += 1
        n_pass[m] += bool(row["passed"])
        if bar is not None:
            bar.set_postfix_str(" ".join(f"{k}={n_pass[k]}/{n_done[k]}" for k in method_names), refresh=False)
            bar.update(1)

    def produce(task: Task, name: str) -> tuple[dict[str, Any], str | None, BaseException | None]:
        """Generate one completion (in a worker thread when batched)."""
        row: dict[str, Any] = {
            "task_id": task.task_id,
            "problem_id": task.problem_id,
            "mode": task.mode,
            "method": name,
            "fingerprint": fps[task.task_id],
            "run_started": started,  # which entry of runs.jsonl produced the row
        }
        t0 = time.perf_counter()
        try:
            raw = _as_text(methods[name](task))
        except Exception as e:  # noqa: BLE001 - recorded or re-raised by policy
            row["gen_time_s"] = round(time.perf_counter() - t0, 6)
            return row, None, e
        row["gen_time_s"] = round(time.perf_counter() - t0, 6)
        return row, raw, None

    def consume(task: Task, made: tuple[dict[str, Any], str | None, BaseException | None], pool: ThreadPoolExecutor) -> None:
        """Record a generation and submit its program (main thread only)."""
        row, raw, error = made
        if error is not None:
            if on_method_error == "raise":
                raise error
            row.update(
                completion="", passed=False, status="method_error", detail=f"{type(error).__name__}: {error}"[:300],
                stderr_tail="", exec_time_s=0.0,
            )
            _finish_row(row)
            return
        assert raw is not None
        row["completion"] = raw
        used = task.postprocess(raw)
        if used != raw:
            row["used_completion"] = used
        fut = pool.submit(run_program, task.program(raw), task.test, task.entry_point,
                          timeout_s=timeout_s, memory_bytes=memory_bytes)
        pending.append((row, fut))

    def drain() -> None:
        # record finished executions in order; bound the backlog
        while pending and (pending[0][1].done() or len(pending) > max_backlog):
            finish(*pending.popleft())

    max_backlog = 4 * max(1, exec_workers)
    try:
        with ThreadPoolExecutor(max_workers=max(1, exec_workers)) as pool:
            try:
                if batch <= 1:
                    for task, name in todo:
                        consume(task, produce(task, name), pool)
                        drain()
                else:
                    with ThreadPoolExecutor(max_workers=batch, thread_name_prefix="eval-gen") as gen:
                        futures = {gen.submit(produce, task, name): task for task, name in todo}
                        try:
                            for fut in as_completed(futures):
                                consume(futures[fut], fut.result(), pool)
                                drain()
                        except BaseException:
                            for waiting in futures:
                                waiting.cancel()
                            raise
            finally:
                # also when a method raised: keep every row already generated
                while pending:
                    finish(*pending.popleft())
    finally:
        partial_f.close()
        if bar is not None:
            bar.close()

    order = {m: i for i, m in enumerate(method_names)}
    rows = [done[(t.task_id, m)] for t in tasks for m in sorted(method_names, key=lambda m: order[m]) if (t.task_id, m) in done]
    cfg["finished_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    # torch's thread count is known once a model ran; the rest was taken at the start
    cfg["provenance"]["machine"] = machine()
    cfg["provenance"]["finished"] = cfg["finished_at"]
    # the provenance of every run (this one and resumed ones) whose rows are in the results
    used = {r.get("run_started") for r in rows}
    cfg["runs"] = [r for r in _read_runs(out) if r.get("started_at") in used and r.get("started_at") != started]
    results = {
        "config": cfg,
        "tasks": [{"task_id": t.task_id, "problem_id": t.problem_id, "mode": t.mode, "cut": list(t.cut),
                   "fingerprint": fps[t.task_id]} for t in tasks],
        "rows": rows,
    }
    results["summary"] = _summary(rows, method_names)
    _write_json_atomic(out / RESULTS_JSON, results)
    (out / PARTIAL_JSONL).unlink(missing_ok=True)
    if plot and rows:
        plot_results(results, out / PLOT_PNG)
    return results


def _summary(rows: Sequence[dict], method_names: Sequence[str]) -> dict:
    per: dict[str, Any] = {}
    by_method: dict[str, dict[str, bool]] = {m: {} for m in method_names}
    for r in rows:
        by_method.setdefault(r["method"], {})[r["task_id"]] = bool(r["passed"])
    for m in method_names:
        outcomes = list(by_method[m].values())
        times = [r["gen_time_s"] for r in rows if r["method"] == m]
        statuses: dict[str, int] = {}
        for r in rows:
            if r["method"] == m:
                statuses[r["status"]] = statuses.get(r["status"], 0) + 1
        d = pass_rate(outcomes).to_dict()
        d.update(
            mean_time_s=statistics.fmean(times) if times else None,
            median_time_s=statistics.median(times) if times else None,
            total_time_s=sum(times),
            statuses=statuses,
        )
        per[m] = d
    paired = [
        paired_comparison(by_method[a], by_method[b], a, b).to_dict()
        for a, b in itertools.combinations(method_names, 2)
    ]
    return {"methods": per, "paired": paired}


def load_results(path: str | os.PathLike) -> dict:
    """Read a ``results.json`` (or the directory holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_JSON
    return json.loads(p.read_text(encoding="utf-8"))


def summarize(results: Mapping[str, Any]) -> str:
    """Markdown tables: pass@1 with 95% Wilson CI and time per task; paired comparisons."""
    cfg = results.get("config", {})
    summ = results.get("summary") or _summary(results["rows"], cfg.get("methods") or sorted({r["method"] for r in results["rows"]}))
    lines = []
    head = []
    if cfg.get("model_name"):
        head.append(f"model `{cfg['model_name']}`")
    if cfg.get("modes"):
        head.append("mode " + "/".join(cfg["modes"]))
    if (cfg.get("extra") or {}).get("benchmark"):
        head.append(f"benchmark {cfg['extra']['benchmark']}")
    if cfg.get("seed") is not None:
        head.append(f"seed {cfg['seed']}")
    if head:
        lines += [", ".join(head), ""]
    lines.append("| method | tasks | passed | pass@1 | 95% CI | mean s/task | median s/task |")
    lines.append("|---|---:|---:|---:|---|---:|---:|")
    for m, d in summ["methods"].items():
        mean = f"{d['mean_time_s']:.3f}" if d.get("mean_time_s") is not None else "-"
        med = f"{d['median_time_s']:.3f}" if d.get("median_time_s") is not None else "-"
        lines.append(
            f"| {m} | {d['n']} | {d['passed']} | {d['pass_at_1']:.3f} | [{d['ci_low']:.3f}, {d['ci_high']:.3f}] | {mean} | {med} |"
        )
    if summ.get("paired"):
        lines += ["", "| A vs B | tasks | A only | B only | both | neither | Δ pass@1 | McNemar p |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for p in summ["paired"]:
            lines.append(
                f"| {p['method_a']} vs {p['method_b']} | {p['n']} | {p['a_only']} | {p['b_only']} | "
                f"{p['both_passed']} | {p['both_failed']} | {p['delta']:+.3f} | {p['p_value']:.3g} |"
            )
    return "\n".join(lines) + "\n"


def plot_results(results: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Bar chart of pass@1 with 95% Wilson error bars, and per-task wall time per method (PNG).

    Uses the Agg canvas directly (no pyplot, no global backend switch).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    summ = results["summary"]["methods"]
    names = list(summ)
    # Long system names ("mixture(a+b)") break onto lines so neighbouring labels do not overlap.
    labels = [n.replace("(", "\n(").replace("+", "+\n") if len(n) > 16 else n for n in names]
    rows = results["rows"]
    fig = Figure(figsize=(4 + 2.2 * len(names), 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    x = list(range(len(names)))
    vals = [summ[m]["pass_at_1"] for m in names]
    err = [[v - summ[m]["ci_low"] for m, v in zip(names, vals)], [summ[m]["ci_high"] - v for m, v in zip(names, vals)]]
    colors = [f"C{i % 10}" for i in x]
    ax1.bar(x, vals, yerr=err, capsize=6, color=colors, alpha=0.85)
    for xi, m, v in zip(x, names, vals):
        ax1.text(xi, min(1.0, summ[m]["ci_high"]) + 0.02, f"{v:.3f}\n({summ[m]['passed']}/{summ[m]['n']})",
                 ha="center", va="bottom", fontsize=8)
    ax1.set_xticks(x, labels, rotation=20 if len(names) > 3 else 0)
    ax1.set_ylim(0, 1.15)
    ax1.set_ylabel("pass@1 (95% Wilson CI)")
    ax1.set_title("pass@1")

    times = [[r["gen_time_s"] for r in rows if r["method"] == m] for m in names]
    nonempty = [t for t in times if t]
    if nonempty:
        ax2.boxplot([t if t else [float("nan")] for t in times], positions=x, widths=0.5, showfliers=False)
        import random as _random

        jit = _random.Random(0)
        for xi, t, c in zip(x, times, colors):
            ax2.scatter([xi + jit.uniform(-0.15, 0.15) for _ in t], t, s=6, alpha=0.5, color=c)
        lo = min(min(t) for t in nonempty)
        hi = max(max(t) for t in nonempty)
        if lo > 0 and hi / lo > 50:
            ax2.set_yscale("log")
        else:
            ax2.set_ylim(bottom=0, top=max(hi * 1.1, 1e-3))
    ax2.set_xticks(x, labels, rotation=20 if len(names) > 3 else 0)
    ax2.set_ylabel("wall time per task (s)")
    ax2.set_title("generation time")
    cfg = results.get("config", {})
    title = " · ".join(
        s for s in (cfg.get("model_name"), "/".join(cfg.get("modes", [])), f"{cfg.get('n_tasks', len(rows))} tasks",
                    f"seed {cfg['seed']}" if cfg.get("seed") is not None else None) if s
    )
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path

"""`bytecover serve` side by side with llama.cpp's server: the same FIM requests, the same GGUF.

What an editor user would compare: both servers answer the same OpenAI-style
``POST /v1/completions`` requests with ``suffix`` (what editor plugins send to either), built from
the 164 tasks of HumanEval-RandomSpanInfillingLight: ``prompt`` = the task's prefix, ``suffix`` =
its suffix, greedy (``temperature`` 0), ``max_tokens``, and the task's FIM stop strings as
``stop``. The servers run one after the other, never at the same time, each in its own process:

* llama.cpp: ``python -m llama_cpp.server`` from `.ci/llamacpp-env` (llama-cpp-python built from
  its sdist) on the model's GGUF file, with llama.cpp's own quantised kernels; the FIM prompt is
  token-level, so a prefix that ends inside a token is tokenized as it stands (`request_body`);
* bytecover: ``bytecover serve`` on the same GGUF, dequantised to float32 (exact byte-level FIM:
  the prefix may end inside a token).

Per server: latency of requests sent one at a time (`--latency-tasks` of them: p50/p95 seconds,
completion tokens), then every task with `--clients` concurrent clients (`run_eval`: requests/s,
and pass@1 of the middles executed in the sandbox after the benchmark's FIM stop rule, the same
rule for both). Results: benches/results/server-peer/<model>/ (per-server `results.json` from
`run_eval`, `side_by_side.json` with provenance, a plot and `side_by_side.md`).

    ./.ci/bootstrap python benches/bench_server_peer.py --model qwen2.5-coder-0.5b
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bytecover.evaluation.harness import run_eval
from bytecover.evaluation.humaneval import Task
from bytecover.evaluation.infilling import infilling_tasks
from bytecover.evaluation.metrics import paired_comparison
from bytecover.evaluation.provenance import provenance
from bytecover.fim_templates import TEMPLATES
from bytecover.install import gguf_file
from bytecover.registry import get_spec

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "benches" / "results" / "server-peer"
SERVERS = ("llama.cpp", "bytecover")
FIM_TEMPLATE = "qwen2.5-coder"
"""Sentinels of the model the comparison is run with (the one code model in the registry)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_command(name: str, model: str, gguf: Path, port: int, threads: int) -> list[str]:
    if name == "llama.cpp":
        return [str(ROOT / ".ci" / "llamacpp-env"), "python", "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                "--port", str(port), "--n_ctx", "4096", "--n_threads", str(threads), "--model_alias", model]
    return [sys.executable, "-m", "bytecover", "serve", "--model", model, "--port", str(port), "--timeout", "900", "--log-level", "warning"]


@contextmanager
def running(name: str, model: str, gguf: Path, threads: int, log: Path) -> Iterator[str]:
    """Start one server, wait for it to answer, yield its URL, stop it."""
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    with log.open("w") as out:
        proc = subprocess.Popen(server_command(name, model, gguf, port, threads), stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} server exited with {proc.returncode}; see {log}")
            try:
                if httpx.get(f"{url}/v1/models", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} server did not answer in 10 minutes; see {log}")
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def request_body(server: str, task: Task, model: str, max_tokens: int) -> dict[str, Any]:
    """The request for one task. bytecover: ``prompt`` + ``suffix``. llama.cpp: the FIM prompt
    written out with the model's sentinels (`TEMPLATES`, which llama.cpp parses as control
    tokens), because llama-cpp-python 0.3.36's own ``suffix`` path puts token 0 (``!``) where
    the sentinels go with this GGUF (its log names the right FIM tokens, and the middles came
    back as ``retu!print(...)``); the written-out prompt is what it would build if it worked."""
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "temperature": 0, "stop": list(task.stop)}
    if server == "llama.cpp":
        t = TEMPLATES[FIM_TEMPLATE]
        return {**body, "prompt": f"{t.prefix}{task.prefix}{t.suffix}{task.suffix}{t.middle}"}
    return {**body, "prompt": task.prefix, "suffix": task.suffix}


def complete(url: str, body: dict[str, Any]) -> tuple[str, int, float]:
    """(text, completion tokens, seconds) of one non-streamed request."""
    t0 = time.perf_counter()
    r = httpx.post(f"{url}/v1/completions", json=body, timeout=1800)
    dt = time.perf_counter() - t0
    if r.status_code != 200:
        raise RuntimeError(f"HTTP {r.status_code}: {r.text[:300]}")
    d = r.json()
    return str(d["choices"][0]["text"]), int(d.get("usage", {}).get("completion_tokens", 0)), dt


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def measure(name: str, url: str, tasks: list[Task], model: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    complete(url, request_body(name, tasks[0], model, 4))  # warm-up: first-request set-up is not latency
    lat: list[float] = []
    toks: list[int] = []
    for t in tasks[: args.latency_tasks]:
        _, n, dt = complete(url, request_body(name, t, model, args.max_tokens))
        lat.append(dt)
        toks.append(n)

    def method(t: Task) -> str:
        return complete(url, request_body(name, t, model, args.max_tokens))[0]

    t0 = time.perf_counter()
    res = run_eval(tasks, {name: method}, out / name, model_name=model, batch=args.clients, resume=not args.fresh,
                   command_line=" ".join([sys.executable, *sys.argv]), plot=False, on_method_error="record")
    wall = time.perf_counter() - t0
    fresh = [r for r in res["rows"] if r.get("run_started") == res["rows"][-1].get("run_started")]
    return {
        "latency_one_client": {"n": len(lat), "p50_s": percentile(lat, 0.5), "p95_s": percentile(lat, 0.95), "mean_s": statistics.fmean(lat),
                               "completion_tokens_mean": statistics.fmean(toks) if toks else None,
                               "tokens_per_s": sum(toks) / sum(lat) if sum(lat) else None},
        "all_tasks": {"clients": args.clients, "tasks": len(tasks), "wall_s": wall, "requests_run_now": len(fresh),
                      "requests_per_s": len(fresh) / wall if fresh else None,
                      "gen_time_p50_s": percentile([r["gen_time_s"] for r in res["rows"]], 0.5),
                      "gen_time_p95_s": percentile([r["gen_time_s"] for r in res["rows"]], 0.95)},
        "pass_at_1": res["summary"]["methods"][name],
        "passed": {r["task_id"]: bool(r["passed"]) for r in res["rows"]},
        "completions": {r["task_id"]: r["completion"] for r in res["rows"]},
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s for s in SERVERS if s in result["servers"]]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    p = [result["servers"][s]["pass_at_1"] for s in names]
    axes[0].bar(names, [x["pass_at_1"] for x in p], yerr=[[x["pass_at_1"] - x["ci_low"] for x in p], [x["ci_high"] - x["pass_at_1"] for x in p]], capsize=4)
    axes[0].set_title("pass@1, RandomSpanLight (164)")
    lat = [result["servers"][s]["latency_one_client"] for s in names]
    axes[1].bar([f"{s}\np50" for s in names], [x["p50_s"] for x in lat])
    axes[1].bar([f"{s}\np95" for s in names], [x["p95_s"] for x in lat])
    axes[1].set_title("seconds per request, one client")
    axes[2].bar(names, [result["servers"][s]["all_tasks"]["requests_per_s"] or 0 for s in names])
    axes[2].set_title(f"requests/s, {result['config']['clients']} clients")
    fig.suptitle(result["config"]["model_description"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def table(result: dict[str, Any]) -> str:
    lines = ["| server | pass@1 (95% CI) | one client p50 / p95 (s) | tokens/s (one client) | req/s (" + str(result["config"]["clients"]) + " clients) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for s in SERVERS:
        r = result["servers"].get(s)
        if r is None:
            continue
        p, lat, a = r["pass_at_1"], r["latency_one_client"], r["all_tasks"]
        lines.append(f"| {s} | {p['passed']}/{p['n']} = {p['pass_at_1']:.3f} ({p['ci_low']:.3f}-{p['ci_high']:.3f}) | {lat['p50_s']:.2f} / {lat['p95_s']:.2f} | "
                     f"{lat['tokens_per_s'] or 0:.1f} | {a['requests_per_s'] or 0:.3f} |")
    c = result.get("paired")
    if c:
        lines.append("")
        lines.append(f"Paired: {json.dumps(c)}")
    lines.append(f"\nIdentical middles (after the stop rule): {result['identical_middles']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--benchmark", default="random-span-light")
    ap.add_argument("--limit", type=int, default=None, help="first N tasks only")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--latency-tasks", type=int, default=16)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads of llama.cpp (bytecover uses torch's default)")
    ap.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    ap.add_argument("--fresh", action="store_true", help="do not resume rows of an earlier run")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    spec = get_spec(args.model)
    out = args.out or OUT_DIR / spec.name
    out.mkdir(parents=True, exist_ok=True)
    tasks = infilling_tasks(args.benchmark, limit=args.limit)
    result: dict[str, Any] = {"config": {"model": spec.name, "model_description": spec.description, "benchmark": args.benchmark, "tasks": len(tasks),
                                         "max_tokens": args.max_tokens, "clients": args.clients, "latency_tasks": args.latency_tasks},
                              "servers": {}}
    with gguf_file(spec) as gguf:
        for name in args.servers:
            print(f"== {name}", flush=True)
            with running(name, spec.name, gguf, args.threads, out / f"{name}.log") as url:
                result["servers"][name] = measure(name, url, tasks, spec.name, args, out)
            print(json.dumps({k: v for k, v in result["servers"][name].items() if k not in ("passed", "completions")}), flush=True)
    servers = result["servers"]
    if len(servers) == 2:
        a, b = SERVERS
        result["paired"] = paired_comparison(servers[b]["passed"], servers[a]["passed"], b, a).to_dict()
        same = [t.task_id for t in tasks if t.postprocess(servers[a]["completions"].get(t.task_id, "")) ==
                t.postprocess(servers[b]["completions"].get(t.task_id, ""))]
        result["identical_middles"] = f"{len(same)} of {len(tasks)}"
    else:
        result["identical_middles"] = "n/a (one server)"
    result["provenance"] = provenance(model=spec.name, command_line=" ".join([sys.executable, *sys.argv]))
    (out / "side_by_side.json").write_text(json.dumps(result, indent=1))
    plot(result, out / "side_by_side.png")
    (out / "side_by_side.md").write_text(table(result))
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

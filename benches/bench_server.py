"""Load test of `bytecover serve` on loopback: 1, 8 and 32 concurrent editor clients replaying FIM
requests built from HumanEval-RandomSpanInfillingLight.

Each client streams ``POST /infill`` (the task's prefix and suffix, greedy, ``n_predict`` tokens)
and records the time to the first piece of the middle and to the whole middle; every request of
a level starts at once, `--requests` of them per level spread over the clients. Reported per
level: p50/p95 of both times, requests/s (requests / wall time of the level), errors (non-200,
error events, or a stream without its final event) and the process's peak resident memory (the
server runs in this process, so it includes the model). Results: JSON with provenance, a plot and
a README table under benches/results/server/.

    ./.ci/bootstrap python benches/bench_server.py --model qwen2.5-coder-0.5b --clients 1 8 32 --n-predict 16
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bytecover import ByteLM
from bytecover.evaluation.infilling import infilling_tasks
from bytecover.evaluation.provenance import provenance
from bytecover.server.main import build_app
from bytecover.server.options import Settings

OUT_DIR = Path(__file__).resolve().parent / "results" / "server"


def _serve(app: Any) -> tuple[str, Any, threading.Thread]:
    import socket

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server, thread


def _one(url: str, body: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    first = None
    text = []
    final = False
    try:
        with httpx.stream("POST", url + "/infill", json={**body, "stream": True}, timeout=600) as r:
            if r.status_code != 200:
                return {"error": f"HTTP {r.status_code}: {r.read()[:200]!r}"}
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    return {"error": event["error"]["message"]}
                if event.get("content") and first is None:
                    first = time.perf_counter() - t0
                text.append(event.get("content", ""))
                final = final or bool(event.get("stop"))
    except httpx.HTTPError as e:
        return {"error": repr(e)}
    total = time.perf_counter() - t0
    if not final:
        return {"error": "the stream ended without its final event"}
    return {"first": first if first is not None else total, "total": total, "chars": len("".join(text))}


def run_level(url: str, bodies: list[dict[str, Any]], clients: int) -> dict[str, Any]:
    """`bodies` sent by `clients` threads at once, each taking the next unsent request."""
    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    queue = list(bodies)

    def client() -> None:
        while True:
            with lock:
                if not queue:
                    return
                body = queue.pop(0)
            res = _one(url, body)
            with lock:
                results.append(res)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in results if "error" not in r]
    first = np.array([r["first"] for r in ok]) if ok else np.array([np.nan])
    total = np.array([r["total"] for r in ok]) if ok else np.array([np.nan])
    return {
        "clients": clients,
        "requests": len(results),
        "errors": len(results) - len(ok),
        "error_messages": sorted({r["error"] for r in results if "error" in r})[:5],
        "first_piece_s": {"p50": float(np.percentile(first, 50)), "p95": float(np.percentile(first, 95))},
        "whole_middle_s": {"p50": float(np.percentile(total, 50)), "p95": float(np.percentile(total, 95))},
        "requests_per_s": len(ok) / wall,
        "wall_s": wall,
        "mean_middle_chars": float(np.mean([r["chars"] for r in ok])) if ok else 0.0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = result["levels"]
    x = [lv["clients"] for lv in levels]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for key, label in (("first_piece_s", "first piece"), ("whole_middle_s", "whole middle")):
        for q, style in (("p50", "-o"), ("p95", "--o")):
            axes[0].plot(x, [lv[key][q] for lv in levels], style, label=f"{label} {q}")
    axes[0].set_xscale("log", base=2)
    axes[0].set_xlabel("concurrent clients")
    axes[0].set_ylabel("seconds")
    axes[0].legend(fontsize=8)
    axes[1].plot(x, [lv["requests_per_s"] for lv in levels], "-o")
    axes[1].set_xscale("log", base=2)
    axes[1].set_xlabel("concurrent clients")
    axes[1].set_ylabel("requests / s")
    fig.suptitle(f"bytecover serve, {result['model']}, /infill n_predict={result['n_predict']} ({result['batching']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(result: dict[str, Any]) -> str:
    rows = ["| clients | requests | first piece p50 / p95 (s) | whole middle p50 / p95 (s) | req/s | errors | peak RSS (MB) |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for lv in result["levels"]:
        rows.append(
            f"| {lv['clients']} | {lv['requests']} | {lv['first_piece_s']['p50']:.2f} / {lv['first_piece_s']['p95']:.2f} | "
            f"{lv['whole_middle_s']['p50']:.2f} / {lv['whole_middle_s']['p95']:.2f} | {lv['requests_per_s']:.2f} | {lv['errors']} | {lv['peak_rss_mb']:.0f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--requests", type=int, default=None, help="requests per level (default: as many as clients, at least 4)")
    ap.add_argument("--n-predict", type=int, default=16)
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)
    command = "python benches/bench_server.py " + " ".join(sys.argv[1:] if argv is None else argv)

    tasks = infilling_tasks("random-span-light")
    lm = ByteLM.from_pretrained(args.model)
    app = build_app(lm, Settings(model_id=args.model, timeout_s=3600))
    url, server, thread = _serve(app)
    batching = "batched scheduler" if app.state.engine.batched else "one generation at a time"
    levels = []
    offset = 0
    try:
        # One request first so that one-off start-up costs (first forward, kernel choice) are not
        # charged to the first level.
        _one(url, {"input_prefix": "def f(x):\n    retu", "input_suffix": "\n", "n_predict": 4})
        for clients in args.clients:
            n = args.requests or max(clients, 4)
            picked = [tasks[(offset + i) % len(tasks)] for i in range(n)]
            offset += n  # every level gets fresh tasks: no level is served from another's cache
            bodies = [{"input_prefix": t.prefix, "input_suffix": t.suffix, "n_predict": args.n_predict, "temperature": 0} for t in picked]
            level = run_level(url, bodies, clients)
            print(json.dumps(level), flush=True)
            levels.append(level)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    result = {"model": args.model, "endpoint": "/infill (streaming)", "n_predict": args.n_predict, "batching": batching,
              "benchmark": "HumanEval-RandomSpanInfillingLight", "levels": levels, "provenance": provenance(command, args.model)}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{args.model}"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    plot(result, args.out / f"{stem}.png")
    (args.out / f"{stem}.md").write_text(table(result) + "\n")
    print(table(result))
    return 0 if all(lv["errors"] == 0 for lv in levels) else 1


if __name__ == "__main__":
    sys.exit(main())

"""`bytecover eval fim --ray ADDRESS`: tasks spread over a local Ray cluster give the same rows as
one process, merged into the same results JSON, and a run resumes from rows already written.

Each test module starts its own two-node cluster on loopback (`ray start --block`, one CPU per
node, so two workers) and stops it by ending those two processes; `ray stop` would also stop
other users' clusters on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (pip install -r .ci/requirements.txt)")

from bytecover.evaluation.completion_eval import build_tasks, main_fim  # noqa: E402
from bytecover.evaluation.harness import PARTIAL_JSONL  # noqa: E402

LIMIT = "8"
MODEL = "qwen2.5-coder-0.5b"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ray_bin() -> str:
    found = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if not found:
        pytest.skip("the ray command is not on PATH")
    return found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head + one more node on 127.0.0.1, one CPU each; yields the GCS address."""
    ray_cmd = _ray_bin()
    port = _free_port()
    address = f"127.0.0.1:{port}"
    logs = tmp_path_factory.mktemp("ray")
    common = ["--block", "--num-cpus=1", "--node-ip-address=127.0.0.1", "--object-store-memory=100000000",
              "--disable-usage-stats"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    procs = []
    try:
        head = [ray_cmd, "start", "--head", f"--port={port}", "--include-dashboard=false", *common]
        procs.append(subprocess.Popen(head, stdout=open(logs / "head.log", "w"), stderr=subprocess.STDOUT, env=env,
                                      start_new_session=True))
        _wait_for_nodes(address, 1, procs)
        worker = [ray_cmd, "start", f"--address={address}", *common]
        procs.append(subprocess.Popen(worker, stdout=open(logs / "node.log", "w"), stderr=subprocess.STDOUT, env=env,
                                      start_new_session=True))
        _wait_for_nodes(address, 2, procs)
        yield address
    finally:
        for p in reversed(procs):  # SIGTERM: `ray start --block` takes its node's processes down
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def _wait_for_nodes(address: str, n: int, procs: list[subprocess.Popen]) -> None:
    """Poll the cluster from a throw-away process (a driver here would pin this process to it)."""
    probe = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
             "print(sum(1 for x in ray.nodes() if x['Alive']))")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            pytest.fail("ray start exited early; see its log under pytest's tmp dir")
        out = subprocess.run([sys.executable, "-c", probe, address], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip().isdigit() and int(out.stdout.strip()) >= n:
            return
        time.sleep(1.0)
    pytest.fail(f"the Ray cluster at {address} did not reach {n} nodes in 120 s")


def _rows(out: Path) -> dict[tuple[str, str], dict]:
    data = json.loads((out / "results.json").read_text())
    return {(r["task_id"], r["method"]): r for r in data["rows"]}


def _same_outcome(a: dict, b: dict) -> None:
    for key in ("completion", "passed", "status", "fingerprint"):
        assert a[key] == b[key], (a["task_id"], a["method"], key, a[key], b[key])


def test_resumes_rows_of_a_single_process_run(cluster, tmp_path):
    """Two of four tasks done by one process, one more row left in the partial file by a stopped
    run: the Ray run computes only the rest and merges everything into one results.json."""
    out = tmp_path / "fim"
    base = ["--benchmark", "random-span-light", "--methods", "reference,empty", "--out", str(out)]
    assert main_fim([*base, "--limit", "2"]) == 0
    first = _rows(out)
    third = build_tasks("fim", "random-span-light", seed=0, limit=4, max_new_bytes=None)[2]
    left = {"task_id": third.task_id, "problem_id": third.problem_id, "mode": "fim", "method": "reference",
            "fingerprint": third.fingerprint, "run_started": "a stopped run", "gen_time_s": 0.0,
            "completion": third.reference, "passed": True, "status": "passed", "detail": "",
            "stderr_tail": "", "exec_time_s": 0.0}
    (out / PARTIAL_JSONL).write_text(json.dumps(left) + "\n")  # what a run stopped half way leaves
    assert main_fim([*base, "--limit", "4", "--ray", cluster]) == 0
    merged = json.loads((out / "results.json").read_text())
    rows = _rows(out)
    assert len(rows) == 8 and len(merged["tasks"]) == 4
    for key, row in first.items():  # resumed rows come back untouched, from their own run
        assert rows[key] == row
    assert rows[(third.task_id, "reference")] == left
    fresh = [r for k, r in rows.items() if k not in first and r != left]
    assert len(fresh) == 3
    assert {r["run_started"] for r in fresh} != {r["run_started"] for r in first.values()}
    assert all(r["passed"] for r in fresh if r["method"] == "reference")
    ray_info = merged["config"]["extra"]["ray"]
    # Two tasks make one request (CHUNK_TASKS), so one worker is started, not an idle second one.
    assert ray_info["tasks_sent"] == 2 and len(ray_info["workers"]) == 1 and ray_info["rows_sent"] == 3
    assert merged["summary"]["methods"]["reference"]["passed"] == 4
    # The Ray run is listed with the runs whose rows are in the file.
    assert any("ray" in r for r in merged["config"]["runs"])
    # A rerun finds every row and sends no task.
    assert main_fim([*base, "--limit", "4", "--ray", cluster]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["config"]["extra"]["ray"]["tasks_sent"] == 0
    assert _rows(out) == rows


@pytest.mark.model
@pytest.mark.slow  # ~7 minutes on 2 cores (two workers each load Qwen2.5-Coder): BYTECOVER_SLOW=1
def test_ray_matches_single_process(cluster, tmp_path):
    """`eval fim --benchmark random-span-light --limit 8 --methods bytes`: the same completions
    and verdicts from two Ray workers (each its own model, one thread) as from one process."""
    from bytecover import models

    if not (models.model_dir(MODEL) / "config.json").exists():
        pytest.skip(f"{MODEL} is not prepared (python -m bytecover prepare {MODEL})")
    base = ["--benchmark", "random-span-light", "--limit", LIMIT, "--methods", "bytes", "--model", MODEL]
    one, spread = tmp_path / "one", tmp_path / "ray"
    assert main_fim([*base, "--out", str(one)]) == 0
    assert main_fim([*base, "--out", str(spread), "--ray", cluster]) == 0
    a, b = _rows(one), _rows(spread)
    assert a.keys() == b.keys() and len(a) == int(LIMIT)
    for key in a:
        _same_outcome(a[key], b[key])
    info = json.loads((spread / "results.json").read_text())["config"]["extra"]["ray"]
    assert len({w["node"] + str(w["pid"]) for w in info["workers"]}) == 2


@pytest.mark.model
def test_eval_ensemble_rows_on_ray_match_one_process(cluster, tmp_path):
    """`bytecover eval ensemble --ray`: the members' rows computed on two workers give the same
    bits per byte as one process, and a rerun finds every row in the cache and sends nothing."""
    from bytecover.evaluation.ensemble_eval import main_ensemble

    args = ["--models", "smollm2-135m", "gemma3-270m", "--n-chunks", "2", "--chunk-bytes", "24", "--sweep", "0", "--seed", "3"]
    assert main_ensemble([*args, "--out", str(tmp_path / "one")]) == 0
    assert main_ensemble([*args, "--out", str(tmp_path / "ray"), "--ray", cluster]) == 0
    one = json.loads((tmp_path / "one" / "ensemble_results.json").read_text())
    on_ray = json.loads((tmp_path / "ray" / "ensemble_results.json").read_text())
    assert on_ray["n_chunks_done"] == one["n_chunks_done"] == 2
    assert on_ray["config"]["ray"]["items"] == 4 and len(on_ray["config"]["ray"]["workers"]) == 2
    assert on_ray["summary"].keys() == one["summary"].keys()
    # One torch thread per worker against two here: float32 rows sum in another order. A run on
    # 2026-12-03 differed by 1.05e-6 relative in the mixture's bits (3.4827360 vs 3.4827397);
    # a wrong row or chunk moves them by far more than 1e-5.
    for system, s in one["summary"].items():
        assert on_ray["summary"][system]["per_chunk"] == pytest.approx(s["per_chunk"], rel=1e-5), system
    assert main_ensemble([*args, "--out", str(tmp_path / "ray"), "--ray", cluster]) == 0
    again = json.loads((tmp_path / "ray" / "ensemble_results.json").read_text())
    assert again["config"]["ray"]["items"] == 0 and again["cache_hits"] == 4
    assert again["summary"] == on_ray["summary"]

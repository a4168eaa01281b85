"""Bits per byte of single models and of their byte-level ensembles on real text.

    bytecover eval ensemble --models smollm2-135m gemma3-270m --n-chunks 8 --out DIR
    bytecover eval ensemble --models ... --out DIR

Data: a fixed, seeded sample of chunks (default 8 × 256 bytes) of real text, half from the Python
standard library's sources (``sysconfig.get_paths()["stdlib"]``, code) and half from
``/usr/share/common-licenses`` (prose). Each chunk starts at a line start and ends on a character
boundary; every model scores it from an empty context (its start-of-text context only).

Method: for each model and chunk the harness walks the model's byte state along the chunk and
keeps the full 257-slot next-byte distribution at every position. The ensembles' per-byte
log-probabilities are then the library's own combination rules (`mixture_logprobs`,
`product_logprobs`, exactly what `Ensemble.score` computes) applied to those rows, so one pass per
member scores every ensemble and every weight of the weight sweep. ``--verify-chunks K`` re-scores
the first K chunks with `Ensemble.score` and records the largest difference.

Output (``--out DIR``): ``ensemble_results.json`` (config, chunks, per-chunk and overall bits per
byte, paired comparisons with the best member, weight sweep) and ``ensemble_results.png``.
Per-model rows are cached under ``DIR/cache`` so a rerun resumes; ``--time-budget-s`` stops
starting new chunks after that long and reports the chunks finished.

``--ray ADDRESS`` computes the missing (model, chunk) rows on Ray workers first (each worker loads
the members it is asked for; `ray_shards.map_sharded`), writing each into the cache as it comes
back; the driver loads no model and then summarises exactly as a single process does from the
cache, so the results are the same (`tests/test_ray_shards.py`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import random
import re
import sys
import sysconfig
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .provenance import model_variant, provenance
from .ray_shards import map_sharded

__all__ = ["Chunk", "sample_chunks", "member_rows", "evaluate", "plot_ensemble_results", "main_ensemble"]

REFUSED_SUFFIX = ".refused"
"""Cache file beside a (model, chunk) row file that says why the model refused the chunk."""
RESULTS_JSON = "ensemble_results.json"
PLOT_PNG = "ensemble_results.png"
LICENSES_DIR = "/usr/share/common-licenses"
LN2 = math.log(2)


@dataclass(frozen=True)
class Chunk:
    """One evaluation text: where it comes from and its bytes (UTF-8)."""

    source: str
    """``code`` (stdlib sources) or ``prose`` (licence texts)."""
    path: str
    offset: int
    text: str

    @property
    def data(self) -> bytes:
        return self.text.encode("utf-8")

    @property
    def sha(self) -> str:
        return hashlib.sha256(self.data).hexdigest()[:16]


def _files(source: str) -> list[Path]:
    if source == "code":
        root = Path(sysconfig.get_paths()["stdlib"])
        skip = ("site-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__")
        files = [p for p in root.rglob("*.py") if not any(part in skip for part in p.relative_to(root).parts)]
    else:
        root = Path(LICENSES_DIR)
        files = [p for p in root.iterdir() if p.is_file() and not p.is_symlink()] if root.is_dir() else []
    return sorted(f for f in files if f.stat().st_size >= 1024)


def _cut(raw: bytes, start: int, n_bytes: int) -> str | None:
    """The text of `n_bytes` or fewer from the first line start at or after `start`."""
    nl = raw.find(b"\n", start)
    if nl < 0:
        return None
    piece = raw[nl + 1 : nl + 1 + n_bytes]
    if len(piece) < n_bytes:
        return None
    for end in range(len(piece), max(len(piece) - 4, 0), -1):
        try:
            return piece[:end].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


def _flat(raw: bytes, start: int, n_bytes: int) -> str | None:
    """Like `_cut`, whitespace runs collapsed to one space first (so the chunk is still full)."""
    for span in (4 * n_bytes, 16 * n_bytes):
        text = _cut(raw, start, min(span, len(raw) - start - 2))
        if text is None:
            return None
        flat = re.sub(r"\s+", " ", text).strip().encode("utf-8")
        if len(flat) >= n_bytes:
            return flat[:n_bytes].decode("utf-8", errors="ignore")
    return None


def sample_chunks(n: int, n_bytes: int = 256, seed: int = 0, *, flatten_whitespace: bool = False) -> list[Chunk]:
    """`n` chunks, alternating code and prose, drawn with `random.Random(seed)` (reproducible on
    one machine: the files are whatever this Python and this OS ship).

    ``flatten_whitespace`` turns every run of whitespace (newlines, tabs, indentation) into one
    space: a work-around while ByteLM refuses Gemma-3's newline tokens and long runs of spaces cost
    seconds per byte."""
    rng = random.Random(seed)
    pools = {s: _files(s) for s in ("code", "prose")}
    order = [s for s in ("code", "prose") if pools[s]]
    if not order:
        raise FileNotFoundError("no text found: neither the stdlib sources nor /usr/share/common-licenses are readable")
    chunks: list[Chunk] = []
    seen: set[tuple[str, int]] = set()
    attempts = 0
    while len(chunks) < n:
        attempts += 1
        if attempts > 100 * n + 100:
            raise RuntimeError(f"could not draw {n} chunks of {n_bytes} bytes")
        source = order[len(chunks) % len(order)]
        path = rng.choice(pools[source])
        raw = path.read_bytes()
        if len(raw) < n_bytes + 2:
            continue
        offset = rng.randrange(0, len(raw) - n_bytes)
        text = _cut(raw, offset, n_bytes) if not flatten_whitespace else _flat(raw, offset, n_bytes)
        if text is None or not text.strip() or (str(path), offset) in seen:
            continue
        seen.add((str(path), offset))
        chunks.append(Chunk(source, str(path), offset, text))
    return chunks


def row_path(cache_dir: Path, name: str, chunk: Chunk) -> Path:
    """Where model `name`'s rows along `chunk` are cached (a refusal: beside it, `REFUSED_SUFFIX`)."""
    return cache_dir / f"{name}-{chunk.sha}.npy"


def rows_by_name(devices: dict[str, str]) -> Callable[[tuple[str, Chunk]], np.ndarray | str]:
    """``f((model name, chunk))`` -> that member's rows along the chunk, or the reason the model
    refuses the text; each model is loaded on first use. Built on each Ray worker."""
    from ..byte_lm import ByteLM

    loaded: dict[str, Any] = {}

    def rows(item: tuple[str, Chunk]) -> np.ndarray | str:
        name, chunk = item
        if name not in loaded:
            loaded[name] = ByteLM.from_pretrained(name, device=devices[name])
        try:
            return member_rows(loaded[name], chunk.data)
        except ValueError as err:  # the model refuses the text (e.g. special-token text)
            return str(err)

    return rows


class _NotLoaded:
    """Where a model would be, on a driver that left the rows to Ray workers."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, attr: str) -> Any:
        raise RuntimeError(f"{self.name} is not loaded in this process (--ray computes its rows on the workers)")


def member_rows(lm: Any, data: bytes) -> np.ndarray:
    """(len(data), 257) next-byte log-distributions of `lm` along `data`, stepping one state byte
    by byte (one batched, KV-cached model call per byte; faster here than the prefetching scoring
    state, which recomputes whole prefixes)."""
    state = lm.state(b"")
    out = np.empty((len(data), 257))
    for i, b in enumerate(data):
        out[i] = np.asarray(state.distribution().logprobs, dtype=np.float64)
        state.advance(b)
    return out


def _bits(rows: np.ndarray, data: bytes) -> np.ndarray:
    """Per-byte surprisal in bits of `data` under rows (len(data), 257)."""
    return -rows[np.arange(len(data)), np.frombuffer(data, dtype=np.uint8)] / LN2


def _combine(rows: Sequence[np.ndarray], weights: Sequence[float], mode: str) -> np.ndarray:
    from .._core import ZeroMassError
    from ..ensemble import mixture_logprobs, product_logprobs

    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    fn = mixture_logprobs if mode == "mixture" else product_logprobs
    out = np.empty_like(rows[0])
    for i in range(rows[0].shape[0]):
        try:
            out[i] = fn([r[i] for r in rows], w)
        except ZeroMassError:  # the product has no byte left: every byte costs infinitely many bits
            out[i] = -np.inf
    return out


def _ensemble_name(mode: str, weights: Sequence[float], names: Sequence[str]) -> str:
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    if np.allclose(w, w[0]):
        return f"{mode}({'+'.join(names)})"
    return f"{mode}({'+'.join(f'{x:.2f}·{n}' for x, n in zip(w, names))})"


def _summary(bits_per_chunk: list[np.ndarray]) -> dict[str, Any]:
    per = [float(b.mean()) for b in bits_per_chunk]
    total = float(sum(float(b.sum()) for b in bits_per_chunk))
    n = int(sum(b.size for b in bits_per_chunk))
    sd = float(np.std(per, ddof=1)) if len(per) > 1 else 0.0
    return {
        "bits_per_byte": total / max(n, 1),
        "chunk_mean": float(np.mean(per)) if per else float("nan"),
        "chunk_sem": sd / math.sqrt(len(per)) if per else float("nan"),
        "per_chunk": per,
        "n_bytes": n,
    }


def evaluate(
    models: dict[str, Any],
    chunks: Sequence[Chunk],
    *,
    modes: Sequence[str] = ("mixture", "product"),
    weights: Sequence[float] | None = None,
    sweep: int = 11,
    cache_dir: Path | None = None,
    time_budget_s: float | None = None,
    verify_chunks: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Score every chunk with every model, combine, and summarise (see the module doc)."""
    from tqdm import tqdm

    from ..ensemble import Ensemble

    names = list(models)
    w = list(weights) if weights is not None else [1.0] * len(names)
    t_start = time.perf_counter()
    done: list[tuple[Chunk, dict[str, np.ndarray]]] = []
    seconds: dict[str, float] = {n: 0.0 for n in names}
    skipped: list[dict[str, Any]] = []
    bar = tqdm(total=len(chunks) * len(names), desc="scoring", unit="model·chunk", disable=not progress)
    stopped_early = False
    cache_hits = 0  # (model, chunk) rows read from cache_dir, computed by an earlier run
    for ci, chunk in enumerate(chunks):
        if time_budget_s is not None and done and time.perf_counter() - t_start > time_budget_s:
            stopped_early = True
            break
        rows: dict[str, np.ndarray] = {}
        for name in names:
            path = row_path(cache_dir, name, chunk) if cache_dir is not None else None
            refused = path.with_suffix(REFUSED_SUFFIX) if path is not None else None
            t0 = time.perf_counter()
            try:
                if path is not None and path.exists():
                    rows[name] = np.load(path)
                    cache_hits += 1
                elif refused is not None and refused.exists():
                    cache_hits += 1
                    raise ValueError(refused.read_text(encoding="utf-8"))
                else:
                    try:
                        rows[name] = member_rows(models[name], chunk.data)
                    except ValueError as err:
                        if refused is not None:
                            refused.write_text(str(err), encoding="utf-8")
                        raise
                    if path is not None:
                        np.save(path, rows[name])
            except ValueError as err:  # the model refuses the text (e.g. special-token text)
                skipped.append({"chunk": ci, "model": name, "error": str(err)[:200]})
                bar.update(len(names) - len(rows))
                rows = {}
                break
            seconds[name] += time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix(chunk=f"{ci + 1}/{len(chunks)}", model=name)
        if rows:
            done.append((chunk, rows))
    bar.close()

    systems: dict[str, list[np.ndarray]] = {n: [] for n in names}
    ens_specs = [(_ensemble_name(m, w, names), m, w) for m in modes]
    for label, _, _ in ens_specs:
        systems[label] = []
    sweep_ws = np.linspace(0.0, 1.0, sweep) if len(names) == 2 and sweep > 1 else np.array([])
    sweep_bits: dict[str, list[list[float]]] = {m: [[0.0, 0] for _ in sweep_ws] for m in modes}
    for chunk, rows in done:
        data = chunk.data
        member = [rows[n] for n in names]
        for n in names:
            systems[n].append(_bits(rows[n], data))
        for label, mode, ww in ens_specs:
            systems[label].append(_bits(_combine(member, ww, mode), data))
        for mode in modes:
            for k, a in enumerate(sweep_ws):
                ww = [a, 1.0 - a]
                b = _bits(_combine(member, ww, mode), data) if 0 < a < 1 else _bits(member[0 if a == 1 else 1], data)
                sweep_bits[mode][k][0] += float(b.sum())
                sweep_bits[mode][k][1] += b.size

    summary = {s: _summary(b) for s, b in systems.items()}
    best_member = min(names, key=lambda n: summary[n]["bits_per_byte"]) if done else None
    comparisons: dict[str, Any] = {}
    for label, mode, _ in ens_specs:
        if not done or best_member is None:
            break
        ens = np.array(summary[label]["per_chunk"])
        best = np.array(summary[best_member]["per_chunk"])
        best_each = np.min(np.array([summary[n]["per_chunk"] for n in names]), axis=0)
        d = ens - best
        comparisons[label] = {
            "vs_best_member": best_member,
            "delta_bits_per_byte": summary[label]["bits_per_byte"] - summary[best_member]["bits_per_byte"],
            "chunks_better_than_best_member": int((d < 0).sum()),
            "chunks_better_than_best_member_per_chunk": int((ens < best_each).sum()),
            "delta_sem": float(np.std(d, ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 0.0,
        }
    by_source: dict[str, dict[str, float]] = {}
    for src in sorted({c.source for c, _ in done}):
        idx = [i for i, (c, _) in enumerate(done) if c.source == src]
        by_source[src] = {s: float(sum(b[i].sum() for i in idx) / sum(b[i].size for i in idx)) for s, b in systems.items()}

    verify: list[dict[str, Any]] = []
    for ci in range(min(verify_chunks, len(done))):
        chunk, _ = done[ci]
        for label, mode, ww in ens_specs:
            sc = Ensemble([models[n] for n in names], weights=ww, mode="product" if mode == "product" else "mixture").score(chunk.data)
            diff = float(np.max(np.abs(np.asarray(sc.per_byte) - systems[label][ci])))
            verify.append({"chunk": ci, "system": label, "max_abs_diff_bits": diff})

    return {
        "models": names,
        "weights": list(np.asarray(w) / np.sum(w)),
        "modes": list(modes),
        "summary": summary,
        "comparisons": comparisons,
        "by_source": by_source,
        "sweep": {
            "weight_on_first": sweep_ws.tolist(),
            **{m: [s / max(n, 1) for s, n in sweep_bits[m]] for m in modes},
        },
        "chunks": [{**asdict(c), "sha": c.sha, "n_bytes": len(c.data)} for c, _ in done],
        "n_chunks_requested": len(chunks),
        "n_chunks_done": len(done),
        "stopped_early": stopped_early,
        "cache_hits": cache_hits,
        "skipped": skipped,
        "model_seconds": seconds,
        "verify": verify,
        "wall_s": time.perf_counter() - t_start,
    }


def plot_ensemble_results(results: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Bits per byte per system (bars, per-chunk dots) and, for two models, bpb against the weight."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    summ = results["summary"]
    names = list(summ)
    has_sweep = bool(results["sweep"]["weight_on_first"])
    fig = Figure(figsize=(11 if has_sweep else 6.5, 4.4), dpi=120)
    FigureCanvasAgg(fig)
    axes: Any = fig.subplots(1, 2 if has_sweep else 1)
    ax1 = axes[0] if has_sweep else axes
    x = np.arange(len(names))
    vals = [summ[n]["bits_per_byte"] for n in names]
    err = [summ[n]["chunk_sem"] for n in names]
    colors = [f"C{i % 10}" for i in x]
    ax1.bar(x, vals, yerr=err, capsize=5, color=colors, alpha=0.8)
    jit = random.Random(0)
    for xi, n, c in zip(x, names, colors):
        pc = summ[n]["per_chunk"]
        ax1.scatter([xi + jit.uniform(-0.2, 0.2) for _ in pc], pc, s=8, color="k", alpha=0.5, zorder=3)
        ax1.text(float(xi), summ[n]["bits_per_byte"], f"{summ[n]['bits_per_byte']:.3f}", ha="center", va="bottom", fontsize=8)
    ax1.set_xticks(x, [n.replace("(", "\n(").replace("+", "+\n") for n in names], fontsize=7)
    ax1.set_ylabel("bits per byte (lower is better; ± s.e.m. over chunks)")
    ax1.set_title("held-out text")
    if has_sweep:
        ax2 = axes[1]
        ws = results["sweep"]["weight_on_first"]
        for m in results["modes"]:
            ax2.plot(ws, results["sweep"][m], marker="o", label=m)
        m0, m1 = results["models"]
        ax2.set_xlabel(f"weight on {m0} (1 - weight on {m1})")
        ax2.set_ylabel("bits per byte")
        ax2.set_title("weight sweep")
        ax2.legend()
    cfg = results.get("config", {})
    fig.suptitle(f"{results['n_chunks_done']} chunks × {cfg.get('chunk_bytes', '?')} bytes, seed {cfg.get('seed', '?')}"
                 + (" (whitespace flattened)" if cfg.get("flatten_whitespace") else ""), fontsize=10)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    return out


def _table(results: dict[str, Any]) -> str:
    lines = [f"{'system':<48} {'bits/byte':>9} {'± sem':>7}"]
    for n, s in results["summary"].items():
        lines.append(f"{n:<48} {s['bits_per_byte']:>9.4f} {s['chunk_sem']:>7.4f}")
    for n, c in results["comparisons"].items():
        lines.append(f"{n} - {c['vs_best_member']}: {c['delta_bits_per_byte']:+.4f} bits/byte "
                     f"(better on {c['chunks_better_than_best_member']}/{results['n_chunks_done']} chunks)")
    return "\n".join(lines) + "\n"


def rows_on_ray(chunks: Sequence[Chunk], devices: dict[str, str], cache: Path, *, address: str, workers: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Compute every (model, chunk) row file missing from `cache` on Ray workers (`map_sharded`),
    writing each as it arrives (a refusal as its `.refused` note), so `evaluate` then finds them
    all. Returns the Ray facts for the results' config."""
    wanted: list[tuple[str, Chunk]] = []
    for chunk in chunks:
        for name in devices:
            path = row_path(cache, name, chunk)
            if not path.exists() and not path.with_suffix(REFUSED_SUFFIX).exists():
                wanted.append((name, chunk))

    def keep(item: tuple[str, Chunk], value: np.ndarray | str) -> None:
        path = row_path(cache, *item)
        if isinstance(value, str):
            path.with_suffix(REFUSED_SUFFIX).write_text(value, encoding="utf-8")
        else:
            np.save(path, value)

    return map_sharded(wanted, partial(rows_by_name, devices), keep, address=address, workers=workers, progress=progress,
                       desc="member rows on Ray workers")


def main_ensemble(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (``bytecover eval ensemble ...``)."""
    ap = argparse.ArgumentParser(prog="bytecover eval ensemble", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"], help="registry names or HF directories")
    ap.add_argument("--devices", nargs="+", default=None, help="one device per model (default: cpu for all)")
    ap.add_argument("--modes", nargs="+", choices=("mixture", "product"), default=["mixture", "product"])
    ap.add_argument("--weights", nargs="+", type=float, default=None, help="ensemble weights (default: equal)")
    ap.add_argument("--n-chunks", type=int, default=8)
    ap.add_argument("--chunk-bytes", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--flatten-whitespace", action="store_true", help="collapse every whitespace run into one space")
    ap.add_argument("--sweep", type=int, default=11, help="weight-sweep points for two models (0: none)")
    ap.add_argument("--time-budget-s", type=float, default=None, help="start no new chunk after this many seconds")
    ap.add_argument("--verify-chunks", type=int, default=0, help="re-score the first K chunks with Ensemble.score")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--humaneval", type=int, default=0, metavar="N",
                    help="also pass@1 on the first N HumanEval problems, left to right (writes DIR/humaneval/)")
    ap.add_argument("--he-tolerance", type=float, default=0.0, help="bounded-error tolerance of the single members for --humaneval (0: exact)")
    ap.add_argument("--he-max-bytes", type=int, default=160, help="generation budget per task for --humaneval")
    ap.add_argument("--skip-bpb", action="store_true", help="only the HumanEval part")
    ap.add_argument("--ray", metavar="ADDRESS", default=None,
                    help="compute the members' rows on a Ray cluster (\"auto\", host:port); each worker loads the models it needs")
    ap.add_argument("--ray-workers", type=int, default=None, help="Ray workers (default: one per CPU of the cluster)")
    args = ap.parse_args(argv)
    if args.ray and (args.humaneval or args.verify_chunks):
        ap.error("--humaneval and --verify-chunks run the models in this process; run them without --ray")
    if args.weights is not None and len(args.weights) != len(args.models):
        ap.error(f"{len(args.weights)} weights for {len(args.models)} models")
    devices = args.devices or ["cpu"] * len(args.models)
    if len(devices) != len(args.models):
        ap.error("give one device per model")

    out = Path(args.out)
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from ..byte_lm import ByteLM

    chunks = sample_chunks(args.n_chunks, args.chunk_bytes, args.seed, flatten_whitespace=args.flatten_whitespace)
    t0 = time.perf_counter()
    lms: dict[str, Any]
    ray_info: dict[str, Any] | None = None
    if args.ray:
        lms = {name: _NotLoaded(name) for name in args.models}
        ray_info = rows_on_ray(chunks, dict(zip(args.models, devices)), cache, address=args.ray, workers=args.ray_workers)
    else:
        lms = {name: ByteLM.from_pretrained(name, device=dev) for name, dev in zip(args.models, devices)}
    load_s = time.perf_counter() - t0
    command = "bytecover eval ensemble " + " ".join(sys.argv[1:] if argv is None else list(argv))
    # Taken before the run: the commit and sources that computed the rows (a checkout changed
    # while a long run goes on must not be credited with it). Rows resumed from `cache/` were
    # computed by whichever run wrote them; `cache_hits` in the results says how many.
    started = {"provenance": provenance(command), "model_variants": {name: model_variant(name) for name in args.models}}
    if args.humaneval:
        from .ensemble_humaneval import run_humaneval

        run_humaneval(lms, out / "humaneval", n_problems=args.humaneval, modes=args.modes, weights=args.weights,
                      tolerance=args.he_tolerance, max_new_bytes=args.he_max_bytes, seed=args.seed, command_line=command)
    if args.skip_bpb:
        return 0
    results = evaluate(lms, chunks, modes=args.modes, weights=args.weights, sweep=args.sweep, cache_dir=cache,
                       time_budget_s=args.time_budget_s, verify_chunks=args.verify_chunks)
    results["config"] = {
        "command": command,
        "models": args.models,
        "devices": devices,
        "chunk_bytes": args.chunk_bytes,
        "seed": args.seed,
        "flatten_whitespace": args.flatten_whitespace,
        "load_s": load_s,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        **started,
        "ray": ray_info,
    }
    (out / RESULTS_JSON).write_text(json.dumps(results, indent=1))
    plot_ensemble_results(results, out / PLOT_PNG)
    sys.stdout.write(_table(results))
    sys.stdout.write(f"wrote {out / RESULTS_JSON} and {out / PLOT_PNG}\n")
    return 0


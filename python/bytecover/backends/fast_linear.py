"""Linear layers as ``W @ x.T`` during our forwards on a CPU, where that is measurably faster.

A forward that feeds a few tokens multiplies every weight matrix by a handful of rows. torch's
``linear`` computes ``x @ W.T``, and on the 2-core machine MKL does that slowly for these shapes
while ``torch.mm(W, x.T)`` is fast (one row is fed twice: MKL's matrix-vector path is the slow
one here). Whole SmolLM2-135M forwards on a cached prompt, 1 / 2 / 4 / 8 tokens: 55 / 87 / 80 /
76 ms with torch's path, 30 / 30 / 39 / 61 ms with this one (benches/bench_forward.py).

The advantage holds well past a few rows. Whole Qwen2.5-Coder-0.5B forwards without a cache,
2026-12-02 (`W @ x.T` vs torch's path, best of 3): 4 tokens 326 vs 945 ms, 16 tokens 572 vs
1011 ms, 64 tokens 1170 vs 1725 ms; from 256 tokens on torch's path is faster (3.9 vs 4.2 s) and
so is ``x @ Wt`` with a pre-transposed copy ``Wt`` of ``W`` (tried: no better than torch's path below 256
rows, and it doubles the weights' memory). The cap used to be 8 rows, so a batch-16 step (16 to
48 new tokens) took torch's path. Inside batched greedy decoding the gain measured smaller than in
these bare forwards: ~15-25% per 20-30-token step for Qwen2.5-Coder, within the machine's noise
for SmolLM2 (benches/results/batch/README.md).

Because all this depends on the CPU and the BLAS build, `FastLinears` measures it once, with
whole forwards of the model itself (once per process for each set of weight shapes), one probe
per band of row counts (`BANDS`), and uses ``W @ x.T`` only in the bands where it won by 10% or
more. `active()` swaps the ``forward`` of the model's float32 ``nn.Linear`` modules for the
duration of one of our forwards and restores them afterwards: the model object the caller holds,
and ``model.generate``, are left as they were. GPUs, other dtypes and modules wrapped by hooks are
not touched. Results equal ``linear``'s up to float32 summation order (as between torch's own
matrix-vector and matrix-matrix paths).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

BANDS: tuple[tuple[int, int], ...] = ((1, 1), (8, 4), (48, 48))
"""(largest row count of the band, rows its probe forward feeds): one row, two to 8 rows, 9 to
48 rows (a batch-16 step with up to three new tokens per sequence). Above the last band (a
prompt's prefill) torch's own path is used."""


_MEASURED: dict[tuple[Any, ...], tuple[dict[int, bool], dict[tuple[int, bool], float]]] = {}
"""Calibration verdicts and timings so far in this process, by (weight shapes, torch threads)."""


class FastLinears:
    """The float32 CPU ``nn.Linear`` modules of one model, and for each band of row counts
    (`BANDS`) whether ``W @ x.T`` pays (`wins`, keyed by the band's largest row count). While
    `active()`, another thread running the same model object also gets the swapped layers (same
    numbers up to rounding)."""

    def __init__(self, model: Any) -> None:
        import torch

        self._torch = torch
        self.modules = [m for m in model.modules() if _swappable(torch, m)]
        self._projections = [(m, self._project_with(m)) for m in self.modules]
        self.wins: dict[int, bool] = {upto: False for upto, _ in BANDS}
        self.timings: dict[tuple[int, bool], float] = {}
        if self.modules:
            # The verdicts depend on the products' shapes and the thread count, not the weights:
            # a second model of the same shapes in this process (a test suite, a server reloading)
            # reuses them instead of paying the probe forwards again.
            key = (tuple(tuple(m.weight.shape) for m in self.modules), torch.get_num_threads())
            if key not in _MEASURED:
                self._calibrate(model)
                _MEASURED[key] = (dict(self.wins), dict(self.timings))
            wins, timings = _MEASURED[key]
            self.wins, self.timings = dict(wins), dict(timings)

    def force(self, on: bool) -> None:
        """Take (or never take) ``W @ x.T`` in every band, whatever the timing chose."""
        self.wins = {upto: on for upto, _ in BANDS}

    def swaps(self, rows: int) -> bool:
        """Whether a product with `rows` rows takes ``W @ x.T``."""
        return next((self.wins[upto] for upto, _ in BANDS if rows <= upto), False)

    @property
    def enabled(self) -> bool:
        return any(self.wins.values())

    def active(self) -> Any:
        """Context in which the swapped layers compute ``W @ x.T`` (a no-op when never faster)."""
        return self._swapped() if self.enabled else nullcontext()

    @contextmanager
    def _swapped(self) -> Iterator[None]:
        # Straight into the instance dicts (nn.Module.__setattr__ costs ~5 us a module, and a
        # model has hundreds): an instance attribute `forward` shadows the class method.
        for m, f in self._projections:
            m.__dict__["forward"] = f
        try:
            yield
        finally:
            for m, _ in self._projections:
                m.__dict__.pop("forward", None)

    def _project_with(self, module: Any) -> Any:
        weight, bias = module.weight, module.bias
        return lambda x: self._project(x, weight, bias)

    def _project(self, x: Any, weight: Any, bias: Any) -> Any:
        torch = self._torch
        flat = x.reshape(-1, x.shape[-1])
        n = flat.shape[0]
        if not self.swaps(n):
            return torch.nn.functional.linear(x, weight, bias)
        cols = torch.cat((flat, flat)) if n == 1 else flat  # a real copy: a stride-0 view is slower
        out = torch.mm(weight, cols.t()).t()[:n]
        if bias is not None:
            out = out + bias
        return out.contiguous().reshape(*x.shape[:-1], weight.shape[0])

    def _calibrate(self, model: Any, reps: int = 2) -> None:
        """Time whole forwards of `model` (one per band, no cache) with and without the swap,
        interleaved, best of `reps`, and keep ``W @ x.T`` in the bands where it was at least 10%
        faster. Whole forwards, because a layer timed alone sits in the cache and misleads:
        alone, SmolLM2's 1536 x 576 layer is faster with ``linear`` for one row; in the model it
        is not. Cost, once per process: ~2.5 s for SmolLM2-135M (its probe timings on 2 cores,
2026-12-02), ~8 s for Qwen2.5-Coder-0.5B (from its forward times measured the same day)."""
        torch = self._torch
        device = self.modules[0].weight.device
        times: dict[tuple[int, bool], float] = {}
        self.force(True)  # what _swapped() uses while timing
        try:
            with torch.inference_mode():
                for _ in range(reps):
                    for _, rows in BANDS:
                        ids = torch.zeros((1, rows), dtype=torch.long, device=device)
                        for swap in (False, True):
                            with self._swapped() if swap else nullcontext():
                                t0 = time.perf_counter()
                                model(input_ids=ids, use_cache=False)
                                dt = time.perf_counter() - t0
                            times[rows, swap] = min(dt, times.get((rows, swap), dt))
            self.timings = times
        except Exception:  # a model that cannot run this probe keeps torch's path
            self.force(False)
            return
        self.wins = {upto: times[rows, True] < 0.9 * times[rows, False] for upto, rows in BANDS}


def _swappable(torch: Any, m: Any) -> bool:
    w = getattr(m, "weight", None)
    return (isinstance(m, torch.nn.Linear) and w is not None and w.device.type == "cpu" and w.dtype == torch.float32
            and "forward" not in vars(m) and not getattr(m, "_hf_hook", None) and not m._forward_hooks and not m._forward_pre_hooks)

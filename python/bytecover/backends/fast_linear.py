"""Linear layers as ``W @ x.T`` during our forwards on a CPU, where that is measurably faster.

A forward that feeds a few tokens multiplies every weight matrix by a handful of rows. torch's
``linear`` computes ``x @ W.T``, and on the 2-core machine MKL does that slowly for these shapes
while ``torch.mm(W, x.T)`` is fast (one row is fed twice: MKL's matrix-vector path is the slow
one here). Whole SmolLM2-135M forwards on a cached prompt, 1 / 2 / 4 / 8 tokens: 55 / 87 / 80 /
76 ms with torch's path, 30 / 30 / 39 / 61 ms with this one (benches/bench_forward.py).

Because that depends on the CPU and the BLAS build, `FastLinears` measures it once, with whole
forwards of the model itself (1 and 4 tokens), and uses ``W @ x.T`` only for the cases (one row;
two to `MAX_ROWS` rows) where it won by 10% or more. `active()` swaps the ``forward`` of the model's float32
``nn.Linear`` modules for the duration of one of our forwards and restores them afterwards: the
model object the caller holds, and ``model.generate``, are left as they were. GPUs, other dtypes
and modules wrapped by hooks are not touched. Results equal ``linear``'s up to float32 summation
order (as between torch's own matrix-vector and matrix-matrix paths).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

MAX_ROWS = 8
"""Above this many rows (a prompt's prefill) torch's own path is used."""


class FastLinears:
    """The float32 CPU ``nn.Linear`` modules of one model, and whether ``W @ x.T`` pays for one
    row (`one_row`) and for two to `MAX_ROWS` rows (`few_rows`). While `active()`, another
    thread running the same model object also gets the swapped layers (same numbers up to
    rounding)."""

    def __init__(self, model: Any) -> None:
        import torch

        self._torch = torch
        self.modules = [m for m in model.modules() if _swappable(torch, m)]
        self._projections = [(m, self._project_with(m)) for m in self.modules]
        self.one_row = self.few_rows = False
        self.timings: dict[tuple[int, bool], float] = {}
        if self.modules:
            self._calibrate(model)

    @property
    def enabled(self) -> bool:
        return self.one_row or self.few_rows

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
        if not (self.one_row if n == 1 else self.few_rows and n <= MAX_ROWS):
            return torch.nn.functional.linear(x, weight, bias)
        cols = torch.cat((flat, flat)) if n == 1 else flat  # a real copy: a stride-0 view is slower
        out = torch.mm(weight, cols.t()).t()[:n]
        if bias is not None:
            out = out + bias
        return out.contiguous().reshape(*x.shape[:-1], weight.shape[0])

    def _calibrate(self, model: Any, reps: int = 3) -> None:
        """Time whole forwards of `model` (1 and 4 tokens, no cache) with and without the swap,
        interleaved, best of `reps`, and keep ``W @ x.T`` where it was at least 10% faster.
        Whole forwards, because a layer timed alone sits in the cache and misleads: alone,
        SmolLM2's 1536 x 576 layer is faster with ``linear`` for one row; in the model it is
        not."""
        torch = self._torch
        device = self.modules[0].weight.device
        times: dict[tuple[int, bool], float] = {}
        self.one_row = self.few_rows = True  # what _swapped() uses while timing
        try:
            with torch.inference_mode():
                for _ in range(reps):
                    for rows in (1, 4):
                        ids = torch.zeros((1, rows), dtype=torch.long, device=device)
                        for swap in (False, True):
                            with self._swapped() if swap else nullcontext():
                                t0 = time.perf_counter()
                                model(input_ids=ids, use_cache=False)
                                dt = time.perf_counter() - t0
                            times[rows, swap] = min(dt, times.get((rows, swap), dt))
            self.timings = times
        except Exception:  # a model that cannot run this probe keeps torch's path
            self.one_row = self.few_rows = False
            return
        self.one_row = times[1, True] < 0.9 * times[1, False]
        self.few_rows = times[4, True] < 0.9 * times[4, False]


def _swappable(torch: Any, m: Any) -> bool:
    w = getattr(m, "weight", None)
    return (isinstance(m, torch.nn.Linear) and w is not None and w.device.type == "cpu" and w.dtype == torch.float32
            and "forward" not in vars(m) and not getattr(m, "_hf_hook", None) and not m._forward_hooks and not m._forward_pre_hooks)

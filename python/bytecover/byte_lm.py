"""`ByteLM`: any token language model as an exact byte-level model (the public facade).

The work is done below it: `ByteSpec` (what states need to know), the states (`ByteState`,
`ChoiceState`), the exact hand-off (`handoff`), and the gateway that owns every model call.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from . import _core, models
from .backends.hf import HFTokenLM
from .backends.protocol import TokenLM
from .backends.vllm import VLLMTokenLM, is_vllm_llm
from .byte_model import ByteModel, Score
from .choice import ChoiceState
from .full_state import ByteState
from .gateway import CallStats, ModelGateway
from .handoff import handoff_chunks
from .prefix_scoring import score_texts
from .sampling import SamplingConfig
from .scheduler import Scheduler
from .spec import ByteSpec
from .state_protocol import ByteStep
from .streaming import Text, as_bytes
from .token_tables import TokenTables
from .tokenizer_support import default_eos_ids, detect_start_ids, max_positions, tokenizer_json

__all__ = ["ByteLM"]

SCORING_BATCH = 16
"""Token prefixes per request when `score` prefetches every row a text needs."""


class ByteLM(ByteModel):
    """An exact byte-level view of a token language model.

    ``ByteLM(model, tokenizer)`` wraps a transformers causal LM and its tokenizer;
    ``ByteLM(token_lm, tokenizer)`` any object with the `TokenLM` protocol;
    ``ByteLM.from_pretrained(name)`` a registry name (see `bytecover.models`) or a local HF directory.

    ``tolerance`` > 0 selects the bounded-error mode; ``speculate`` is the length of the
    prompt-lookup drafts whose rows generation fetches ahead in calls it makes anyway
    (`bytecover.speculation`; 0 turns them off; exactness does not depend on it).
    """

    supports_handoff = True

    def __init__(self, model: Any, tokenizer: Any, *, eos_ids: Sequence[int] | None = None, tolerance: float = 0.0, max_prompt_tokens: int | None = None, speculate: int = 3) -> None:
        self.tokenizer = tokenizer
        token_lm: TokenLM
        if hasattr(model, "logprobs") and hasattr(model, "vocab_size"):
            token_lm = model
            self.model = getattr(model, "model", None)
        elif is_vllm_llm(model):  # an engine the user built; rows come through it
            token_lm = VLLMTokenLM(model, tokenizer)
            self.model = None
        else:
            # A document starts after BOS; tokenizers without one (SmolLM2, Qwen, GPT-2) separate
            # documents with their end-of-text token, so that is the start context here.
            start = detect_start_ids(tokenizer) or default_eos_ids(tokenizer)[:1]
            token_lm = HFTokenLM(model, tokenizer, bos_ids=start)
            self.model = model
        width = int(token_lm.vocab_size)
        core = _core.Tokenizer.from_json(tokenizer_json(tokenizer), n_logits=width)
        specials = (core.token_string(i) for i in core.special_ids)
        self.spec = ByteSpec(
            core=core,
            gateway=ModelGateway(token_lm, speculate=speculate),
            eos_ids=tuple(int(t) for t in eos_ids) if eos_ids is not None else tuple(default_eos_ids(tokenizer)),
            tables=TokenTables(core, width),
            max_prompt_tokens=max_prompt_tokens or max_positions(self.model) or getattr(token_lm, "max_model_len", None),
            special_texts=tuple(s.encode() for s in specials if s),
        )
        """Everything the states need (tokenizer core, gateway, end ids, tables, limits)."""
        self.tolerance = tolerance

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, device: str = "cpu", dtype: Any = None, backend: str = "hf",
                        engine_kw: dict[str, Any] | None = None, **kw: Any) -> ByteLM:
        """A registry model (converted on first use) or a local HF checkpoint folder.

        ``backend="vllm"`` runs the model on a vLLM engine (`bytecover.backends.vllm`; `dtype` a
        string such as ``"bfloat16"``, default float32); `engine_kw` go to ``vllm.LLM``
        (``tensor_parallel_size``, ``pipeline_parallel_size``, ``gpu_memory_utilization``...)."""
        tokenizer = models.load_tokenizer(name_or_path)
        if backend == "vllm":
            folder = models.ensure_model(name_or_path) if models.is_registry_name(str(name_or_path)) else name_or_path
            token_lm = VLLMTokenLM.from_pretrained(str(folder), tokenizer, dtype=str(dtype or "float32").removeprefix("torch."),
                                                   **(engine_kw or {}))
            return cls(token_lm, tokenizer, **kw)
        if backend != "hf":
            raise ValueError(f"backend must be 'hf' or 'vllm', got {backend!r}")
        model = models.load_model(name_or_path, device=device, dtype=dtype)
        return cls(model, tokenizer, **kw)

    # -- what the spec holds, under the names users already know ------------------------------
    @property
    def core(self) -> _core.Tokenizer:
        """The tokenizer as the Rust core sees it."""
        return self.spec.core

    @property
    def token_lm(self) -> TokenLM:
        """The token-level model (reached through `spec.gateway`)."""
        return self.spec.gateway.token_lm

    @property
    def eos_ids(self) -> list[int]:
        return list(self.spec.eos_ids)

    @property
    def max_prompt_tokens(self) -> int | None:
        return self.spec.max_prompt_tokens

    @property
    def speculate(self) -> int:
        """Draft length for speculative rows in generation (`bytecover.speculation`; 0: off)."""
        return self.spec.gateway.speculate

    @speculate.setter
    def speculate(self, n: int) -> None:
        self.spec.gateway.speculate = int(n)

    def with_context(self, context_ids: Sequence[int], *, eos_ids: Sequence[int] | None = None) -> ByteLM:
        """This model continuing text that follows the tokens `context_ids` (after the start
        tokens): a FIM template, a chat turn, an earlier document. Shares model and tokenizer;
        `eos_ids` replaces the tokens that end the text (e.g. a FIM end token)."""
        twin = copy.copy(self)
        twin.spec = self.spec.with_context(context_ids, eos_ids=eos_ids)
        twin.last_state = None
        return twin

    def schedulers(self) -> list[Scheduler]:
        return [self.spec.gateway.scheduler]

    def check_prompt(self, prompt: Text) -> None:
        self.spec.check_prompt(as_bytes(prompt))

    # -- states ---------------------------------------------------------------------------------
    def state(self, prefix: Text = b"", *, tolerance: float | None = None) -> ByteState:
        """The exact next-byte distribution after `prefix` (`ByteState`)."""
        data = as_bytes(prefix)
        self.spec.check_prompt(data)
        return ByteState(self.spec, data, tolerance=self.tolerance if tolerance is None else tolerance)

    def scoring_state(self, data: bytes) -> ByteState:
        """The empty-prefix state, with the rows of every valid token prefix along `data`
        prefetched in batched requests (charged to the state's `stats`)."""
        self.spec.check_prompt(data)
        stats = CallStats()
        seqs = {tuple(t) for t in _core.CoverEngine.prefixes_along(self.core, data)}
        seqs.add(())
        rows = self.spec.gateway.rows_by_prefix(seqs, stats, batch=SCORING_BATCH)
        return ByteState(self.spec, b"", row_cache=rows, stats=stats)

    def prefix_scores(self, texts: list[bytes], *, per_byte: bool = True) -> list[Score]:
        """`score` from exact prefix probabilities (`bytecover.prefix_scoring`): the rows of all
        texts in shared requests, long texts in windows of the model's context; with
        `per_byte=False` only the rows the whole text's values need."""
        stats = CallStats()
        out = []
        for data, r in zip(texts, score_texts(self.spec, texts, stats=stats, per_byte=per_byte)):
            surprisal = -np.diff(r.log_prefix) / math.log(2) if per_byte else None
            out.append(Score(logprob=r.logprob, prefix_logprob=float(r.log_prefix[-1]), per_byte=surprisal, noncanonical_nats=0.0,
                             n_bytes=len(data), windows=r.windows))
        self.last_score_stats = stats
        return out

    def choice_state(self, prompt: bytes, cfg: SamplingConfig) -> ByteStep:
        """Greedy and temperature sampling choose each byte with the lazy engine (`ChoiceState`:
        the byte the full distribution gives, at a fraction of the model calls; with a tolerance,
        the bounded-error version); top-k / top-p need the whole distribution."""
        if cfg.top_k is not None or cfg.top_p is not None:
            return self.state(prompt)
        self.spec.check_prompt(prompt)
        return ChoiceState(self.spec, prompt, tolerance=self.tolerance)

    def handoff_chunks(self, prompt: Text, cfg: SamplingConfig, rng: np.random.Generator) -> Iterator[bytes]:
        state = self.state(prompt)
        self.last_state = state
        return handoff_chunks(state, cfg, rng)

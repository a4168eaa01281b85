"""The classic token-healing baseline, as a transformers `LogitsProcessor`.

Token healing (guidance, llama.cpp, transformers' `token_healing`) removes the last prompt
token(s) and makes the model regenerate those bytes with a token of its choice, so a prompt
like ``"np.arr"`` may continue as ``"np.array"``. Here the cut is the fewest trailing tokens
such that some token can cross the prompt boundary (the Rust `TokenHealer`), and decoding is
constrained through the token trie until the removed bytes are reproduced. It is a heuristic:
`ByteLM` gives the exact distribution instead.
"""

from __future__ import annotations

from typing import Any

from . import _core


class TokenHealingProcessor:
    """Masks tokens inconsistent with the bytes still owed after the kept prompt tokens.

    Use with ``model.generate(..., logits_processor=LogitsProcessorList([proc]))`` where the
    input ids are the kept prompt tokens (see `heal_prompt`).
    """

    def __init__(self, core: _core.Tokenizer, removed: bytes, prompt_len: int) -> None:
        self.core = core
        self.healer = _core.TokenHealer(core)
        self.removed = removed
        self.prompt_len = prompt_len

    def remaining(self, generated: list[int]) -> bytes:
        """Bytes of the removed text not yet produced by `generated` tokens."""
        owed = self.removed
        for t in generated:
            b = self.core.token_bytes(t) or b""
            if len(b) >= len(owed):
                return b""
            owed = owed[len(b):]
        return owed

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        for row in range(input_ids.shape[0]):
            owed = self.remaining(input_ids[row, self.prompt_len:].tolist())
            if not owed:
                continue
            allowed = self.healer.allowed(owed)
            mask = torch.full_like(scores[row], float("-inf"))
            idx = torch.tensor([a for a in allowed if a < scores.shape[1]], dtype=torch.long, device=scores.device)
            mask[idx] = 0.0
            scores[row] = scores[row] + mask
        return scores


def heal_prompt(core: _core.Tokenizer, prompt: bytes) -> tuple[list[int], bytes]:
    """(kept prompt tokens, removed bytes) for a user prompt."""
    tokens = core.encode(prompt)
    plan = _core.TokenHealer(core).plan(tokens)
    return tokens[: plan.keep], bytes(plan.removed)


def generate_healed(model: Any, tokenizer: Any, core: _core.Tokenizer, prompt: str, max_new_tokens: int = 32, start_ids: list[int] | None = None) -> str:
    """Greedy continuation of `prompt` with token healing; returns only the new text."""
    return _generate(model, tokenizer, core, prompt, max_new_tokens, start_ids, heal=True)


def generate_naive(model: Any, tokenizer: Any, core: _core.Tokenizer, prompt: str, max_new_tokens: int = 32, start_ids: list[int] | None = None) -> str:
    """Greedy continuation conditioned on the prompt's canonical tokens (the biased baseline)."""
    return _generate(model, tokenizer, core, prompt, max_new_tokens, start_ids, heal=False)


def generate_ids(model: Any, tokenizer: Any, core: _core.Tokenizer, kept: list[int], removed: bytes, *, start_ids: list[int] | None = None, **generate_kw: Any) -> list[int]:
    """Greedy `model.generate` after start tokens + `kept` prompt tokens, constrained to spell the
    `removed` bytes first when there are any (a `heal_prompt` plan). Returns the new token ids;
    extra keywords go to `generate`."""
    import torch
    from transformers import LogitsProcessorList

    ids = torch.tensor([list(start_ids or []) + list(kept)], device=model.device)
    procs = LogitsProcessorList([TokenHealingProcessor(core, removed, ids.shape[1])]) if removed else None
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, logits_processor=procs, pad_token_id=pad, **generate_kw)
    return out[0, ids.shape[1]:].tolist()


def _generate(model: Any, tokenizer: Any, core: _core.Tokenizer, prompt: str, max_new_tokens: int, start_ids: list[int] | None, heal: bool) -> str:
    data = prompt.encode()
    kept, removed = heal_prompt(core, data) if heal else (core.encode(data), b"")
    new = generate_ids(model, tokenizer, core, kept, removed, start_ids=start_ids, max_new_tokens=max_new_tokens)
    eos = tokenizer.eos_token_id
    text = b"".join(core.token_bytes(t) or b"" for t in new if t != eos)
    # The removed bytes were part of the prompt: only what follows them is new.
    if removed:
        text = text[len(removed):] if text.startswith(removed) else text
    return text.decode("utf-8", errors="replace")

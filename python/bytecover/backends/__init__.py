"""Token-level backends: the `TokenLM` protocol and its implementations.

`HFTokenLM` (transformers, CPU or GPU) is imported lazily so that `bytecover.backends.protocol`
does not pull in torch.
"""

from .protocol import ContextTokenLM, TokenLM, TokenLMBase

__all__ = ["ContextTokenLM", "TokenLM", "TokenLMBase"]

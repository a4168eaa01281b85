"""bytecover: exact byte-level language models from any Hugging Face causal LM.

Main entry points: `ByteLM` (next-byte distributions, sampling, scoring), `TokenLM` /
`HFTokenLM` (the token-level backend protocol), `bytecover.models` (offline registry).
"""

from ._core import (
    BytecoverError,
    InvalidLogitsError,
    LogitsShapeError,
    Tokenizer,
    UnsupportedTokenizerError,
    ZeroMassError,
)
from .byte_lm import ByteLM, ByteState, CallStats, Score
from .ensemble import Ensemble, ProxyTuned
from .sampling import EOS, SamplingConfig
from .token_lm import HFTokenLM, TokenLM

__all__ = [
    "EOS",
    "ByteLM",
    "ByteState",
    "BytecoverError",
    "CallStats",
    "Ensemble",
    "HFTokenLM",
    "InvalidLogitsError",
    "LogitsShapeError",
    "ProxyTuned",
    "SamplingConfig",
    "Score",
    "TokenLM",
    "Tokenizer",
    "UnsupportedTokenizerError",
    "ZeroMassError",
]

"""bytecover: exact byte-level language models from any Hugging Face causal LM.

Main entry points: `ByteLM` (next-byte distributions, sampling, scoring), `Ensemble` /
`ProxyTuned` (models with different tokenizers combined per byte), `bytecover.fim` (fill in the
middle), `TokenLM` / `HFTokenLM` (the token-level backend protocol), `bytecover.models` (offline
registry).
"""

from ._core import (
    BytecoverError,
    InvalidLogitsError,
    LogitsShapeError,
    NextByte,
    Tokenizer,
    UnsupportedTokenizerError,
    ZeroMassError,
)
from .backends.hf import HFTokenLM
from .backends.protocol import ContextTokenLM, TokenLM, TokenLMBase
from .byte_lm import ByteLM
from .byte_model import ByteModel, Score
from .choice import ChoiceState
from .ensemble import Ensemble, ProxyTuned
from .full_state import ByteState
from .gateway import CallStats, ModelGateway
from .sampling import EOS, N_SLOTS, SamplingConfig
from .state_protocol import ByteStep, DistributionState

__all__ = [
    "EOS",
    "N_SLOTS",
    "ByteLM",
    "ByteModel",
    "ByteState",
    "ByteStep",
    "BytecoverError",
    "CallStats",
    "ChoiceState",
    "ContextTokenLM",
    "DistributionState",
    "Ensemble",
    "HFTokenLM",
    "InvalidLogitsError",
    "LogitsShapeError",
    "ModelGateway",
    "NextByte",
    "ProxyTuned",
    "SamplingConfig",
    "Score",
    "TokenLM",
    "TokenLMBase",
    "Tokenizer",
    "UnsupportedTokenizerError",
    "ZeroMassError",
]

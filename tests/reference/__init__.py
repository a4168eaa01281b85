"""Independent reference implementation (no ``bytecover._core``) that tests of the engine check
against: token bytes (``vocab_bytes``), canonical encoding and validity (``canonical``), the
brute-force next-byte oracle (``oracle``), toy tokenizers (``toy``) and synthetic token LMs
(``synthetic_lm``)."""

from .canonical import WITNESSES, ReferenceTokenizer
from .oracle import covers, naive_next_byte, oracle_next_byte
from .synthetic_lm import CanonicalOnlyTokenLM, MarkovTextLM, RandomTokenLM, sequence_logprob
from .toy import toy_alphabet, toy_eos_id, toy_tokenizers
from .vocab_bytes import VocabInfo, vocab_info

__all__ = [
    "WITNESSES",
    "CanonicalOnlyTokenLM",
    "MarkovTextLM",
    "RandomTokenLM",
    "ReferenceTokenizer",
    "VocabInfo",
    "covers",
    "naive_next_byte",
    "oracle_next_byte",
    "sequence_logprob",
    "toy_alphabet",
    "toy_eos_id",
    "toy_tokenizers",
    "vocab_info",
]

//! bytecover core: exact byte-level views of token language models.
//!
//! Modules, in the order data flows through them:
//! * [`vocab`] — the bytes of every token, read from `tokenizer.json`;
//! * [`trie`] — tokens sorted by bytes, so every trie node is a contiguous range;
//! * [`pretokenize`], [`bpe`], [`canonical`] — the tokenizer's own encoding, and validity;
//! * [`engine`] — covers of a byte prefix and the next-byte distribution;
//! * [`healing`] — the classic token-healing baseline.

pub mod added;
pub mod bpe;
pub mod byte_level;
pub mod canonical;
pub mod engine;
pub mod error;
pub mod fast_exp;
pub mod healing;
pub mod pretokenize;
pub mod primitives;
#[cfg(test)]
mod test_support;
pub mod trie;
pub mod vocab;

pub use canonical::Canonicalizer;
pub use error::{Error, Result};
pub use primitives::TokenId;
pub use trie::TokenTrie;
pub use vocab::{VocabKind, Vocabulary};

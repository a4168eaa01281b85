//! One error type for the whole core. Every message says what was found and how to fix the call,
//! because these errors surface directly as Python exceptions.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    #[error("tokenizer.json is not valid JSON: {0}")]
    Json(String),
    #[error("unsupported tokenizer: {0}. bytecover supports byte-level BPE (GPT-2, Llama-3, Qwen, StarCoder, SmolLM) and SentencePiece-style BPE with byte fallback (Llama-2, Mistral, Gemma)")]
    Unsupported(String),
    #[error("malformed tokenizer.json: {0}")]
    Malformed(String),
    #[error("token id {id} is out of range: the vocabulary has {n} ids")]
    TokenOutOfRange { id: u32, n: usize },
    #[error("token id {0} is a special/added control token and has no text bytes")]
    SpecialToken(u32),
    #[error("the model has {logits} logits but the tokenizer defines {tokens} ids; the model cannot score every token (pass the tokenizer that belongs to this model)")]
    TooFewLogits { logits: usize, tokens: usize },
    #[error("log-probability row has {got} entries, expected {expected} (one per token id; trim padded logits to the tokenizer's size)")]
    RowWidth { got: usize, expected: usize },
    #[error("log-probability row contains NaN at token id {0}; the model produced invalid numbers (check dtype / overflow)")]
    NanRow(usize),
    #[error("{0} cannot be encoded: {1}")]
    Unencodable(String, String),
    #[error("engine protocol: {0}")]
    Protocol(String),
    #[error("the text cannot occur: every tokenization of it has probability 0 under the model")]
    ZeroMass,
}

pub type Result<T> = std::result::Result<T, Error>;

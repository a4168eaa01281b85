//! Named results returned to Python. Every value the engine hands back is one of these (or a
//! plain number / list / bytes), so Python code reads `d.log_prefix`, never `d[2]`.

use bytecover_core::TokenId;
use numpy::PyArray1;
use pyo3::prelude::*;

/// The exact next-byte distribution after a byte prefix.
#[pyclass(name = "NextByte", module = "bytecover._core", frozen, get_all)]
pub struct NextByte {
    /// Natural-log probabilities of the 257 slots (bytes 0-255, then end of text at 256).
    pub logprobs: Py<PyArray1<f64>>,
    /// log of the sum of the valid numerators (the normaliser of `logprobs`).
    pub log_total: f64,
    /// log P(text starts with the prefix): the prefix's total cover mass, before removing the
    /// mass the model put on token sequences no text encodes to.
    pub log_prefix: f64,
    /// Bounded-error mode: bound on this step's total-variation distance from the exact
    /// distribution (0 when exact).
    pub error_bound: f64,
}

#[pymethods]
impl NextByte {
    /// Python-side models (ensembles) build their results with the same type.
    #[new]
    #[pyo3(signature = (logprobs, log_total, log_prefix, error_bound=0.0))]
    fn new(logprobs: Py<PyArray1<f64>>, log_total: f64, log_prefix: f64, error_bound: f64) -> Self {
        Self { logprobs, log_total, log_prefix, error_bound }
    }

    /// Mass removed at this step because the model put it on non-canonical token sequences
    /// (nats): `log_prefix - log_total`, 0 when nothing was removed.
    #[getter]
    fn removed_nats(&self) -> f64 {
        self.log_prefix - self.log_total
    }

    fn __repr__(&self) -> String {
        format!("NextByte(log_total={:.6}, log_prefix={:.6}, error_bound={:.3e})", self.log_total, self.log_prefix, self.error_bound)
    }
}

/// Bounds on one step's 257 numerators, all scaled by one common factor (lazy engines).
#[pyclass(name = "Bounds", module = "bytecover._core", frozen, get_all)]
pub struct Bounds {
    /// Mass known to land on each slot.
    pub known: Py<PyArray1<f64>>,
    /// Mass of tokens whose validity is undecided, by the slot it would land on.
    pub unknown: Py<PyArray1<f64>>,
    /// Mass of token prefixes whose row is not fetched yet; it may land on any slot.
    pub deferred: f64,
}

/// A token prefix the engine needs something for (a next-token row or its probability).
#[pyclass(name = "Request", module = "bytecover._core", frozen, get_all)]
pub struct Request {
    /// Engine node the answer belongs to (pass it back with the answer).
    pub node: usize,
    /// Token ids after the start tokens.
    pub tokens: Vec<TokenId>,
}

#[pymethods]
impl Request {
    fn __repr__(&self) -> String {
        format!("Request(node={}, tokens={:?})", self.node, self.tokens)
    }
}

/// What the engine needs before the current step can be computed.
#[pyclass(name = "Requests", module = "bytecover._core", frozen, get_all)]
pub struct Requests {
    /// Token prefixes whose next-token row is needed.
    pub rows: Vec<Py<Request>>,
    /// Token sequences whose probability (log p(tokens)) is needed.
    pub scores: Vec<Py<Request>>,
}

/// One cover of the current prefix and its log-probability.
#[pyclass(name = "Cover", module = "bytecover._core", frozen, get_all)]
pub struct Cover {
    pub tokens: Vec<TokenId>,
    pub logprob: f64,
}

/// A cover group: a token prefix (engine node) and the byte offset it ends at.
#[pyclass(name = "Group", module = "bytecover._core", frozen, get_all)]
pub struct Group {
    pub node: usize,
    pub end: usize,
}

/// Token healing's cut: how many prompt tokens stay and the bytes taken out after them.
#[pyclass(name = "HealPlan", module = "bytecover._core", frozen, get_all)]
pub struct HealPlan {
    pub keep: usize,
    pub removed: Vec<u8>,
}

/// A token whose bytes are a prefix of some text, and their length.
#[pyclass(name = "TokenMatch", module = "bytecover._core", frozen, get_all)]
pub struct TokenMatch {
    pub id: TokenId,
    pub len: usize,
}

pub fn requests(py: Python<'_>, list: Vec<(usize, Vec<TokenId>)>) -> PyResult<Vec<Py<Request>>> {
    list.into_iter().map(|(node, tokens)| Py::new(py, Request { node, tokens })).collect()
}

/// Exact prefix probabilities along a text (`PrefixScorer.result()`), user byte offsets.
#[pyclass(name = "PrefixScores", module = "bytecover._core", frozen, get_all)]
pub struct PrefixScores {
    /// `log_prefix[j]` = ln P(the text starts with its first j user bytes), j = 0..=len(text)
    /// (`log_prefix[0]` = 0). Byte j's surprisal is `log_prefix[j] - log_prefix[j + 1]`.
    pub log_prefix: Py<PyArray1<f64>>,
    /// ln p(encode(text)) + ln p(EOS | encode(text)): the text, then end of text.
    pub log_eos: f64,
    /// ln p(encode(text)): the canonical token sequence's log-likelihood.
    pub log_canonical: f64,
}

#[pymethods]
impl PrefixScores {
    fn __repr__(&self) -> String {
        format!("PrefixScores(log_eos={:.6}, log_canonical={:.6})", self.log_eos, self.log_canonical)
    }
}

//! `Tokenizer` (vocabulary bytes + canonical encoding + validity) and `Trie` (subtree masses).

use crate::errors::{IntoPy, LogitsShapeError};
use crate::results::TokenMatch;
use bytecover_core::{trie::LogRow, Canonicalizer, TokenId, TokenTrie};
use numpy::{PyArray1, PyReadonlyArray1, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::sync::Arc;

#[pyclass(name = "Tokenizer", module = "bytecover._core", frozen)]
pub struct PyTokenizer {
    pub inner: Arc<Canonicalizer>,
    pub trie: Arc<TokenTrie>,
}

#[pymethods]
impl PyTokenizer {
    /// Build from the text of a `tokenizer.json`. `n_logits` is the model's row width if known.
    #[staticmethod]
    #[pyo3(signature = (json, n_logits=None))]
    fn from_json(py: Python<'_>, json: &str, n_logits: Option<usize>) -> PyResult<Self> {
        let json = json.to_string();
        py.detach(move || {
            let c = Canonicalizer::from_json(&json, n_logits)?;
            let trie = TokenTrie::new(c.vocab());
            Ok((c, trie))
        })
        .py_err()
        .map(|(c, t)| Self { inner: Arc::new(c), trie: Arc::new(t) })
    }

    #[getter]
    fn n_ids(&self) -> usize {
        self.inner.vocab().n_ids()
    }
    #[getter]
    fn n_logits(&self) -> usize {
        self.inner.vocab().n_logits()
    }
    #[getter]
    fn kind(&self) -> &'static str {
        match self.inner.vocab().kind() {
            bytecover_core::VocabKind::ByteLevel => "byte_level",
            bytecover_core::VocabKind::SentencePiece => "sentencepiece",
            bytecover_core::VocabKind::Plain => "plain",
        }
    }
    #[getter]
    fn start_prefix<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.inner.vocab().start_prefix())
    }
    #[getter]
    fn max_token_len(&self) -> usize {
        self.inner.vocab().max_token_len()
    }
    #[getter]
    fn special_ids(&self) -> Vec<TokenId> {
        self.inner.vocab().special_ids()
    }
    fn token_bytes<'py>(&self, py: Python<'py>, id: TokenId) -> Option<Bound<'py, PyBytes>> {
        self.inner.vocab().token_bytes(id).map(|b| PyBytes::new(py, b))
    }
    fn token_string(&self, id: TokenId) -> Option<String> {
        self.inner.vocab().token_string(id).map(str::to_string)
    }
    /// Canonical encoding of user text (bytes); the start prefix is added internally.
    fn encode(&self, py: Python<'_>, text: &[u8]) -> PyResult<Vec<TokenId>> {
        let text = text.to_vec();
        py.detach(|| self.inner.encode_text(&text)).py_err()
    }
    /// Concatenated token bytes (internal: includes the start prefix if the tokens spell it).
    fn decode<'py>(&self, py: Python<'py>, ids: Vec<TokenId>) -> PyResult<Bound<'py, PyBytes>> {
        let b = self.inner.decode(&ids).py_err()?;
        Ok(PyBytes::new(py, &b))
    }
    fn is_canonical(&self, py: Python<'_>, ids: Vec<TokenId>) -> PyResult<bool> {
        py.detach(|| self.inner.is_canonical(&ids)).py_err()
    }
    fn is_valid(&self, py: Python<'_>, ids: Vec<TokenId>) -> PyResult<bool> {
        py.detach(|| self.inner.is_valid(&ids)).py_err()
    }
    /// Forget the subtree validity verdicts kept across scorers of this tokenizer (a scorer
    /// then decides every context afresh, as the first one did).
    fn clear_verdict_memo(&self) {
        self.inner.range_verdicts().clear();
    }

    /// Contexts whose subtree verdicts are kept across scorers.
    #[getter]
    fn verdict_memo_len(&self) -> usize {
        self.inner.range_verdicts().len()
    }

    fn trie(&self) -> PyTrie {
        PyTrie { trie: self.trie.clone(), n_logits: self.inner.vocab().n_logits() }
    }
}

/// A numpy row of log-probabilities, f32 or f64, checked.
pub enum Row<'py> {
    F32(PyReadonlyArray1<'py, f32>),
    F64(PyReadonlyArray1<'py, f64>),
}

impl<'py> Row<'py> {
    pub fn extract(obj: &Bound<'py, PyAny>, expected: usize) -> PyResult<Self> {
        let row = if let Ok(a) = obj.extract::<PyReadonlyArray1<f32>>() {
            Row::F32(a)
        } else if let Ok(a) = obj.extract::<PyReadonlyArray1<f64>>() {
            Row::F64(a)
        } else {
            return Err(LogitsShapeError::new_err("expected a 1-D float32 or float64 numpy array of log-probabilities"));
        };
        let (len, contiguous) = match &row {
            Row::F32(a) => (a.len(), a.is_contiguous()),
            Row::F64(a) => (a.len(), a.is_contiguous()),
        };
        if len != expected {
            return Err(LogitsShapeError::new_err(format!("row has {len} entries, expected {expected} (one per token id)")));
        }
        if !contiguous {
            return Err(LogitsShapeError::new_err("row is not contiguous; pass np.ascontiguousarray(row)"));
        }
        Ok(row)
    }
    pub fn with<T>(&self, f: impl FnOnce(&dyn RowDyn) -> T) -> T {
        match self {
            Row::F32(a) => f(&SliceRow(a.as_slice().unwrap())),
            Row::F64(a) => f(&SliceRow(a.as_slice().unwrap())),
        }
    }
}

/// Object-safe row access so one code path serves both dtypes.
pub trait RowDyn: Sync {
    fn len(&self) -> usize;
    fn get(&self, i: usize) -> f64;
}
pub struct SliceRow<'a, T>(pub &'a [T]);
impl<T> RowDyn for SliceRow<'_, T>
where
    [T]: LogRow,
    T: Sync,
{
    fn len(&self) -> usize {
        LogRow::len(self.0)
    }
    fn get(&self, i: usize) -> f64 {
        LogRow::get(self.0, i)
    }
}
impl LogRow for dyn RowDyn + '_ {
    fn len(&self) -> usize {
        RowDyn::len(self)
    }
    fn get(&self, i: usize) -> f64 {
        RowDyn::get(self, i)
    }
}

#[pyclass(name = "Trie", module = "bytecover._core", frozen)]
pub struct PyTrie {
    trie: Arc<TokenTrie>,
    n_logits: usize,
}

#[pymethods]
impl PyTrie {
    /// Log of the total probability of tokens starting with `prefix`.
    fn prefix_logmass(&self, row: &Bound<'_, PyAny>, prefix: &[u8]) -> PyResult<f64> {
        let r = Row::extract(row, self.n_logits)?;
        let t = self.trie.clone();
        let p = prefix.to_vec();
        Ok(r.with(|row| t.prefix_logmass(row, &p)))
    }
    /// The 256 child log-masses of the node `prefix`, as a float64 array.
    fn child_logmasses<'py>(&self, py: Python<'py>, row: &Bound<'py, PyAny>, prefix: &[u8]) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let r = Row::extract(row, self.n_logits)?;
        let t = self.trie.clone();
        let p = prefix.to_vec();
        let out = r.with(|row| t.child_logmasses(row, &p));
        Ok(PyArray1::from_slice(py, &out))
    }
    fn tokens_with_prefix(&self, prefix: &[u8]) -> Vec<TokenId> {
        self.trie.tokens_with_prefix(prefix)
    }
    /// Tokens that are prefixes of `data`, as (id, length), shortest first.
    fn tokens_prefixing(&self, data: &[u8]) -> Vec<TokenMatch> {
        self.trie.tokens_prefixing(data).into_iter().map(|(id, len)| TokenMatch { id, len }).collect()
    }
    fn __len__(&self) -> usize {
        self.trie.len()
    }
}

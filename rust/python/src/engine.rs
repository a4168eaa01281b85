//! `CoverEngine` and `TokenHealer` bindings. Rows arrive as a 2-D numpy array (one row per
//! requested node, float32 or float64, C-contiguous) and are read in place.

use crate::errors::{IntoPy, LogitsShapeError};
use crate::results::{self, Bounds, Cover, Group, HealPlan, NextByte, PrefixScores, Request, Requests};
use crate::tokenizer::PyTokenizer;
use bytecover_core::engine::{CoverChoice, CoverEngine, EngineConfig, Pick, PrefixScorer, Refinement};
use bytecover_core::{healing, TokenId};
use numpy::{PyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

#[pyclass(name = "CoverEngine", module = "bytecover._core")]
pub struct PyCoverEngine {
    inner: CoverEngine,
}

fn check_rows(shape: &[usize], n_nodes: usize, width: usize, contiguous: bool) -> PyResult<()> {
    if shape[0] != n_nodes || shape[1] != width {
        return Err(LogitsShapeError::new_err(format!(
            "rows have shape {:?}, expected ({n_nodes}, {width}): one row per requested node, one column per token id (trim padded logits)",
            shape
        )));
    }
    if !contiguous {
        return Err(LogitsShapeError::new_err("rows are not C-contiguous; pass np.ascontiguousarray(rows)"));
    }
    Ok(())
}

#[pymethods]
impl PyCoverEngine {
    /// Engine for the user text `prompt`. `eos_ids` are the ids whose mass is end-of-text.
    #[new]
    /// `lazy=True` makes an engine that chooses bytes (`decide`) without the full distribution.
    #[pyo3(signature = (tokenizer, prompt, eos_ids, tolerance=0.0, threads=None, lazy=false))]
    fn new(
        py: Python<'_>,
        tokenizer: &PyTokenizer,
        prompt: &[u8],
        eos_ids: Vec<TokenId>,
        tolerance: f64,
        threads: Option<usize>,
        lazy: bool,
    ) -> PyResult<Self> {
        let mut cfg = EngineConfig { tolerance, lazy, ..EngineConfig::default() };
        if let Some(t) = threads {
            cfg.threads = t.max(1);
        }
        let (c, t, p) = (tokenizer.inner.clone(), tokenizer.trie.clone(), prompt.to_vec());
        let inner = py.detach(move || CoverEngine::new(c, t, &p, eos_ids, cfg)).py_err()?;
        Ok(Self { inner })
    }

    /// Every valid token prefix spelling a prefix of `text` (user bytes), found without a model.
    #[staticmethod]
    fn prefixes_along(py: Python<'_>, tokenizer: &PyTokenizer, text: &[u8]) -> PyResult<Vec<Vec<TokenId>>> {
        let (c, t, p) = (tokenizer.inner.clone(), tokenizer.trie.clone(), text.to_vec());
        py.detach(move || CoverEngine::new(c, t, &p, vec![], EngineConfig::default()).map(|e| e.all_prefixes())).py_err()
    }

    /// What the current step needs: next-token rows and sequence probabilities.
    fn requests(&self, py: Python<'_>) -> PyResult<Requests> {
        let r = self.inner.requests();
        Ok(Requests { rows: results::requests(py, r.rows)?, scores: results::requests(py, r.scores)? })
    }

    /// Rows for `nodes`, in order: a (len(nodes), n_logits) float32/float64 array.
    fn provide_rows(&mut self, py: Python<'_>, nodes: Vec<usize>, rows: &Bound<'_, PyAny>) -> PyResult<()> {
        let width = self.inner_width();
        if let Ok(a) = rows.extract::<PyReadonlyArray2<f32>>() {
            check_rows(a.shape(), nodes.len(), width, a.is_c_contiguous())?;
            let data = a.as_slice().unwrap();
            let inner = &mut self.inner;
            py.detach(|| nodes.iter().enumerate().try_for_each(|(i, &n)| inner.provide_row(n, &data[i * width..(i + 1) * width]))).py_err()
        } else if let Ok(a) = rows.extract::<PyReadonlyArray2<f64>>() {
            check_rows(a.shape(), nodes.len(), width, a.is_c_contiguous())?;
            let data = a.as_slice().unwrap();
            let inner = &mut self.inner;
            py.detach(|| nodes.iter().enumerate().try_for_each(|(i, &n)| inner.provide_row(n, &data[i * width..(i + 1) * width]))).py_err()
        } else {
            Err(LogitsShapeError::new_err("rows must be a 2-D float32 or float64 numpy array"))
        }
    }

    fn provide_scores(&mut self, nodes: Vec<usize>, scores: Vec<f64>) -> PyResult<()> {
        if nodes.len() != scores.len() {
            return Err(LogitsShapeError::new_err(format!("{} nodes but {} scores", nodes.len(), scores.len())));
        }
        nodes.iter().zip(scores).try_for_each(|(&n, s)| self.inner.provide_score(n, s)).py_err()
    }

    /// The next-byte distribution of the current step (its rows and scores provided).
    fn distribution(&self, py: Python<'_>) -> PyResult<NextByte> {
        let d = self.inner.distribution().py_err()?;
        Ok(NextByte {
            logprobs: PyArray1::from_slice(py, &d.logprobs).unbind(),
            log_total: d.log_total,
            log_prefix: d.log_prefix,
            error_bound: d.skipped_bound,
        })
    }

    fn advance(&mut self, py: Python<'_>, byte: u8) -> PyResult<()> {
        let inner = &mut self.inner;
        py.detach(|| inner.advance(byte)).py_err()
    }

    /// Every cover of the current prefix with log p(cover) (see `bytecover_core::engine::covers`).
    fn covers(&self) -> PyResult<Vec<Cover>> {
        Ok(self.inner.covers().py_err()?.into_iter().map(|(tokens, logprob)| Cover { tokens, logprob }).collect())
    }

    /// One cover and its log-probability: drawn with the uniform number `u`, or the most likely
    /// when `u` is None. Needs the rows of the current step (call `requests()` first).
    #[pyo3(signature = (u=None))]
    fn choose_cover(&self, u: Option<f64>) -> PyResult<Cover> {
        let (tokens, logprob) = self.inner.choose_cover(u.map_or(CoverChoice::MostLikely, CoverChoice::Sample)).py_err()?;
        Ok(Cover { tokens, logprob })
    }

    /// Lazy engines: the next slot (0-255 a byte, 256 EOS) for the uniform number `u` at
    /// `temperature` (greedy when `u` is None), or None when the rows in `pending()` are needed
    /// first. The same slot the full distribution gives for the same `u`.
    #[pyo3(signature = (u=None, temperature=1.0))]
    fn decide(&mut self, py: Python<'_>, u: Option<f64>, temperature: f64) -> PyResult<Option<u16>> {
        let pick = u.map_or(Pick::Greedy, |u| Pick::Sample { u, temperature });
        let inner = &mut self.inner;
        py.detach(|| inner.decide(pick)).py_err()
    }

    /// Lazy engines: bounds on this step's 257 numerators, scaled by one common factor.
    fn step_bounds(&mut self, py: Python<'_>) -> PyResult<Bounds> {
        let b = self.inner.step_bounds().py_err()?;
        Ok(Bounds { known: PyArray1::from_slice(py, &b.known).unbind(), unknown: PyArray1::from_slice(py, &b.unknown).unbind(), deferred: b.deferred })
    }

    /// Lazy engines: one refinement step: "checked" (validity of some tokens decided), "rows"
    /// (fetch `pending()` and provide them), or "settled" (the bounds are exact).
    fn refine(&mut self, py: Python<'_>) -> PyResult<&'static str> {
        let inner = &mut self.inner;
        Ok(match py.detach(|| inner.refine()).py_err()? {
            Refinement::Checked => "checked",
            Refinement::NeedRows => "rows",
            Refinement::Settled => "settled",
        })
    }

    /// Lazy engines with a tolerance: the largest bound on any step's total-variation error.
    fn error_bound(&self) -> f64 {
        self.inner.error_bound()
    }

    /// The rows the last `decide` (returning None) or `refine` (returning "rows") asked for.
    fn pending(&self, py: Python<'_>) -> PyResult<Vec<Py<Request>>> {
        results::requests(py, self.inner.pending())
    }

    /// Internal bytes so far (start prefix included).
    #[getter]
    fn text<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.inner.text())
    }

    /// Every cover group: its token prefix (node) and the byte offset that prefix ends at.
    fn groups(&self) -> Vec<Group> {
        self.inner.group_nodes().into_iter().map(|(node, end)| Group { node, end }).collect()
    }

    fn tokens(&self, node: usize) -> Vec<TokenId> {
        self.inner.tokens(node)
    }
}

impl PyCoverEngine {
    fn inner_width(&self) -> usize {
        self.inner.n_logits()
    }
}

/// Exact prefix probabilities along one whole text, for scoring (`bytecover_core::engine::prefix`):
/// validity is decided only in each token prefix's next-byte subtree, and rows are reduced to a
/// few masses as they arrive.
#[pyclass(name = "PrefixScorer", module = "bytecover._core")]
pub struct PyPrefixScorer {
    inner: PrefixScorer,
}

#[pymethods]
impl PyPrefixScorer {
    /// Find every valid token prefix along user text `text` and decide the validity the scoring
    /// needs (no model). `eos_ids` are the ids whose mass is end of text. `at`: the user byte
    /// offsets whose prefix probabilities are wanted (None: all; with a few, only the nodes
    /// those need get verdicts and rows, and the other offsets of `result().log_prefix` are NaN).
    #[new]
    #[pyo3(signature = (tokenizer, text, eos_ids, threads=None, at=None))]
    fn new(py: Python<'_>, tokenizer: &PyTokenizer, text: &[u8], eos_ids: Vec<TokenId>, threads: Option<usize>, at: Option<Vec<usize>>) -> PyResult<Self> {
        let threads = threads.unwrap_or_else(|| EngineConfig::default().threads);
        let (c, t, p) = (tokenizer.inner.clone(), tokenizer.trie.clone(), text.to_vec());
        let inner = py
            .detach(move || match at {
                None => PrefixScorer::new(c, t, &p, eos_ids, threads),
                Some(at) => PrefixScorer::at_offsets(c, t, &p, eos_ids, threads, &at),
            })
            .py_err()?;
        Ok(Self { inner })
    }

    /// Token prefixes whose next-token rows are still needed (parents before children).
    fn requests(&self, py: Python<'_>) -> PyResult<Vec<Py<Request>>> {
        results::requests(py, self.inner.requests())
    }

    /// Rows for `nodes`, in order: a (len(nodes), n_logits) float32/float64 array.
    fn provide_rows(&mut self, py: Python<'_>, nodes: Vec<usize>, rows: &Bound<'_, PyAny>) -> PyResult<()> {
        let width = self.inner.n_logits();
        let inner = &mut self.inner;
        if let Ok(a) = rows.extract::<PyReadonlyArray2<f32>>() {
            check_rows(a.shape(), nodes.len(), width, a.is_c_contiguous())?;
            let data = a.as_slice().unwrap();
            py.detach(|| nodes.iter().enumerate().try_for_each(|(i, &n)| inner.provide_row(n, &data[i * width..(i + 1) * width]))).py_err()
        } else if let Ok(a) = rows.extract::<PyReadonlyArray2<f64>>() {
            check_rows(a.shape(), nodes.len(), width, a.is_c_contiguous())?;
            let data = a.as_slice().unwrap();
            py.detach(|| nodes.iter().enumerate().try_for_each(|(i, &n)| inner.provide_row(n, &data[i * width..(i + 1) * width]))).py_err()
        } else {
            Err(LogitsShapeError::new_err("rows must be a 2-D float32 or float64 numpy array"))
        }
    }

    /// The prefix probabilities at every user byte and the end-of-text term (all rows provided).
    fn result(&self, py: Python<'_>) -> PyResult<PrefixScores> {
        let r = self.inner.result().py_err()?;
        Ok(PrefixScores { log_prefix: PyArray1::from_slice(py, &r.log_prefix[r.start..]).unbind(), log_eos: r.log_eos, log_canonical: r.log_canonical })
    }

    /// Valid token prefixes along the text (rows needed or not).
    #[getter]
    fn n_nodes(&self) -> usize {
        self.inner.n_nodes()
    }

    /// Per-token validity checks run (distinct contexts only).
    #[getter]
    fn validity_checks(&self) -> u64 {
        self.inner.validity_checks
    }

    /// Verdicts a forced piece boundary settled without a per-token check.
    #[getter]
    fn shortcut_verdicts(&self) -> u64 {
        self.inner.shortcut_verdicts
    }

    /// Verdicts taken from the tokenizer's memo of earlier scorers (no check at all).
    #[getter]
    fn remembered_verdicts(&self) -> u64 {
        self.inner.remembered_verdicts
    }
}

/// Token healing baseline: where to cut, and which tokens stay allowed.
#[pyclass(name = "TokenHealer", module = "bytecover._core", frozen)]
pub struct PyTokenHealer {
    tok: Py<PyTokenizer>,
}

#[pymethods]
impl PyTokenHealer {
    #[new]
    fn new(tokenizer: Py<PyTokenizer>) -> Self {
        Self { tok: tokenizer }
    }
    /// How many of `tokens` to keep and which bytes to regenerate after them.
    fn plan(&self, tokens: Vec<TokenId>) -> HealPlan {
        let t = self.tok.get();
        let p = healing::plan(t.inner.vocab(), &t.trie, &tokens);
        HealPlan { keep: p.keep, removed: p.removed }
    }
    /// Ids consistent with the bytes still to be produced.
    fn allowed(&self, remaining: &[u8]) -> Vec<TokenId> {
        healing::allowed(&self.tok.get().trie, remaining)
    }
}

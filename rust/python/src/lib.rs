//! Python bindings for bytecover-core: only argument conversion lives here. Arrays come in as
//! numpy views (no copy) and are checked for dtype, shape and contiguity; heavy work runs with
//! the GIL released.

mod engine;
mod errors;
mod results;
mod tokenizer;

use pyo3::prelude::*;

#[pymodule(gil_used = false)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<tokenizer::PyTokenizer>()?;
    m.add_class::<tokenizer::PyTrie>()?;
    m.add_class::<engine::PyCoverEngine>()?;
    m.add_class::<engine::PyTokenHealer>()?;
    m.add_class::<engine::PyPrefixScorer>()?;
    m.add_class::<results::PrefixScores>()?;
    m.add_class::<results::NextByte>()?;
    m.add_class::<results::Bounds>()?;
    m.add_class::<results::Request>()?;
    m.add_class::<results::Requests>()?;
    m.add_class::<results::Cover>()?;
    m.add_class::<results::Group>()?;
    m.add_class::<results::HealPlan>()?;
    m.add_class::<results::TokenMatch>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

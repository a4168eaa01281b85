//! The one place core errors become Python exceptions. All derive from `BytecoverError`, itself a
//! `ValueError`, so callers can catch broadly or precisely.

use bytecover_core::Error;
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

create_exception!(_core, BytecoverError, PyValueError, "Base class of bytecover errors.");
create_exception!(_core, UnsupportedTokenizerError, BytecoverError, "The tokenizer cannot be handled exactly.");
create_exception!(_core, LogitsShapeError, BytecoverError, "Model rows do not match the vocabulary.");
create_exception!(_core, InvalidLogitsError, BytecoverError, "Model rows contain NaN.");
create_exception!(_core, ZeroMassError, BytecoverError, "The text has probability zero.");

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("BytecoverError", py.get_type::<BytecoverError>())?;
    m.add("UnsupportedTokenizerError", py.get_type::<UnsupportedTokenizerError>())?;
    m.add("LogitsShapeError", py.get_type::<LogitsShapeError>())?;
    m.add("InvalidLogitsError", py.get_type::<InvalidLogitsError>())?;
    m.add("ZeroMassError", py.get_type::<ZeroMassError>())?;
    Ok(())
}

pub fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::Unsupported(_) => UnsupportedTokenizerError::new_err(msg),
        Error::TooFewLogits { .. } | Error::RowWidth { .. } => LogitsShapeError::new_err(msg),
        Error::NanRow(_) => InvalidLogitsError::new_err(msg),
        Error::ZeroMass => ZeroMassError::new_err(msg),
        _ => BytecoverError::new_err(msg),
    }
}

pub trait IntoPy<T> {
    fn py_err(self) -> PyResult<T>;
}
impl<T> IntoPy<T> for Result<T, Error> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

//! Names for the primitive types shared by every module.

/// A token id as the model's logits index it.
pub type TokenId = u32;

/// Natural-log probability. Probabilities are kept in log space throughout; masses are summed
/// with a max-shift so that nothing underflows.
pub type LogProb = f64;

/// Index of a byte position in the engine's internal byte string.
pub type BytePos = usize;

/// `log(exp(a) + exp(b))` without overflow; `-inf` is the neutral element.
#[inline]
pub fn log_add(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

/// Log of a sum of exponentials.
pub fn log_sum_exp(values: impl IntoIterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.into_iter().collect();
    let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

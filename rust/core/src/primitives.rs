//! Names for the primitive types and sizes shared by every module.

/// A token id as the model's logits index it.
pub type TokenId = u32;

/// Number of distinct byte values: the byte slots of a distribution, the children of a trie node.
pub const N_BYTES: usize = 256;

/// Slots of a next-byte distribution: the 256 byte values, then end-of-text.
pub const N_SLOTS: usize = N_BYTES + 1;

/// The end-of-text slot, right after the bytes (`decide` returns it as a `u16`).
pub const EOS_SLOT: usize = N_BYTES;

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

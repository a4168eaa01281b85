//! One fuzz case: what the core must survive, and answer exactly, for any input bytes. Shared by
//! the bounded random loop (`cargo run --release -p bytecover-core --example fuzz_engine`) and
//! the libFuzzer target (`rust/core/fuzz`); expects `common` (tests/common/mod.rs) beside it.

use crate::common::{decide, inverse_cdf, serve, serve_scores, SyntheticLm, Toy};
use bytecover_core::engine::{EngineConfig, Pick};
use bytecover_core::primitives::N_SLOTS;

/// Bytes after the first: a prompt and the bytes to step through (both kept short so that one
/// case takes milliseconds). The first byte picks the toy, the split, the LM and the draw.
pub fn run(toys: &[Toy], data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else { return };
    let toy = &toys[(selector & 1) as usize % toys.len()];
    let rest = &rest[..rest.len().min(32)];
    encoding(toy, rest);
    let cut = (selector >> 1) as usize % (rest.len() + 1);
    let (prompt, next) = (&rest[..cut], &rest[cut..rest.len().min(cut + 8)]);
    let lm = if selector & 0x80 != 0 { SyntheticLm::peaked(toy, selector as u64) } else { SyntheticLm::for_toy(toy, selector as u64) };
    let u = (selector as f64 + 0.5) / 256.0;
    engines(toy, &lm, prompt, next, u);
}

/// Encoding round-trips any bytes; a valid UTF-8 text's encoding is canonical and every prefix
/// of it valid.
fn encoding(toy: &Toy, text: &[u8]) {
    let canon = &toy.canon;
    let internal = [toy.start_prefix(), text].concat();
    let ids = canon.encode(&internal).expect("the toys spell every byte");
    assert_eq!(canon.decode(&ids).unwrap(), internal, "{}: decode(encode(x)) != x", toy.name);
    if std::str::from_utf8(text).is_ok() && !text.is_empty() {
        assert!(canon.is_canonical(&ids).unwrap(), "{}: encode({text:?}) is not canonical", toy.name);
        for k in 0..=ids.len() {
            assert!(canon.is_valid(&ids[..k]).unwrap(), "{}: prefix {k} of encode({text:?}) called invalid", toy.name);
        }
    }
}

/// The eager engine through `next`; the lazy engine alongside must pick what the eager
/// distribution gives for the same draw; a bounded-error lazy engine must stay in its bound.
fn engines(toy: &Toy, lm: &SyntheticLm, prompt: &[u8], next: &[u8], u: f64) {
    let exact = EngineConfig { tolerance: 0.0, threads: 1, lazy: false };
    let Ok(mut full) = toy.engine(prompt, exact) else { return };
    let mut lazy = toy.engine(prompt, EngineConfig { lazy: true, ..exact }).expect("the lazy engine builds like the eager one");
    let mut bounded = toy.engine(prompt, EngineConfig { lazy: true, tolerance: 0.05, ..exact }).unwrap();
    serve_scores(&mut lazy, lm);
    serve_scores(&mut bounded, lm);
    for &b in next {
        serve(&mut full, lm);
        let Ok(d) = full.distribution() else { break };
        let sum: f64 = d.logprobs.iter().map(|l| l.exp()).sum();
        assert!((sum - 1.0).abs() < 1e-9, "{}: distribution sums to {sum}", toy.name);
        let covers: f64 = full.covers().unwrap().iter().map(|c| c.1.exp()).sum();
        assert!((covers.ln() - d.log_prefix).abs() < 1e-9, "{}: covers sum to {covers}, P(x...) = {}", toy.name, d.log_prefix.exp());
        let (expected, margin) = inverse_cdf(&d.logprobs, u, 1.0);
        let got = decide(&mut lazy, lm, Pick::Sample { u, temperature: 1.0 }).expect("the lazy engine decides where the eager one has mass");
        if margin > 1e-9 {
            assert_eq!(got as usize, expected, "{}: lazy pick differs from the distribution's", toy.name);
        }
        let greedy = decide(&mut lazy, lm, Pick::Greedy).unwrap() as usize;
        assert!(
            greedy < N_SLOTS && d.logprobs[greedy] >= d.logprobs.iter().cloned().fold(f64::NEG_INFINITY, f64::max) - 1e-9,
            "{}: greedy pick {greedy} is not a most likely slot",
            toy.name
        );
        let _ = decide(&mut bounded, lm, Pick::Sample { u, temperature: 1.0 }).unwrap();
        assert!(bounded.error_bound() <= 0.05, "{}: error bound {}", toy.name, bounded.error_bound());
        if full.advance(b).is_err() {
            break;
        }
        lazy.advance(b).expect("the lazy engine follows every byte the eager one can");
        if bounded.advance(b).is_err() {
            // The bounded engine may have dropped the only way on: start it afresh (exact build).
            bounded = toy.engine(&full.text()[toy.start_prefix().len()..], EngineConfig { lazy: true, tolerance: 0.05, ..exact }).unwrap();
            serve_scores(&mut bounded, lm);
        }
    }
}

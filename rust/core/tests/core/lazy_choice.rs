//! The lazy engine's choices against the full distribution: `decide` must return exactly the
//! slot the eager engine's distribution gives (argmax for greedy, inverse CDF of the
//! distribution raised to 1/temperature for a uniform u), while deciding validity and fetching
//! rows only as far as the choice needs. The eager engine itself is checked against the brute
//! force in engine_oracle.rs.

use crate::common::*;
use bytecover_core::engine::{CoverEngine, EngineConfig, Pick, Refinement};
use bytecover_core::primitives::{EOS_SLOT, N_SLOTS};
use bytecover_core::Error;

fn eager() -> EngineConfig {
    EngineConfig { tolerance: 0.0, threads: 1, lazy: false }
}

fn lazy() -> EngineConfig {
    EngineConfig { tolerance: 0.0, threads: 1, lazy: true }
}

const US: &[f64] = &[0.0, 0.013, 0.2, 0.37, 0.5, 0.61, 0.77, 0.93, 0.999];
const TEMPERATURES: &[f64] = &[1.0, 0.5, 2.0, 0.25];

/// Every pick at this step: the lazy engine's answer equals the full distribution's.
fn check_picks(lazy_e: &mut CoverEngine, full: &[f64; N_SLOTS], lm: &SyntheticLm, what: &str) {
    let greedy = decide(lazy_e, lm, Pick::Greedy).unwrap();
    assert_eq!(greedy as usize, argmax(full), "{what}: greedy");
    for &temperature in TEMPERATURES {
        for &u in US {
            let (expected, margin) = inverse_cdf(full, u, temperature);
            // A draw within rounding of a boundary could go either way in either engine.
            if margin < 1e-9 {
                continue;
            }
            let got = decide(lazy_e, lm, Pick::Sample { u, temperature }).unwrap();
            assert_eq!(got as usize, expected, "{what}: u={u} temperature={temperature}");
        }
    }
}

#[test]
fn choices_equal_the_full_distribution_along_texts() {
    for toy in toys() {
        for (seed, text) in [(1u64, &b"ab c\n\n a"[..]), (2, b"it's  caf\xC3\xA9."), (3, b"ba\n12 zab")] {
            for lm in [SyntheticLm::for_toy(&toy, seed), SyntheticLm::peaked(&toy, seed)] {
                let mut full = toy.engine(b"", eager()).unwrap();
                let mut lz = toy.engine(b"", lazy()).unwrap();
                // The lazy engine gets scores only: it asks for every row it needs.
                serve_scores(&mut lz, &lm);
                for (k, &b) in text.iter().enumerate() {
                    serve(&mut full, &lm);
                    let d = full.distribution().unwrap();
                    check_picks(&mut lz, &d.logprobs, &lm, &format!("{} {:?} peak={}", toy.name, String::from_utf8_lossy(&text[..k]), lm.peak));
                    full.advance(b).unwrap();
                    lz.advance(b).unwrap();
                }
            }
        }
    }
}

#[test]
fn choices_on_prompts_with_all_rows_up_front() {
    // As the Python layer starts: every row and score of the prompt's groups in one call.
    for toy in toys() {
        let lm = SyntheticLm::peaked(&toy, 8);
        for prompt in TEXTS {
            let mut full = toy.engine(prompt, eager()).unwrap();
            serve(&mut full, &lm);
            let mut lz = toy.engine(prompt, lazy()).unwrap();
            serve(&mut lz, &lm);
            check_picks(&mut lz, &full.distribution().unwrap().logprobs, &lm, &format!("{} {:?}", toy.name, String::from_utf8_lossy(prompt)));
        }
    }
}

const TEXTS: &[&[u8]] = &[b"", b"a", b" a", b"a\n\n", b"x  a", b"1 12", b"\xC3", b"caf\xC3\xA9", b"z "];

#[test]
fn generation_follows_the_full_distribution() {
    // Bytes chosen by the lazy engine drive both engines; every choice is the eager one's.
    for toy in toys() {
        for seed in 0..6u64 {
            let lm = if seed % 2 == 0 { SyntheticLm::peaked(&toy, seed) } else { SyntheticLm::for_toy(&toy, seed) };
            let mut full = toy.engine(b"a", eager()).unwrap();
            let mut lz = toy.engine(b"a", lazy()).unwrap();
            serve_scores(&mut lz, &lm);
            let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            for step in 0..16 {
                serve(&mut full, &lm);
                let d = full.distribution().unwrap();
                // A uniform draw from a xorshift, away from the boundaries.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let u = (state >> 11) as f64 / (1u64 << 53) as f64;
                let (expected, margin) = inverse_cdf(&d.logprobs, u, 1.0);
                if margin < 1e-9 {
                    continue;
                }
                let got = decide(&mut lz, &lm, Pick::Sample { u, temperature: 1.0 }).unwrap() as usize;
                assert_eq!(got, expected, "{} seed {seed} step {step}", toy.name);
                if got == EOS_SLOT {
                    break;
                }
                full.advance(got as u8).unwrap();
                lz.advance(got as u8).unwrap();
            }
        }
    }
}

#[test]
fn refining_to_the_end_gives_the_exact_numerators() {
    // `step_bounds` + `refine` (the ensemble path): once settled, the known masses are the exact
    // numerators, up to one common factor.
    for toy in toys() {
        let lm = SyntheticLm::for_toy(&toy, 4);
        for prompt in [&b"ab"[..], b"a\n\n", b" a", b"caf\xC3"] {
            let mut full = toy.engine(prompt, eager()).unwrap();
            serve(&mut full, &lm);
            let d = full.distribution().unwrap();
            let mut lz = toy.engine(prompt, lazy()).unwrap();
            serve_scores(&mut lz, &lm);
            let mut rounds = 0;
            loop {
                rounds += 1;
                assert!(rounds < 1000, "refine does not settle");
                match lz.refine().unwrap() {
                    Refinement::Settled => break,
                    Refinement::Checked => {}
                    Refinement::NeedRows => {
                        for (node, tokens) in lz.pending() {
                            lz.provide_row(node, &lm.row(&tokens)[..]).unwrap();
                        }
                    }
                }
            }
            let b = lz.step_bounds().unwrap();
            assert_eq!(b.deferred, 0.0);
            assert!(b.unknown.iter().all(|&u| u == 0.0));
            let total: f64 = b.known.iter().sum();
            for c in 0..N_SLOTS {
                let p = d.logprobs[c].exp();
                assert!((b.known[c] / total - p).abs() <= 1e-12 + 1e-9 * p, "{} {:?} slot {c}", toy.name, String::from_utf8_lossy(prompt));
            }
        }
    }
}

#[test]
fn lazy_and_eager_engines_refuse_each_others_calls() {
    let toy = gpt2();
    let lm = SyntheticLm::for_toy(&toy, 1);
    let mut lz = toy.engine(b"ab", lazy()).unwrap();
    serve_scores(&mut lz, &lm);
    assert!(matches!(lz.distribution(), Err(Error::Protocol(_))));
    assert!(matches!(lz.covers(), Err(Error::Protocol(_))));
    for (u, temperature) in [(1.0, 1.0), (-0.1, 1.0), (f64::NAN, 1.0), (0.5, 0.0), (0.5, f64::INFINITY), (0.5, f64::NAN)] {
        assert!(matches!(lz.decide(Pick::Sample { u, temperature }), Err(Error::Protocol(_))), "u={u} t={temperature}");
    }
    let mut full = toy.engine(b"ab", eager()).unwrap();
    serve(&mut full, &lm);
    assert!(matches!(full.decide(Pick::Greedy), Err(Error::Protocol(_))));
    assert!(matches!(full.refine(), Err(Error::Protocol(_))));
    assert!(matches!(full.step_bounds(), Err(Error::Protocol(_))));
}

#[test]
fn a_confident_stretch_needs_few_rows() {
    // What the lazy engine is for: greedy through text the model is sure of costs about one row
    // per token, not one per byte. With a peaked LM that always prefers the next token of the
    // text, 12 bytes of "ab" tokens need far fewer than 12 rows.
    let toy = gpt2();
    let text = b"abababababab";
    let ab = toy.by_bytes(b"ab");
    let lm = SyntheticLm::for_toy(&toy, 3);
    // Sharpen the row towards "ab" by hand: logits of the synthetic LM plus a large bonus.
    let row = |tokens: &[u32]| {
        let mut r = lm.row(tokens);
        r[ab as usize] += 12.0;
        let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z = m + r.iter().map(|l| (l - m).exp()).sum::<f64>().ln();
        r.iter().map(|l| l - z).collect::<Vec<f64>>()
    };
    let mut lz = toy.engine(b"", lazy()).unwrap();
    for (node, tokens) in lz.requests().scores {
        let lp: f64 = (0..tokens.len()).map(|k| row(&tokens[..k])[tokens[k] as usize]).sum();
        lz.provide_score(node, lp).unwrap();
    }
    let mut rows = 0;
    for &b in text {
        loop {
            match lz.decide(Pick::Greedy).unwrap() {
                Some(c) => {
                    assert_eq!(c, b as u16);
                    break;
                }
                None => {
                    for (node, tokens) in lz.pending() {
                        lz.provide_row(node, &row(&tokens)[..]).unwrap();
                        rows += 1;
                    }
                }
            }
        }
        lz.advance(b).unwrap();
    }
    assert!(rows <= text.len() / 2 + 2, "{rows} rows for {} bytes", text.len());
}

//! Property tests on the toy tokenizers (proptest): encoding, validity and the engine on
//! arbitrary input. Case counts are kept small enough for `cargo test` (a few seconds); set
//! `PROPTEST_CASES` to run more.

use crate::common::*;
use bytecover_core::engine::{EngineConfig, Pick};
use bytecover_core::primitives::{EOS_SLOT, N_SLOTS};
use proptest::prelude::*;
use std::sync::OnceLock;

fn toys_once() -> &'static [Toy] {
    static TOYS: OnceLock<Vec<Toy>> = OnceLock::new();
    TOYS.get_or_init(toys)
}

/// Text the toys have rules for, mixed with any character at all.
fn text() -> impl Strategy<Value = String> {
    let interesting =
        proptest::sample::select(ALPHABET.iter().map(|s| s.chars().next().unwrap()).chain(['中', '😀', '\u{1680}', '\t', 'A']).collect::<Vec<char>>());
    proptest::collection::vec(prop_oneof![4 => interesting, 1 => any::<char>()], 0..14).prop_map(|cs| cs.into_iter().collect())
}

/// Bytes that are mostly the toys' alphabet, with any byte mixed in (invalid UTF-8 included).
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    let alphabet: Vec<u8> = b"ab c\n1'.s".to_vec();
    proptest::collection::vec(prop_oneof![3 => proptest::sample::select(alphabet), 1 => any::<u8>()], 0..10)
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config(256))]

    /// Every byte string has an encoding (invalid UTF-8 bytes are pieces of their own), and it
    /// spells the bytes back.
    #[test]
    fn encode_round_trips_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..40)) {
        for toy in toys_once() {
            let internal = [toy.start_prefix(), data.as_slice()].concat();
            let ids = toy.canon.encode(&internal).unwrap();
            prop_assert_eq!(toy.canon.decode(&ids).unwrap(), internal.clone());
            let from_text = toy.canon.encode_text(&data).unwrap();
            if data.is_empty() {
                prop_assert!(from_text.is_empty());
            } else {
                prop_assert_eq!(from_text, ids);
            }
        }
    }

    /// The canonical encoding of a text is canonical, and each of its prefixes is valid.
    #[test]
    fn prefixes_of_an_encoding_are_valid(s in text()) {
        for toy in toys_once() {
            let ids = toy.canon.encode_text(s.as_bytes()).unwrap();
            prop_assert!(toy.canon.is_canonical(&ids).unwrap(), "{}: {:?} -> {:?} not canonical", toy.name, s, ids);
            for k in 0..=ids.len() {
                prop_assert!(toy.canon.is_valid(&ids[..k]).unwrap(), "{}: {:?}: prefix {:?} of {:?} called invalid", toy.name, s, &ids[..k], ids);
            }
        }
    }

    /// A sequence that `is_canonical` accepts is the encoding of its own bytes.
    #[test]
    fn canonical_means_encode_of_decode(picks in proptest::collection::vec(0usize..1000, 1..5)) {
        for toy in toys_once() {
            let tokens: Vec<u32> = toy.canon.vocab().text_tokens().map(|(i, _)| i).collect();
            let ids: Vec<u32> = picks.iter().map(|&p| tokens[p % tokens.len()]).collect();
            let bytes = toy.canon.decode(&ids).unwrap();
            let expected = match bytes.strip_prefix(toy.start_prefix()) {
                Some(user) if std::str::from_utf8(user).is_ok() => toy.canon.encode_text(user).unwrap() == ids,
                _ => false,
            };
            prop_assert_eq!(toy.canon.is_canonical(&ids).unwrap(), expected, "{}: {:?}", toy.name, ids);
            // A canonical sequence is valid.
            if expected {
                prop_assert!(toy.canon.is_valid(&ids).unwrap());
            }
        }
    }
}

proptest! {
    #![proptest_config(config(48))]

    /// The full distribution sums to 1 and agrees with the lazy engine's greedy choice, at the
    /// prompt and after the next two most likely bytes.
    #[test]
    fn distribution_is_normalised(s in proptest::collection::vec(proptest::sample::select(ALPHABET.to_vec()), 0..6), seed in 0u64..1000) {
        let prompt: String = s.concat();
        for toy in toys_once() {
            let lm = SyntheticLm::for_toy(toy, seed);
            let mut e = toy.engine(prompt.as_bytes(), EngineConfig { tolerance: 0.0, threads: 1, lazy: false }).unwrap();
            let mut lz = toy.engine(prompt.as_bytes(), EngineConfig { tolerance: 0.0, threads: 1, lazy: true }).unwrap();
            serve_scores(&mut lz, &lm);
            for _ in 0..3 {
                serve(&mut e, &lm);
                let d = e.distribution().unwrap();
                let sum: f64 = d.logprobs.iter().map(|l| l.exp()).sum();
                prop_assert!((sum - 1.0).abs() < 1e-12, "{}: {:?} sums to {}", toy.name, prompt, sum);
                prop_assert!(d.log_total <= d.log_prefix + 1e-12, "Σ numerators cannot exceed P(x...)");
                let best = argmax(&d.logprobs);
                prop_assert_eq!(decide(&mut lz, &lm, Pick::Greedy).unwrap() as usize, best);
                if best == EOS_SLOT {
                    break;
                }
                e.advance(best as u8).unwrap();
                lz.advance(best as u8).unwrap();
            }
        }
    }

    /// Arbitrary bytes and draws: errors are allowed (zero mass where no text can be spelled),
    /// panics are not, and whatever is returned is a distribution.
    #[test]
    fn engine_never_panics_on_any_bytes(prompt in bytes(), next in bytes(), u in 0.0f64..1.0, seed in 0u64..1000) {
        for toy in toys_once() {
            let lm = SyntheticLm::for_toy(toy, seed);
            if let Ok(mut e) = toy.engine(&prompt, EngineConfig { tolerance: 0.0, threads: 1, lazy: false }) {
                for &b in &next {
                    serve(&mut e, &lm);
                    match e.distribution() {
                        Ok(d) => prop_assert!((d.logprobs.iter().map(|l| l.exp()).sum::<f64>() - 1.0).abs() < 1e-9),
                        Err(_) => break,
                    }
                    let _ = e.covers();
                    if e.advance(b).is_err() {
                        break;
                    }
                }
            }
            if let Ok(mut e) = toy.engine(&prompt, EngineConfig { tolerance: 0.0, threads: 1, lazy: true }) {
                serve_scores(&mut e, &lm);
                for &b in &next {
                    match decide(&mut e, &lm, Pick::Sample { u, temperature: 0.7 }) {
                        Ok(c) => prop_assert!((c as usize) < N_SLOTS),
                        Err(_) => break,
                    }
                    if e.advance(b).is_err() {
                        break;
                    }
                }
            }
        }
    }
}

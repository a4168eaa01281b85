//! The eager engine against a brute force of the Byte-Token Representation Lemma on the toy
//! tokenizers (see `common`): covers, P(x...), every next-byte numerator P(x b ...), the EOS
//! rule, covers drawn for hand-off, and the same answers whether the engine was built on the
//! prompt or advanced to it byte by byte.

use crate::common::*;
use bytecover_core::engine::{CoverChoice, CoverEngine, EngineConfig};
use bytecover_core::primitives::{EOS_SLOT, N_SLOTS};
use bytecover_core::Error;
use std::collections::HashMap;

fn exact() -> EngineConfig {
    EngineConfig { tolerance: 0.0, threads: 1, lazy: false }
}

/// Texts that exercise what the engine has to get right: ends inside a token (" a" of " ab"),
/// inside a character ("\xC3" of "é"), after whitespace runs (look-ahead), after newlines, after
/// characters only the byte fallback spells ("z", "中"), and the empty text.
const TEXTS: &[&[u8]] = &[
    b"",
    b"a",
    b"ab",
    b" a",
    b"a b",
    b"ab c",
    b"a\n\n",
    b"a\n\nb",
    b"x  a",
    b"1 12",
    b"it's",
    b"\xC3",
    b"caf\xC3\xA9",
    b" \xC3",
    b"z ",
    b"\xE4\xB8",
    b"aa ba\n",
];

/// Compare the engine's current step with the brute force of its text.
fn check_step(toy: &Toy, e: &CoverEngine, oracle: &mut ValidityOracle, rows: &mut RowCache, what: &str) {
    let bf = brute_force(toy, oracle, rows, e.text());
    let d = match e.distribution() {
        Ok(d) => d,
        Err(err) => {
            assert!(bf.numerators.iter().all(|&p| p == 0.0), "{what}: engine says {err} but the brute force has mass {:?}", bf.numerators.iter().sum::<f64>());
            return;
        }
    };
    assert!(close(d.log_prefix.exp(), bf.prefix, 1e-9), "{what}: P(x...) engine {} brute force {}", d.log_prefix.exp(), bf.prefix);
    let total: f64 = bf.numerators.iter().sum();
    assert!(close(d.log_total.exp(), total, 1e-9), "{what}: Σ numerators engine {} brute force {total}", d.log_total.exp());
    for c in 0..N_SLOTS {
        let engine = (d.log_total + d.logprobs[c]).exp();
        assert!(close(engine, bf.numerators[c], 1e-9), "{what}: slot {c}: engine {engine} brute force {}", bf.numerators[c]);
        // The normalised probability is P(x b ...) / Σ numerators.
        assert!((d.logprobs[c].exp() - bf.numerators[c] / total).abs() <= 1e-9, "{what}: slot {c} probability");
    }
    let sum: f64 = d.logprobs.iter().map(|l| l.exp()).sum();
    assert!((sum - 1.0).abs() < 1e-12, "{what}: probabilities sum to {sum}");
    assert_eq!(d.skipped_bound, 0.0, "{what}: exact mode skips nothing");
}

#[test]
fn next_byte_numerators_equal_the_brute_force() {
    for toy in toys() {
        let lm = SyntheticLm::for_toy(&toy, 7);
        let mut rows = RowCache::new(&lm);
        let mut oracle = ValidityOracle::new(&toy);
        for text in TEXTS {
            let mut e = toy.engine(text, exact()).unwrap();
            serve(&mut e, &lm);
            check_step(&toy, &e, &mut oracle, &mut rows, &format!("{} {:?}", toy.name, String::from_utf8_lossy(text)));
        }
    }
}

#[test]
fn advancing_byte_by_byte_equals_the_brute_force_at_every_step() {
    for toy in toys() {
        for (seed, text) in [(1u64, &b"ab c\n\n a"[..]), (2, b"it's  caf\xC3\xA9."), (3, b"ba\n12 zab")] {
            let lm = SyntheticLm::for_toy(&toy, seed);
            let mut rows = RowCache::new(&lm);
            let mut oracle = ValidityOracle::new(&toy);
            let mut e = toy.engine(b"", exact()).unwrap();
            for (k, &b) in text.iter().enumerate() {
                serve(&mut e, &lm);
                check_step(&toy, &e, &mut oracle, &mut rows, &format!("{} {:?} step {k}", toy.name, String::from_utf8_lossy(&text[..k])));
                e.advance(b).unwrap();
            }
            serve(&mut e, &lm);
            check_step(&toy, &e, &mut oracle, &mut rows, &format!("{} {:?} end", toy.name, String::from_utf8_lossy(text)));
            // Built on the whole prompt at once: the same answer.
            let mut fresh = toy.engine(text, exact()).unwrap();
            serve(&mut fresh, &lm);
            let (a, b) = (e.distribution().unwrap(), fresh.distribution().unwrap());
            for c in 0..N_SLOTS {
                assert!(close(a.logprobs[c].exp(), b.logprobs[c].exp(), 1e-12), "{}: slot {c} incremental vs fresh", toy.name);
            }
            assert!(close(a.log_prefix, b.log_prefix, 1e-12));
        }
    }
}

#[test]
fn impossible_tokens_and_peaked_rows() {
    // Rows with exact zeros (skipped by the masks) and confident rows (most mass on a few ids).
    for toy in toys() {
        for lm in [SyntheticLm { zeros: 0.2, ..SyntheticLm::for_toy(&toy, 11) }, SyntheticLm::peaked(&toy, 12)] {
            let mut rows = RowCache::new(&lm);
            let mut oracle = ValidityOracle::new(&toy);
            for text in [&b"ab c"[..], b" a", b"a\n\n", b"caf\xC3"] {
                let mut e = toy.engine(text, exact()).unwrap();
                serve(&mut e, &lm);
                check_step(&toy, &e, &mut oracle, &mut rows, &format!("{} {:?} zeros={} peak={}", toy.name, String::from_utf8_lossy(text), lm.zeros, lm.peak));
            }
        }
    }
}

#[test]
fn threads_and_the_mask_cache_do_not_change_answers() {
    // The toy has more tokens than the threading threshold, and a repeated text brings the same
    // anchored contexts back (mask cache hits), with rows that zero different tokens each time
    // (so a cached mask must be completed for tokens it skipped).
    for (toy, zeros) in toys().into_iter().flat_map(|t| [(t.clone(), 0.0), (t, 0.3)]) {
        let lm = SyntheticLm { zeros, ..SyntheticLm::for_toy(&toy, 31) };
        let mut rows = RowCache::new(&lm);
        let mut oracle = ValidityOracle::new(&toy);
        let text = b"ab ab ab ab a";
        let mut serial = toy.engine(b"", exact()).unwrap();
        let mut parallel = toy.engine(b"", EngineConfig { threads: 4, ..exact() }).unwrap();
        for (k, &b) in text.iter().enumerate() {
            serve(&mut serial, &lm);
            serve(&mut parallel, &lm);
            check_step(&toy, &parallel, &mut oracle, &mut rows, &format!("{} {:?} (4 threads)", toy.name, String::from_utf8_lossy(&text[..k])));
            let (a, b2) = match (serial.distribution(), parallel.distribution()) {
                (Ok(a), Ok(b2)) => (a, b2),
                // The zeros can make the text impossible (check_step agreed with that).
                (Err(_), Err(_)) => break,
                (a, b2) => panic!("{}: serial {:?} parallel {:?}", toy.name, a.err(), b2.err()),
            };
            assert_eq!(a.logprobs.map(f64::to_bits), b2.logprobs.map(f64::to_bits), "{}: threads change the bits", toy.name);
            serial.advance(b).unwrap();
            parallel.advance(b).unwrap();
        }
        if zeros == 0.0 {
            assert!(serial.stats.mask_cache_hits > 0, "{}: the walk never reused a mask", toy.name);
        }
    }
}

#[test]
fn covers_are_exactly_the_brute_force_covers() {
    for toy in toys() {
        let lm = SyntheticLm::for_toy(&toy, 5);
        let mut rows = RowCache::new(&lm);
        let mut oracle = ValidityOracle::new(&toy);
        for text in [&b"a"[..], b" ab", b"a\n\n", b"x  a", b"caf\xC3", b"1 12"] {
            let mut e = toy.engine(text, exact()).unwrap();
            serve(&mut e, &lm);
            let bf = brute_force(&toy, &mut oracle, &mut rows, e.text());
            let engine: HashMap<Vec<u32>, f64> = e.covers().unwrap().into_iter().filter(|c| c.1 > f64::NEG_INFINITY).collect();
            let expected: HashMap<Vec<u32>, f64> = bf.covers.iter().filter(|c| c.1 > 0.0).cloned().collect();
            let what = format!("{} {:?}", toy.name, String::from_utf8_lossy(text));
            for (seq, p) in &expected {
                let got = engine.get(seq).unwrap_or_else(|| panic!("{what}: cover {seq:?} (p = {p}) missing from the engine's list"));
                assert!(close(got.exp(), *p, 1e-9), "{what}: cover {seq:?}: engine {} brute force {p}", got.exp());
            }
            assert_eq!(
                engine.len(),
                expected.len(),
                "{what}: the engine lists covers the brute force does not: {:?}",
                engine.keys().filter(|k| !expected.contains_key(*k)).collect::<Vec<_>>()
            );
            // The Lemma: the covers' probabilities sum to P(x...).
            let sum: f64 = engine.values().map(|l| l.exp()).sum();
            assert!(close(sum, e.distribution().unwrap().log_prefix.exp(), 1e-9), "{what}: Σ covers {sum}");
        }
    }
}

#[test]
fn choose_cover_draws_in_proportion_and_finds_the_most_likely() {
    for toy in toys() {
        let lm = SyntheticLm::for_toy(&toy, 9);
        for text in [&b" a"[..], b"a\n\n", b"ab"] {
            let mut e = toy.engine(text, exact()).unwrap();
            serve(&mut e, &lm);
            let covers = e.covers().unwrap();
            let total: f64 = covers.iter().map(|c| c.1.exp()).sum();
            let best = covers.iter().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
            let (seq, lp) = e.choose_cover(CoverChoice::MostLikely).unwrap();
            assert_eq!(&seq, &best.0);
            assert!(close(lp, best.1, 1e-12));
            // u on an even grid: the draw maps [0, 1) onto consecutive intervals, one per cover,
            // each as long as the cover's share; so counts are within one of N x share.
            let n = 20_000;
            let mut counts: HashMap<Vec<u32>, usize> = HashMap::new();
            for k in 0..n {
                let (seq, lp) = e.choose_cover(CoverChoice::Sample((k as f64 + 0.5) / n as f64)).unwrap();
                let listed = covers.iter().find(|c| c.0 == seq).expect("a drawn cover is a cover");
                assert!(close(lp, listed.1, 1e-12));
                *counts.entry(seq).or_default() += 1;
            }
            for (seq, lp) in &covers {
                let expected = n as f64 * lp.exp() / total;
                let got = counts.get(seq).copied().unwrap_or(0) as f64;
                assert!(
                    (got - expected).abs() <= 1.5,
                    "{} {:?}: cover {seq:?} drawn {got} times, expected {expected:.2}",
                    toy.name,
                    String::from_utf8_lossy(text)
                );
            }
        }
    }
}

#[test]
fn eos_is_the_canonical_encoding_times_its_eos_probability() {
    for toy in toys() {
        let lm = SyntheticLm::for_toy(&toy, 21);
        for text in [&b"ab"[..], b"a\n\n", b"x  ", b"caf\xC3\xA9", b""] {
            let mut e = toy.engine(text, exact()).unwrap();
            serve(&mut e, &lm);
            let d = e.distribution().unwrap();
            let enc = toy.canon.encode_text(text).unwrap();
            let expected = lm.logp(&enc) + lm.row(&enc)[toy.eos[0] as usize];
            assert!(close(d.log_total + d.logprobs[EOS_SLOT], expected, 1e-12), "{} {:?}", toy.name, String::from_utf8_lossy(text));
        }
        // A text ending inside a character cannot end there: no EOS.
        let mut e = toy.engine(b"caf\xC3", exact()).unwrap();
        serve(&mut e, &lm);
        assert_eq!(e.distribution().unwrap().logprobs[EOS_SLOT], f64::NEG_INFINITY, "{}", toy.name);
    }
}

#[test]
fn multi_byte_lead_tokens() {
    // Lone lead bytes of 3- and 4-byte characters with probability (the other tests' LM bans
    // them), in contexts where they are valid, so the checks stay cheap.
    for toy in toys() {
        let lm = SyntheticLm::new(toy.canon.vocab().n_logits(), 17);
        let mut rows = RowCache::new(&lm);
        let mut oracle = ValidityOracle::new(&toy);
        let mut e = toy.engine(b"ab", exact()).unwrap();
        for (k, &b) in "中😀a".as_bytes().iter().enumerate() {
            serve(&mut e, &lm);
            check_step(&toy, &e, &mut oracle, &mut rows, &format!("{} ab + {k} bytes of 中😀a", toy.name));
            e.advance(b).unwrap();
        }
    }
}

#[test]
fn lookahead_sequence_is_a_cover_trunk() {
    // GPT-2's `\s+(?!\S)`: encode("a\n\n") = [a, \n\n] but [a, \n, \n] starts encode("a\n\nb"),
    // so the engine keeps both token prefixes for "a\n\n" and the b after them has mass.
    let toy = gpt2();
    let lm = SyntheticLm::for_toy(&toy, 3);
    let e = toy.engine(b"a\n\n", exact()).unwrap();
    let prefixes = e.all_prefixes();
    assert!(prefixes.contains(&toy.ids(&["a", "\n", "\n"])));
    assert!(prefixes.contains(&toy.ids(&["a", "\n\n"])));
    let mut e = e;
    serve(&mut e, &lm);
    let covers = e.covers().unwrap();
    assert!(covers.iter().any(|c| c.0 == toy.ids(&["a", "\n", "\n"])));
    let d = e.distribution().unwrap();
    // After [a, \n\n] a letter cannot follow (the pre-tokenizer would have cut "\n" + "\nb"), so
    // P(b | a\n\n) comes from [a, \n, \n] + [b...] alone.
    let through_single = lm.logp(&toy.ids(&["a", "\n", "\n"]));
    let row = lm.row(&toy.ids(&["a", "\n", "\n"]));
    let b_mass: f64 = toy
        .canon
        .vocab()
        .text_tokens()
        .filter(|&(id, bytes)| bytes[0] == b'b' && toy.canon.is_valid(&[toy.ids(&["a", "\n", "\n"]), vec![id]].concat()).unwrap())
        .map(|(id, _)| row[id as usize].exp())
        .sum();
    // ("bab" is not among them: "a b" merges first, so no text encodes to it.)
    assert!(!toy.canon.is_valid(&toy.ids(&["a", "\n", "\n", "bab"])).unwrap());
    assert!(close((d.log_total + d.logprobs[b'b' as usize]).exp(), through_single.exp() * b_mass, 1e-9));
}

#[test]
fn bare_start_prefix_has_mass_one() {
    // The SentencePiece toy's empty text: internally just the dummy-prefix space, spelled by the
    // empty token sequence. P(x...) = 1, its only cover is [], EOS is the root's.
    let toy = spm();
    let lm = SyntheticLm::for_toy(&toy, 4);
    let mut e = toy.engine(b"", exact()).unwrap();
    assert_eq!(e.text(), b" ");
    serve(&mut e, &lm);
    let d = e.distribution().unwrap();
    assert_eq!(d.log_prefix, 0.0);
    assert_eq!(e.covers().unwrap(), vec![(vec![], 0.0)]);
    assert!(close(d.log_total + d.logprobs[EOS_SLOT], lm.row(&[])[toy.eos[0] as usize], 1e-12));
    assert_eq!(toy.canon.encode_text(b"").unwrap(), Vec::<u32>::new());
    // [▁] spells the bare prefix too but is not the empty text's encoding.
    assert!(!toy.canon.is_canonical(&toy.ids(&[" "])).unwrap());
}

#[test]
fn protocol_errors_are_errors() {
    let toy = gpt2();
    let lm = SyntheticLm::for_toy(&toy, 1);
    let mut e = toy.engine(b"ab", exact()).unwrap();
    assert!(e.distribution().is_err(), "rows still missing");
    let r = e.requests();
    let (node, tokens) = r.rows[0].clone();
    assert!(e.provide_row(node, &lm.row(&tokens)[1..]).is_err(), "short row");
    let mut nan = lm.row(&tokens);
    nan[5] = f64::NAN;
    assert!(e.provide_row(node, &nan[..]).is_err(), "NaN row");
    assert!(e.provide_row(10_000, &lm.row(&tokens)[..]).is_err(), "unknown node");
    assert!(e.provide_score(node, f64::NAN).is_err(), "NaN score");
    // f32 rows are accepted and give the same answer up to f32 rounding.
    for (node, tokens) in &r.scores {
        e.provide_score(*node, lm.logp(tokens)).unwrap();
    }
    for (node, tokens) in &r.rows {
        let row32: Vec<f32> = lm.row(tokens).iter().map(|&v| v as f32).collect();
        e.provide_row(*node, &row32[..]).unwrap();
    }
    let d32 = e.distribution().unwrap();
    let mut e64 = toy.engine(b"ab", exact()).unwrap();
    serve(&mut e64, &lm);
    let d64 = e64.distribution().unwrap();
    for c in 0..N_SLOTS {
        assert!((d32.logprobs[c].exp() - d64.logprobs[c].exp()).abs() < 1e-5);
    }
    // A byte no valid sequence continues with (0xFF is never UTF-8): zero mass, an error.
    let mut e = toy.engine(b"ab", exact()).unwrap();
    serve(&mut e, &lm);
    assert_eq!(e.advance(0xFF).unwrap_err(), Error::ZeroMass);
    // Built on such a text, the engine finds out when the masks are computed.
    let mut e = toy.engine(b"ab\xFF", exact()).unwrap();
    serve(&mut e, &lm);
    assert_eq!(e.distribution().unwrap_err(), Error::ZeroMass);
}

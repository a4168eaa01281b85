//! `is_valid` and `is_canonical` against their definitions on every short token sequence of the
//! toy tokenizers: valid = some text's encoding starts with it (the oracle in `common` searches
//! texts), canonical = the encoding of its own bytes.

use crate::common::*;

/// The toy's tokens whose bytes use only the alphabet (every merge and every alphabet unit),
/// plus the two bytes of "é" on their own.
fn interesting_tokens(toy: &Toy) -> Vec<u32> {
    let alphabet: Vec<u8> = ALPHABET.concat().into_bytes();
    toy.canon.vocab().text_tokens().filter(|(_, b)| b.iter().all(|c| alphabet.contains(c))).map(|(i, _)| i).collect()
}

#[test]
fn is_valid_matches_the_definition_on_all_short_sequences() {
    for toy in toys() {
        let tokens = interesting_tokens(&toy);
        let mut oracle = ValidityOracle::new(&toy);
        let (mut checked, mut valid) = (0, 0);
        // Depth-first to length 3; validity is prefix-closed, so only valid sequences grow.
        let mut stack: Vec<Vec<u32>> = vec![vec![]];
        while let Some(seq) = stack.pop() {
            for &t in &tokens {
                let mut s = seq.clone();
                s.push(t);
                let expected = oracle.is_valid(&s);
                let got = toy.canon.is_valid(&s).unwrap();
                let spelled: Vec<String> = s.iter().map(|&i| String::from_utf8_lossy(toy.canon.vocab().token_bytes(i).unwrap()).into_owned()).collect();
                assert_eq!(got, expected, "{}: is_valid({spelled:?})", toy.name);
                checked += 1;
                if expected {
                    valid += 1;
                    if s.len() < 3 {
                        stack.push(s);
                    }
                }
            }
        }
        assert!(valid > 100 && checked - valid > 100, "{}: {valid} valid of {checked}: too few either way to mean much", toy.name);
    }
}

#[test]
fn is_canonical_matches_the_definition_on_all_short_sequences() {
    for toy in toys() {
        let tokens = interesting_tokens(&toy);
        let mut n_canonical = 0;
        for &a in &tokens {
            for &b in &tokens {
                for s in [vec![a], vec![a, b]] {
                    let bytes = toy.canon.decode(&s).unwrap();
                    let expected = match bytes.strip_prefix(toy.start_prefix()) {
                        Some(user) if std::str::from_utf8(user).is_ok() => toy.canon.encode_text(user).unwrap() == s,
                        _ => false,
                    };
                    assert_eq!(toy.canon.is_canonical(&s).unwrap(), expected, "{}: {s:?}", toy.name);
                    n_canonical += expected as usize;
                }
            }
        }
        assert!(n_canonical > 20, "{}", toy.name);
    }
}

#[test]
fn witnesses_beyond_the_first_characters() {
    // Sequences whose validity needs a continuation: the oracle finds one, and so must the
    // tokenizer's own witness list.
    let g = gpt2();
    for (pieces, valid) in [
        (&["a", "\n", "\n"][..], true), // "a\n\nb": the look-ahead leaves the last newline to "b"
        (&["a", " ", " "], true),       // "a  b"
        (&["a", "  "], true),           // "a  " itself
        (&["a", "  ", "b"], false),     // "  b" is always cut " " + " b"
        (&["a", "\n\n", "b"], false),
        (&["i", "t", "'s"], true),
        (&["'", "s"], false), // "'s" is a contraction piece and merges
        (&["a", "b"], false), // "a b" is the first merge
        (&["ab", "c"], false),
        (&["ba", "b"], false), // "bab": "a b" (rank 0) fires before "b a" (rank 6)
    ] {
        let ids = g.ids(pieces);
        let mut oracle = ValidityOracle::new(&g);
        assert_eq!(oracle.is_valid(&ids), valid, "oracle on {pieces:?}");
        assert_eq!(g.canon.is_valid(&ids).unwrap(), valid, "is_valid on {pieces:?}");
    }
}

//! Small tokenizers and rows for the unit tests (the integration tests in `tests/` have larger
//! toys, a validity oracle and a brute force of the engine).

use crate::canonical::Canonicalizer;
use crate::primitives::TokenId;
use crate::trie::TokenTrie;
use serde_json::json;
use std::sync::Arc;

/// A byte-level BPE small enough to encode by hand: units a b c Ġ Ċ (ids 0-4), merges by rank
/// "a b", "Ġ a", "Ċ Ċ", "ab c", "Ġ Ġ" (ids 5-9), "1" (id 10) and an end-of-text special token
/// (id 11). "1" is there because validity witnesses are texts, and a text with a character the
/// vocabulary cannot spell proves nothing ([a, Ġ, Ġ] is shown valid by "a  1").
pub fn tiny() -> Canonicalizer {
    let j = json!({
        "added_tokens": [{"id": 11, "content": "<eos>", "special": true}],
        "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "Ġ": 3, "Ċ": 4, "ab": 5, "Ġa": 6, "ĊĊ": 7, "abc": 8, "ĠĠ": 9, "1": 10},
                  "merges": ["a b", "Ġ a", "Ċ Ċ", "ab c", "Ġ Ġ"]},
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
        "decoder": {"type": "ByteLevel"}
    });
    Canonicalizer::from_json(&j.to_string(), None).unwrap()
}

pub const TINY_EOS: TokenId = 11;

pub fn tiny_parts() -> (Arc<Canonicalizer>, Arc<TokenTrie>) {
    let c = Arc::new(tiny());
    let t = Arc::new(TokenTrie::new(c.vocab()));
    (c, t)
}

/// A deterministic next-token row (natural log, normalised) that depends on the whole prefix.
pub fn row(prefix: &[TokenId], width: usize) -> Vec<f64> {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for &t in prefix {
        h = (h ^ (t as u64 + 1)).wrapping_mul(0x0100_0000_01B3);
    }
    let logits: Vec<f64> = (0..width)
        .map(|i| {
            let z = (h ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            ((z >> 11) as f64 / (1u64 << 53) as f64) * 4.0
        })
        .collect();
    let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let z = m + logits.iter().map(|l| (l - m).exp()).sum::<f64>().ln();
    logits.iter().map(|l| l - z).collect()
}

pub fn logp(tokens: &[TokenId], width: usize) -> f64 {
    (0..tokens.len()).map(|k| row(&tokens[..k], width)[tokens[k] as usize]).sum()
}

//! The classic token-healing baseline (what transformers, guidance and llama.cpp offer), done
//! properly: back up the fewest trailing tokens such that some single token can cross the prompt
//! boundary, then constrain decoding to tokens consistent with the removed bytes. It is a
//! heuristic — kept to compare against the exact method.

use crate::primitives::TokenId;
use crate::trie::TokenTrie;
use crate::vocab::Vocabulary;

/// Where to cut a prompt's tokens for healing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealPlan {
    /// Number of prompt tokens kept.
    pub keep: usize,
    /// Bytes of the removed tokens, which generation must reproduce first.
    pub removed: Vec<u8>,
}

/// Back up k = 1, 2, ... tokens while the removed bytes fit in one token, and stop at the first k
/// where a vocabulary token strictly extends the removed bytes (so the model can choose a longer
/// token across the boundary). With no such k, nothing is removed.
pub fn plan(vocab: &Vocabulary, trie: &TokenTrie, tokens: &[TokenId]) -> HealPlan {
    let mut removed: Vec<u8> = Vec::new();
    for k in 1..=tokens.len() {
        let Some(b) = vocab.token_bytes(tokens[tokens.len() - k]) else { break };
        let mut r = b.to_vec();
        r.extend_from_slice(&removed);
        if r.len() > vocab.max_token_len() {
            break;
        }
        removed = r;
        let range = trie.range(&removed);
        if range.clone().any(|i| trie.key(i).len() > removed.len()) {
            return HealPlan { keep: tokens.len() - k, removed };
        }
    }
    HealPlan { keep: tokens.len(), removed: vec![] }
}

/// Tokens allowed while `remaining` bytes must still be produced: those that start with all of
/// it, or that are a prefix of it (then the rest stays pending).
pub fn allowed(trie: &TokenTrie, remaining: &[u8]) -> Vec<TokenId> {
    let mut out = trie.tokens_with_prefix(remaining);
    out.extend(trie.tokens_prefixing(remaining).into_iter().filter(|&(_, l)| l < remaining.len()).map(|(t, _)| t));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> (Vocabulary, TokenTrie) {
        let j = r#"{"model": {"type": "BPE", "vocab": {"a": 0, "r": 1, "ar": 2, "arr": 3, "array": 4, "y": 5, " ": 6, "np": 7, ".": 8, "n": 9, "p": 10}, "merges": []}}"#;
        let v = Vocabulary::from_json(j, None).unwrap();
        let t = TokenTrie::new(&v);
        (v, t)
    }

    #[test]
    fn backs_up_one_token_when_it_can_grow() {
        let (v, t) = toy();
        // "np.arr" = [np, ., arr]: "arr" can grow into "array".
        let p = plan(&v, &t, &[7, 8, 3]);
        assert_eq!(p, HealPlan { keep: 2, removed: b"arr".to_vec() });
        let mut a = allowed(&t, b"arr");
        a.sort();
        assert_eq!(a, vec![0, 2, 3, 4]); // a, ar (prefixes) and arr, array
    }

    #[test]
    fn keeps_everything_when_nothing_extends() {
        let (v, t) = toy();
        // "y" cannot grow, and "ry"/"ary" are no token prefixes either.
        assert_eq!(plan(&v, &t, &[5]), HealPlan { keep: 1, removed: vec![] });
    }
}

//! The token trie, stored flat: every ordinary token sorted by its bytes. In lexicographic order
//! the tokens that start with a given byte string form one contiguous block, so each trie node is
//! a range `lo..hi` of this array, a node's children are consecutive sub-ranges, and the mass of
//! a subtree is a sum over a range. Binary search finds a node in O(|prefix| log V).

use crate::primitives::{TokenId, N_BYTES};
use crate::vocab::Vocabulary;
use std::ops::Range;

#[derive(Debug, Clone)]
pub struct TokenTrie {
    /// Token ids in lexicographic order of their bytes (ties by id).
    order: Vec<TokenId>,
    /// Sorted token bytes, flat, with `starts[k]..starts[k+1]` the bytes of `order[k]`.
    flat: Vec<u8>,
    starts: Vec<u32>,
    /// Child ranges of the root by first byte, precomputed because every fresh token prefix needs
    /// all of them.
    root_children: Vec<Range<usize>>,
    /// Sorted position of each token id (`u32::MAX`: not an ordinary token).
    position: Vec<u32>,
}

/// A row of natural-log probabilities indexed by token id (f32 or f64, from numpy).
pub trait LogRow: Sync {
    fn len(&self) -> usize;
    fn get(&self, i: usize) -> f64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
impl LogRow for [f32] {
    fn len(&self) -> usize {
        <[f32]>::len(self)
    }
    fn get(&self, i: usize) -> f64 {
        self[i] as f64
    }
}
impl LogRow for [f64] {
    fn len(&self) -> usize {
        <[f64]>::len(self)
    }
    fn get(&self, i: usize) -> f64 {
        self[i]
    }
}

impl TokenTrie {
    pub fn new(vocab: &Vocabulary) -> Self {
        let mut toks: Vec<(TokenId, &[u8])> = vocab.text_tokens().collect();
        toks.sort_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(&b.0)));
        let mut flat = Vec::new();
        let mut starts = Vec::with_capacity(toks.len() + 1);
        let mut order = Vec::with_capacity(toks.len());
        for (id, b) in &toks {
            starts.push(flat.len() as u32);
            flat.extend_from_slice(b);
            order.push(*id);
        }
        starts.push(flat.len() as u32);
        let mut position = vec![u32::MAX; order.iter().map(|&id| id as usize + 1).max().unwrap_or(0)];
        for (k, &id) in order.iter().enumerate() {
            position[id as usize] = k as u32;
        }
        let mut trie = Self { order, flat, starts, root_children: Vec::new(), position };
        trie.root_children = (0..=255u8).map(|b| trie.range(&[b])).collect();
        trie
    }

    /// Number of ordinary tokens in the trie.
    pub fn len(&self) -> usize {
        self.order.len()
    }
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
    /// Bytes of the token at sorted position `k`.
    #[inline]
    pub fn key(&self, k: usize) -> &[u8] {
        &self.flat[self.starts[k] as usize..self.starts[k + 1] as usize]
    }
    #[inline]
    pub fn id_at(&self, k: usize) -> TokenId {
        self.order[k]
    }
    pub fn order(&self) -> &[TokenId] {
        &self.order
    }
    /// Sorted position of token `id` (`None` for ids that are not ordinary tokens).
    #[inline]
    pub fn position_of(&self, id: TokenId) -> Option<usize> {
        self.position.get(id as usize).filter(|&&k| k != u32::MAX).map(|&k| k as usize)
    }
    /// Sorted positions of all tokens whose bytes start with `prefix` (the subtree of that node).
    pub fn range(&self, prefix: &[u8]) -> Range<usize> {
        self.range_within(0..self.order.len(), prefix, 0)
    }

    /// Like `range`, searching only inside `within`, whose tokens all share `prefix[..depth]`.
    pub fn range_within(&self, within: Range<usize>, prefix: &[u8], depth: usize) -> Range<usize> {
        let (mut lo, mut hi) = (within.start, within.end);
        for d in depth..prefix.len() {
            let b = prefix[d];
            // Inside a node of depth d, tokens of length d come first, then bytes ascend.
            let start = lo + self.slice_partition(lo, hi, |key| key.len() <= d || key[d] < b);
            let end = start + self.slice_partition(start, hi, |key| key[d] <= b);
            lo = start;
            hi = end;
            if lo == hi {
                break;
            }
        }
        lo..hi
    }

    /// The children of a node: for the node of `prefix` (range `node`, depth = prefix length),
    /// the tokens equal to the prefix and the sub-range of each next byte.
    pub fn children(&self, node: Range<usize>, depth: usize) -> Children {
        if depth == 0 && node == (0..self.order.len()) {
            return Children {
                exact: 0..0,
                by_byte: self.root_children.iter().enumerate().filter(|(_, r)| !r.is_empty()).map(|(b, r)| (b as u8, r.clone())).collect(),
            };
        }
        let mut k = node.start;
        while k < node.end && self.key(k).len() == depth {
            k += 1;
        }
        let exact = node.start..k;
        let mut by_byte = Vec::new();
        while k < node.end {
            let b = self.key(k)[depth];
            let end = k + self.slice_partition(k, node.end, |key| key[depth] <= b);
            by_byte.push((b, k..end));
            k = end;
        }
        Children { exact, by_byte }
    }

    fn slice_partition(&self, lo: usize, hi: usize, pred: impl Fn(&[u8]) -> bool) -> usize {
        // Binary search over sorted positions lo..hi for the first position where pred fails.
        let (mut a, mut b) = (lo, hi);
        while a < b {
            let m = (a + b) / 2;
            if pred(self.key(m)) {
                a = m + 1;
            } else {
                b = m;
            }
        }
        a - lo
    }

    /// Log of the total probability of the tokens starting with `prefix`.
    pub fn prefix_logmass<R: LogRow + ?Sized>(&self, row: &R, prefix: &[u8]) -> f64 {
        let r = self.range(prefix);
        log_sum_range(self, row, r)
    }

    /// Log masses of the `N_BYTES` children of the node `prefix`: entry b is the log probability that
    /// the next token starts with `prefix + [b]`.
    pub fn child_logmasses<R: LogRow + ?Sized>(&self, row: &R, prefix: &[u8]) -> [f64; N_BYTES] {
        let node = self.range(prefix);
        let mut out = [f64::NEG_INFINITY; N_BYTES];
        for (b, r) in self.children(node, prefix.len()).by_byte {
            out[b as usize] = log_sum_range(self, row, r);
        }
        out
    }

    /// Ids of the tokens whose bytes start with `prefix`.
    pub fn tokens_with_prefix(&self, prefix: &[u8]) -> Vec<TokenId> {
        self.range(prefix).map(|k| self.order[k]).collect()
    }

    /// Tokens that are themselves prefixes of `data`, as (id, length), shortest first.
    pub fn tokens_prefixing(&self, data: &[u8]) -> Vec<(TokenId, usize)> {
        let mut out = Vec::new();
        let mut node = 0..self.order.len();
        for d in 0..data.len() {
            node = self.range_within(node, &data[..d + 1], d);
            if node.is_empty() {
                break;
            }
            for k in node.clone() {
                if self.key(k).len() == d + 1 {
                    out.push((self.order[k], d + 1));
                } else {
                    break;
                }
            }
        }
        out
    }
}

/// Tokens equal to a node's prefix, and the child ranges by next byte.
pub struct Children {
    pub exact: Range<usize>,
    pub by_byte: Vec<(u8, Range<usize>)>,
}

fn log_sum_range<R: LogRow + ?Sized>(trie: &TokenTrie, row: &R, r: Range<usize>) -> f64 {
    let mut m = f64::NEG_INFINITY;
    for k in r.clone() {
        m = m.max(row.get(trie.order[k] as usize));
    }
    if m == f64::NEG_INFINITY {
        return m;
    }
    let s: f64 = r.map(|k| (row.get(trie.order[k] as usize) - m).exp()).sum();
    m + s.ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// A plain vocabulary from token strings (id = position), with one special token at the end.
    fn vocab(tokens: &[&str]) -> Vocabulary {
        let mut v = serde_json::Map::new();
        for (i, t) in tokens.iter().enumerate() {
            v.insert(t.to_string(), json!(i));
        }
        let j = json!({"model": {"type": "BPE", "vocab": v, "merges": []}, "added_tokens": [{"id": tokens.len(), "content": "<eos>", "special": true}]});
        Vocabulary::from_json(&j.to_string(), None).unwrap()
    }

    const TOKENS: &[&str] = &["b", "ab", "a", "abc", "abd", "ba", "c", "aa", "abca", "bab", "é", "e"];

    #[test]
    fn flat_layout_is_sorted_by_bytes() {
        let v = vocab(TOKENS);
        let t = TokenTrie::new(&v);
        // Special tokens have no bytes and are not in the trie.
        assert_eq!(t.len(), TOKENS.len());
        let keys: Vec<&[u8]> = (0..t.len()).map(|k| t.key(k)).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        for k in 0..t.len() {
            assert_eq!(t.key(k), v.token_bytes(t.id_at(k)).unwrap());
        }
        let order: Vec<&str> = t.order().iter().map(|&i| TOKENS[i as usize]).collect();
        assert_eq!(order, ["a", "aa", "ab", "abc", "abca", "abd", "b", "ba", "bab", "c", "e", "é"]);
    }

    #[test]
    fn subtree_ranges() {
        let t = TokenTrie::new(&vocab(TOKENS));
        let names = |r: Range<usize>| -> Vec<&str> { r.map(|k| TOKENS[t.id_at(k) as usize]).collect() };
        assert_eq!(names(t.range(b"ab")), ["ab", "abc", "abca", "abd"]);
        assert_eq!(names(t.range(b"abc")), ["abc", "abca"]);
        assert_eq!(names(t.range(b"b")), ["b", "ba", "bab"]);
        assert_eq!(t.range(b""), 0..t.len());
        assert!(t.range(b"x").is_empty() && t.range(b"abcab").is_empty());
        // A search inside a node gives the same range as one from the root.
        let ab = t.range(b"ab");
        assert_eq!(t.range_within(ab, b"abc", 2), t.range(b"abc"));
        // Children of "ab": the token equal to it, then one range per next byte.
        let ch = t.children(t.range(b"ab"), 2);
        assert_eq!(names(ch.exact), ["ab"]);
        let by: Vec<(u8, Vec<&str>)> = ch.by_byte.into_iter().map(|(b, r)| (b, names(r))).collect();
        assert_eq!(by, vec![(b'c', vec!["abc", "abca"]), (b'd', vec!["abd"])]);
        // The root's children come from the precomputed table.
        let root = t.children(0..t.len(), 0);
        assert!(root.exact.is_empty());
        assert_eq!(root.by_byte.iter().map(|(b, _)| *b).collect::<Vec<u8>>(), vec![b'a', b'b', b'c', b'e', 0xC3]);
        assert_eq!(names(root.by_byte[4].1.clone()), ["é"]);
    }

    #[test]
    fn tokens_with_and_prefixing() {
        let t = TokenTrie::new(&vocab(TOKENS));
        let mut with: Vec<&str> = t.tokens_with_prefix(b"ba").iter().map(|&i| TOKENS[i as usize]).collect();
        with.sort();
        assert_eq!(with, ["ba", "bab"]);
        let prefixing: Vec<(&str, usize)> = t.tokens_prefixing(b"abcab").into_iter().map(|(i, l)| (TOKENS[i as usize], l)).collect();
        assert_eq!(prefixing, [("a", 1), ("ab", 2), ("abc", 3), ("abca", 4)]);
        assert!(t.tokens_prefixing(b"xa").is_empty());
    }

    #[test]
    fn range_masses_are_sums_over_the_tokens_with_the_prefix() {
        let v = vocab(TOKENS);
        let t = TokenTrie::new(&v);
        // One log-probability per id, the special token included (it has mass but no bytes).
        let logits: Vec<f64> = (0..=TOKENS.len()).map(|i| -0.3 * i as f64 - 1.0).collect();
        let brute =
            |prefix: &[u8]| -> f64 { (0..TOKENS.len()).filter(|&i| TOKENS[i].as_bytes().starts_with(prefix)).map(|i| logits[i].exp()).sum::<f64>().ln() };
        for prefix in [&b""[..], b"a", b"ab", b"abc", b"b", b"\xC3", b"x"] {
            let got = t.prefix_logmass(&logits[..], prefix);
            let want = brute(prefix);
            assert!(got == want || (got - want).abs() < 1e-12, "{prefix:?}: {got} vs {want}");
        }
        let children = t.child_logmasses(&logits[..], b"ab");
        for b in 0..=255u8 {
            let want = brute(&[b"ab".as_slice(), &[b]].concat());
            assert!(children[b as usize] == want || (children[b as usize] - want).abs() < 1e-12, "ab + {b}");
        }
        // f32 rows read the same way.
        let logits32: Vec<f32> = logits.iter().map(|&x| x as f32).collect();
        assert!((t.prefix_logmass(&logits32[..], b"ab") - brute(b"ab")).abs() < 1e-6);
    }

    proptest! {
        /// On random vocabularies, every range is exactly the tokens with that prefix, and the
        /// children of a node partition its range.
        #[test]
        fn ranges_on_random_vocabularies(tokens in proptest::collection::hash_set(proptest::collection::vec(proptest::sample::select(vec![b'a', b'b', 0xC3, 0xFF]), 1..5), 1..40), probe in proptest::collection::vec(proptest::sample::select(vec![b'a', b'b', 0xC3, 0xFF]), 0..5)) {
            let tokens: Vec<Vec<u8>> = tokens.into_iter().collect();
            // Byte-level token strings, so that any bytes can be tokens.
            let strings: Vec<String> = tokens.iter().map(|b| crate::byte_level::encode_bytes(b)).collect();
            let mut map = serde_json::Map::new();
            for (i, s) in strings.iter().enumerate() {
                map.insert(s.clone(), json!(i));
            }
            let v = Vocabulary::from_json(&json!({"model": {"type": "BPE", "vocab": map, "merges": []}, "decoder": {"type": "ByteLevel"}}).to_string(), None).unwrap();
            let t = TokenTrie::new(&v);
            let mut expected: Vec<u32> = (0..tokens.len() as u32).filter(|&i| tokens[i as usize].starts_with(&probe)).collect();
            let mut got = t.tokens_with_prefix(&probe);
            expected.sort();
            got.sort();
            prop_assert_eq!(got, expected);
            let node = t.range(&probe);
            let ch = t.children(node.clone(), probe.len());
            let mut covered = ch.exact.clone().collect::<Vec<usize>>();
            for (b, r) in &ch.by_byte {
                prop_assert_eq!(r.clone(), t.range(&[probe.as_slice(), &[*b]].concat()));
                covered.extend(r.clone());
            }
            prop_assert_eq!(covered, node.collect::<Vec<usize>>());
        }
    }
}

//! The BPE model: turn one piece into token ids exactly as HF `tokenizers` does — start from
//! single units (bytes for byte-level vocabularies, characters otherwise, with `<0xNN>` byte
//! fallback), then repeatedly apply the lowest-ranked merge, leftmost first.

use crate::byte_level;
use crate::error::{Error, Result};
use crate::primitives::{TokenId, N_BYTES};
use crate::vocab::{VocabKind, SPM_SPACE};
use rustc_hash::FxHashMap;
use serde_json::Value;
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Pieces shorter than this are merged directly: caching them (mostly distinct words followed by
/// a witness) cost more in allocation than it saved in merging (4 was measured slower than 8).
const CACHED_PIECE_MIN: usize = 8;
/// Entries a thread's piece cache holds before it is cleared (a few MB at most).
const CACHED_PIECES_MAX: usize = 1 << 16;

static NEXT_BPE_ID: AtomicU64 = AtomicU64::new(0);

/// Merged pieces of one model, by the piece's bytes.
type PieceMemo = FxHashMap<Vec<u8>, Vec<TokenId>>;

thread_local! {
    /// Merged pieces per thread, keyed by the model's id and the piece's bytes. Validity checks
    /// encode the same context pieces over and over (a node's whitespace run, once per token of
    /// its subtree and per witness): after a space run, merging was over half of a check
    /// (perf, SmolLM2, the heap diagram of benches/bench_score.py). One cache per thread, so
    /// the checks split over threads never wait on a lock; a per-call cache handed down through
    /// `encode` was the alternative, with the same hit rate and a wider API.
    static PIECE_CACHE: RefCell<FxHashMap<u64, PieceMemo>> = RefCell::new(FxHashMap::default());
}

#[derive(Debug, Clone)]
pub struct Bpe {
    kind: VocabKind,
    /// Token string -> id, for units and whole-piece lookups.
    ids: FxHashMap<String, TokenId>,
    /// (left, right) -> (rank, merged id).
    merges: FxHashMap<(TokenId, TokenId), (u32, TokenId)>,
    /// Byte-level unit for each byte.
    byte_units: [Option<TokenId>; N_BYTES],
    /// `<0xNN>` pieces, when the model falls back to bytes.
    fallback: Option<[Option<TokenId>; N_BYTES]>,
    unk: Option<TokenId>,
    fuse_unk: bool,
    /// Llama-3 style: a piece that is itself a token is emitted whole, without merging.
    ignore_merges: bool,
    /// Key of this model's entries in the per-thread piece cache (clones share it: same merges).
    cache_id: u64,
}

fn merge_pair(m: &Value) -> Option<(String, String)> {
    if let Some(s) = m.as_str() {
        let (a, b) = s.split_once(' ')?;
        return Some((a.to_string(), b.to_string()));
    }
    let arr = m.as_array()?;
    Some((arr.first()?.as_str()?.to_string(), arr.get(1)?.as_str()?.to_string()))
}

impl Bpe {
    pub fn from_json(root: &Value, kind: VocabKind) -> Result<Self> {
        let model = &root["model"];
        let vocab = model["vocab"].as_object().ok_or_else(|| Error::Malformed("model.vocab".into()))?;
        let ids: FxHashMap<String, TokenId> = vocab.iter().map(|(s, id)| (s.clone(), id.as_u64().unwrap_or(0) as TokenId)).collect();
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if model[key].as_str().is_some_and(|s| !s.is_empty()) {
                return Err(Error::Unsupported(format!("BPE with {key} (word-piece style markers)")));
            }
        }
        if model["dropout"].as_f64().is_some_and(|d| d > 0.0) {
            return Err(Error::Unsupported("BPE dropout (encoding is random, nothing is canonical)".into()));
        }
        let mut merges = FxHashMap::default();
        for (rank, m) in model["merges"].as_array().map(Vec::as_slice).unwrap_or(&[]).iter().enumerate() {
            let (a, b) = merge_pair(m).ok_or_else(|| Error::Malformed(format!("merge {m}")))?;
            let (Some(&ia), Some(&ib), Some(&im)) = (ids.get(&a), ids.get(&b), ids.get(&format!("{a}{b}"))) else {
                continue; // merges into tokens outside the vocabulary can never fire
            };
            merges.entry((ia, ib)).or_insert((rank as u32, im));
        }
        let mut byte_units = [None; N_BYTES];
        if kind == VocabKind::ByteLevel {
            for (b, unit) in byte_units.iter_mut().enumerate() {
                *unit = ids.get(&byte_level::encode_bytes(&[b as u8])).copied();
            }
        }
        let fallback = if model["byte_fallback"].as_bool() == Some(true) {
            let mut t = [None; N_BYTES];
            for (b, slot) in t.iter_mut().enumerate() {
                *slot = ids.get(&format!("<0x{b:02X}>")).copied();
            }
            Some(t)
        } else {
            None
        };
        let unk = model["unk_token"].as_str().and_then(|u| ids.get(u).copied());
        Ok(Self {
            kind,
            ids,
            merges,
            byte_units,
            fallback,
            unk,
            fuse_unk: model["fuse_unk"].as_bool().unwrap_or(false),
            ignore_merges: model["ignore_merges"].as_bool().unwrap_or(false),
            cache_id: NEXT_BPE_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The token string a piece of internal bytes has in the vocabulary's own alphabet.
    fn vocab_string(&self, piece: &[u8]) -> Option<String> {
        match self.kind {
            VocabKind::ByteLevel => Some(byte_level::encode_bytes(piece)),
            VocabKind::SentencePiece => std::str::from_utf8(piece).ok().map(|s| s.replace(' ', &SPM_SPACE.to_string())),
            VocabKind::Plain => std::str::from_utf8(piece).ok().map(str::to_string),
        }
    }

    /// Initial units of a piece.
    pub(crate) fn units(&self, piece: &[u8], out: &mut Vec<TokenId>) -> Result<()> {
        if self.kind == VocabKind::ByteLevel {
            for &b in piece {
                out.push(self.byte_units[b as usize].ok_or_else(|| Error::Unencodable(format!("byte {b:#04x}"), "the vocabulary has no token for it".into()))?);
            }
            return Ok(());
        }
        let mut push_unk = |out: &mut Vec<TokenId>, what: String| -> Result<()> {
            let unk = self.unk.ok_or_else(|| Error::Unencodable(what, "not in the vocabulary and the tokenizer has no byte fallback or unk token".into()))?;
            if !(self.fuse_unk && out.last() == Some(&unk)) {
                out.push(unk);
            }
            Ok(())
        };
        match std::str::from_utf8(piece) {
            Ok(s) => {
                let mut buf = [0u8; 4];
                for c in s.chars() {
                    let c_str = if c == ' ' && self.kind == VocabKind::SentencePiece { SPM_SPACE.encode_utf8(&mut buf) } else { c.encode_utf8(&mut buf) };
                    if let Some(&id) = self.ids.get(&*c_str) {
                        out.push(id);
                    } else {
                        let mut cb = [0u8; 4];
                        self.fallback_bytes(c.encode_utf8(&mut cb).as_bytes(), out, &mut push_unk, format!("character {c:?}"))?;
                    }
                }
            }
            Err(_) => self.fallback_bytes(piece, out, &mut push_unk, format!("bytes {piece:02x?}"))?,
        }
        Ok(())
    }

    fn fallback_bytes(
        &self,
        bytes: &[u8],
        out: &mut Vec<TokenId>,
        push_unk: &mut impl FnMut(&mut Vec<TokenId>, String) -> Result<()>,
        what: String,
    ) -> Result<()> {
        match &self.fallback {
            Some(t) if bytes.iter().all(|&b| t[b as usize].is_some()) => {
                out.extend(bytes.iter().map(|&b| t[b as usize].unwrap()));
                Ok(())
            }
            _ => push_unk(out, what),
        }
    }

    /// The merge of `left` and `right`: its rank and the merged id.
    pub(crate) fn merge_of(&self, left: TokenId, right: TokenId) -> Option<(u32, TokenId)> {
        self.merges.get(&(left, right)).copied()
    }

    /// Every merge as (left, right).
    pub(crate) fn merge_pairs(&self) -> impl Iterator<Item = (TokenId, TokenId)> + '_ {
        self.merges.keys().copied()
    }

    pub(crate) fn unk_id(&self) -> Option<TokenId> {
        self.unk
    }

    pub(crate) fn ignores_merges(&self) -> bool {
        self.ignore_merges
    }

    /// Encode one piece, appending its tokens to `out`.
    pub fn encode_piece(&self, piece: &[u8], out: &mut Vec<TokenId>) -> Result<()> {
        if piece.is_empty() {
            return Ok(());
        }
        if self.ignore_merges {
            if let Some(&id) = self.vocab_string(piece).and_then(|s| self.ids.get(&s)) {
                out.push(id);
                return Ok(());
            }
        }
        if piece.len() < CACHED_PIECE_MIN {
            return self.merge_piece(piece, out);
        }
        let hit = PIECE_CACHE.with(|c| c.borrow().get(&self.cache_id).and_then(|m| m.get(piece)).map(|ids| out.extend_from_slice(ids)).is_some());
        if hit {
            return Ok(());
        }
        let at = out.len();
        self.merge_piece(piece, out)?;
        PIECE_CACHE.with(|c| {
            let mut c = c.borrow_mut();
            let m = c.entry(self.cache_id).or_default();
            if m.len() >= CACHED_PIECES_MAX {
                m.clear();
            }
            m.insert(piece.to_vec(), out[at..].to_vec());
        });
        Ok(())
    }

    /// Units of a piece, merged (no cache).
    fn merge_piece(&self, piece: &[u8], out: &mut Vec<TokenId>) -> Result<()> {
        let mut syms: Vec<TokenId> = Vec::with_capacity(piece.len());
        self.units(piece, &mut syms)?;
        if syms.len() <= 16 {
            self.merge_small(&mut syms);
        } else {
            self.merge_heap(&mut syms);
        }
        out.extend_from_slice(&syms);
        Ok(())
    }

    /// Quadratic merge loop: fastest for the short pieces regex pre-tokenizers produce.
    fn merge_small(&self, syms: &mut Vec<TokenId>) {
        self.merge_small_traced(syms, |_, _, _, _| {});
    }

    /// `merge_small`, telling `on_merge(rank, position, merged id, symbols before the merge)`
    /// about each merge as it is applied (the pair rule records tokens' merge histories).
    pub(crate) fn merge_small_traced(&self, syms: &mut Vec<TokenId>, mut on_merge: impl FnMut(u32, usize, TokenId, usize)) {
        loop {
            let mut best: Option<(u32, usize, TokenId)> = None;
            for i in 0..syms.len().saturating_sub(1) {
                if let Some(&(rank, id)) = self.merges.get(&(syms[i], syms[i + 1])) {
                    if best.is_none_or(|(r, _, _)| rank < r) {
                        best = Some((rank, i, id));
                    }
                }
            }
            match best {
                Some((rank, i, id)) => {
                    on_merge(rank, i, id, syms.len());
                    syms[i] = id;
                    syms.remove(i + 1);
                }
                None => return,
            }
        }
    }

    /// Heap-driven merging over a linked list, for long pieces (SentencePiece models have no
    /// pre-tokenizer, so a piece can be a whole prompt).
    fn merge_heap(&self, syms: &mut Vec<TokenId>) {
        let n = syms.len();
        let mut prev: Vec<isize> = (0..n as isize).map(|i| i - 1).collect();
        let mut next: Vec<isize> = (0..n as isize).map(|i| if i + 1 < n as isize { i + 1 } else { -1 }).collect();
        let mut alive = vec![true; n];
        let mut heap = BinaryHeap::new();
        for i in 0..n.saturating_sub(1) {
            if let Some(&(rank, id)) = self.merges.get(&(syms[i], syms[i + 1])) {
                heap.push(Reverse((rank, i, id)));
            }
        }
        while let Some(Reverse((rank, i, id))) = heap.pop() {
            if !alive[i] || next[i] < 0 {
                continue;
            }
            let j = next[i] as usize;
            // The entry is stale when either side changed since it was queued.
            match self.merges.get(&(syms[i], syms[j])) {
                Some(&(r, m)) if r == rank && m == id => {}
                _ => continue,
            }
            syms[i] = id;
            alive[j] = false;
            next[i] = next[j];
            if next[j] >= 0 {
                prev[next[j] as usize] = i as isize;
            }
            if prev[i] >= 0 {
                let p = prev[i] as usize;
                if let Some(&(r, m)) = self.merges.get(&(syms[p], syms[i])) {
                    heap.push(Reverse((r, p, m)));
                }
            }
            if next[i] >= 0 {
                let q = next[i] as usize;
                if let Some(&(r, m)) = self.merges.get(&(syms[i], syms[q])) {
                    heap.push(Reverse((r, i, m)));
                }
            }
        }
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            if alive[i] {
                out.push(syms[i]);
            }
        }
        *syms = out;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// A plain (character) BPE: units a b c d, merges in rank order.
    fn plain(merges: &[&str], extra: &[&str]) -> Bpe {
        let mut vocab = serde_json::Map::new();
        for s in ["a", "b", "c", "d"].iter().chain(extra) {
            let next = vocab.len();
            vocab.insert(s.to_string(), json!(next));
        }
        for m in merges {
            let merged = m.replace(' ', "");
            let next = vocab.len();
            vocab.entry(merged).or_insert(json!(next));
        }
        Bpe::from_json(&json!({"model": {"type": "BPE", "vocab": vocab, "merges": merges}}), VocabKind::Plain).unwrap()
    }

    fn encode(bpe: &Bpe, s: &str) -> Vec<String> {
        let mut out = vec![];
        bpe.encode_piece(s.as_bytes(), &mut out).unwrap();
        let names: FxHashMap<TokenId, &String> = bpe.ids.iter().map(|(s, &i)| (i, s)).collect();
        out.iter().map(|i| names[i].clone()).collect()
    }

    #[test]
    fn lowest_rank_first_then_leftmost() {
        let bpe = plain(&["b c", "a b", "c d", "ab c"], &[]);
        // "b c" (rank 0) fires before "a b" (rank 1): "abc" is [a, bc], never [abc].
        assert_eq!(encode(&bpe, "abc"), ["a", "bc"]);
        assert_eq!(encode(&bpe, "abd"), ["ab", "d"]);
        // Equal pairs: the leftmost merges first, so "bcbc" is two "bc" and "ccd" is [c, cd].
        assert_eq!(encode(&bpe, "bcbc"), ["bc", "bc"]);
        assert_eq!(encode(&bpe, "ccd"), ["c", "cd"]);
        let bpe = plain(&["a a"], &[]);
        assert_eq!(encode(&bpe, "aaa"), ["aa", "a"]);
        assert_eq!(encode(&bpe, "aaaaa"), ["aa", "aa", "a"]);
    }

    #[test]
    fn merges_as_pairs_and_merges_that_cannot_fire() {
        // Newer files write merges as pairs; a merge whose result is not in the vocabulary
        // never fires.
        let j = json!({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["b", "a"], ["a", "b"]]}});
        let bpe = Bpe::from_json(&j, VocabKind::Plain).unwrap();
        assert_eq!(encode(&bpe, "aba"), ["ab", "a"]);
        assert!(Bpe::from_json(&json!({"model": {"vocab": {"a": 0}, "merges": [7]}}), VocabKind::Plain).is_err());
    }

    #[test]
    fn byte_fallback_unknown_and_fused_unknown() {
        let j = json!({"model": {"type": "BPE", "byte_fallback": true, "unk_token": "<unk>", "fuse_unk": true,
            "vocab": {"<unk>": 0, "a": 1, "<0x7A>": 2, "<0xC3>": 3, "<0xA9>": 4}, "merges": []}});
        let bpe = Bpe::from_json(&j, VocabKind::SentencePiece).unwrap();
        let enc = |s: &[u8]| {
            let mut out = vec![];
            bpe.encode_piece(s, &mut out).unwrap();
            out
        };
        assert_eq!(enc(b"az"), vec![1, 2]);
        assert_eq!(enc("é".as_bytes()), vec![3, 4]);
        // "q" has no piece and no fallback byte: unknown; a run of them is one (fuse_unk).
        assert_eq!(enc(b"aqqa"), vec![1, 0, 1]);
        // Invalid UTF-8 falls back byte by byte too.
        assert_eq!(enc(b"\xC3"), vec![3]);
        // Without an unknown token an unspellable character is an error.
        let j = json!({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}});
        let bpe = Bpe::from_json(&j, VocabKind::Plain).unwrap();
        assert!(matches!(bpe.encode_piece(b"q", &mut vec![]), Err(Error::Unencodable(..))));
        // The byte-level kind needs a unit for every byte it meets.
        let bpe = Bpe::from_json(&json!({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}), VocabKind::ByteLevel).unwrap();
        assert!(matches!(bpe.encode_piece(b"ab", &mut vec![]), Err(Error::Unencodable(..))));
    }

    #[test]
    fn ignore_merges_takes_whole_pieces() {
        // Llama-3: a piece that is a token is emitted whole even where merges would not reach it.
        let j = json!({"model": {"type": "BPE", "ignore_merges": true, "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4}, "merges": ["a b"]}});
        let bpe = Bpe::from_json(&j, VocabKind::Plain).unwrap();
        assert_eq!(encode(&bpe, "abc"), ["abc"]);
        assert_eq!(encode(&bpe, "abcab"), ["ab", "c", "ab"]);
    }

    #[test]
    fn refuses_what_is_not_canonical() {
        for model in [
            json!({"vocab": {"a": 0}, "merges": [], "dropout": 0.1}),
            json!({"vocab": {"a": 0}, "merges": [], "continuing_subword_prefix": "##"}),
            json!({"vocab": {"a": 0}, "merges": [], "end_of_word_suffix": "</w>"}),
        ] {
            assert!(matches!(Bpe::from_json(&json!({ "model": model }), VocabKind::Plain), Err(Error::Unsupported(_))), "{model}");
        }
    }

    proptest! {
        /// The quadratic loop (pieces up to 16 units) and the heap (longer pieces) give the
        /// same result on any sequence; the heap is what SentencePiece-style prompts use.
        #[test]
        fn small_and_heap_merging_agree(units in proptest::collection::vec(0u32..4, 0..60)) {
            let bpe = plain(&["a b", "b a", "ab a", "c c", "a a", "ba b", "cc c", "d a", "aa aa", "ab ab"], &[]);
            let mut small = units.clone();
            bpe.merge_small(&mut small);
            let mut heap = units.clone();
            bpe.merge_heap(&mut heap);
            prop_assert_eq!(small, heap);
        }
    }
}

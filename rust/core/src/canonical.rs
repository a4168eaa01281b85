//! Canonical encoding and validity, equal to the real tokenizer.
//!
//! * `encode` reproduces HF `tokenizers` on the engine's internal bytes (normalise, cut into
//!   pieces, BPE each piece). Invalid UTF-8 bytes form pieces of their own.
//! * A token sequence is **valid** when some text starting with its bytes encodes to a sequence
//!   starting with it. We prove validity with a witness continuation: the empty string, one
//!   character of each class the pre-tokenizers distinguish, and — when the bytes end inside a
//!   UTF-8 character — every completion of that character. Look-ahead rules make this more than
//!   canonicality: `[a, \n, \n]` is valid (it starts `encode("a\n\nb")`) though
//!   `encode("a\n\n") = [a, \n\n]`.
//! * Checks are **local**. Pieces are encoded independently, and a piece boundary that lies
//!   before the last two pieces cannot move whatever text follows (the regexes look at most a few
//!   characters ahead). So a sequence is checked from an *anchor*: the start of its second-to-last
//!   piece. Without a pre-tokenizer (SentencePiece-style BPE) canonicality of BPE is decided by
//!   adjacent token pairs, so the anchor is the start of the second-to-last token at a character
//!   boundary.

mod boundary;
mod pairs;
pub mod range_memo;

pub use boundary::InnerCut;
pub(crate) use pairs::{PairLeft, PairScreen};

use crate::added::{AddedText, Segment};
use crate::bpe::Bpe;
use crate::error::{Error, Result};
use crate::pretokenize::{completions, incomplete_tail, PreTokenizer};
use crate::primitives::TokenId;
use crate::vocab::Vocabulary;
use serde_json::Value;
use std::sync::{Arc, OnceLock};

/// Continuations tried as witnesses of validity, most often successful first. Together they
/// cover every character class the supported pre-tokenizer regexes tell apart (letters, digits,
/// whitespace with and without a following non-space, newlines, punctuation, apostrophes that
/// start contractions, CJK, emoji, combining marks).
pub const WITNESSES: &[&str] = &["", "a", " ", "\n", "1", ".", "'", "s", "A", "\t", " a", "\n\n", "  ", "a\n", "中", "😀", "é", "\u{301}", ",\n"];

/// Encoder + validity checks for one tokenizer.
#[derive(Debug, Clone)]
pub struct Canonicalizer {
    vocab: Arc<Vocabulary>,
    pre: PreTokenizer,
    bpe: Bpe,
    added: AddedText,
    /// Which tokens are valid from a piece start, filled in as asked (`boundary.rs`); clones
    /// share it (same vocabulary).
    first_valid: Arc<boundary::FirstTokenMemo>,
    /// The same, trying only completions to a character that is not whitespace.
    first_valid_non_space: Arc<boundary::FirstTokenMemo>,
    /// Every token's solo merge history, built on first use by the pair rule (`pairs.rs`);
    /// clones share it.
    histories: Arc<OnceLock<pairs::MergeHistories>>,
    /// Verdicts of whole next-byte subtrees after a context, kept across scorers (`range_memo.rs`);
    /// clones share it.
    range_verdicts: Arc<range_memo::RangeVerdictMemo>,
}

impl Canonicalizer {
    pub fn from_json(json: &str, n_logits: Option<usize>) -> Result<Self> {
        let root: Value = serde_json::from_str(json).map_err(|e| Error::Json(e.to_string()))?;
        let vocab = Arc::new(Vocabulary::from_value(&root, n_logits)?);
        let pre = PreTokenizer::from_json(&root)?;
        let bpe = Bpe::from_json(&root, vocab.kind())?;
        let added = AddedText::new(vocab.added_text().iter().cloned());
        let first_valid = Arc::new(boundary::FirstTokenMemo::new(vocab.n_ids()));
        let first_valid_non_space = Arc::new(boundary::FirstTokenMemo::new(vocab.n_ids()));
        let range_verdicts = Arc::new(range_memo::RangeVerdictMemo::default());
        Ok(Self { vocab, pre, bpe, added, first_valid, first_valid_non_space, histories: Arc::new(OnceLock::new()), range_verdicts })
    }

    pub fn vocab(&self) -> &Arc<Vocabulary> {
        &self.vocab
    }

    /// Subtree verdicts kept across scorers of this tokenizer (`range_memo.rs`).
    pub fn range_verdicts(&self) -> &range_memo::RangeVerdictMemo {
        &self.range_verdicts
    }

    /// Canonical encoding of internal bytes (start prefix included).
    pub fn encode(&self, internal: &[u8]) -> Result<Vec<TokenId>> {
        let mut out = Vec::with_capacity(internal.len() / 3 + 1);
        if self.added.is_empty() {
            self.encode_plain(internal, &mut out)?;
            return Ok(out);
        }
        for seg in self.added.segments(internal) {
            match seg {
                Segment::Added(_, id) => out.push(id),
                Segment::Text(r) => self.encode_plain(&internal[r], &mut out)?,
            }
        }
        Ok(out)
    }

    /// Normalise, cut into pieces, BPE each piece (a stretch with no added tokens in it).
    fn encode_plain(&self, internal: &[u8], out: &mut Vec<TokenId>) -> Result<()> {
        let text = self.pre.normalize(internal);
        for piece in self.pre.pieces(&text) {
            self.bpe.encode_piece(&text[piece], out)?;
        }
        Ok(())
    }

    /// Pieces of `text` as encoding sees them: added tokens whole, stretches between them cut by
    /// the pre-tokenizer. Offsets are into `text` (normalisation never moves a piece start we use,
    /// as NFC only changes stretches of valid UTF-8 within a piece).
    fn pieces(&self, text: &[u8]) -> Vec<std::ops::Range<usize>> {
        if self.added.is_empty() {
            return self.pre.pieces(&self.pre.normalize(text));
        }
        let mut out = Vec::new();
        for seg in self.added.segments(text) {
            match seg {
                Segment::Added(r, _) => out.push(r),
                Segment::Text(r) => {
                    out.extend(self.pre.pieces(&self.pre.normalize(&text[r.clone()])).into_iter().map(|p| p.start + r.start..p.end + r.start));
                }
            }
        }
        out
    }

    /// Canonical encoding of user text: the start prefix is added first.
    pub fn encode_text(&self, text: &[u8]) -> Result<Vec<TokenId>> {
        let mut internal = self.vocab.start_prefix().to_vec();
        internal.extend_from_slice(text);
        if self.vocab.is_bare_start_prefix(&internal) {
            return Ok(vec![]);
        }
        self.encode(&internal)
    }

    pub fn decode(&self, ids: &[TokenId]) -> Result<Vec<u8>> {
        self.vocab.decode(ids)
    }

    /// `encode(decode(ids)) == ids`, for a sequence that starts at the beginning of a text.
    pub fn is_canonical(&self, ids: &[TokenId]) -> Result<bool> {
        let bytes = self.decode(ids)?;
        // Internal bytes always begin with the start prefix (SentencePiece's dummy `▁`), and the
        // prefix alone is the empty text, whose encoding is empty: anything else is no text's
        // encoding (found by tests/test_tokenizers_real.py: [lp, TL] was called canonical).
        if !ids.is_empty() && (!bytes.starts_with(self.vocab.start_prefix()) || self.vocab.is_bare_start_prefix(&bytes)) {
            return Ok(false);
        }
        Ok(self.complete_from(&bytes, ids))
    }

    /// Whether `ids` (from the beginning of a text) is a prefix of some text's canonical encoding.
    pub fn is_valid(&self, ids: &[TokenId]) -> Result<bool> {
        // The empty sequence starts every encoding (its bytes are not the start prefix).
        if ids.is_empty() {
            return Ok(true);
        }
        let bytes = self.decode(ids)?;
        if !bytes.starts_with(self.vocab.start_prefix()) {
            return Ok(false);
        }
        Ok(self.valid_from(&bytes, ids))
    }

    /// Validity of `tail` read from an anchor: `text` is the bytes from the anchor on, and the
    /// tokens before the anchor are already known to be right.
    pub fn valid_from(&self, text: &[u8], tail: &[TokenId]) -> bool {
        self.valid_from_where(text, tail, None)
    }

    /// `valid_from`, trying (when `text` ends inside a character) only the completions whose
    /// whole character passes `keep` (`None`: all of them).
    pub(crate) fn valid_from_where(&self, text: &[u8], tail: &[TokenId], keep: Option<&dyn Fn(char) -> bool>) -> bool {
        let starts_with = |t: &[u8]| self.encode(t).map(|e| e.len() >= tail.len() && e[..tail.len()] == *tail).unwrap_or(false);
        // Only texts that can still become valid UTF-8 exist: the model never saw other bytes.
        let complete_part = text.len() - incomplete_tail(text).map_or(0, |(have, _)| have);
        if std::str::from_utf8(&text[..complete_part]).is_err() {
            return false;
        }
        match incomplete_tail(text) {
            None => {
                let mut buf = text.to_vec();
                WITNESSES.iter().any(|w| {
                    buf.truncate(text.len());
                    buf.extend_from_slice(w.as_bytes());
                    starts_with(&buf)
                })
            }
            Some((have, missing)) => {
                let partial = &text[text.len() - have..];
                let kept = |c: &Vec<u8>| {
                    keep.is_none_or(|keep| {
                        let mut whole = partial.to_vec();
                        whole.extend_from_slice(c);
                        std::str::from_utf8(&whole).ok().and_then(|s| s.chars().next()).is_some_and(keep)
                    })
                };
                let mut buf = text.to_vec();
                completions(partial, missing).filter(kept).any(|c| {
                    ["", "a", " ", "\n"].iter().any(|w| {
                        buf.truncate(text.len());
                        buf.extend_from_slice(&c);
                        buf.extend_from_slice(w.as_bytes());
                        starts_with(&buf)
                    })
                })
            }
        }
    }

    /// Whether `tail` is exactly the canonical encoding of `text` read from an anchor (the text
    /// ends here: this is the EOS condition).
    pub fn complete_from(&self, text: &[u8], tail: &[TokenId]) -> bool {
        std::str::from_utf8(text).is_ok() && self.encode(text).map(|e| e == tail).unwrap_or(false)
    }

    /// Where checks of a sequence extended beyond `text` may start: an offset into `text` that is
    /// a token boundary of `tail` (whose token lengths are `lens`) and a piece boundary no
    /// continuation can move. Returns (byte offset, number of tail tokens before it).
    pub fn anchor(&self, text: &[u8], lens: &[usize]) -> (usize, usize) {
        // Token boundaries as byte offsets: bounds[k] = bytes of the first k tokens.
        let mut bounds = Vec::with_capacity(lens.len() + 1);
        bounds.push(0usize);
        for l in lens {
            bounds.push(bounds.last().unwrap() + l);
        }
        // Added-token matches near the end may still grow or appear; only the text before that
        // point is cut for good, so the anchor lies inside it.
        let settled = if self.added.is_empty() { text.len() } else { self.added.unstable_from(text) };
        let candidate = if self.pre.splits() {
            // Bytes of an unfinished character are pieces of their own until it is complete, and
            // a check cannot start inside a character (found by tests/test_lazy_choice.py: after
            // "\xf0\xb3\xb0" every next token was judged invalid): only pieces starting at a
            // character boundary count.
            let starts: Vec<usize> = self.pieces(&text[..settled]).iter().map(|p| p.start).filter(|&s| (text[s] & 0xC0) != 0x80).collect();
            if starts.len() < 3 {
                return (0, 0);
            }
            starts[starts.len() - 2]
        } else {
            // Second-to-last token starting at a character boundary.
            let mut seen = 0;
            let mut found = 0;
            for k in (0..lens.len()).rev() {
                let at = bounds[k];
                if at < settled && (text[at] & 0xC0) != 0x80 {
                    seen += 1;
                    if seen == 2 {
                        found = at;
                        break;
                    }
                }
            }
            found
        };
        match bounds.iter().position(|&b| b == candidate) {
            Some(k) => (candidate, k),
            None => (0, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::tiny;
    use serde_json::json;

    const A: u32 = 0;
    const B: u32 = 1;
    const C: u32 = 2;
    const SP: u32 = 3;
    const NL: u32 = 4;
    const AB: u32 = 5;
    const SP_A: u32 = 6;
    const NL_NL: u32 = 7;
    const ABC: u32 = 8;
    const SP_SP: u32 = 9;

    #[test]
    fn encode_by_hand() {
        let c = tiny();
        let e = |s: &str| c.encode(s.as_bytes()).unwrap();
        // "a b" (rank 0) fires before "ab c" (rank 3) can.
        assert_eq!(e("abc"), vec![ABC]);
        assert_eq!(e("ab"), vec![AB]);
        assert_eq!(e("ba"), vec![B, A]);
        // " ab": "a b" (rank 0) beats "Ġ a" (rank 1), and "Ġ ab" is no merge.
        assert_eq!(e("ab ab"), vec![AB, SP, AB]);
        assert_eq!(e(" a"), vec![SP_A]);
        // GPT-2's `\s+(?!\S)`: a whitespace run before a word leaves its last character to it.
        assert_eq!(e("a\n\n"), vec![A, NL_NL]);
        assert_eq!(e("a\n\nb"), vec![A, NL, NL, B]);
        assert_eq!(e("a  "), vec![A, SP_SP]);
        assert_eq!(e("a  b"), vec![A, SP, SP, B]);
        assert_eq!(e("a   a"), vec![A, SP_SP, SP_A]);
        assert_eq!(e(""), Vec::<u32>::new());
        // A byte the vocabulary has no unit for cannot be encoded: an error, not a panic.
        assert!(matches!(c.encode(b"az"), Err(Error::Unencodable(..))));
        assert_eq!(c.encode_text(b"ab").unwrap(), vec![AB]);
    }

    #[test]
    fn canonical_and_valid_by_hand() {
        let c = tiny();
        let canonical = |ids: &[u32]| c.is_canonical(ids).unwrap();
        let valid = |ids: &[u32]| c.is_valid(ids).unwrap();
        assert!(canonical(&[]) && valid(&[]));
        assert!(canonical(&[ABC]) && canonical(&[A, NL_NL]) && canonical(&[A, NL, NL, B]));
        // [a, \n, \n] is no text's encoding, yet it starts encode("a\n\nb"): valid.
        assert!(!canonical(&[A, NL, NL]));
        assert!(valid(&[A, NL, NL]));
        // [a, \n\n, b] cannot start any encoding: "\n\nb" is always cut "\n" + "\nb".
        assert!(!valid(&[A, NL_NL, B]));
        // [a, b] always merges; [ab] is valid and so is [ab] + [c]? No: "abc" merges further.
        assert!(!valid(&[A, B]) && valid(&[AB]) && !valid(&[AB, C]));
        // [Ġ, a] never survives ("Ġ a" is a merge) but [Ġ, ab] does.
        assert!(!valid(&[SP, A]) && valid(&[SP, AB]));
        // Whitespace: [a, Ġ, Ġ] starts "a  b"; [a, ĠĠ, b] never happens.
        assert!(valid(&[A, SP, SP]) && !canonical(&[A, SP, SP]) && !valid(&[A, SP_SP, B]));
        // Ids out of range are errors.
        assert!(matches!(c.is_valid(&[99]), Err(Error::TokenOutOfRange { .. })));
    }

    #[test]
    fn anchored_checks_agree_with_whole_text_checks() {
        // Checking from the anchor (the start of the second-to-last piece) gives the same
        // verdict as checking the whole text, for every one-token extension.
        let c = tiny();
        for prefix in [&b"ab ab c"[..], b"a\n\na b", b"abc  a", b" a ab\n"] {
            let tail = c.encode(prefix).unwrap();
            let lens: Vec<usize> = tail.iter().map(|&t| c.vocab().token_bytes(t).unwrap().len()).collect();
            let (off, k) = c.anchor(prefix, &lens);
            assert_eq!(c.decode(&tail[..k]).unwrap(), prefix[..off].to_vec(), "the anchor is a token boundary");
            for v in 0..11u32 {
                let mut ids = tail.clone();
                ids.push(v);
                let text = c.decode(&ids).unwrap();
                assert_eq!(c.valid_from(&text[off..], &ids[k..]), c.is_valid(&ids).unwrap(), "{:?} + {v}", String::from_utf8_lossy(prefix));
            }
        }
    }

    #[test]
    fn sentencepiece_dummy_prefix_and_byte_fallback() {
        let mut vocab = serde_json::Map::new();
        for (i, s) in ["<unk>", "<s>", "</s>", "▁", "a", "b", "▁a", "ab", "▁ab", "<0x7A>", "<0xE4>", "<0xB8>", "<0xAD>"].iter().enumerate() {
            vocab.insert(s.to_string(), json!(i));
        }
        let j = json!({
            "added_tokens": [{"id": 0, "content": "<unk>", "special": true}, {"id": 1, "content": "<s>", "special": true}, {"id": 2, "content": "</s>", "special": true}],
            "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
            "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}]},
            "model": {"type": "BPE", "byte_fallback": true, "unk_token": "<unk>", "fuse_unk": true, "vocab": vocab, "merges": ["▁ a", "a b", "▁a b"]}
        });
        let c = Canonicalizer::from_json(&j.to_string(), None).unwrap();
        assert_eq!(c.vocab().start_prefix(), b" ");
        // The dummy prefix joins the first word; the empty text stays empty.
        assert_eq!(c.encode_text(b"ab").unwrap(), vec![8]);
        assert_eq!(c.encode_text(b"").unwrap(), Vec::<u32>::new());
        assert_eq!(c.encode_text(b"a a").unwrap(), vec![6, 6]);
        // Characters outside the vocabulary: their bytes when every byte has a piece ("z" and
        // "中" = E4 B8 AD), else one unknown token for the whole run ("q", "qq": fused).
        assert_eq!(c.encode_text("z中".as_bytes()).unwrap(), vec![3, 9, 10, 11, 12]);
        assert_eq!(c.encode_text(b"aqqb").unwrap(), vec![6, 0, 5]);
        assert_eq!(c.decode(&[6, 9]).unwrap(), b" az".to_vec());
        // Sequences that do not start with the dummy prefix are no text's.
        assert!(!c.is_valid(&[4]).unwrap() && !c.is_canonical(&[4]).unwrap());
        assert!(c.is_valid(&[3, 9]).unwrap() && c.is_canonical(&[3, 9]).unwrap());
        // Ending inside "中": valid, as "中" will complete it, but not canonical.
        assert!(c.is_valid(&[3, 10, 11]).unwrap() && !c.is_canonical(&[3, 10, 11]).unwrap());
        // [▁] alone spells the bare prefix, which is the empty text's: not canonical.
        assert!(!c.is_canonical(&[3]).unwrap());
        // Special tokens have no bytes.
        assert!(matches!(c.is_valid(&[2]), Err(Error::SpecialToken(2))));
    }
}

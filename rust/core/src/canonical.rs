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

use crate::added::{AddedText, Segment};
use crate::bpe::Bpe;
use crate::error::{Error, Result};
use crate::pretokenize::{completions, incomplete_tail, PreTokenizer};
use crate::primitives::TokenId;
use crate::vocab::Vocabulary;
use serde_json::Value;
use std::sync::Arc;

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
}

impl Canonicalizer {
    pub fn from_json(json: &str, n_logits: Option<usize>) -> Result<Self> {
        let root: Value = serde_json::from_str(json).map_err(|e| Error::Json(e.to_string()))?;
        let vocab = Arc::new(Vocabulary::from_value(&root, n_logits)?);
        let pre = PreTokenizer::from_json(&root)?;
        let bpe = Bpe::from_json(&root, vocab.kind())?;
        let added = AddedText::new(vocab.added_text().iter().cloned());
        Ok(Self { vocab, pre, bpe, added })
    }

    pub fn vocab(&self) -> &Arc<Vocabulary> {
        &self.vocab
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
                let mut buf = text.to_vec();
                completions(partial, missing).any(|c| {
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

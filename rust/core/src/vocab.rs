//! The exact bytes of every token, read from a Hugging Face `tokenizer.json`.
//!
//! Which byte rule applies is decided by the tokenizer's decoder (as llguidance and outlines-core
//! do): a `ByteLevel` decoder means GPT-2's byte table; a decoder that turns `▁` into a space and
//! understands `<0xNN>` pieces means SentencePiece-style BPE; no decoder at all means the token
//! strings are literal text. Anything else is refused, naming what was found.

use crate::byte_level;
use crate::error::{Error, Result};
use crate::primitives::TokenId;
use serde_json::Value;

/// How token strings map to bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VocabKind {
    /// GPT-2 byte table (`Ġ` = space).
    ByteLevel,
    /// `▁` = space, `<0xNN>` = one raw byte.
    SentencePiece,
    /// Token strings are their own UTF-8 text (toy and character-level BPE).
    Plain,
}

/// Every token id with its bytes; special/control tokens have none.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    kind: VocabKind,
    /// Token string as written in tokenizer.json, by id ("" for unused ids).
    strings: Vec<String>,
    /// Token bytes by id; `None` for special tokens and unused ids.
    bytes: Vec<Option<Vec<u8>>>,
    special: Vec<bool>,
    /// Added tokens that stand for text (matched in the input before BPE runs).
    added_text: Vec<(Vec<u8>, TokenId)>,
    /// Bytes the tokenizer puts before every text (SentencePiece dummy prefix, a space).
    start_prefix: Vec<u8>,
    /// Width of the model's rows (>= number of ids; padded logits have no token).
    n_logits: usize,
    max_token_len: usize,
}

pub const SPM_SPACE: char = '\u{2581}';

fn byte_fallback_piece(s: &str) -> Option<u8> {
    // "<0xNN>" with exactly two hex digits.
    let hex = s.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Bytes of one token string under a vocabulary kind.
pub fn token_string_bytes(kind: VocabKind, s: &str) -> Option<Vec<u8>> {
    match kind {
        VocabKind::ByteLevel => byte_level::decode_token(s),
        VocabKind::SentencePiece => Some(match byte_fallback_piece(s) {
            Some(b) => vec![b],
            None => s.replace(SPM_SPACE, " ").into_bytes(),
        }),
        VocabKind::Plain => Some(s.as_bytes().to_vec()),
    }
}

fn type_of(v: &Value) -> Option<&str> {
    v.get("type").and_then(Value::as_str)
}

/// All components of a (possibly `Sequence`) normalizer / pre-tokenizer / decoder.
pub(crate) fn flatten<'a>(v: &'a Value, list_key: &str) -> Vec<&'a Value> {
    if v.is_null() {
        return vec![];
    }
    if type_of(v) == Some("Sequence") {
        v.get(list_key).and_then(Value::as_array).map(|items| items.iter().flat_map(|i| flatten(i, list_key)).collect()).unwrap_or_default()
    } else {
        vec![v]
    }
}

fn detect_kind(root: &Value) -> Result<VocabKind> {
    let decoders = flatten(&root["decoder"], "decoders");
    let pre = flatten(&root["pre_tokenizer"], "pretokenizers");
    let is_byte_level = decoders.iter().any(|d| type_of(d) == Some("ByteLevel")) || pre.iter().any(|p| type_of(p) == Some("ByteLevel"));
    if is_byte_level {
        return Ok(VocabKind::ByteLevel);
    }
    let spm = decoders.iter().any(|d| match type_of(d) {
        Some("ByteFallback") | Some("Metaspace") => true,
        Some("Replace") => d["pattern"]["String"].as_str() == Some("\u{2581}"),
        _ => false,
    });
    if spm {
        return Ok(VocabKind::SentencePiece);
    }
    if let Some(unknown) = decoders.iter().find_map(|d| type_of(d)) {
        if !matches!(unknown, "Fuse" | "Strip") {
            return Err(Error::Unsupported(format!("decoder type {unknown:?}")));
        }
    }
    Ok(VocabKind::Plain)
}

/// Where a token id comes from in tokenizer.json.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// `model.vocab`: bytes from the token string.
    Model,
    /// An added token that stands for its content.
    AddedText,
    /// An added token with no bytes (special, or text the byte view cannot keep).
    AddedControl,
}

/// Whether an added token is ordinary text: not special, matched on the raw input with no
/// whitespace stripping (those flags change the text around it, which a byte view cannot keep).
fn is_text_added_token(a: &Value) -> bool {
    let flag = |k: &str| a[k].as_bool().unwrap_or(false);
    !flag("special")
        && !flag("lstrip")
        && !flag("rstrip")
        && !flag("single_word")
        && !flag("normalized")
        && a["content"].as_str().is_some_and(|c| !c.is_empty())
}

/// The start prefix: SentencePiece's dummy-prefix `▁` (from a Prepend normalizer or a Metaspace
/// pre-tokenizer that prepends), or the space ByteLevel(add_prefix_space) inserts.
fn detect_start_prefix(root: &Value) -> Vec<u8> {
    for n in flatten(&root["normalizer"], "normalizers") {
        if type_of(n) == Some("Prepend") && n["prepend"].as_str() == Some("\u{2581}") {
            return b" ".to_vec();
        }
    }
    for p in flatten(&root["pre_tokenizer"], "pretokenizers") {
        match type_of(p) {
            Some("Metaspace") => {
                let scheme = p["prepend_scheme"].as_str().unwrap_or(if p["add_prefix_space"].as_bool() == Some(false) { "never" } else { "always" });
                if scheme != "never" {
                    return b" ".to_vec();
                }
            }
            Some("ByteLevel") if p["add_prefix_space"].as_bool() == Some(true) => return b" ".to_vec(),
            _ => {}
        }
    }
    vec![]
}

impl Vocabulary {
    /// Reads the vocabulary of a tokenizer.json. `n_logits` is the width of the model's output
    /// rows when known (it may exceed the number of ids because of padding).
    pub fn from_json(json: &str, n_logits: Option<usize>) -> Result<Self> {
        let root: Value = serde_json::from_str(json).map_err(|e| Error::Json(e.to_string()))?;
        Self::from_value(&root, n_logits)
    }

    pub fn from_value(root: &Value, n_logits: Option<usize>) -> Result<Self> {
        let model = &root["model"];
        match type_of(model) {
            Some("BPE") => {}
            // Old files may omit the type of a BPE model; merges are the giveaway.
            None if model.get("merges").is_some() => {}
            Some(other) => return Err(Error::Unsupported(format!("model type {other:?} (only BPE models are exact here)"))),
            None => return Err(Error::Malformed("no model section".into())),
        }
        let kind = detect_kind(root)?;
        let vocab = model["vocab"].as_object().ok_or_else(|| Error::Malformed("model.vocab is not an object".into()))?;
        let start_prefix = detect_start_prefix(root);
        let mut entries: Vec<(u32, String, Origin)> = Vec::with_capacity(vocab.len());
        for (s, id) in vocab {
            let id = id.as_u64().ok_or_else(|| Error::Malformed(format!("id of {s:?} is not an integer")))? as u32;
            entries.push((id, s.clone(), Origin::Model));
        }
        if let Some(added) = root["added_tokens"].as_array() {
            for a in added {
                let id = a["id"].as_u64().ok_or_else(|| Error::Malformed("added token without id".into()))? as u32;
                let content = a["content"].as_str().unwrap_or_default().to_string();
                // A dummy prefix is prepended to every stretch between added tokens, which the
                // byte-level view does not model; such tokenizers keep added tokens as controls.
                let origin = if is_text_added_token(a) && start_prefix.is_empty() { Origin::AddedText } else { Origin::AddedControl };
                entries.push((id, content, origin));
            }
        }
        let n_ids = entries.iter().map(|e| e.0 as usize + 1).max().unwrap_or(0);
        let mut strings = vec![String::new(); n_ids];
        let mut bytes: Vec<Option<Vec<u8>>> = vec![None; n_ids];
        let mut special = vec![false; n_ids];
        let mut added_text = Vec::new();
        // Added tokens may also appear in model.vocab (with strings outside the byte table):
        // the added entry decides.
        let added_ids: std::collections::HashSet<u32> = entries.iter().filter(|e| e.2 != Origin::Model).map(|e| e.0).collect();
        for (id, s, origin) in entries {
            let i = id as usize;
            if origin == Origin::Model && added_ids.contains(&id) {
                continue;
            }
            if origin == Origin::AddedText {
                strings[i] = s.clone();
                bytes[i] = Some(s.clone().into_bytes());
                added_text.push((s.into_bytes(), id));
                continue;
            }
            if origin == Origin::AddedControl {
                // Added tokens are matched as whole strings before BPE runs and never produced by
                // merges; they are control tokens for the byte-level view (their text, if typed in
                // a prompt, is refused by the Python layer with a clear message).
                special[i] = true;
                bytes[i] = None;
                strings[i] = s;
                continue;
            }
            let b =
                token_string_bytes(kind, &s).ok_or_else(|| Error::Unsupported(format!("token {s:?} (id {id}) has characters outside the GPT-2 byte table")))?;
            if b.is_empty() {
                return Err(Error::Malformed(format!("token id {id} has no bytes")));
            }
            strings[i] = s;
            bytes[i] = Some(b);
        }
        let n_logits = match n_logits {
            Some(n) if n < n_ids => return Err(Error::TooFewLogits { logits: n, tokens: n_ids }),
            Some(n) => n,
            None => n_ids,
        };
        let max_token_len = bytes.iter().flatten().map(Vec::len).max().unwrap_or(1);
        Ok(Self { kind, strings, bytes, special, added_text, start_prefix, n_logits, max_token_len })
    }

    pub fn kind(&self) -> VocabKind {
        self.kind
    }
    /// Number of token ids defined by the tokenizer.
    pub fn n_ids(&self) -> usize {
        self.bytes.len()
    }
    /// Width of a model row.
    pub fn n_logits(&self) -> usize {
        self.n_logits
    }
    pub fn token_bytes(&self, id: TokenId) -> Option<&[u8]> {
        self.bytes.get(id as usize).and_then(|b| b.as_deref())
    }
    pub fn token_string(&self, id: TokenId) -> Option<&str> {
        self.strings.get(id as usize).map(String::as_str)
    }
    pub fn is_special(&self, id: TokenId) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }
    pub fn special_ids(&self) -> Vec<TokenId> {
        (0..self.n_ids() as u32).filter(|&i| self.special[i as usize]).collect()
    }
    /// Added tokens that are text: (content bytes, id).
    pub fn added_text(&self) -> &[(Vec<u8>, TokenId)] {
        &self.added_text
    }
    pub fn start_prefix(&self) -> &[u8] {
        &self.start_prefix
    }
    /// Whether internal bytes are the start prefix alone: the empty user text of a tokenizer with
    /// a dummy prefix (SentencePiece's `▁`). HF encodes the empty text to no tokens, prefix
    /// included, so the empty token sequence spells these bytes and no non-empty sequence is
    /// their canonical encoding (even one whose bytes are just the prefix, such as `[▁]`). This is
    /// the one place the exception is decided; encoding, canonicality and the engine ask here.
    pub fn is_bare_start_prefix(&self, internal: &[u8]) -> bool {
        !self.start_prefix.is_empty() && internal == self.start_prefix.as_slice()
    }
    pub fn max_token_len(&self) -> usize {
        self.max_token_len
    }
    /// Ids whose bytes are defined (the ordinary tokens).
    pub fn text_tokens(&self) -> impl Iterator<Item = (TokenId, &[u8])> + '_ {
        self.bytes.iter().enumerate().filter_map(|(i, b)| b.as_deref().map(|b| (i as TokenId, b)))
    }
    /// Concatenated bytes of a token sequence.
    pub fn decode(&self, ids: &[TokenId]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for &id in ids {
            if id as usize >= self.n_ids() {
                return Err(Error::TokenOutOfRange { id, n: self.n_ids() });
            }
            out.extend_from_slice(self.token_bytes(id).ok_or(Error::SpecialToken(id))?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentencepiece_rules() {
        let k = VocabKind::SentencePiece;
        assert_eq!(token_string_bytes(k, "▁▁abc"), Some(b"  abc".to_vec()));
        assert_eq!(token_string_bytes(k, "<0x61>"), Some(vec![0x61]));
        assert_eq!(token_string_bytes(k, "<0x0A>"), Some(vec![0x0A]));
        // Malformed fallback pieces are ordinary text.
        assert_eq!(token_string_bytes(k, "<0x6y>"), Some(b"<0x6y>".to_vec()));
        assert_eq!(token_string_bytes(k, "<0x123>"), Some(b"<0x123>".to_vec()));
    }

    #[test]
    fn byte_level_rules() {
        assert_eq!(token_string_bytes(VocabKind::ByteLevel, "Ġworld"), Some(b" world".to_vec()));
    }

    #[test]
    fn refuses_unigram() {
        let j = r#"{"model": {"type": "Unigram", "vocab": []}}"#;
        let e = Vocabulary::from_json(j, None).unwrap_err();
        assert!(e.to_string().contains("Unigram"), "{e}");
    }

    #[test]
    fn refuses_wordpiece_decoder() {
        let j = r#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "decoder": {"type": "WordPiece"}}"#;
        let e = Vocabulary::from_json(j, None).unwrap_err();
        assert!(e.to_string().contains("WordPiece"), "{e}");
    }

    #[test]
    fn narrow_logits_refused_wide_accepted() {
        let j = r#"{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []}}"#;
        assert!(matches!(Vocabulary::from_json(j, Some(1)), Err(Error::TooFewLogits { .. })));
        assert_eq!(Vocabulary::from_json(j, Some(8)).unwrap().n_logits(), 8);
    }
}

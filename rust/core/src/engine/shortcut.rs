//! Per-token verdicts settled without a check of their own: by a forced piece boundary
//! (`canonical/boundary.rs`), or, for BPE without a pre-tokenizer, by replaying the merge
//! histories of the node's last token and the new token (`canonical/pairs.rs`). One `Shortcut`
//! serves one node: it remembers the shared verdict for each next byte, so a whole subtree costs
//! one context check plus a memo lookup (or a short replay) per token.

use crate::canonical::{Canonicalizer, PairScreen};
use crate::pretokenize::{first_char, Next};
use crate::primitives::TokenId;
use rustc_hash::FxHashMap;

pub(super) struct Shortcut<'a> {
    canon: &'a Canonicalizer,
    /// The node's text from its anchor, and its tokens after the anchor.
    text: &'a [u8],
    tail: &'a [TokenId],
    ends_in_space: bool,
    /// The pair rule's view of the node by the token's first byte (inner `None`: it does not
    /// apply).
    pair_by_first: FxHashMap<u8, Option<PairScreen>>,
    /// Shared verdict by the token's first byte (outer None: not asked yet).
    by_first: FxHashMap<u8, Option<bool>>,
    /// After a whitespace run: shared verdict by the byte after a token's leading space.
    by_second: FxHashMap<u8, Option<bool>>,
}

impl<'a> Shortcut<'a> {
    pub(super) fn new(canon: &'a Canonicalizer, text: &'a [u8], tail: &'a [TokenId]) -> Self {
        let ends_in_space = std::str::from_utf8(text).ok().and_then(|s| s.chars().next_back()).is_some_and(char::is_whitespace);
        Self { canon, text, tail, ends_in_space, pair_by_first: FxHashMap::default(), by_first: FxHashMap::default(), by_second: FxHashMap::default() }
    }

    /// The verdict for T + [id] if a forced boundary settles it, `None` if it needs a check.
    pub(super) fn verdict(&mut self, id: TokenId) -> Option<bool> {
        let (canon, text, tail) = (self.canon, self.text, self.tail);
        let bytes = canon.vocab().token_bytes(id)?;
        let &first = bytes.first()?;
        let screen = self.pair_by_first.entry(first).or_insert_with(|| canon.pair_left(text, tail, first).map(|left| canon.pair_screen(left)));
        if let Some(v) = screen.as_ref().and_then(|screen| canon.pair_verdict(screen, id)) {
            return Some(v);
        }
        let shared =
            *self.by_first.entry(first).or_insert_with(|| if first.is_ascii() { canon.context_verdict(text, tail, Next::Char(first as char)) } else { None });
        let shared = match shared {
            Some(s) => s,
            None if first == b' ' && self.ends_in_space && bytes.len() > 1 && starts_non_space(&bytes[1..]) => {
                let lead = bytes[1];
                (*self.by_second.entry(lead).or_insert_with(|| canon.context_verdict(text, tail, Next::SpaceThenNonSpace(lead))))?
            }
            None if first == b' ' && self.ends_in_space && bytes.len() > 1 && first_char(&bytes[1..]).is_none() => {
                // A space, then an unfinished character that may still become whitespace
                // (`" \xe2"`): the boundary rule settles the completions that are not
                // whitespace, and the handful that are (U+2000-U+205F, U+0085, U+00A0, U+1680,
                // U+3000) are checked on their own. Trying all 4,096 completions of an invalid
                // `" \xe2"` cost 17-39 ms per node on SmolLM2's space runs, half of scoring
                // the heap diagram.
                let lead = bytes[1];
                let context = (*self.by_second.entry(lead).or_insert_with(|| canon.context_verdict(text, tail, Next::SpaceThenNonSpace(lead))))?;
                let non_space = context && canon.valid_from_piece_start_non_space(id);
                return Some(non_space || self.valid_with_whitespace_completion(id, bytes));
            }
            None => return None,
        };
        Some(shared && canon.valid_from_piece_start(id))
    }

    /// Whether T + [id] is valid for a completion of the token's unfinished last character to a
    /// whitespace character (the per-token check, restricted to those completions).
    fn valid_with_whitespace_completion(&self, id: TokenId, bytes: &[u8]) -> bool {
        let mut text = self.text.to_vec();
        text.extend_from_slice(bytes);
        let mut tail = self.tail.to_vec();
        tail.push(id);
        self.canon.valid_from_where(&text, &tail, Some(&char::is_whitespace))
    }
}

/// Whether `bytes` start with a character that is not whitespace: a complete one, or the start
/// of one whose lead byte no whitespace character has (U+0085 and U+00A0 start with C2, U+1680
/// with E1, U+2000-U+205F with E2, U+3000 with E3).
fn starts_non_space(bytes: &[u8]) -> bool {
    match first_char(bytes) {
        Some(c) => !c.is_whitespace(),
        None => matches!(bytes[0], 0xC3..=0xDF | 0xE0 | 0xE4..=0xEF | 0xF0..=0xF4),
    }
}

//! Validity of a whole trie subtree at once, where the pre-tokenizer cuts between a token prefix
//! and whatever follows it.
//!
//! A node T spells `a` (from its anchor, tokens `tail` after it) and the tokens to check are the
//! v whose bytes start with a given byte. Checking each T + [v] encodes `a + v + witness` for
//! every witness, so after a word the ~32k tokens that start with a space cost 50 ms per node,
//! and inside an indentation run (where all of them are invalid and every witness is tried)
//! over a second (SmolLM2, benches/bench_score.py). Most of that work repeats one fact: the
//! pre-tokenizer puts a piece boundary at the end of `a` whatever follows. Then, since BPE runs
//! per piece and the split patterns have no look-behind,
//!   encode(a + v + w) = tokens of the pieces before the boundary ++ encode(v + w),
//! and the check factors exactly: T + [v] is valid (for witness w) iff the pieces before the
//! boundary encode to `tail` (one check for the whole subtree) and [v] is valid from a piece
//! start (`v + w` encodes to something starting with v; a property of v alone, memoised per
//! tokenizer). Same witnesses on both sides, so every verdict equals the per-token check's.
//!
//! When is the boundary forced? For the known patterns (GPT-2, Llama-3, Qwen2; no normaliser)
//! a piece can hold `x` followed by `y` only for the adjacent classes the alternatives allow
//! (`KnownPattern::joins`). If the last character of `a` and the next character cannot be
//! adjacent in any piece, no match crosses the end of `a`; matches before it read at most one
//! character past it (the `\s+(?!\S)` look-ahead), so they are the same for every continuation
//! starting with that character. Inside a whitespace run followed by a space and a non-space,
//! all three patterns end the run before that space. Under Llama-3's and Qwen2's patterns a
//! symbol run of two or more characters also ends before a letter, which the last character
//! alone cannot tell (a lone `(` joins the letters after it): `cut_forced` reads the last piece
//! (`PreTokenizer::cuts_after_symbol_run`). The test
//! `engine::prefix::tests::shortcut_verdicts_equal_per_token_checks` compares both rules with the
//! per-token check on six real tokenizers, Qwen2.5-Coder's with its NFC normaliser among them
//! (docs/design.md has the other checks).
//!
//! With an NFC normaliser (Qwen2.5 as transformers loads it) the rules read normalised text, so
//! they need `NFC(a + v + w) = a + NFC(v + w)`: `a` is left alone by NFC and the character after
//! the cut is ASCII (no ASCII character combines with what comes before it, nor has a
//! decomposition). Then a witness only ever changes what follows the cut, the pieces of `a + c`
//! are those of its normal form, and `valid_from_piece_start` (a per-token check, which
//! normalises) answers for `v + w` read from the piece start. A cut inside a node's text needs
//! the same of the text before it and of the character after it.
//!
//! Guard rails: the next byte must be ASCII (a lead byte leaves the character open), the
//! vocabulary has no start prefix, `a` is valid UTF-8, no added-token match can cross the end of
//! `a` (`AddedText::can_cross`), and no text-valued added token starts with the next byte or
//! (after a space) with the following character's first byte. An added token starting at the cut
//! would end the text stretch there, and the pieces of `a` alone can differ from those of `a`
//! followed by more text (a trailing space run splits differently), so a token v that is that
//! added token could get another verdict; matches that start later, inside `v + w`, happen the
//! same way in `a + v + w` and in `v + w` read from the piece start, and a regular v is never
//! the token at a cut where an added token starts. (The guard used to refuse every next byte
//! that occurs anywhere in an added token: with Qwen2.5's `<|fim_prefix|>` and kin that was
//! `_`, `/`, `|` and most lower-case letters, and 4 KB of prose needed 365 k per-token checks.)
//! After a space, the token must show that the next character is not whitespace: complete, or a
//! partial character whose lead byte no whitespace character has (U+0085, U+00A0, U+1680,
//! U+2000-U+205F and U+3000 start with C2, E1, E2 or E3).

use super::Canonicalizer;
use crate::added::Segment;
use crate::pretokenize::{first_char, Next};
use crate::primitives::TokenId;
use std::sync::atomic::{AtomicU8, Ordering};

/// A forced piece cut inside a node's text (`Canonicalizer::forced_cut_inside`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InnerCut {
    /// Byte offset of the cut in the node's text from its anchor.
    pub at: usize,
    /// Tokens of the node's tail before the cut.
    pub tokens: usize,
    /// Whether the pieces before the cut encode to those tokens (if not, no extension of the
    /// node is valid).
    pub context_ok: bool,
}

const UNKNOWN: u8 = 0;
const INVALID: u8 = 1;
const VALID: u8 = 2;

/// Per-token memo of "valid from a piece start".
#[derive(Debug, Default)]
pub(super) struct FirstTokenMemo(Vec<AtomicU8>);

impl FirstTokenMemo {
    pub(super) fn new(n_ids: usize) -> Self {
        Self((0..n_ids).map(|_| AtomicU8::new(UNKNOWN)).collect())
    }
}

impl Canonicalizer {
    /// Whether `[id]` is valid read from a piece start: some witness makes the token's bytes
    /// (plus the witness) encode to a sequence starting with it. Memoised per tokenizer.
    pub fn valid_from_piece_start(&self, id: TokenId) -> bool {
        self.memoised_piece_start(&self.first_valid, id, None)
    }

    /// `valid_from_piece_start` counting only completions to a character that is not whitespace
    /// (for a token that ends inside a character: `" \xe2"` after a space run, where the
    /// boundary rule covers the completions that are not whitespace and the few that are are
    /// checked on their own; `engine/shortcut.rs`). Memoised per tokenizer.
    pub fn valid_from_piece_start_non_space(&self, id: TokenId) -> bool {
        self.memoised_piece_start(&self.first_valid_non_space, id, Some(&|c: char| !c.is_whitespace()))
    }

    fn memoised_piece_start(&self, memo: &FirstTokenMemo, id: TokenId, keep: Option<&dyn Fn(char) -> bool>) -> bool {
        let Some(slot) = memo.0.get(id as usize) else { return false };
        match slot.load(Ordering::Relaxed) {
            VALID => true,
            INVALID => false,
            _ => {
                let ok = self.vocab.token_bytes(id).is_some_and(|b| !b.is_empty() && self.valid_from_where(b, &[id], keep));
                slot.store(if ok { VALID } else { INVALID }, Ordering::Relaxed);
                ok
            }
        }
    }

    /// The verdict every token v starting with `next` shares about the context, when the
    /// pre-tokenizer cuts at the end of `a` whatever follows: `Some(true)` when the pieces before
    /// the cut encode to `tail` (then T + [v] is valid iff `valid_from_piece_start(v)`),
    /// `Some(false)` when they do not (no such v is valid), `None` when the shortcut does not
    /// apply and each token must be checked.
    pub fn context_verdict(&self, a: &[u8], tail: &[TokenId], next: Next) -> Option<bool> {
        let (first, second) = match next {
            Next::Char(c) => (c, None),
            Next::SpaceThenNonSpace(b) => (' ', Some(b)),
        };
        if !first.is_ascii() || !self.vocab.start_prefix().is_empty() {
            return None;
        }
        let x = std::str::from_utf8(a).ok()?.chars().next_back()?;
        if !self.pre.leaves_alone(a) {
            return None;
        }
        if self.added_blocks_cut(a, first as u8, second) || !self.cut_forced(a, x, next) {
            return None;
        }
        // The probe text: `a` followed by `next`'s characters (after a space, any non-space
        // gives the same pieces before the cut: "a" stands for all of them).
        let mut probe = a.to_vec();
        probe.push(first as u8);
        if second.is_some() {
            probe.push(b'a');
        }
        let before = self.tokens_before(&probe, a.len())?;
        Some(before == tail)
    }

    /// The last forced piece cut strictly inside `a` (a node's text from its anchor, `tail` its
    /// tokens after the anchor): the largest offset 0 < c < len(a) that is a token boundary of
    /// `tail` and where the pre-tokenizer cuts whatever follows the character at c (the rule
    /// of `context_verdict`, with that character read from `a`). Then for every token v
    ///   T + [v] is valid  iff  `context_ok` and [tail after c] + [v] is valid read from c,
    /// as `a[c..] + v + w` encodes on its own to the tokens after the cut, for every witness w.
    /// `None` when no such cut exists (or the rules do not apply to this tokenizer).
    pub fn forced_cut_inside(&self, a: &[u8], tail: &[TokenId]) -> Option<InnerCut> {
        if !self.vocab.start_prefix().is_empty() {
            return None;
        }
        let mut at = a.len();
        for k in (0..tail.len()).rev() {
            at = at.checked_sub(self.vocab.token_bytes(tail[k])?.len())?;
            if at == 0 {
                return None;
            }
            let Ok(before) = std::str::from_utf8(&a[..at]) else { continue };
            let Some(x) = before.chars().next_back() else { continue };
            let Some(y) = first_char(&a[at..]) else { continue };
            if self.pre.normalizes() && !(y.is_ascii() && self.pre.leaves_alone(&a[..at])) {
                continue;
            }
            if self.added_blocks_cut(&a[..at], a[at], None) || !self.cut_forced(&a[..at], x, Next::Char(y)) {
                continue;
            }
            let mut probe = a[..at].to_vec();
            probe.extend_from_slice(y.encode_utf8(&mut [0; 4]).as_bytes());
            let context_ok = self.tokens_before(&probe, at).is_some_and(|t| t == tail[..k]);
            return Some(InnerCut { at, tokens: k, context_ok });
        }
        None
    }

    /// Whether the pre-tokenizer cuts between `before` (ending with the character `x`) and any
    /// continuation `next` describes, the pieces before the cut the same for all of them: read
    /// off `x` and the next character, or off `before`'s last piece (a symbol run before a
    /// letter; `PreTokenizer::cuts_after_symbol_run`).
    fn cut_forced(&self, before: &[u8], x: char, next: Next) -> bool {
        if self.pre.boundary_between(x, next) {
            return true;
        }
        let Next::Char(c) = next else { return false };
        let Some(last) = self.pieces(before).pop() else { return false };
        std::str::from_utf8(&before[last]).is_ok_and(|piece| self.pre.cuts_after_symbol_run(piece, c))
    }

    /// Whether an added token can match across the end of `before` when byte `c` follows, or a
    /// text-valued added token starts with `c` or with byte `then` (module doc).
    fn added_blocks_cut(&self, before: &[u8], c: u8, then: Option<u8>) -> bool {
        self.vocab.added_text().iter().any(|(text, _)| text.first() == Some(&c) || then.is_some_and(|b| text.first() == Some(&b)))
            || self.added.can_cross(before, c)
    }

    /// Tokens of the pieces of `text` that end at or before `cut`, if `cut` is a piece boundary.
    fn tokens_before(&self, text: &[u8], cut: usize) -> Option<Vec<TokenId>> {
        let mut out = Vec::new();
        let mut at_boundary = cut == 0;
        let segments = if self.added.is_empty() { vec![Segment::Text(0..text.len())] } else { self.added.segments(text) };
        for seg in segments {
            match seg {
                Segment::Added(r, id) => {
                    if r.end <= cut {
                        out.push(id);
                        at_boundary |= r.end == cut;
                    } else if r.start < cut {
                        return None;
                    }
                }
                Segment::Text(r) => {
                    for p in self.pre.pieces(&text[r.clone()]) {
                        let (start, end) = (p.start + r.start, p.end + r.start);
                        if end <= cut {
                            self.bpe.encode_piece(&text[start..end], &mut out).ok()?;
                            at_boundary |= end == cut;
                        } else if start < cut {
                            return None;
                        }
                    }
                }
            }
        }
        at_boundary.then_some(out)
    }
}

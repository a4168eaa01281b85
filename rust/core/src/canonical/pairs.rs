//! Validity of `T + [v]` from the merge histories of T's last token and of v alone, for BPE
//! without a pre-tokenizer (SentencePiece-style: Gemma-3, Llama-2, Mistral, Phi-3), and inside a
//! word for byte-level BPE with GPT-2's, Llama-3's or Qwen2's split pattern (end of this doc).
//!
//! Such a tokenizer encodes a whole stretch between added tokens as one piece, so there is no
//! piece cut for `boundary.rs` to use, and a scorer checked each of the ~137k Gemma-3 tokens that
//! start with a space, one encode per witness, after every word (6.4 M checks, 22 s for 256 bytes
//! of prose; minutes in a space run). But BPE itself decides locally. HF's BPE repeatedly applies
//! the lowest-ranked merge present, leftmost first. Cut the units of `t + v` at the boundary
//! between t and v: as long as no merge has joined a symbol of t to a symbol of v, each side runs
//! exactly as it does alone (its candidate merges are its own, and the global minimum picks its
//! merges in its own order), so the only thing that can happen at the boundary is that the
//! *crossing pair* (t's current last symbol, v's current first symbol) becomes the lowest merge
//! present. Replaying the two solo histories in their joint order (by rank, t's side first on a
//! tie, since it lies to the left) tells whether it ever does:
//!
//! * it fires when its rank is below the next merge of t's side and not above the next merge of
//!   v's side (on a tie the crossing pair lies left of v's pair, right of t's);
//! * if it never fires, the result is t's solo result followed by v's.
//!
//! So `encode(a + v) = tail ++ [v]` exactly when `encode(a) = tail`, v encodes alone to `[v]` and
//! the crossing pair never fires, and then the empty witness proves validity. Conversely, if the
//! crossing pair fires, or v alone does not encode to `[v]`, no witness w helps: in
//! `encode(a + v + w)` the sides of t and v again run alone until something crosses one of their
//! edges, merges inside w do not change t's last or v's first symbol, and a merge across v's
//! right edge already means v is not a token of the result. So the verdict equals the per-token
//! check (`valid_from`) for every token, with no encode at all.
//!
//! Guard rails (otherwise `None` and the caller checks the token itself): the pre-tokenizer never
//! splits (or is one known split pattern, below, where an NFC normaliser may come first), there
//! is no NFC normaliser otherwise, and no
//! `ignore_merges`; the context `a` is valid UTF-8, encodes to its `tail`, and no added token can
//! match across its end when the next byte follows (`AddedText::can_cross`); t and v have
//! complete UTF-8 bytes whose units contain no unknown token (`fuse_unk` would join across the
//! edge), and no added token's text occurs inside v. Where `a` ends with an added token, nothing can cross
//! and the verdict is whether v encodes alone to `[v]`; so it is at the start of the text.
//!
//! Inside a pre-tokenizer piece (byte-level BPE split by GPT-2's, Llama-3's or Qwen2's pattern:
//! SmolLM2, Qwen2.5, Llama-3). BPE runs on each piece alone, so the argument above holds within
//! a piece whenever the context's last piece P and v lie in one piece of `a + v + w` for *every*
//! continuation w, with the pieces before P unchanged. That is so when P ends with a letter and
//! does not start with an apostrophe, no apostrophe is among the last three characters of `a`,
//! and v is all letters:
//!
//! * P ends with a letter and is no contraction, so the patterns' letter-run alternative
//!   (`` ?\p{L}+`` / ``[^\r\n\p{L}\p{N}]?\p{L}+``) matched it; in `a + v + w` the contractions
//!   before it in the alternation still fail at P's start (they start with an apostrophe), and
//!   the letter run, being greedy, runs on through v's letters and any letters w starts with.
//! * A piece before P could only change if an alternative that failed for lack of text now
//!   matched across the end of `a`. The ones that can match letters are the letter run (it does
//!   not need more text to match) and the contractions, at most three characters starting with
//!   an apostrophe, so one reaching past the end of `a` needs an apostrophe among its last two
//!   characters. The look-ahead of `\s+(?!\S)` reads one character past a whitespace run, and
//!   those characters are all in `a`.
//!
//! So within P + v + w' (w' the letters w starts with) the pair argument applies unchanged, and
//! the empty witness proves validity when the crossing pair never fires. In a scratch count
//! (`PrefixScorer.validity_checks`, SmolLM2's tokenizer, 4 KB of prose) this took the per-token
//! checks from 807,082 to 26,465.
//!
//! Two more pieces that a run goes on through (`PreTokenizer::last_piece_joins`), by the same
//! two steps (P's start stays a match start because the pieces before it read at most P's first
//! character; the alternative that now matches there is greedy):
//!
//! * A one-character piece that the letter-run alternative takes as its lead, before letters:
//!   GPT-2's `` ?\p{L}+`` takes a space; Llama-3's and Qwen2's `[^\r\n\p{L}\p{N}]?\p{L}+` takes
//!   anything but a newline, a letter or a digit (`(` before `self`, `.` before `array`). An
//!   apostrophe is left out (`'s` is a contraction). P alone in `a` means nothing before it
//!   joined it, and in `a + v` the contractions fail at P (no apostrophe) and the letter run
//!   matches P and v's letters.
//! * A symbol run (`` ?[^\s\p{L}\p{N}]+``; Llama-3 and Qwen2 add trailing newlines) before
//!   symbols: P ends with a symbol, so that alternative matched it (the others end with a letter,
//!   a digit or whitespace), and it goes on greedily through v's symbols; a lone space too, as the
//!   run's optional lead. The letter run ahead of it in the alternation fails at P's start, as v
//!   starts with a symbol.
//!
//! And where the run goes on into v but stops inside it (v = `lo,` after `hel`, `.get` after
//! `./`: letters then something else, symbols then something that is neither a symbol nor a
//! newline), the piece ends inside v, no token spans a piece boundary, and T + [v] is invalid
//! whatever follows (`Judge::Straddles`). Every other v (a space, a digit, a mixed token after
//! a piece it does not run on in) is left to the per-token check. With these, 4 KB of prose
//! (same scratch count) needs 9,371 per-token checks on SmolLM2's tokenizer (from 26,465) and
//! 21,539 on Qwen2.5's (from 365,476; part of that was `boundary.rs`'s added-token guard).
//!
//! With an NFC normaliser before the split (Qwen2.5 as transformers loads it), a witness counts
//! only if `NFC(a + v + w)` still starts with `a + v`, and the rule needs `NFC(a + v) = a + v`:
//! `a` left alone by NFC (so it is in `pair_left`), and v left alone and starting with an ASCII
//! character, which never combines with what comes before it (`MergeHistories::nfc_ok`). Then
//! the empty witness works as before, and the arguments for "invalid" held for every witness,
//! normalised ones included. Other tokens go to the per-token check, which normalises.
//!
//! The tests: `engine::prefix::tests::pair_rule_verdicts_equal_per_token_checks_on_every_token`
//! compares every verdict with the per-token check on Gemma-3, Llama-2, Mistral and Phi-3
//! tokenizers, `pair_rule_inside_a_piece_equals_per_token_checks` does the same inside pieces
//! (GPT-2, SmolLM2, Qwen2, Llama-3, Qwen2.5 with and without NFC; words, symbol runs,
//! one-character leads, tokens that straddle), and `tests/test_scoring.py` compares whole prefix
//! probabilities with a brute force.

use super::Canonicalizer;
use crate::added::Segment;
use crate::pretokenize::{incomplete_tail, is_letter, is_symbol, Joins};
use crate::primitives::TokenId;
use crate::trie::TokenTrie;
use std::ops::Range;
use std::sync::OnceLock;

/// No symbol changed at this side in this merge.
const SAME: TokenId = TokenId::MAX;
/// "No next merge": above every rank.
const DONE: u32 = u32::MAX;

/// One merge of a token's solo history: its rank, and the new first / last symbol when the
/// merge changed the token's first / last symbol (`SAME` otherwise).
#[derive(Debug, Clone, Copy)]
struct Step {
    rank: u32,
    first: TokenId,
    last: TokenId,
}

/// What a token's bytes do when encoded alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Solo {
    /// Outside the rule (no bytes, incomplete UTF-8, an unknown unit, an added token's text
    /// inside): check it one by one.
    Unsupported,
    /// Encodes alone to something else: never a token of any encoding.
    NotItself,
    /// Encodes alone to itself, with this history.
    Itself,
}

/// What a token's characters are, for the rule inside a pre-tokenizer piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Uniform {
    /// All letters (`\p{L}`).
    Letters,
    /// Letters, then a character that is not one: a letter run that runs into it ends inside
    /// the token.
    LettersThenMore,
    /// All symbols (`[^\s\p{L}\p{N}]`).
    Symbols,
    /// Symbols, then a character that is neither a symbol nor a newline (Llama-3's and Qwen2's
    /// symbol runs take trailing newlines): a symbol run ends inside the token.
    SymbolsThenMore,
    /// Empty, not UTF-8, or anything else.
    Mixed,
}

impl Uniform {
    fn of(text: Option<&str>) -> Self {
        let Some(text) = text else { return Self::Mixed };
        let Some(first) = text.chars().next() else { return Self::Mixed };
        if is_letter(first) {
            return if text.chars().all(is_letter) { Self::Letters } else { Self::LettersThenMore };
        }
        if is_symbol(first) {
            return match text.chars().find(|&c| !is_symbol(c)) {
                None => Self::Symbols,
                Some('\r' | '\n') => Self::Mixed,
                Some(_) => Self::SymbolsThenMore,
            };
        }
        Self::Mixed
    }
}

/// How the rule treats a right token v after a given left side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judge {
    /// By the merge histories.
    Pair,
    /// Invalid whatever follows: the context's piece runs on into v and ends inside it, and no
    /// token spans a piece boundary.
    Straddles,
    /// Outside the rule: the per-token check.
    Open,
}

/// Solo merge histories of every token, built once per tokenizer on first use.
#[derive(Debug)]
pub(super) struct MergeHistories {
    solo: Vec<Solo>,
    first_unit: Vec<TokenId>,
    last_unit: Vec<TokenId>,
    /// `steps[span[id].0..span[id].1]` is token id's history.
    span: Vec<(u32, u32)>,
    steps: Vec<Step>,
    /// Right partners of every merge, by its left symbol.
    rights: Vec<Vec<TokenId>>,
    /// By symbol: the tokens that encode alone to themselves and hold that symbol at their first
    /// position at some point of their history (built on first use; `pair_verdicts_in`).
    by_first: OnceLock<Vec<Vec<TokenId>>>,
    /// With a pre-tokenizer, the rule judges only tokens v whose bytes are all letters or all
    /// symbols, after a piece they run on in (module doc): each token's class. Empty without a
    /// pre-tokenizer (every token is judged).
    class: Vec<Uniform>,
    /// With an NFC normaliser: whether each token starts with an ASCII byte and NFC leaves it
    /// alone (module doc); the rule leaves the others to the per-token check. Empty without one.
    nfc_ok: Vec<bool>,
}

impl MergeHistories {
    fn build(canon: &Canonicalizer) -> Self {
        let n = canon.vocab.n_ids();
        let mut rights: Vec<Vec<TokenId>> = vec![Vec::new(); n];
        for (left, right) in canon.bpe.merge_pairs() {
            if let Some(r) = rights.get_mut(left as usize) {
                r.push(right);
            }
        }
        let mut h = Self {
            solo: vec![Solo::Unsupported; n],
            first_unit: vec![SAME; n],
            last_unit: vec![SAME; n],
            span: vec![(0, 0); n],
            steps: Vec::new(),
            rights,
            by_first: OnceLock::new(),
            class: Vec::new(),
            nfc_ok: Vec::new(),
        };
        if canon.pre.normalizes() {
            h.nfc_ok = (0..n)
                .map(|id| canon.vocab.token_bytes(id as TokenId).is_some_and(|b| b.first().is_some_and(u8::is_ascii) && canon.pre.leaves_alone(b)))
                .collect();
        }
        if canon.pre.splits() {
            h.class = (0..n).map(|id| Uniform::of(canon.vocab.token_bytes(id as TokenId).and_then(|b| std::str::from_utf8(b).ok()))).collect();
        }
        let mut syms = Vec::new();
        for id in 0..n {
            let Some(bytes) = canon.vocab.token_bytes(id as TokenId) else { continue };
            if bytes.is_empty() || std::str::from_utf8(bytes).is_err() {
                continue;
            }
            if !canon.added.is_empty() && canon.added.segments(bytes).iter().any(|s| matches!(s, Segment::Added(..))) {
                continue;
            }
            syms.clear();
            if canon.bpe.units(bytes, &mut syms).is_err() || syms.is_empty() || canon.bpe.unk_id().is_some_and(|u| syms.contains(&u)) {
                continue;
            }
            h.first_unit[id] = syms[0];
            h.last_unit[id] = *syms.last().expect("units not empty");
            let start = h.steps.len() as u32;
            // The encoder's own merge loop, recording each merge's effect on the first and last
            // symbol.
            let steps = &mut h.steps;
            canon.bpe.merge_small_traced(&mut syms, |rank, i, merged, len| {
                let first = if i == 0 { merged } else { SAME };
                let last = if i + 2 == len { merged } else { SAME };
                steps.push(Step { rank, first, last });
            });
            h.span[id] = (start, h.steps.len() as u32);
            h.solo[id] = if syms.len() == 1 && syms[0] == id as TokenId { Solo::Itself } else { Solo::NotItself };
        }
        h
    }

    /// How the rule judges `v` as the right token after a piece that `joins` the classes it
    /// does (module doc). A token outside the rule's guard rails (`Solo::Unsupported`: an added
    /// token's text inside, an unknown unit) stays open.
    fn judge(&self, v: TokenId, joins: Joins) -> Judge {
        if self.class.is_empty() {
            return Judge::Pair;
        }
        if self.solo.get(v as usize).is_none_or(|s| *s == Solo::Unsupported) || self.nfc_ok.get(v as usize) == Some(&false) {
            return Judge::Open;
        }
        match self.class[v as usize] {
            Uniform::Letters if joins.letters => Judge::Pair,
            Uniform::Symbols if joins.symbols => Judge::Pair,
            Uniform::LettersThenMore if joins.letters => Judge::Straddles,
            Uniform::SymbolsThenMore if joins.symbols => Judge::Straddles,
            _ => Judge::Open,
        }
    }

    fn history(&self, id: TokenId) -> &[Step] {
        let (a, b) = self.span[id as usize];
        &self.steps[a as usize..b as usize]
    }

    /// The symbols token `v`'s first position holds over its solo history, the unit first.
    fn firsts(&self, v: TokenId) -> impl Iterator<Item = TokenId> + '_ {
        std::iter::once(self.first_unit[v as usize]).chain(self.history(v).iter().map(|s| s.first).filter(|&f| f != SAME))
    }

    fn by_first(&self) -> &[Vec<TokenId>] {
        self.by_first.get_or_init(|| {
            let mut index: Vec<Vec<TokenId>> = vec![Vec::new(); self.solo.len()];
            let mut seen: Vec<TokenId> = Vec::new();
            for v in 0..self.solo.len() as TokenId {
                if self.solo[v as usize] != Solo::Itself {
                    continue;
                }
                seen.clear();
                seen.extend(self.firsts(v));
                seen.sort_unstable();
                seen.dedup();
                for &f in &seen {
                    if let Some(list) = index.get_mut(f as usize) {
                        list.push(v);
                    }
                }
            }
            index
        })
    }
}

/// What a context fixes for the pair rule: the token its last symbol comes from and, with a
/// pre-tokenizer, which tokens run on in its last piece; or that nothing can cross (the context
/// is empty, or ends with an added token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PairLeft {
    Token(TokenId, Joins),
    NothingLeft,
}

impl PairLeft {
    /// Which tokens the rule judges after this left side.
    pub(crate) fn joins(self) -> Joins {
        match self {
            Self::Token(_, joins) => joins,
            Self::NothingLeft => Joins::BOTH,
        }
    }
}

/// A `PairLeft` ready to judge many tokens: for a left token t, the symbols that some symbol t's
/// last position ever holds has a merge with (a bit per id). A token v none of whose first
/// symbols is among them cannot cross t whatever the ranks, so most tokens need no replay: after
/// a word, the first symbols of the tokens that start with a space seldom merge with a letter.
#[derive(Debug, Clone)]
pub(crate) struct PairScreen {
    left: PairLeft,
    partners: Vec<u64>,
}

impl Canonicalizer {
    /// Whether the pair rule can apply to this tokenizer at all: without a pre-tokenizer, or
    /// inside the pieces of one known split pattern (module doc).
    fn pair_rule_applies(&self) -> bool {
        !self.bpe.ignores_merges() && if self.pre.splits() { self.pre.is_one_known_split() } else { !self.pre.normalizes() }
    }

    /// With a pre-tokenizer: which all-letter and all-symbol tokens run on in `a`'s last piece
    /// (module doc; `PreTokenizer::last_piece_joins`), where that piece is no added token and no
    /// apostrophe is among `a`'s last three characters; `None` when no token does.
    fn last_piece_joins(&self, a: &[u8]) -> Option<Joins> {
        let text = std::str::from_utf8(a).ok()?;
        if text.chars().rev().take(3).any(|c| c == '\'') {
            return None;
        }
        if !self.added.is_empty() && !matches!(self.added.segments(a).last(), Some(Segment::Text(_))) {
            return None;
        }
        let piece = self.pieces(a).pop()?;
        let joins = self.pre.last_piece_joins(std::str::from_utf8(&a[piece]).ok()?);
        (joins != Joins::NONE).then_some(joins)
    }

    fn histories(&self) -> &MergeHistories {
        self.histories.get_or_init(|| MergeHistories::build(self))
    }

    /// The left side of the pair rule for extensions of `tail` (read from its anchor, spelling
    /// `a`) by tokens whose first byte is `next`, or `None` where the rule does not apply (then
    /// each such token is checked on its own).
    pub(crate) fn pair_left(&self, a: &[u8], tail: &[TokenId], next: u8) -> Option<PairLeft> {
        if !self.pair_rule_applies() {
            return None;
        }
        let Some(&t) = tail.last() else {
            // The start of the text: v's bytes are all there is (without a pre-tokenizer).
            return (a.is_empty() && !self.pre.splits()).then_some(PairLeft::NothingLeft);
        };
        if a.is_empty() || std::str::from_utf8(a).is_err() || incomplete_tail(a).is_some() || !self.pre.leaves_alone(a) {
            return None;
        }
        if !self.added.is_empty() && self.added.can_cross(a, next) {
            return None;
        }
        if !self.complete_from(a, tail) {
            return None;
        }
        let joins = if self.pre.splits() { self.last_piece_joins(a)? } else { Joins::BOTH };
        if !self.added.is_empty() && matches!(self.added.segments(a).last(), Some(Segment::Added(..))) {
            return Some(PairLeft::NothingLeft);
        }
        (self.histories().solo[t as usize] == Solo::Itself).then_some(PairLeft::Token(t, joins))
    }

    /// `left` with the symbols its token's last position can merge with.
    pub(crate) fn pair_screen(&self, left: PairLeft) -> PairScreen {
        let h = self.histories();
        let mut partners = vec![0u64; h.solo.len().div_ceil(64)];
        if let PairLeft::Token(t, _) = left {
            let lasts = std::iter::once(h.last_unit[t as usize]).chain(h.history(t).iter().map(|s| s.last).filter(|&l| l != SAME));
            for l in lasts {
                for &r in &h.rights[l as usize] {
                    partners[r as usize / 64] |= 1 << (r % 64);
                }
            }
        }
        PairScreen { left, partners }
    }

    /// The verdict of `T + [v]` by the pair rule, `None` where v is outside it.
    pub(crate) fn pair_verdict(&self, screen: &PairScreen, v: TokenId) -> Option<bool> {
        let h = self.histories();
        match h.judge(v, screen.left.joins()) {
            Judge::Open => return None,
            Judge::Straddles => return Some(false),
            Judge::Pair => {}
        }
        match h.solo.get(v as usize)? {
            Solo::Unsupported => None,
            Solo::NotItself => Some(false),
            Solo::Itself => Some(match screen.left {
                PairLeft::NothingLeft => true,
                PairLeft::Token(t, _) => {
                    let is_partner = |x: TokenId| screen.partners[x as usize / 64] & (1 << (x % 64)) != 0;
                    !(h.firsts(v).any(is_partner) && self.crossing_fires(h, t, v))
                }
            }),
        }
    }

    /// `pair_verdict` for every token of the trie range `range` (in trie order), with the same
    /// answers, computed from the other side: every token gets its solo verdict, and only the
    /// tokens holding one of the screen's partner symbols at their first position are replayed.
    ///
    /// Why: after a word the next byte is a space, and Gemma-3 has 137,541 tokens starting with
    /// one; judging each against the partner bits cost ~90 ns (a walk over its history), for
    /// each distinct last token of a context: 77 M verdicts and 7.4 s of the 8.7 s engine time
    /// of scoring 4 KB of prose. Few of those tokens can ever meet a partner, and the index by
    /// first symbol (`MergeHistories::by_first`) lists just those.
    ///
    /// `solo` is `pair_solo_verdicts(trie, range, left.joins())` (the same for every left token, so callers
    /// judging many left tokens against one range make it once).
    pub(crate) fn pair_verdicts_in(&self, screen: &PairScreen, trie: &TokenTrie, range: Range<usize>, solo: &[Option<bool>]) -> Vec<Option<bool>> {
        let h = self.histories();
        let mut out = solo.to_vec();
        let PairLeft::Token(t, _) = screen.left else { return out };
        let by_first = h.by_first();
        let mut candidates: Vec<usize> = Vec::new();
        for (w, &word) in screen.partners.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let symbol = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                for &v in by_first.get(symbol).map_or(&[][..], Vec::as_slice) {
                    if let Some(k) = trie.position_of(v).filter(|k| range.contains(k)) {
                        candidates.push(k);
                    }
                }
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        for k in candidates {
            if out[k - range.start].is_some() && self.crossing_fires(h, t, trie.id_at(k)) {
                out[k - range.start] = Some(false);
            }
        }
        out
    }

    /// The pair verdicts of the tokens of `range` when nothing can cross their left edge: whether
    /// each encodes alone to itself (`None`: outside the rule, or not among the tokens `joins`
    /// lets it judge).
    pub(crate) fn pair_solo_verdicts(&self, trie: &TokenTrie, range: Range<usize>, joins: Joins) -> Vec<Option<bool>> {
        let h = self.histories();
        range
            .map(|k| trie.id_at(k))
            .map(|v| match h.judge(v, joins) {
                Judge::Open => None,
                Judge::Straddles => Some(false),
                Judge::Pair => match h.solo.get(v as usize) {
                    None | Some(Solo::Unsupported) => None,
                    Some(Solo::NotItself) => Some(false),
                    Some(Solo::Itself) => Some(true),
                },
            })
            .collect()
    }

    /// Replay t's and v's solo histories in their joint order; whether the crossing pair fires.
    fn crossing_fires(&self, h: &MergeHistories, t: TokenId, v: TokenId) -> bool {
        let (left, right) = (h.history(t), h.history(v));
        let (mut i, mut j) = (0, 0);
        let (mut last, mut first) = (h.last_unit[t as usize], h.first_unit[v as usize]);
        let mut crossing = self.bpe.merge_of(last, first).map_or(DONE, |(r, _)| r);
        loop {
            let next_left = left.get(i).map_or(DONE, |s| s.rank);
            let next_right = right.get(j).map_or(DONE, |s| s.rank);
            if crossing != DONE && crossing < next_left && crossing <= next_right {
                return true;
            }
            if next_left == DONE && next_right == DONE {
                return false;
            }
            if next_left <= next_right {
                if left[i].last != SAME {
                    last = left[i].last;
                    crossing = self.bpe.merge_of(last, first).map_or(DONE, |(r, _)| r);
                }
                i += 1;
            } else {
                if right[j].first != SAME {
                    first = right[j].first;
                    crossing = self.bpe.merge_of(last, first).map_or(DONE, |(r, _)| r);
                }
                j += 1;
            }
        }
    }
}

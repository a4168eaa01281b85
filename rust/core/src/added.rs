//! Added tokens that stand for ordinary text (`"special": false` in `tokenizer.json`, such as
//! Gemma-3's `"\n"`, `"\n\n"`, … and `"<table>"`).
//!
//! HF `tokenizers` cuts the raw input on these strings *before* normalisation and BPE, taking at
//! each position the longest string that matches there (leftmost-longest), and emits their ids
//! directly. The text between matches is encoded as usual. So `"a\n\nb"` under Gemma-3 is
//! `[a, "\n\n", b]`, whatever the BPE merges would say.

use crate::primitives::{TokenId, N_BYTES};
use std::ops::Range;

/// One stretch of input: either plain text for the normal pipeline or one added token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Text(Range<usize>),
    Added(Range<usize>, TokenId),
}

/// Leftmost-longest matcher over the contents of text-valued added tokens.
#[derive(Debug, Clone, Default)]
pub struct AddedText {
    /// Contents by first byte, longest first (so the first hit at a position is the longest).
    by_first: Vec<Vec<(Vec<u8>, TokenId)>>,
    max_len: usize,
}

impl AddedText {
    pub fn new(entries: impl IntoIterator<Item = (Vec<u8>, TokenId)>) -> Self {
        let mut by_first: Vec<Vec<(Vec<u8>, TokenId)>> = vec![Vec::new(); N_BYTES];
        let mut max_len = 0;
        for (content, id) in entries {
            if content.is_empty() {
                continue;
            }
            max_len = max_len.max(content.len());
            by_first[content[0] as usize].push((content, id));
        }
        for list in &mut by_first {
            list.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        }
        Self { by_first, max_len }
    }

    pub fn is_empty(&self) -> bool {
        self.max_len == 0
    }

    /// The longest content that matches at `text[at..]`.
    fn longest_at(&self, text: &[u8], at: usize) -> Option<(usize, TokenId)> {
        self.by_first[text[at] as usize].iter().find(|(c, _)| text[at..].starts_with(c)).map(|(c, id)| (c.len(), *id))
    }

    /// Cut `text` into plain stretches and added tokens, as HF does.
    pub fn segments(&self, text: &[u8]) -> Vec<Segment> {
        let mut out = Vec::new();
        // Nothing to match: the whole text is one stretch (the loop would find no match).
        let (mut start, mut at) = (0, if self.is_empty() { text.len() } else { 0 });
        while at < text.len() {
            match self.longest_at(text, at) {
                Some((len, id)) => {
                    if start < at {
                        out.push(Segment::Text(start..at));
                    }
                    out.push(Segment::Added(at..at + len, id));
                    at += len;
                    start = at;
                }
                None => at += 1,
            }
        }
        if start < text.len() {
            out.push(Segment::Text(start..text.len()));
        }
        out
    }

    /// The first position from which appending bytes to `text` can change the cut: a position
    /// whose remainder is a prefix of some added content (a match could start or grow there).
    /// Everything before it is cut the same way in every extension of `text`.
    pub fn unstable_from(&self, text: &[u8]) -> usize {
        let lo = text.len().saturating_sub(self.max_len);
        (lo..text.len())
            .find(|&p| {
                let rest = &text[p..];
                self.by_first[rest[0] as usize].iter().any(|(c, _)| c.len() >= rest.len() && c.starts_with(rest))
            })
            .unwrap_or(text.len())
    }

    /// Whether some added content could match across the end of `text` when the next byte is
    /// `next`: a suffix of `text` is a proper prefix of the content and the content goes on
    /// with `next`. When not, the cut of `text` is final for every continuation starting with
    /// `next`, and no match starts before its end and reaches past it.
    pub fn can_cross(&self, text: &[u8], next: u8) -> bool {
        let lo = text.len().saturating_sub(self.max_len);
        (lo..text.len()).any(|p| {
            let rest = &text[p..];
            self.by_first[rest[0] as usize].iter().any(|(c, _)| c.len() > rest.len() && c.starts_with(rest) && c[rest.len()] == next)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn newlines() -> AddedText {
        AddedText::new([(b"\n".to_vec(), 1), (b"\n\n".to_vec(), 2), (b"<tr>".to_vec(), 3)])
    }

    #[test]
    fn leftmost_longest() {
        let a = newlines();
        assert_eq!(a.segments(b"a\n\n\nb"), vec![Segment::Text(0..1), Segment::Added(1..3, 2), Segment::Added(3..4, 1), Segment::Text(4..5)]);
        assert_eq!(a.segments(b"x<tr>"), vec![Segment::Text(0..1), Segment::Added(1..5, 3)]);
        assert_eq!(a.segments(b"<t"), vec![Segment::Text(0..2)]);
    }

    #[test]
    fn unstable_tail() {
        let a = newlines();
        // "\n" may still become "\n\n"; "<t" may become "<tr>"; plain letters are settled.
        assert_eq!(a.unstable_from(b"ab\n"), 2);
        assert_eq!(a.unstable_from(b"ab<t"), 2);
        assert_eq!(a.unstable_from(b"abc"), 3);
        assert_eq!(a.unstable_from(b""), 0);
        // Only a next byte that continues a content crosses.
        assert!(a.can_cross(b"ab\n", b'\n') && !a.can_cross(b"ab\n", b'a'));
        assert!(a.can_cross(b"ab<t", b'r') && !a.can_cross(b"ab<t", b'd'));
        // A match that starts at the next byte does not cross the end.
        assert!(!a.can_cross(b"ab", b'<') && !a.can_cross(b"ab", b'a') && !a.can_cross(b"", b'\n'));
    }
}

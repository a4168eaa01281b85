//! Normalization and pre-tokenization: how a tokenizer cuts text into pieces before BPE runs.
//!
//! BPE never merges across a piece boundary, so canonicality follows these rules exactly. We run
//! on the engine's internal bytes (where SentencePiece's `▁` is a space and the dummy prefix is
//! already present), reproduce the HF `tokenizers` components that keep text lossless, and refuse
//! the lossy ones (lower-casing, whitespace removal) because a byte-level view of them is not exact.

use crate::error::{Error, Result};
use crate::vocab::flatten;
use fancy_regex::Regex;
use serde_json::Value;
use std::ops::Range;

/// GPT-2's pre-tokenizer pattern, used by `ByteLevel(use_regex=true)`.
pub const GPT2_PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama-3's split pattern (digits in runs of up to three).
pub const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split pattern (Llama-3's with every digit on its own).
pub const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Split patterns whose piece boundaries `PreTokenizer::boundary_between` can tell without
/// running them (see `boundary.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KnownPattern {
    Gpt2,
    Llama3,
    Qwen2,
}

impl KnownPattern {
    fn of(pattern: &str, behavior: Behavior, invert: bool) -> Option<Self> {
        if behavior != Behavior::Isolated || invert {
            return None;
        }
        match pattern {
            GPT2_PATTERN => Some(Self::Gpt2),
            LLAMA3_PATTERN => Some(Self::Llama3),
            QWEN2_PATTERN => Some(Self::Qwen2),
            _ => None,
        }
    }

    /// Whether some string this pattern matches has `x` immediately followed by `y`, read off
    /// the alternatives: contractions join an apostrophe or a letter to a letter; the word,
    /// number and symbol runs join their own class and a leading space (Llama-3/Qwen2: any
    /// non-newline, non-letter, non-digit before letters, and newlines after symbols);
    /// whitespace alternatives join whitespace.
    fn joins(self, x: char, y: char) -> bool {
        let (cx, cy) = (CharClass::of(x), CharClass::of(y));
        use CharClass::*;
        let space = |c: CharClass| matches!(c, Space | Newline | OtherSpace);
        let symbol = |c: CharClass| matches!(c, Apostrophe | Symbol);
        if space(cx) && space(cy) || symbol(cx) && symbol(cy) || cx == Letter && cy == Letter {
            return true;
        }
        match self {
            Self::Gpt2 => cx == Apostrophe && cy == Letter || cx == Space && !space(cy) || cx == Digit && cy == Digit,
            Self::Llama3 | Self::Qwen2 => {
                cy == Letter && !matches!(cx, Newline | Digit)
                    || self == Self::Llama3 && cx == Digit && cy == Digit
                    || cx == Space && symbol(cy)
                    || symbol(cx) && cy == Newline
            }
        }
    }
}

/// Whether the known patterns count `c` as a letter (`\p{L}`).
pub(crate) fn is_letter(c: char) -> bool {
    CharClass::of(c) == CharClass::Letter
}

/// Whether the known patterns count `c` as a symbol (`[^\s\p{L}\p{N}]`, the apostrophe
/// included).
pub(crate) fn is_symbol(c: char) -> bool {
    matches!(CharClass::of(c), CharClass::Symbol | CharClass::Apostrophe)
}

/// Which continuations stay in a text's last piece whatever follows them
/// (`PreTokenizer::last_piece_joins`; the reasoning is in `canonical/pairs.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Joins {
    /// Letters (`\p{L}`) run on in the last piece.
    pub letters: bool,
    /// Symbols (`[^\s\p{L}\p{N}]`) run on in the last piece.
    pub symbols: bool,
}

impl Joins {
    pub(crate) const BOTH: Self = Self { letters: true, symbols: true };
    pub(crate) const NONE: Self = Self { letters: false, symbols: false };
}

/// The character classes the known patterns tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CharClass {
    Letter,
    Digit,
    /// U+0020.
    Space,
    /// `\r` or `\n`.
    Newline,
    /// Other whitespace (`\s`).
    OtherSpace,
    Apostrophe,
    /// Anything else (`[^\s\p{L}\p{N}]`).
    Symbol,
}

impl CharClass {
    fn of(c: char) -> Self {
        static CLASSES: std::sync::OnceLock<(regex::Regex, regex::Regex)> = std::sync::OnceLock::new();
        let (letter, digit) = CLASSES.get_or_init(|| (regex::Regex::new(r"^\p{L}$").expect("valid"), regex::Regex::new(r"^\p{N}$").expect("valid")));
        let mut buf = [0u8; 4];
        let s = c.encode_utf8(&mut buf);
        match c {
            ' ' => Self::Space,
            '\r' | '\n' => Self::Newline,
            '\'' => Self::Apostrophe,
            // The regexes' `\s` is Unicode White_Space, as is `char::is_whitespace`.
            _ if c.is_whitespace() => Self::OtherSpace,
            _ if letter.is_match(s) => Self::Letter,
            _ if digit.is_match(s) => Self::Digit,
            _ => Self::Symbol,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behavior {
    Isolated,
    MergedWithPrevious,
    MergedWithNext,
    Contiguous,
}

/// A compiled split pattern. The HF patterns use one look-ahead, `\s+(?!\S)` ("a whitespace
/// run, minus its last character when a non-space follows"). Look-around forces fancy-regex's
/// backtracking VM, about 5x slower than the `regex` crate's automata, and pattern matching is
/// most of the cost of a validity check. So when that is the only look-around, we match with
/// `regex` on the pattern without that alternative and apply the look-ahead by hand.
#[derive(Debug, Clone)]
enum Matcher {
    Fancy(Regex),
    /// `re` is the pattern with `\s+(?!\S)|` removed, so whitespace runs come from `\s+`;
    /// `newline_alt`: an earlier `\s*[\r\n]+` alternative owns runs that contain a newline.
    WhitespaceLookahead {
        re: regex::Regex,
        newline_alt: bool,
    },
}

const LOOKAHEAD_WS: &str = r"\s+(?!\S)|";

impl Matcher {
    fn new(pattern: &str) -> Result<Self> {
        if let Some(i) = pattern.find(LOOKAHEAD_WS) {
            let rest = format!("{}{}", &pattern[..i], &pattern[i + LOOKAHEAD_WS.len()..]);
            let plain_ws_follows = pattern[i + LOOKAHEAD_WS.len()..].starts_with(r"\s+");
            let other_lookaround = ["(?=", "(?!", "(?<"].iter().any(|t| rest.contains(t));
            if plain_ws_follows && !other_lookaround {
                if let Ok(re) = regex::Regex::new(&rest) {
                    let newline_alt = pattern[..i].contains(r"\s*[\r\n]+");
                    return Ok(Matcher::WhitespaceLookahead { re, newline_alt });
                }
            }
        }
        Ok(Matcher::Fancy(compile(pattern)?))
    }

    /// Non-empty match spans, left to right, exactly as the original pattern finds them.
    fn find_all(&self, s: &str) -> Vec<Range<usize>> {
        match self {
            Matcher::Fancy(re) => re.find_iter(s).filter_map(|m| m.ok()).filter(|m| m.start() < m.end()).map(|m| m.range()).collect(),
            Matcher::WhitespaceLookahead { re, newline_alt } => {
                let mut out = Vec::new();
                let mut pos = 0;
                while pos < s.len() {
                    let Some(m) = re.find_at(s, pos) else { break };
                    let mut r = m.range();
                    if r.is_empty() {
                        pos = r.end + s[r.end..].chars().next().map_or(1, char::len_utf8);
                        continue;
                    }
                    let run = &s[r.clone()];
                    // A pure whitespace run came from `\s+` (earlier alternatives never match
                    // bare spaces, except `\s*[\r\n]+` for runs with a newline when present);
                    // `\s+(?!\S)` would have left its last character for the following word.
                    let followed_by_non_space = s[r.end..].chars().next().is_some_and(|c| !c.is_whitespace());
                    let from_plain_run = run.chars().all(char::is_whitespace) && !(*newline_alt && run.contains(['\r', '\n']));
                    if followed_by_non_space && from_plain_run {
                        if let Some((last, _)) = run.char_indices().last().filter(|(i, _)| *i > 0) {
                            r.end = r.start + last;
                        }
                    }
                    pos = r.end;
                    out.push(r);
                }
                out
            }
        }
    }
}

/// What follows a text, for `PreTokenizer::boundary_between`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Any text that starts with this character.
    Char(char),
    /// Any text that starts with a space and then a character that is not whitespace and
    /// whose first byte is this one.
    SpaceThenNonSpace(u8),
}

#[derive(Debug, Clone)]
enum Step {
    /// Split on regex matches (`known`: one of the patterns `boundary_between` reasons about).
    Split { re: Matcher, behavior: Behavior, invert: bool, known: Option<KnownPattern> },
    /// Isolate numeric characters (each one, or each run).
    Digits { individual: bool },
}

/// The normalizer and pre-tokenizer of one tokenizer.
#[derive(Debug, Clone)]
pub struct PreTokenizer {
    nfc: bool,
    steps: Vec<Step>,
}

fn type_of(v: &Value) -> &str {
    v.get("type").and_then(Value::as_str).unwrap_or("")
}

fn pattern_of(v: &Value) -> Result<String> {
    let p = &v["pattern"];
    if let Some(s) = p.get("Regex").and_then(Value::as_str) {
        Ok(s.to_string())
    } else if let Some(s) = p.get("String").and_then(Value::as_str) {
        Ok(fancy_regex::escape(s).into_owned())
    } else {
        Err(Error::Malformed(format!("split pattern {p}")))
    }
}

fn compile(pattern: &str) -> Result<Regex> {
    Regex::new(pattern).map_err(|e| Error::Unsupported(format!("pre-tokenizer regex {pattern:?} ({e})")))
}

/// The `behavior` of a Split or Punctuation step; `Removed` is refused because it drops text.
fn behavior_of(p: &Value, step: &str) -> Result<Behavior> {
    Ok(match p["behavior"].as_str().unwrap_or("Isolated") {
        "Isolated" => Behavior::Isolated,
        "MergedWithPrevious" => Behavior::MergedWithPrevious,
        "MergedWithNext" => Behavior::MergedWithNext,
        "Contiguous" => Behavior::Contiguous,
        other => return Err(Error::Unsupported(format!("{step} behavior {other:?} (it drops text)"))),
    })
}

impl PreTokenizer {
    pub fn from_json(root: &Value) -> Result<Self> {
        let mut nfc = false;
        // After a normalizer turns spaces into `▁`, no literal space is left for a pre-tokenizer
        // to match (Gemma 3 splits on " " after such a normalizer: that split never fires).
        let mut spaces_replaced = false;
        for n in flatten(&root["normalizer"], "normalizers") {
            match type_of(n) {
                "NFC" => nfc = true,
                // The dummy prefix is part of the internal bytes (Vocabulary::start_prefix).
                "Prepend" if n["prepend"].as_str() == Some("\u{2581}") => {}
                // SentencePiece's space marker: internal bytes keep the space itself.
                "Replace" if n["pattern"]["String"].as_str() == Some(" ") && n["content"].as_str() == Some("\u{2581}") => spaces_replaced = true,
                other => return Err(Error::Unsupported(format!("normalizer {other:?} (it changes the text, so bytes and tokens no longer line up)"))),
            }
        }
        let mut steps = Vec::new();
        for p in flatten(&root["pre_tokenizer"], "pretokenizers") {
            match type_of(p) {
                "ByteLevel" => {
                    if p["use_regex"].as_bool().unwrap_or(true) {
                        steps.push(Step::Split {
                            re: Matcher::new(GPT2_PATTERN)?,
                            behavior: Behavior::Isolated,
                            invert: false,
                            known: Some(KnownPattern::Gpt2),
                        });
                    }
                }
                "Split" => {
                    let behavior = behavior_of(p, "Split")?;
                    let invert = p["invert"].as_bool().unwrap_or(false);
                    if spaces_replaced && p["pattern"]["String"].as_str().is_some_and(|lit| lit.contains(' ')) {
                        continue;
                    }
                    if invert && behavior != Behavior::Isolated {
                        return Err(Error::Unsupported(format!("inverted Split with behavior {behavior:?}")));
                    }
                    // Internal bytes hold spaces where the tokenizer sees `▁`.
                    let pattern = pattern_of(p)?.replace('\u{2581}', " ");
                    let known = KnownPattern::of(&pattern, behavior, invert);
                    steps.push(Step::Split { re: Matcher::new(&pattern)?, behavior, invert, known });
                }
                // Isolates punctuation as HF defines it: ASCII punctuation or a Unicode P* category.
                "Punctuation" => {
                    let behavior = behavior_of(p, "Punctuation")?;
                    steps.push(Step::Split { re: Matcher::new(r"[\p{P}!-/:-@\[-`{-~]")?, behavior, invert: false, known: None });
                }
                "Digits" => steps.push(Step::Digits { individual: p["individual_digits"].as_bool().unwrap_or(false) }),
                "Metaspace" => {
                    if p["split"].as_bool().unwrap_or(true) {
                        steps.push(Step::Split { re: Matcher::new(" ")?, behavior: Behavior::MergedWithNext, invert: false, known: None });
                    }
                }
                other => return Err(Error::Unsupported(format!("pre-tokenizer {other:?} (it drops or rewrites text)"))),
            }
        }
        Ok(Self { nfc, steps })
    }

    /// True when some step cuts text into pieces (otherwise the whole text is one piece).
    pub fn splits(&self) -> bool {
        !self.steps.is_empty()
    }

    pub fn normalizes(&self) -> bool {
        self.nfc
    }

    /// Whether the pre-tokenizer is one split by a known pattern (GPT-2's, Llama-3's, Qwen2's)
    /// and nothing else: the case `canonical/pairs.rs` reasons about inside a piece. An NFC
    /// normaliser may come before it (Qwen2.5 as transformers loads it); the callers make sure
    /// normalising leaves their texts alone.
    pub(crate) fn is_one_known_split(&self) -> bool {
        matches!(self.steps.as_slice(), [Step::Split { known: Some(_), .. }])
    }

    /// Whether normalising leaves `text` as it is (always, without a normaliser).
    pub(crate) fn leaves_alone(&self, text: &[u8]) -> bool {
        matches!(self.normalize(text), std::borrow::Cow::Borrowed(_))
    }

    /// For one known split pattern (`is_one_known_split`): which continuations `u` made only of
    /// letters, or only of symbols, run on in `piece`, the last piece of some text `a`, in the
    /// pieces of `a + u + w` for every `w`, the pieces before it unchanged. The argument is in
    /// `canonical/pairs.rs`: letters after a piece that ends with a letter (no contraction), or
    /// after a one-character piece the letter-run alternative takes as its lead (GPT-2: a space;
    /// Llama-3 and Qwen2: anything but a newline, a letter, a digit or an apostrophe); symbols
    /// after a symbol run or after a lone space. The caller checks `a` for apostrophes near its
    /// end.
    pub(crate) fn last_piece_joins(&self, piece: &str) -> Joins {
        let [Step::Split { known: Some(k), .. }] = self.steps.as_slice() else { return Joins::NONE };
        let (Some(first), Some(last)) = (piece.chars().next(), piece.chars().next_back()) else { return Joins::NONE };
        let alone = piece.chars().nth(1).is_none();
        let letter_lead = match k {
            KnownPattern::Gpt2 => last == ' ',
            KnownPattern::Llama3 | KnownPattern::Qwen2 => {
                !matches!(CharClass::of(last), CharClass::Newline | CharClass::Letter | CharClass::Digit | CharClass::Apostrophe)
            }
        };
        Joins { letters: is_letter(last) && first != '\'' || alone && letter_lead, symbols: is_symbol(last) || alone && last == ' ' }
    }

    /// Llama-3 and Qwen2 only: whether a text whose last piece is `piece` has a piece boundary
    /// before any continuation that starts with a letter, the pieces before it unchanged, where
    /// `boundary_between` (which reads one character) cannot tell. A symbol run of two or more
    /// characters: at its start the letter-run alternative (`[^\r\n\p{L}\p{N}]?\p{L}+`) needs
    /// a letter as its first or second character and finds none, the contractions need an
    /// apostrophe and a letter, so the symbol run matches again and stops before the letter;
    /// the pieces before it read at most its first character. (`" `"` before `abc`: 2,367 tokens
    /// starting with `a` checked one by one on Qwen2.5's vocabulary before.)
    pub(crate) fn cuts_after_symbol_run(&self, piece: &str, next: char) -> bool {
        let [Step::Split { known: Some(KnownPattern::Llama3 | KnownPattern::Qwen2), .. }] = self.steps.as_slice() else { return false };
        let mut chars = piece.chars();
        let lead = chars.next().is_some_and(|c| c == ' ' || is_symbol(c));
        let mut rest = chars.peekable();
        lead && rest.peek().is_some() && rest.all(is_symbol) && is_letter(next)
    }

    /// Whether every text `a + u`, where `a` ends with the character `x` and `u` is any
    /// continuation described by `next`, has a piece boundary between `a` and `u`, with the
    /// pieces before it the same for all such `u` (the same as in `a + next`'s probe text).
    /// Only for pre-tokenizers made of known split patterns; `false` means "not known", never
    /// "no boundary". The reasoning is in `boundary.rs`. It reads text as the splitter sees it,
    /// after the normaliser: with NFC the caller makes sure normalising leaves the text alone.
    pub fn boundary_between(&self, x: char, next: Next) -> bool {
        if self.steps.is_empty() {
            return false;
        }
        self.steps.iter().all(|step| match step {
            Step::Split { known: Some(k), .. } => match next {
                Next::Char(c) => !k.joins(x, c),
                // A whitespace run followed by a space and a non-space: the run ends before the
                // space under all three patterns (the space goes with what follows, or stands
                // alone), whichever the non-space is.
                Next::SpaceThenNonSpace(_) => x.is_whitespace(),
            },
            _ => false,
        })
    }

    /// NFC-normalise valid UTF-8 when the tokenizer does; invalid bytes pass through.
    pub fn normalize<'a>(&self, text: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};
        if !self.nfc {
            return text.into();
        }
        match std::str::from_utf8(text) {
            Ok(s) if is_nfc_quick(s.chars()) != IsNormalized::Yes => {
                let n: String = s.nfc().collect();
                if n.as_bytes() == text {
                    text.into()
                } else {
                    n.into_bytes().into()
                }
            }
            _ => text.into(),
        }
    }

    /// Cut (normalised) internal bytes into pieces. Invalid UTF-8 bytes become pieces of their
    /// own, so every byte string has a definite encoding.
    pub fn pieces(&self, text: &[u8]) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        for (run, valid) in utf8_runs(text) {
            if !valid {
                out.push(run);
                continue;
            }
            let s = std::str::from_utf8(&text[run.clone()]).expect("valid run");
            let mut pieces: Vec<Range<usize>> = std::iter::once(0..s.len()).collect();
            for step in &self.steps {
                let mut next = Vec::with_capacity(pieces.len() * 2);
                for p in pieces {
                    split_piece(step, &s[p.clone()], p.start, &mut next);
                }
                pieces = next;
            }
            out.extend(pieces.into_iter().map(|p| p.start + run.start..p.end + run.start));
        }
        out
    }
}

fn split_piece(step: &Step, s: &str, offset: usize, out: &mut Vec<Range<usize>>) {
    if s.is_empty() {
        return;
    }
    // Delimiter spans inside the piece.
    let matches: Vec<Range<usize>> = match step {
        Step::Split { re, .. } => re.find_all(s),
        Step::Digits { individual } => {
            let mut v: Vec<Range<usize>> = Vec::new();
            for (i, c) in s.char_indices() {
                if c.is_numeric() {
                    let r = i..i + c.len_utf8();
                    match v.last_mut() {
                        Some(last) if !individual && last.end == i => last.end = r.end,
                        _ => v.push(r),
                    }
                }
            }
            v
        }
    };
    let (behavior, invert) = match step {
        Step::Split { behavior, invert, .. } => (*behavior, *invert),
        Step::Digits { .. } => (Behavior::Isolated, false),
    };
    let _ = invert; // Inverted Isolated splitting yields the same pieces as Isolated.
    let mut cuts: Vec<(Range<usize>, bool)> = Vec::new(); // (span, is_match)
    let mut pos = 0;
    for m in matches {
        if m.start > pos {
            cuts.push((pos..m.start, false));
        }
        cuts.push((m.clone(), true));
        pos = m.end;
    }
    if pos < s.len() {
        cuts.push((pos..s.len(), false));
    }
    // Same folds as HF `tokenizers`: a match joins its neighbour only when that neighbour is not
    // itself a match.
    let mut pieces: Vec<Range<usize>> = Vec::new();
    let mut previous_match = false;
    match behavior {
        Behavior::Isolated => pieces.extend(cuts.into_iter().map(|c| c.0)),
        Behavior::MergedWithPrevious => {
            for (r, is_match) in cuts {
                match pieces.last_mut() {
                    Some(last) if is_match && !previous_match => last.end = r.end,
                    _ => pieces.push(r),
                }
                previous_match = is_match;
            }
        }
        Behavior::MergedWithNext => {
            for (r, is_match) in cuts.into_iter().rev() {
                match pieces.last_mut() {
                    Some(next) if is_match && !previous_match => next.start = r.start,
                    _ => pieces.push(r),
                }
                previous_match = is_match;
            }
            pieces.reverse();
        }
        Behavior::Contiguous => {
            for (r, is_match) in cuts {
                match pieces.last_mut() {
                    Some(last) if is_match && previous_match => last.end = r.end,
                    _ => pieces.push(r),
                }
                previous_match = is_match;
            }
        }
    }
    out.extend(pieces.into_iter().map(|p| p.start + offset..p.end + offset));
}

/// Maximal runs of valid UTF-8 and single invalid bytes, in order.
pub fn utf8_runs(text: &[u8]) -> Vec<(Range<usize>, bool)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        match std::str::from_utf8(&text[pos..]) {
            Ok(_) => {
                out.push((pos..text.len(), true));
                break;
            }
            Err(e) => {
                let good = e.valid_up_to();
                if good > 0 {
                    out.push((pos..pos + good, true));
                }
                let bad = e.error_len().unwrap_or(text.len() - pos - good);
                for k in 0..bad {
                    out.push((pos + good + k..pos + good + k + 1, false));
                }
                pos += good + bad;
            }
        }
    }
    out
}

/// The first character of `bytes` if it is complete, valid UTF-8.
pub(crate) fn first_char(bytes: &[u8]) -> Option<char> {
    let lead = *bytes.first()?;
    let len = if lead.is_ascii() { 1 } else { char_len(lead)? };
    std::str::from_utf8(bytes.get(..len)?).ok()?.chars().next()
}

/// Length of the UTF-8 character a lead byte starts (`None` for a byte that starts none).
pub(crate) fn char_len(lead: u8) -> Option<usize> {
    match lead {
        0xC2..=0xDF => Some(2),
        0xE0..=0xEF => Some(3),
        0xF0..=0xF4 => Some(4),
        _ => None,
    }
}

/// The bytes allowed at position `i` (1..=3) of a character led by `lead`, as in the Unicode
/// standard's table of well-formed UTF-8 (the one `str::from_utf8` follows): the second byte is
/// narrowed after E0, ED, F0 and F4 (no overlong forms, surrogates, or code points past
/// U+10FFFF); later bytes are any continuation byte.
fn allowed_at(lead: u8, i: usize) -> std::ops::RangeInclusive<u8> {
    match (lead, i) {
        (0xE0, 1) => 0xA0..=0xBF,
        (0xED, 1) => 0x80..=0x9F,
        (0xF0, 1) => 0x90..=0xBF,
        (0xF4, 1) => 0x80..=0x8F,
        _ => 0x80..=0xBF,
    }
}

/// If `text` ends inside a UTF-8 character that could still be completed, the number of bytes of
/// that partial character and how many are missing.
pub fn incomplete_tail(text: &[u8]) -> Option<(usize, usize)> {
    let n = text.len();
    for back in 1..=3.min(n) {
        let b = text[n - back];
        if b & 0xC0 == 0x80 {
            continue; // continuation byte; keep looking for the lead
        }
        let need = char_len(b)?;
        if back < need && valid_partial(&text[n - back..]) {
            return Some((back, need - back));
        }
        return None;
    }
    None
}

/// Whether `p` (a lead byte and fewer continuation bytes than its character needs) is the start
/// of some well-formed character.
fn valid_partial(p: &[u8]) -> bool {
    let Some((&lead, rest)) = p.split_first() else { return false };
    char_len(lead).is_some_and(|need| p.len() < need) && rest.iter().enumerate().all(|(i, b)| allowed_at(lead, i + 1).contains(b))
}

/// Every way to finish the partial character `p` with `missing` bytes, as valid UTF-8, in
/// increasing byte order. Generated from the allowed ranges rather than filtered from all 64^k
/// continuation strings: a 4-byte lead such as F0 has 48 x 64 x 64 completions, and its first
/// well-formed one came after 65 536 rejected candidates, each a small allocation (an `is_valid`
/// ending in F0 took tens of milliseconds).
pub fn completions(p: &[u8], missing: usize) -> impl Iterator<Item = Vec<u8>> + '_ {
    let fits = missing > 0 && valid_partial(p) && char_len(p[0]) == Some(p.len() + missing);
    let ranges: Vec<(u8, usize)> = if fits {
        (p.len()..p.len() + missing)
            .map(|i| {
                let r = allowed_at(p[0], i);
                (*r.start(), (*r.end() - *r.start()) as usize + 1)
            })
            .collect()
    } else {
        vec![]
    };
    let total: usize = if fits { ranges.iter().map(|r| r.1).product() } else { 0 };
    (0..total).map(move |mut k| {
        let mut tail = vec![0u8; missing];
        for j in (0..missing).rev() {
            let (lo, width) = ranges[j];
            tail[j] = lo + (k % width) as u8;
            k /= width;
        }
        tail
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn gpt2() -> PreTokenizer {
        PreTokenizer::from_json(&json!({"pre_tokenizer": {"type": "ByteLevel", "use_regex": true}})).unwrap()
    }

    fn cut<'a>(p: &PreTokenizer, s: &'a str) -> Vec<&'a str> {
        p.pieces(s.as_bytes()).into_iter().map(|r| &s[r]).collect()
    }

    #[test]
    fn gpt2_lookahead() {
        let p = gpt2();
        assert_eq!(cut(&p, "a\n\nb"), vec!["a", "\n", "\n", "b"]);
        assert_eq!(cut(&p, "a\n\n"), vec!["a", "\n\n"]);
        assert_eq!(cut(&p, "x  y"), vec!["x", " ", " y"]);
        assert_eq!(cut(&p, "don't stop"), vec!["don", "'t", " stop"]);
    }

    #[test]
    fn digits_individual() {
        let p = PreTokenizer::from_json(&json!({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, {"type": "ByteLevel", "use_regex": true}]}})).unwrap();
        assert_eq!(cut(&p, "x=123"), vec!["x", "=", "1", "2", "3"]);
    }

    #[test]
    fn incomplete_characters() {
        assert_eq!(incomplete_tail("é".as_bytes()), None);
        assert_eq!(incomplete_tail(&"é".as_bytes()[..1]), Some((1, 1)));
        assert_eq!(incomplete_tail(&"😀".as_bytes()[..2]), Some((2, 2)));
        assert_eq!(incomplete_tail(b"a\xff"), None);
        assert_eq!(completions(&[0xC3], 1).count(), 64);
        assert_eq!(completions(&[0xE0], 2).count(), 32 * 64);
    }

    /// The completions by their definition: every continuation string that makes `p` valid.
    fn completions_by_filter(p: &[u8], missing: usize) -> Vec<Vec<u8>> {
        (0..64usize.pow(missing as u32))
            .map(|mut k| {
                let mut tail = vec![0u8; missing];
                for j in (0..missing).rev() {
                    tail[j] = 0x80 | (k % 64) as u8;
                    k /= 64;
                }
                tail
            })
            .filter(|tail| std::str::from_utf8(&[p, tail.as_slice()].concat()).is_ok())
            .collect()
    }

    #[test]
    fn completions_are_exactly_the_well_formed_ones() {
        // Every lead byte with every possible number of missing bytes, and every lead followed
        // by every second byte (well-formed or not), against the definition, order included.
        for lead in 0x80..=0xFFu8 {
            // (Three missing bytes only where a character can need them, and a few others.)
            let most = if lead >= 0xF0 || [0xC3, 0xE0, 0xEF].contains(&lead) { 3 } else { 2 };
            for missing in 1..=most {
                assert_eq!(completions(&[lead], missing).collect::<Vec<_>>(), completions_by_filter(&[lead], missing), "{lead:02x} + {missing}");
            }
            for second in 0x00..=0xFFu8 {
                let p = [lead, second];
                assert_eq!(completions(&p, 1).collect::<Vec<_>>(), completions_by_filter(&p, 1), "{p:02x?}");
                // (Two missing bytes: the second bytes at the edges of the allowed ranges.)
                if lead >= 0xF0 && [0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0].contains(&second) {
                    assert_eq!(completions(&p, 2).collect::<Vec<_>>(), completions_by_filter(&p, 2), "{p:02x?}");
                }
            }
        }
        for p in [[0xF0, 0x9F, 0x98], [0xF4, 0x8F, 0xBF], [0xF4, 0x90, 0x80], [0xF0, 0x8F, 0xBF]] {
            assert_eq!(completions(&p, 1).collect::<Vec<_>>(), completions_by_filter(&p, 1), "{p:02x?}");
        }
    }

    #[test]
    fn incomplete_tail_by_definition() {
        // A text ends inside a character when its last 1-3 bytes are a lead byte and
        // continuation bytes that some completion (by the definition above) makes well-formed.
        // Checked after a letter for every 1- and 2-byte ending, and every 3-byte ending of a
        // 4-byte lead (memoised: the definition scans up to 64^3 strings).
        let mut memo: std::collections::HashMap<Vec<u8>, bool> = Default::default();
        let mut by_definition = |t: &[u8]| -> Option<(usize, usize)> {
            (1..=3.min(t.len())).find_map(|back| {
                let p = &t[t.len() - back..];
                let need = match p[0] {
                    0xC0..=0xDF => 2,
                    0xE0..=0xEF => 3,
                    0xF0..=0xFF => 4,
                    _ => return None,
                };
                if back >= need || p[1..].iter().any(|b| b & 0xC0 != 0x80) {
                    return None;
                }
                let completes = *memo.entry(p.to_vec()).or_insert_with(|| !completions_by_filter(p, need - back).is_empty());
                completes.then_some((back, need - back))
            })
        };
        for a in 0..=0xFFu8 {
            assert_eq!(incomplete_tail(&[b'x', a]), by_definition(&[b'x', a]), "{a:02x}");
            for b in 0..=0xFFu8 {
                assert_eq!(incomplete_tail(&[b'x', a, b]), by_definition(&[b'x', a, b]), "{a:02x} {b:02x}");
            }
        }
        for lead in 0xF0..=0xF7u8 {
            for b in 0x80..=0xBFu8 {
                for c in 0x80..=0xBFu8 {
                    let t = [lead, b, c];
                    assert_eq!(incomplete_tail(&t), by_definition(&t), "{t:02x?}");
                }
            }
        }
    }

    /// Llama-3's and Qwen2's patterns have the `\s*[\r\n]+` alternative the hand-made
    /// look-ahead must yield to.
    #[test]
    fn fast_lookahead_is_chosen_for_the_hf_patterns() {
        for p in [GPT2_PATTERN, LLAMA3_PATTERN, QWEN2_PATTERN] {
            assert!(matches!(Matcher::new(p).unwrap(), Matcher::WhitespaceLookahead { .. }), "{p}");
        }
        // Another look-around keeps the backtracking engine.
        assert!(matches!(Matcher::new(r"\s+(?!\S)|\s+|a(?=b)").unwrap(), Matcher::Fancy(_)));
    }

    fn text_with_whitespace() -> impl Strategy<Value = String> {
        let chars = vec![' ', ' ', '\n', '\r', '\t', 'a', 'B', '1', '2', '\'', 's', '.', '中', '\u{1680}', '\u{3000}', '\u{a0}', '\u{2028}', 'é'];
        proptest::collection::vec(prop_oneof![6 => proptest::sample::select(chars), 1 => any::<char>()], 0..24).prop_map(|c| c.into_iter().collect())
    }

    proptest! {
        /// The hand-made `\s+(?!\S)` (regex crate + a fix-up) cuts exactly where fancy-regex's
        /// backtracking engine does, on the two pattern families that use it.
        #[test]
        fn fast_lookahead_matches_fancy_regex(s in text_with_whitespace()) {
            static MATCHERS: std::sync::OnceLock<Vec<(Matcher, Matcher)>> = std::sync::OnceLock::new();
            let matchers = MATCHERS.get_or_init(|| [GPT2_PATTERN, LLAMA3_PATTERN].iter().map(|p| (Matcher::new(p).unwrap(), Matcher::Fancy(compile(p).unwrap()))).collect());
            for (fast, slow) in matchers {
                prop_assert_eq!(fast.find_all(&s), slow.find_all(&s), "{:?}", s);
            }
        }
    }

    /// The three pre-tokenizers `boundary_between` knows.
    fn known_pretokenizers() -> Vec<PreTokenizer> {
        let split = |p: &str| {
            PreTokenizer::from_json(&json!({"pre_tokenizer": {"type": "Split", "pattern": {"Regex": p}, "behavior": "Isolated", "invert": false}})).unwrap()
        };
        vec![gpt2(), split(LLAMA3_PATTERN), split(QWEN2_PATTERN)]
    }

    /// Pieces of `text` that end at or before `cut`, if `cut` is a piece boundary.
    fn pieces_before(p: &PreTokenizer, text: &str, cut: usize) -> Option<Vec<Range<usize>>> {
        let all = p.pieces(text.as_bytes());
        all.iter().any(|r| r.end == cut).then(|| all.into_iter().filter(|r| r.end <= cut).collect())
    }

    #[test]
    fn boundary_rules_fire_where_expected() {
        for p in known_pretokenizers() {
            assert!(p.boundary_between('o', Next::Char(' ')), "a letter before a space");
            assert!(p.boundary_between('\n', Next::SpaceThenNonSpace(b'x')), "a run before a space and a letter");
            assert!(!p.boundary_between(' ', Next::Char(' ')), "inside a whitespace run");
            assert!(!p.boundary_between('a', Next::Char('b')), "inside a word");
        }
        // The rules read normalised text; `canonical/boundary.rs` makes sure NFC leaves the text
        // on both sides of the cut alone.
        let nfc = PreTokenizer::from_json(&json!({"normalizer": {"type": "NFC"}, "pre_tokenizer": {"type": "ByteLevel", "use_regex": true}})).unwrap();
        assert!(nfc.boundary_between('o', Next::Char(' ')), "the same pieces after a normaliser");
        assert!(nfc.leaves_alone("caf\u{e9} a".as_bytes()) && !nfc.leaves_alone("cafe\u{301}".as_bytes()));
        assert!(gpt2().leaves_alone("cafe\u{301}".as_bytes()), "no normaliser, nothing changes");
    }

    fn short_text() -> impl Strategy<Value = String> {
        let chars = vec![' ', ' ', ' ', '\n', '\r', '\t', 'a', 'B', 's', 't', 'l', 'e', '1', '2', '\'', '.', '(', '中', '\u{3000}', '\u{a0}', '\u{301}', 'é'];
        proptest::collection::vec(proptest::sample::select(chars), 1..7).prop_map(|c| c.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Where `boundary_between` says the pre-tokenizer cuts whatever follows, it does: every
        /// continuation has a piece boundary at the end of the text, and the same pieces before
        /// it as the probe text the shortcut encodes (canonical/boundary.rs).
        #[test]
        fn forced_boundaries_hold_for_every_continuation(a in short_text(), u in short_text()) {
            let x = a.chars().next_back().unwrap();
            let c = u.chars().next().unwrap();
            let text = format!("{a}{u}");
            for p in known_pretokenizers() {
                if p.boundary_between(x, Next::Char(c)) {
                    let probe = format!("{a}{c}");
                    prop_assert_eq!(pieces_before(&p, &text, a.len()), pieces_before(&p, &probe, a.len()), "{:?} | {:?}", a, u);
                    prop_assert!(pieces_before(&p, &text, a.len()).is_some());
                }
                let y = u.chars().nth(1);
                if let Some(y) = y.filter(|y| c == ' ' && !y.is_whitespace()) {
                    let lead = y.to_string().as_bytes()[0];
                    if p.boundary_between(x, Next::SpaceThenNonSpace(lead)) {
                        let probe = format!("{a} a");
                        prop_assert_eq!(pieces_before(&p, &text, a.len()), pieces_before(&p, &probe, a.len()), "{:?} | {:?}", a, u);
                        prop_assert!(pieces_before(&p, &text, a.len()).is_some());
                    }
                }
            }
        }
    }

    #[test]
    fn invalid_bytes_are_own_pieces() {
        let p = gpt2();
        let text = b"ab\xffcd";
        let pieces: Vec<_> = p.pieces(text).into_iter().map(|r| text[r].to_vec()).collect();
        assert_eq!(pieces, vec![b"ab".to_vec(), vec![0xff], b"cd".to_vec()]);
    }
}

//! Shared test material: two toy tokenizers written as `tokenizer.json` text, a deterministic
//! synthetic token LM, an independent validity oracle, a brute-force evaluation of the
//! Byte-Token Representation Lemma, and drivers that serve an engine's requests.
//!
//! Included by the integration tests (`tests/core/main.rs`), the `fuzz_engine` example and the
//! cargo-fuzz target (`#[path = ...]`), so every user gets the same toys.
#![allow(dead_code)] // each includer uses a different part

use bytecover_core::byte_level::encode_bytes;
use bytecover_core::engine::{CoverEngine, EngineConfig, Pick};
use bytecover_core::{Canonicalizer, TokenId, TokenTrie};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// One toy tokenizer, ready for an engine.
#[derive(Clone)]
pub struct Toy {
    pub name: &'static str,
    pub canon: Arc<Canonicalizer>,
    pub trie: Arc<TokenTrie>,
    pub eos: Vec<TokenId>,
}

impl Toy {
    fn from_json(name: &'static str, json: &str, padding: usize, eos: &str) -> Self {
        let root: Value = serde_json::from_str(json).unwrap();
        let n_ids = root["model"]["vocab"].as_object().unwrap().len() + root["added_tokens"].as_array().map_or(0, |a| a.len());
        // Rows wider than the vocabulary (padded logits) must be accepted: real models have them.
        let canon = Arc::new(Canonicalizer::from_json(json, Some(n_ids + padding)).unwrap());
        let trie = Arc::new(TokenTrie::new(canon.vocab()));
        let eos = vec![id_of(&root, eos)];
        Self { name, canon, trie, eos }
    }

    pub fn id(&self, token_string: &str) -> TokenId {
        (0..self.canon.vocab().n_ids() as TokenId)
            .find(|&i| self.canon.vocab().token_string(i) == Some(token_string))
            .unwrap_or_else(|| panic!("{token_string:?} not in {}", self.name))
    }

    /// Token ids by their bytes (ordinary tokens only).
    pub fn by_bytes(&self, bytes: &[u8]) -> TokenId {
        self.canon
            .vocab()
            .text_tokens()
            .find(|(_, b)| *b == bytes)
            .map(|(i, _)| i)
            .unwrap_or_else(|| panic!("no token {:?} in {}", String::from_utf8_lossy(bytes), self.name))
    }

    pub fn ids(&self, pieces: &[&str]) -> Vec<TokenId> {
        pieces.iter().map(|p| self.by_bytes(p.as_bytes())).collect()
    }

    pub fn engine(&self, prompt: &[u8], cfg: EngineConfig) -> bytecover_core::Result<CoverEngine> {
        CoverEngine::new(self.canon.clone(), self.trie.clone(), prompt, self.eos.clone(), cfg)
    }

    /// Tokens that are a lone lead byte of a 3- or 4-byte character (see `SyntheticLm::for_toy`).
    pub fn long_character_leads(&self) -> Vec<TokenId> {
        self.canon.vocab().text_tokens().filter(|(_, b)| b.len() == 1 && (0xE0..=0xF4).contains(&b[0])).map(|(i, _)| i).collect()
    }

    pub fn start_prefix(&self) -> &[u8] {
        self.canon.vocab().start_prefix()
    }
}

fn id_of(root: &Value, s: &str) -> TokenId {
    if let Some(id) = root["model"]["vocab"][s].as_u64() {
        return id as TokenId;
    }
    root["added_tokens"].as_array().unwrap().iter().find(|a| a["content"] == s).unwrap()["id"].as_u64().unwrap() as TokenId
}

/// Merges of the byte-level toy, in rank order, as (left bytes, right bytes). They give words
/// and prefixes of words ("a", "ab", "abc", " a", " ab"), whitespace runs ("  ", "   ", "\n\n",
/// " \n"), a contraction, a two-byte character and tokens no canonical encoding can contain
/// ("a\n" spans two pre-tokenizer pieces), so that validity has something to decide.
pub const GPT2_MERGES: &[(&[u8], &[u8])] = &[
    (b"a", b"b"),
    (b" ", b"a"),
    (b" a", b"b"),
    (b"ab", b"c"),
    (b"\n", b"\n"),
    (b" ", b" "),
    (b"b", b"a"),
    (b"a", b"a"),
    (b"1", b"2"),
    (b"'", b"s"),
    (b"\xC3", b"\xA9"), // "é", from its two byte tokens
    (b" ", b"\xC3\xA9"),
    (b"c", b"a"),
    (b"ba", b"b"),
    (b"  ", b" "),
    (b"a", b"\n"),
    (b" ", b"12"),
    (b" ", b"\n"),
];

/// GPT-2-style byte-level BPE: the 256 byte tokens (id = byte value), one token per merge, and
/// `<|endoftext|>` as a special added token. The `ByteLevel` pre-tokenizer brings GPT-2's regex
/// with its `\s+(?!\S)` look-ahead.
pub fn gpt2_json() -> String {
    let mut vocab = Map::new();
    for b in 0..=255u8 {
        vocab.insert(encode_bytes(&[b]), json!(b as u32));
    }
    let mut merges = Vec::new();
    for (l, r) in GPT2_MERGES {
        let (ls, rs) = (encode_bytes(l), encode_bytes(r));
        merges.push(json!(format!("{ls} {rs}")));
        let merged = format!("{ls}{rs}");
        let next = vocab.len() as u32;
        vocab.entry(merged).or_insert(json!(next));
    }
    let eos_id = vocab.len();
    json!({
        "version": "1.0",
        "added_tokens": [{"id": eos_id, "content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "vocab": vocab, "merges": merges}
    })
    .to_string()
}

/// Merges of the SentencePiece-style toy (strings in the `▁` alphabet), in rank order. "a▁"
/// competes with "▁a", so which one fires depends on the neighbours.
pub const SPM_MERGES: &[(&str, &str)] = &[
    ("▁", "a"),
    ("a", "b"),
    ("▁a", "b"),
    ("▁", "▁"),
    ("b", "a"),
    ("c", "a"),
    ("ab", "c"),
    ("a", "a"),
    ("▁", "b"),
    ("1", "1"),
    ("▁▁", "▁"),
    ("▁", "é"),
    ("a", "▁"),
    ("s", "."),
];

/// Llama-2-style BPE: `<unk> <s> </s>`, the 256 `<0xNN>` byte-fallback pieces, a few characters
/// and the merged pieces; a `Prepend("▁")` + `Replace(" ", "▁")` normalizer (the dummy prefix)
/// and no pre-tokenizer, so a whole text is one piece. Characters outside the vocabulary ("z",
/// "中", newlines) are spelled with byte-fallback pieces.
pub fn spm_json() -> String {
    let mut vocab = Map::new();
    for s in ["<unk>", "<s>", "</s>"] {
        let next = vocab.len() as u32;
        vocab.insert(s.into(), json!(next));
    }
    for b in 0..=255u32 {
        let next = vocab.len() as u32;
        vocab.insert(format!("<0x{b:02X}>"), json!(next));
    }
    for s in ["▁", "a", "b", "c", "s", "1", ".", "é"] {
        let next = vocab.len() as u32;
        vocab.insert(s.into(), json!(next));
    }
    let mut merges = Vec::new();
    for (l, r) in SPM_MERGES {
        merges.push(json!([l, r]));
        let next = vocab.len() as u32;
        vocab.entry(format!("{l}{r}")).or_insert(json!(next));
    }
    let special =
        |id: u32, s: &str| json!({"id": id, "content": s, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true});
    json!({
        "version": "1.0",
        "added_tokens": [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}
        ]},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false, "vocab": vocab, "merges": merges}
    })
    .to_string()
}

pub fn gpt2() -> Toy {
    Toy::from_json("gpt2", &gpt2_json(), 3, "<|endoftext|>")
}

pub fn spm() -> Toy {
    // The added tokens are also in model.vocab here (as in Llama-2's file): count them once.
    let json = spm_json();
    let root: Value = serde_json::from_str(&json).unwrap();
    let n_ids = root["model"]["vocab"].as_object().unwrap().len();
    let canon = Arc::new(Canonicalizer::from_json(&json, Some(n_ids + 2)).unwrap());
    let trie = Arc::new(TokenTrie::new(canon.vocab()));
    Toy { name: "spm", canon, trie, eos: vec![id_of(&root, "</s>")] }
}

pub fn toys() -> Vec<Toy> {
    vec![gpt2(), spm()]
}

/// Characters the toys tell apart (and a few they do not know), for texts and witnesses.
pub const ALPHABET: &[&str] = &["a", "b", "c", " ", "\n", "1", "2", "'", "s", ".", "é", "z"];

// ---------------------------------------------------------------------------------------------
// Synthetic token LM

fn mix(mut z: u64) -> u64 {
    // splitmix64's finaliser: every input bit affects every output bit.
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit(z: u64) -> f64 {
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// A deterministic token LM: the row after a token prefix is a log-softmax of logits drawn from
/// a hash of (seed, prefix, id). `peak` adds a bonus to a few ids (chosen by the same hash) so
/// that rows are confident like a real model's, which is where the lazy engine saves work;
/// `zeros` makes that fraction of ids impossible (probability exactly 0).
/// `banned` ids always get probability 0.
#[derive(Clone, Debug)]
pub struct SyntheticLm {
    pub n_logits: usize,
    pub seed: u64,
    pub spread: f64,
    pub peak: f64,
    pub zeros: f64,
    pub banned: Vec<TokenId>,
}

impl SyntheticLm {
    pub fn new(n_logits: usize, seed: u64) -> Self {
        Self { n_logits, seed, spread: 3.0, peak: 0.0, zeros: 0.0, banned: vec![] }
    }

    /// The LM most tests use: it never starts a 3- or 4-byte character with a lone lead-byte
    /// token. Deciding that such a token is *invalid* (after a whitespace run, say) makes the
    /// engine try every completion of the character (4096 or 196 608 of them, four encodings
    /// each: up to half a second per token on the toys, see docs/testing-rust.md), and a mask
    /// skips tokens of probability 0. `multi_byte_lead_tokens` in engine_oracle.rs covers them
    /// with a plain `new` LM.
    pub fn for_toy(toy: &Toy, seed: u64) -> Self {
        Self { banned: toy.long_character_leads(), ..Self::new(toy.canon.vocab().n_logits(), seed) }
    }

    /// Confident rows like a real model's (a few ids take most of the mass).
    pub fn peaked(toy: &Toy, seed: u64) -> Self {
        Self { spread: 2.0, peak: 7.0, ..Self::for_toy(toy, seed) }
    }

    pub fn row(&self, prefix: &[TokenId]) -> Vec<f64> {
        let mut h = mix(self.seed);
        for &t in prefix {
            h = mix(h ^ (t as u64 + 1).wrapping_mul(0xD6E8_FEB8_6659_FD93));
        }
        let logits: Vec<f64> = (0..self.n_logits)
            .map(|i| {
                let z = mix(h ^ (i as u64).wrapping_mul(0xA076_1D64_78BD_642F));
                if self.zeros > 0.0 && unit(mix(z)) < self.zeros {
                    return f64::NEG_INFINITY;
                }
                if self.banned.contains(&(i as TokenId)) {
                    return f64::NEG_INFINITY;
                }
                let bonus = if z.is_multiple_of(53) { self.peak } else { 0.0 };
                self.spread * (2.0 * unit(z) - 1.0) + bonus
            })
            .collect();
        let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z = m + logits.iter().map(|l| (l - m).exp()).sum::<f64>().ln();
        logits.iter().map(|l| l - z).collect()
    }

    /// log p(tokens): the sum of the conditionals along the sequence.
    pub fn logp(&self, tokens: &[TokenId]) -> f64 {
        (0..tokens.len()).map(|k| self.row(&tokens[..k])[tokens[k] as usize]).sum()
    }
}

/// A memo of rows: the brute force asks for the same prefixes many times.
pub struct RowCache<'a> {
    pub lm: &'a SyntheticLm,
    rows: HashMap<Vec<TokenId>, Vec<f64>>,
}

impl<'a> RowCache<'a> {
    pub fn new(lm: &'a SyntheticLm) -> Self {
        Self { lm, rows: HashMap::new() }
    }
    pub fn row(&mut self, prefix: &[TokenId]) -> &[f64] {
        if !self.rows.contains_key(prefix) {
            let r = self.lm.row(prefix);
            self.rows.insert(prefix.to_vec(), r);
        }
        &self.rows[prefix]
    }
    pub fn logp(&mut self, tokens: &[TokenId]) -> f64 {
        (0..tokens.len()).map(|k| self.row(&tokens[..k])[tokens[k] as usize]).sum()
    }
}

// ---------------------------------------------------------------------------------------------
// Drivers

/// Serve every request of an engine: scores (log p of the token prefix) and rows.
pub fn serve(e: &mut CoverEngine, lm: &SyntheticLm) {
    let r = e.requests();
    for (node, tokens) in &r.scores {
        e.provide_score(*node, lm.logp(tokens)).unwrap();
    }
    for (node, tokens) in &r.rows {
        e.provide_row(*node, &lm.row(tokens)[..]).unwrap();
    }
}

/// Serve only the scores (a lazy engine then asks for the rows it needs through `pending`).
pub fn serve_scores(e: &mut CoverEngine, lm: &SyntheticLm) {
    for (node, tokens) in e.requests().scores {
        e.provide_score(node, lm.logp(&tokens)).unwrap();
    }
}

/// `decide` until it answers, providing the rows it asks for.
pub fn decide(e: &mut CoverEngine, lm: &SyntheticLm, pick: Pick) -> bytecover_core::Result<u16> {
    for _ in 0..10_000 {
        if let Some(b) = e.decide(pick)? {
            return Ok(b);
        }
        let pending = e.pending();
        assert!(!pending.is_empty(), "decide returned None without pending rows");
        for (node, tokens) in pending {
            e.provide_row(node, &lm.row(&tokens)[..])?;
        }
    }
    panic!("decide did not settle after 10000 rounds");
}

/// The slot the inverse CDF of `logprobs` raised to 1/temperature picks at `u`, and how far
/// (relative to the total) `u` is from the nearest boundary, so that a caller can skip draws
/// that floating-point rounding could send either way.
pub fn inverse_cdf(logprobs: &[f64], u: f64, temperature: f64) -> (usize, f64) {
    let m = logprobs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = logprobs.iter().map(|l| ((l - m) / temperature).exp()).collect();
    let z: f64 = w.iter().sum();
    let target = u * z;
    let mut below = 0.0;
    for (c, &wc) in w.iter().enumerate() {
        if below + wc > target {
            let margin = (target - below).min(below + wc - target) / z;
            return (c, margin);
        }
        below += wc;
    }
    (w.len() - 1, 0.0)
}

pub fn argmax(v: &[f64]) -> usize {
    (0..v.len()).fold(0, |best, c| if v[c] > v[best] { c } else { best })
}

// ---------------------------------------------------------------------------------------------
// Independent validity oracle

/// Whether `tokens` is valid, decided from the definition: some user text starting with the
/// tokens' bytes encodes (`encode_text`, the HF-equivalent entry point) to a sequence starting
/// with them. Texts are tried up to two characters past the tokens' bytes, over `ALPHABET`
/// (wider than the engine's witness list), after every completion of a character the bytes end
/// inside. Only valid UTF-8 texts count (a tokenizer takes `str`).
pub struct ValidityOracle<'a> {
    toy: &'a Toy,
    memo: HashMap<Vec<TokenId>, bool>,
    continuations: Vec<Vec<u8>>,
}

impl<'a> ValidityOracle<'a> {
    pub fn new(toy: &'a Toy) -> Self {
        // The empty text, then every character, then every pair.
        let mut continuations: Vec<Vec<u8>> = vec![vec![]];
        continuations.extend(ALPHABET.iter().map(|a| a.as_bytes().to_vec()));
        for a in ALPHABET {
            continuations.extend(ALPHABET.iter().map(|b| [a.as_bytes(), b.as_bytes()].concat()));
        }
        Self { toy, memo: HashMap::new(), continuations }
    }

    pub fn is_valid(&mut self, tokens: &[TokenId]) -> bool {
        if let Some(&v) = self.memo.get(tokens) {
            return v;
        }
        let v = self.compute(tokens);
        self.memo.insert(tokens.to_vec(), v);
        v
    }

    fn compute(&mut self, tokens: &[TokenId]) -> bool {
        if tokens.is_empty() {
            return true;
        }
        // Validity is prefix-closed: a valid sequence's prefixes are valid.
        if !self.is_valid(&tokens[..tokens.len() - 1]) {
            return false;
        }
        let canon = &self.toy.canon;
        let Ok(bytes) = canon.decode(tokens) else { return false };
        let sp = canon.vocab().start_prefix();
        let Some(user) = bytes.strip_prefix(sp) else { return false };
        let starts =
            |text: &[u8]| std::str::from_utf8(text).is_ok() && canon.encode_text(text).is_ok_and(|e| e.len() >= tokens.len() && e[..tokens.len()] == *tokens);
        let mut buf = user.to_vec();
        for completion in utf8_completions(user) {
            // After a completed character one more character is enough for the toys; the
            // two-character texts are tried where no character is open.
            let limit = if completion.is_empty() { self.continuations.len() } else { 1 + ALPHABET.len() };
            for w in &self.continuations[..limit] {
                buf.truncate(user.len());
                buf.extend_from_slice(&completion);
                buf.extend_from_slice(w);
                if starts(&buf) {
                    return true;
                }
            }
        }
        false
    }
}

/// The ways to finish a character `text` ends inside (just `[]` when it ends on a boundary): one
/// completion per kind of character the toys treat differently. Both toys see a character only
/// through its regex classes (letter, number, whitespace) and whether it is "é" (the one
/// non-ASCII character with merges or a piece of its own), so one representative per class
/// decides validity as well as every completion would (tens of thousands of them for a 4-byte
/// character).
pub fn utf8_completions(text: &[u8]) -> Vec<Vec<u8>> {
    let n = text.len();
    for back in 1..=3.min(n) {
        let b = text[n - back];
        if b & 0xC0 == 0x80 {
            continue;
        }
        let need = match b {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return vec![vec![]],
        };
        if back >= need {
            return vec![vec![]];
        }
        return representative_completions(&text[n - back..], need - back);
    }
    vec![vec![]]
}

fn representative_completions(partial: &[u8], missing: usize) -> Vec<Vec<u8>> {
    thread_local! {
        static MEMO: std::cell::RefCell<HashMap<Vec<u8>, Vec<Vec<u8>>>> = Default::default();
    }
    if let Some(hit) = MEMO.with(|m| m.borrow().get(partial).cloned()) {
        return hit;
    }
    let classes = [regex::Regex::new(r"^\p{L}$").unwrap(), regex::Regex::new(r"^\p{N}$").unwrap(), regex::Regex::new(r"^\s$").unwrap()];
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for k in 0..64usize.pow(missing as u32) {
        let tail: Vec<u8> = (0..missing).rev().map(|j| 0x80 | ((k >> (6 * j)) & 63) as u8).collect();
        let full = [partial, tail.as_slice()].concat();
        let Ok(s) = std::str::from_utf8(&full) else { continue };
        let kind = (classes.iter().map(|re| re.is_match(s)).collect::<Vec<bool>>(), s == "é");
        if seen.insert(kind) {
            out.push(tail);
        }
    }
    MEMO.with(|m| m.borrow_mut().insert(partial.to_vec(), out.clone()));
    out
}

// ---------------------------------------------------------------------------------------------
// Brute force of the Byte-Token Representation Lemma

/// Everything the Lemma says about one internal byte prefix x, computed from the definitions.
#[derive(Debug, Clone)]
pub struct BruteForce {
    /// Every cover of x with p(cover).
    pub covers: Vec<(Vec<TokenId>, f64)>,
    /// P(x...) = Σ p(cover) (1 for the bare start prefix: every text starts with it).
    pub prefix: f64,
    /// P(x b ...) for every byte, then p(encode(x)) p(EOS | encode(x)).
    pub numerators: Vec<f64>,
}

/// Enumerate every token sequence that is consistent with x (each token agrees with x wherever
/// the two overlap) and whose prefixes all spell prefixes of x, keep the valid ones (oracle),
/// and sum: covers of x give P(x...), sequences through x + b give P(x b ...). Nothing here uses
/// the trie, the groups or the anchors of the engine.
pub fn brute_force(toy: &Toy, oracle: &mut ValidityOracle, rows: &mut RowCache, x: &[u8]) -> BruteForce {
    let vocab = toy.canon.vocab();
    let tokens: Vec<(TokenId, Vec<u8>)> = vocab.text_tokens().map(|(i, b)| (i, b.to_vec())).collect();
    let n = x.len();
    let mut covers = Vec::new();
    let mut numerators = vec![0.0; 257];
    // Depth-first over sequences T spelling x[..i].
    let mut stack: Vec<(Vec<TokenId>, usize)> = vec![(vec![], 0)];
    while let Some((t, i)) = stack.pop() {
        let logp_t = rows.logp(&t);
        let row = rows.row(&t).to_vec();
        for (v, b) in &tokens {
            let mut tv = t.clone();
            tv.push(*v);
            if i < n {
                let overlap = b.len().min(n - i);
                if b[..overlap] != x[i..i + overlap] {
                    continue;
                }
                if !oracle.is_valid(&tv) {
                    continue;
                }
                let p = (logp_t + row[*v as usize]).exp();
                if b.len() >= n - i {
                    // The last token starts inside x and reaches its end: a cover.
                    covers.push((tv.clone(), p));
                    if b.len() > n - i {
                        numerators[b[n - i] as usize] += p;
                    }
                }
                if b.len() <= n - i {
                    stack.push((tv, i + b.len()));
                }
            } else if oracle.is_valid(&tv) {
                // T spells x exactly: the next token's first byte is the next byte.
                numerators[b[0] as usize] += (logp_t + row[*v as usize]).exp();
            }
        }
    }
    // End of text: the canonical encoding of x (the empty sequence for the bare start prefix).
    let sp = vocab.start_prefix();
    let user = x.strip_prefix(sp).expect("internal bytes start with the start prefix");
    if std::str::from_utf8(user).is_ok() {
        let enc = toy.canon.encode_text(user).unwrap();
        let logp = rows.logp(&enc);
        let row = rows.row(&enc);
        numerators[256] = toy.eos.iter().map(|&e| (logp + row[e as usize]).exp()).sum();
    }
    let prefix = if user.is_empty() { 1.0 } else { covers.iter().map(|c| c.1).sum() };
    BruteForce { covers, prefix, numerators }
}

/// `|a - b| <= tol * max(|a|, |b|)`, with both zero accepted.
pub fn close(a: f64, b: f64, tol: f64) -> bool {
    a == b || (a - b).abs() <= tol * a.abs().max(b.abs())
}

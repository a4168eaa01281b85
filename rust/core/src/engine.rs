//! The cover engine: the exact next-byte distribution of a token LM (Byte-Token Representation
//! Lemma, see docs/design.md).
//!
//! State for a byte prefix x (internal bytes, n = |x|) is a set of **groups**. A group is a
//! valid token prefix T (a *node*) that spells x[..i] for a split point i, with the trie range of
//! the tokens that start with x[i..n]; its mass is p(T) times the next-token probability of those
//! tokens, restricted to tokens v for which T + [v] is valid. Every cover of x lies in exactly one
//! group, so
//!   P(x b ...) = Σ_groups p(T) Σ_{valid v starting with x[i..n] b} p(v | T),
//! where the groups with i = n are the *fresh* nodes (token prefixes spelling all of x) and the
//! only ones that need a new model row. EOS gets p(encode(x)) p(EOS | encode(x)).
//!
//! Protocol: `requests()` lists the token prefixes that need a next-token row (`provide_rows`)
//! or a prefix log-probability (`provide_scores`); then `distribution()` returns the 257
//! log-probabilities and `advance(byte)` moves on.
//!
//! Design notes (what was tried and why it is this way):
//! * A node's row is turned once, when it arrives, into validity-masked probabilities in trie
//!   order (`probs`), so every later byte is a sum over a contiguous range. Direct summation was
//!   kept over prefix sums: prefix sums lose all relative precision on small ranges.
//! * Validity of T + [v] for every v in the vocabulary is the expensive part (one local encoding
//!   each). It is decided from the node's anchor (a few bytes), split over threads, memoised by
//!   the anchored text and tokens, and skipped for tokens of probability exactly zero.
//! * Tried and dropped: comparing a validity witness's encoding piece by piece and stopping at
//!   the first piece that differs. After a run of spaces (the slow case: almost every token is
//!   invalid and all witnesses are tried) it bought nothing measurable (Criterion "invalid check
//!   after spaces", SmolLM2: 13.4 µs before, 12.9 µs after, within noise): the strings are short
//!   and cutting them into pieces, not BPE of later pieces, is the cost.
//! * What did pay: not computing what a choice does not need. In lazy mode (`lazy.rs`) rows stay
//!   unmasked, validity is decided per token in order of weight, and fresh token prefixes are
//!   fetched only when their weight could change the chosen byte. Greedy byte-by-byte generation
//!   on SmolLM2 went from 1.07 to about 0.4 model calls per byte and from 197 to about 1 ms of
//!   engine time per byte (benches/bench_generate.py).

mod covers;
mod lazy;
mod prefix;
mod shortcut;
pub use covers::CoverChoice;
pub use lazy::{Bounds, Pick, Refinement};
pub use prefix::{PrefixResult, PrefixScorer};

use crate::canonical::Canonicalizer;
use crate::error::{Error, Result};
use crate::fast_exp::exp_in_place;
use crate::primitives::{log_add, TokenId, EOS_SLOT, N_SLOTS};
use crate::trie::{LogRow, TokenTrie};
use rustc_hash::FxHashMap;
use std::ops::Range;
use std::sync::Arc;

/// Index of a node in the engine's arena.
pub type NodeId = usize;

/// Key of a memoised validity mask: the anchored text, the tokens after the anchor, and the trie
/// range the mask was computed for.
type MaskKey = (Vec<u8>, Vec<TokenId>, Range<usize>);

/// A memoised validity mask: `valid[k]` is the verdict for trie position k where bit k of
/// `checked` is set (tokens of probability 0 under the rows seen so far were never checked).
#[derive(Debug, Clone)]
struct CachedMask {
    valid: Arc<Vec<bool>>,
    checked: Vec<u64>,
}

impl CachedMask {
    fn checked(&self, k: usize) -> bool {
        self.checked[k / 64] >> (k % 64) & 1 == 1
    }
}

/// Below this many tokens a validity check runs on the calling thread: spawning costs more than
/// the checks.
const MIN_PARALLEL_CHECKS: usize = 256;

#[derive(Debug, Clone)]
struct Node {
    parent: Option<NodeId>,
    token: Option<TokenId>,
    /// Internal byte offset where this token prefix ends.
    end: usize,
    /// log p(T); `None` until known.
    logp: Option<f64>,
    /// Anchor for validity checks, and the tokens after it.
    anchor: usize,
    tail: Vec<TokenId>,
    /// Validity-masked next-token probabilities in trie order, scaled by exp(-shift).
    probs: Option<Arc<Vec<f64>>>,
    shift: f64,
    /// log p(EOS | T) when T is the canonical encoding of x[..end]; -inf otherwise.
    eos_logp: f64,
    /// Bounded-error mode: probability mass (scaled like `probs`) taken as valid unchecked.
    assumed: f64,
    /// Lazy mode: what is known of T + [v]'s validity, in trie order (see `lazy.rs`).
    checked: Vec<u8>,
    /// Lazy mode: text length up to which this node's children exist (see `lazy::catch_up`).
    synced: usize,
    /// Lazy mode: masses of the node's current range by next byte (kept up to date as tokens
    /// are checked, so a step does not re-sum a whole vocabulary per refinement round).
    sums: Option<lazy::ChildSums>,
}

impl Node {
    /// The scale `probs` will use: set from the row before the mask is computed.
    fn shift_hint(&self) -> f64 {
        self.shift
    }
}

/// What the engine needs from the model before it can answer.
#[derive(Debug, Clone, Default)]
pub struct Requests {
    /// Nodes needing a next-token row, with their token sequences.
    pub rows: Vec<(NodeId, Vec<TokenId>)>,
    /// Nodes needing log p(T), with their token sequences.
    pub scores: Vec<(NodeId, Vec<TokenId>)>,
}

/// The next-byte answer for the current prefix.
#[derive(Debug, Clone)]
pub struct Distribution {
    /// Normalised log-probabilities: slots 0..=255 bytes, `EOS_SLOT` = end of text.
    pub logprobs: [f64; N_SLOTS],
    /// log Σ of the `N_SLOTS` numerators (mass of valid continuations).
    pub log_total: f64,
    /// log P(x...) = log Σ over covers of x.
    pub log_prefix: f64,
    /// Upper bound on the probability mass (relative to P(x...)) skipped by the tolerance.
    pub skipped_bound: f64,
}

#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// Skip fresh token prefixes whose probability is below `tolerance` x P(x...). 0 = exact.
    pub tolerance: f64,
    /// Threads for validity masks.
    pub threads: usize,
    /// Decide validity and fetch rows only as far as choosing the next byte needs (`decide`);
    /// the full distribution is then unavailable. See `lazy.rs`.
    pub lazy: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { tolerance: 0.0, threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(8), lazy: false }
    }
}

pub struct CoverEngine {
    canon: Arc<Canonicalizer>,
    trie: Arc<TokenTrie>,
    eos: Vec<TokenId>,
    cfg: EngineConfig,
    text: Vec<u8>,
    nodes: Vec<Node>,
    /// Active groups: (node, trie range of tokens starting with text[node.end..]).
    groups: Vec<(NodeId, Range<usize>)>,
    mask_cache: FxHashMap<MaskKey, CachedMask>,
    skipped: f64,
    /// Lazy mode: nodes whose rows `decide` asked for.
    pending: Vec<NodeId>,
    /// Lazy mode with a tolerance: the largest bound on a step's error (see `lazy.rs`).
    worst_error: f64,
    /// Lazy mode: tokens the next `refine` checks (grows while checks continue; reset by a row request and by `advance`).
    check_batch: usize,
    pub stats: EngineStats,
}

#[derive(Debug, Clone, Default)]
pub struct EngineStats {
    pub validity_checks: u64,
    pub mask_cache_hits: u64,
    pub rows_received: u64,
    pub nodes_created: u64,
    pub nodes_skipped: u64,
}

impl CoverEngine {
    /// Engine for user text `prompt` (the tokenizer's start prefix is added internally).
    pub fn new(canon: Arc<Canonicalizer>, trie: Arc<TokenTrie>, prompt: &[u8], eos: Vec<TokenId>, cfg: EngineConfig) -> Result<Self> {
        let mut text = canon.vocab().start_prefix().to_vec();
        text.extend_from_slice(prompt);
        let root = Node {
            parent: None,
            token: None,
            end: 0,
            logp: Some(0.0),
            anchor: 0,
            tail: vec![],
            probs: None,
            shift: 0.0,
            eos_logp: f64::NEG_INFINITY,
            assumed: 0.0,
            checked: vec![],
            synced: 0,
            sums: None,
        };
        let mut e = Self {
            canon,
            trie,
            eos,
            cfg,
            text: vec![],
            nodes: vec![root],
            groups: vec![],
            mask_cache: FxHashMap::default(),
            skipped: 0.0,
            pending: vec![],
            worst_error: 0.0,
            check_batch: lazy::FIRST_CHECK_BATCH,
            stats: EngineStats::default(),
        };
        e.build(text)?;
        Ok(e)
    }

    /// Width of the rows the engine expects.
    pub fn n_logits(&self) -> usize {
        self.canon.vocab().n_logits()
    }

    pub fn text(&self) -> &[u8] {
        &self.text
    }
    pub fn len(&self) -> usize {
        self.text.len()
    }
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Enumerate, without the model, every valid token prefix that spells a prefix of `text`
    /// and ends close enough to its end to start a cover (dynamic programming over split points;
    /// validity is prefix-closed, so extending valid prefixes token by token reaches them all).
    fn build(&mut self, text: Vec<u8>) -> Result<()> {
        self.text = text;
        let n = self.text.len();
        let max_len = self.canon.vocab().max_token_len();
        let mut at: Vec<Vec<NodeId>> = vec![Vec::new(); n + 1];
        at[0].push(0);
        for i in 0..n {
            let here = std::mem::take(&mut at[i]);
            for &node in &here {
                for (tok, len) in self.trie.tokens_prefixing(&self.text[i..]) {
                    if let Some(child) = self.extend(node, tok, None)? {
                        at[i + len].push(child);
                    }
                }
            }
            at[i] = here;
        }
        // Groups: nodes whose remaining bytes start some token.
        let lo = n.saturating_sub(max_len);
        let mut groups = Vec::new();
        for (i, nodes) in at.iter().enumerate().skip(lo) {
            let range = self.trie.range(&self.text[i..]);
            if range.is_empty() {
                continue;
            }
            for &node in nodes {
                groups.push((node, range.clone()));
            }
        }
        if groups.is_empty() {
            return Err(Error::ZeroMass);
        }
        self.groups = groups;
        // The search above made every child along the text.
        for nd in &mut self.nodes {
            nd.synced = n;
        }
        Ok(())
    }

    /// Child node T + [tok] if it is valid. `logp` is known when the parent's row is.
    fn extend(&mut self, parent: NodeId, tok: TokenId, logp: Option<f64>) -> Result<Option<NodeId>> {
        let p = &self.nodes[parent];
        let tb = self.canon.vocab().token_bytes(tok).ok_or(Error::SpecialToken(tok))?;
        let end = p.end + tb.len();
        let window = &self.text[p.anchor..end];
        let mut tail = p.tail.clone();
        tail.push(tok);
        self.stats.validity_checks += 1;
        if !self.canon.valid_from(window, &tail) {
            return Ok(None);
        }
        let lens: Vec<usize> = tail.iter().map(|&t| self.canon.vocab().token_bytes(t).map_or(0, <[u8]>::len)).collect();
        let (off, k) = self.canon.anchor(window, &lens);
        let node = Node {
            parent: Some(parent),
            token: Some(tok),
            end,
            logp,
            anchor: p.anchor + off,
            tail: tail[k..].to_vec(),
            probs: None,
            shift: 0.0,
            eos_logp: f64::NEG_INFINITY,
            assumed: 0.0,
            checked: vec![],
            synced: end,
            sums: None,
        };
        self.nodes.push(node);
        self.stats.nodes_created += 1;
        Ok(Some(self.nodes.len() - 1))
    }

    /// Token sequences of every valid token prefix that spells a prefix of the text, found
    /// without the model (scoring fetches all their rows in batches up front).
    pub fn all_prefixes(&self) -> Vec<Vec<TokenId>> {
        (0..self.nodes.len()).map(|n| self.tokens(n)).collect()
    }

    /// Token sequence of a node.
    pub fn tokens(&self, mut node: NodeId) -> Vec<TokenId> {
        let mut out = Vec::new();
        while let Some(t) = self.nodes[node].token {
            out.push(t);
            node = self.nodes[node].parent.unwrap();
        }
        out.reverse();
        out
    }

    pub fn requests(&self) -> Requests {
        let mut r = Requests::default();
        for (node, _) in &self.groups {
            let nd = &self.nodes[*node];
            if nd.probs.is_none() {
                r.rows.push((*node, self.tokens(*node)));
            }
            if nd.logp.is_none() {
                r.scores.push((*node, self.tokens(*node)));
            }
        }
        r.rows.dedup_by_key(|x| x.0);
        r.scores.dedup_by_key(|x| x.0);
        r
    }

    pub fn provide_score(&mut self, node: NodeId, logp: f64) -> Result<()> {
        if logp.is_nan() {
            return Err(Error::NanRow(node));
        }
        self.nodes.get_mut(node).ok_or_else(|| Error::Protocol(format!("unknown node {node}")))?.logp = Some(logp);
        Ok(())
    }

    /// Give the next-token log-probability row of a node (natural log, one entry per id).
    pub fn provide_row<R: LogRow + ?Sized>(&mut self, node: NodeId, row: &R) -> Result<()> {
        let vocab = self.canon.vocab().clone();
        if row.len() != vocab.n_logits() {
            return Err(Error::RowWidth { got: row.len(), expected: vocab.n_logits() });
        }
        if node >= self.nodes.len() {
            return Err(Error::Protocol(format!("unknown node {node}")));
        }
        let mut shift = f64::NEG_INFINITY;
        for i in 0..row.len() {
            let v = row.get(i);
            if v.is_nan() {
                return Err(Error::NanRow(i));
            }
            shift = shift.max(v);
        }
        self.nodes[node].shift = shift;
        let trie = self.trie.clone(); // an Arc: `order` must outlive the `&mut self` of valid_mask
        let order = trie.order();
        // Relative probabilities in trie order: gather the shifted logs, then one vectorised exp.
        let mut probs: Vec<f64> = if self.cfg.lazy {
            // Validity is decided later, token by token, only where the choice needs it.
            order.iter().map(|&id| row.get(id as usize) - shift).collect()
        } else {
            let range = self.groups.iter().find(|g| g.0 == node).map(|g| g.1.clone()).unwrap_or(0..self.trie.len());
            let valid = self.valid_mask(node, row, range);
            order.iter().zip(valid.iter()).map(|(&id, &ok)| if ok { row.get(id as usize) - shift } else { f64::NEG_INFINITY }).collect()
        };
        exp_in_place(&mut probs);
        let nd = &self.nodes[node];
        // EOS belongs to the canonical encoding of the whole text (for the bare start prefix, the
        // empty sequence: the root).
        let is_eos_node = if self.at_bare_start_prefix() {
            node == 0
        } else {
            nd.end == self.text.len() && self.canon.complete_from(&self.text[nd.anchor..nd.end], &nd.tail)
        };
        let eos_logp = if is_eos_node { self.eos.iter().map(|&e| row.get(e as usize)).fold(f64::NEG_INFINITY, log_add) } else { f64::NEG_INFINITY };
        let lazy = self.cfg.lazy;
        let nd = &mut self.nodes[node];
        if lazy {
            nd.checked = vec![lazy::UNKNOWN; probs.len()];
        }
        nd.probs = Some(Arc::new(probs));
        nd.shift = shift;
        nd.eos_logp = eos_logp;
        self.stats.rows_received += 1;
        if lazy {
            self.catch_up(node)?;
        }
        Ok(())
    }

    /// Validity of T + [v] for the tokens at trie positions `ks`: settled by a forced piece
    /// boundary where one applies (`shortcut.rs`), the rest checked one by one (split over
    /// threads when many).
    fn check_tokens(&self, node: NodeId, ks: &[usize]) -> Vec<bool> {
        let nd = &self.nodes[node];
        let window = &self.text[nd.anchor..nd.end];
        let mut shortcut = shortcut::Shortcut::new(&self.canon, window, &nd.tail);
        let settled: Vec<Option<bool>> = ks.iter().map(|&k| shortcut.verdict(self.trie.id_at(k))).collect();
        let open: Vec<usize> = ks.iter().zip(&settled).filter(|(_, v)| v.is_none()).map(|(&k, _)| k).collect();
        let mut checked = self.check_each(node, &open).into_iter();
        settled.into_iter().map(|v| v.unwrap_or_else(|| checked.next().expect("one verdict per open token"))).collect()
    }

    /// Validity of T + [v] for the tokens at trie positions `ks`, each checked on its own.
    fn check_each(&self, node: NodeId, ks: &[usize]) -> Vec<bool> {
        let nd = &self.nodes[node];
        let window = &self.text[nd.anchor..nd.end];
        let (canon, vocab, trie, tail) = (&self.canon, self.canon.vocab(), &self.trie, &nd.tail);
        let check = |part: &[usize]| -> Vec<bool> {
            let mut text = window.to_vec();
            let mut t = tail.clone();
            part.iter()
                .map(|&k| {
                    let id = trie.id_at(k);
                    text.truncate(window.len());
                    text.extend_from_slice(vocab.token_bytes(id).unwrap_or_default());
                    t.truncate(tail.len());
                    t.push(id);
                    canon.valid_from(&text, &t)
                })
                .collect()
        };
        let threads = self.cfg.threads.max(1);
        if ks.len() < MIN_PARALLEL_CHECKS || threads == 1 {
            return check(ks);
        }
        let chunk = ks.len().div_ceil(threads);
        std::thread::scope(|s| {
            let handles: Vec<_> = ks.chunks(chunk).map(|part| s.spawn(move || check(part))).collect();
            handles.into_iter().flat_map(|h| h.join().expect("validity check panicked")).collect()
        })
    }

    /// For every token v (trie order): is T + [v] valid? Memoised by the anchored context.
    fn valid_mask<R: LogRow + ?Sized>(&mut self, node: NodeId, row: &R, range: Range<usize>) -> Arc<Vec<bool>> {
        let nd = &self.nodes[node];
        let key = (self.text[nd.anchor..nd.end].to_vec(), nd.tail.clone(), range.clone());
        let trie = self.trie.clone();
        let order = trie.order();
        let n = order.len();
        // Tokens that need a verdict: those in the range that this row gives mass to.
        let mut want: Vec<bool> = (0..n).map(|k| range.contains(&k) && row.get(order[k] as usize) > f64::NEG_INFINITY).collect();
        let mut mask = vec![false; n];
        let exact = self.cfg.tolerance == 0.0;
        if exact {
            if let Some(cached) = self.mask_cache.get(&key) {
                // A verdict depends only on the key (the text and tokens from the anchor on), so
                // every verdict the cache holds is reused; only tokens earlier rows gave no mass
                // (and so were never checked) may still need one. (Until this was kept apart, a
                // cached `false` could be invalid or unchecked, every invalid token with mass
                // looked unchecked, and the cache never hit.)
                let mut missing = false;
                for k in 0..n {
                    if cached.checked(k) {
                        mask[k] = cached.valid[k];
                        want[k] = false;
                    } else {
                        missing |= want[k];
                    }
                }
                if !missing {
                    self.stats.mask_cache_hits += 1;
                    return cached.valid.clone();
                }
            }
        }
        // Bounded-error mode: check tokens from the most likely down until the unchecked rest
        // weighs less than `tolerance` of the group's mass; the rest is taken as valid and its
        // mass is reported as the error bound.
        let mut assumed = 0.0;
        if !exact {
            let shift = range.clone().map(|k| row.get(order[k] as usize)).fold(f64::NEG_INFINITY, f64::max);
            let mut idx: Vec<(f64, usize)> = range.clone().filter(|&k| want[k]).map(|k| ((row.get(order[k] as usize) - shift).exp(), k)).collect();
            let total: f64 = idx.iter().map(|x| x.0).sum();
            idx.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
            let mut rest = total;
            for &(p, k) in &idx {
                if rest < self.cfg.tolerance * total {
                    want[k] = false;
                    mask[k] = true;
                } else {
                    rest -= p;
                }
            }
            assumed = rest.max(0.0) * (shift - self.nodes[node].shift_hint()).exp();
        }
        self.nodes[node].assumed = assumed;
        let ks: Vec<usize> = (0..n).filter(|&k| want[k]).collect();
        for (&k, ok) in ks.iter().zip(self.check_tokens(node, &ks)) {
            mask[k] = ok;
        }
        self.stats.validity_checks += ks.len() as u64;
        let mask = Arc::new(mask);
        // Only exact verdicts are cached (a bounded-error mask holds unchecked tokens as valid).
        if exact {
            let mut checked = self.mask_cache.remove(&key).map(|c| c.checked).unwrap_or_else(|| vec![0; n.div_ceil(64)]);
            for &k in &ks {
                checked[k / 64] |= 1 << (k % 64);
            }
            if self.mask_cache.len() > 4096 {
                self.mask_cache.clear();
            }
            self.mask_cache.insert(key, CachedMask { valid: mask.clone(), checked });
        }
        mask
    }

    /// The next-byte distribution. Every group must have its row and score.
    pub fn distribution(&self) -> Result<Distribution> {
        if self.cfg.lazy {
            return Err(Error::Protocol("a lazy engine does not compute the whole distribution; use decide(), or an engine made with lazy=False".into()));
        }
        let n = self.text.len();
        let bare = self.at_bare_start_prefix();
        let mut num = [f64::NEG_INFINITY; N_SLOTS];
        let mut prefix = f64::NEG_INFINITY;
        for (node, range) in &self.groups {
            let nd = &self.nodes[*node];
            let (Some(probs), Some(logp)) = (&nd.probs, nd.logp) else {
                return Err(Error::Protocol(format!("node {node} still needs its row or score; call requests()")));
            };
            let depth = n - nd.end;
            let base = logp + nd.shift;
            let children = self.trie.children(range.clone(), depth);
            // Covers whose last token ends exactly here are the fresh nodes (counted below with
            // p(T')); this group adds the covers whose last token reaches past the end.
            let mut group_total = 0.0;
            for (b, r) in children.by_byte {
                let s: f64 = probs[r].iter().sum();
                if s > 0.0 {
                    num[b as usize] = log_add(num[b as usize], base + s.ln());
                    group_total += s;
                }
            }
            if depth > 0 && group_total > 0.0 {
                prefix = log_add(prefix, base + group_total.ln());
            }
            if depth == 0 {
                prefix = log_add(prefix, logp);
            }
            if depth == 0 || (*node == 0 && bare) {
                num[EOS_SLOT] = log_add(num[EOS_SLOT], logp + nd.eos_logp);
            }
        }
        // The bare start prefix is spelled by the empty token sequence, so every text starts with
        // it: P(x...) = p([]) = 1. Without this the mass the model puts on invalid first tokens
        // would be missing from P(x...) but not from the numerators' complement.
        if bare {
            prefix = 0.0;
        }
        let total = num.iter().cloned().fold(f64::NEG_INFINITY, log_add);
        if total == f64::NEG_INFINITY {
            return Err(Error::ZeroMass);
        }
        let mut logprobs = [f64::NEG_INFINITY; N_SLOTS];
        for (o, v) in logprobs.iter_mut().zip(num.iter()) {
            *o = v - total;
        }
        // Unchecked (assumed-valid) mass of every group, relative to the answer's total.
        let assumed: f64 = self
            .groups
            .iter()
            .map(|(node, _)| {
                let nd = &self.nodes[*node];
                if nd.assumed > 0.0 {
                    (nd.logp.unwrap_or(f64::NEG_INFINITY) + nd.shift + nd.assumed.ln() - total).exp()
                } else {
                    0.0
                }
            })
            .sum();
        let skipped_bound = self.skipped + assumed;
        Ok(Distribution { logprobs, log_total: total, log_prefix: prefix, skipped_bound })
    }

    /// Move to x + [byte]. New fresh nodes appear for tokens ending exactly here.
    pub fn advance(&mut self, byte: u8) -> Result<()> {
        let max_len = self.canon.vocab().max_token_len();
        // Reference mass for the tolerance: log P(x b ...), the numerator of the chosen byte.
        let reference = if self.cfg.tolerance > 0.0 { self.distribution().ok().map(|d| d.log_total + d.logprobs[byte as usize]) } else { None };
        self.text.push(byte);
        self.check_batch = lazy::FIRST_CHECK_BATCH;
        let n = self.text.len();
        let old = std::mem::take(&mut self.groups);
        let mut groups = Vec::with_capacity(old.len() + 4);
        let mut fresh = Vec::new();
        self.skipped = 0.0;
        for (node, range) in old {
            if self.cfg.lazy && self.nodes[node].probs.is_none() {
                // Deferred (lazy mode): its covers are bounded by p(T) until its row arrives,
                // and `catch_up` then creates what the bytes since have made of it.
                groups.push((node, range));
                continue;
            }
            let depth = n - self.nodes[node].end; // partial length after the new byte
            let sub = self.trie.range_within(range, &self.text[self.nodes[node].end..], depth - 1);
            if sub.is_empty() {
                continue;
            }
            let children = self.trie.children(sub.clone(), depth);
            // Tokens ending exactly at the new byte start fresh nodes.
            let probs = self.nodes[node].probs.clone().ok_or_else(|| Error::Protocol("advance before rows were provided".into()))?;
            let (base, shift) = (self.nodes[node].logp.unwrap_or(f64::NEG_INFINITY), self.nodes[node].shift);
            for k in children.exact.clone() {
                if probs[k] <= 0.0 || self.nodes[node].checked.get(k) == Some(&lazy::INVALID) {
                    continue; // invalid or zero probability
                }
                let tok = self.trie.id_at(k);
                let lp = base + shift + probs[k].ln();
                if let Some(r) = reference {
                    // The whole subtree under T + [tok] weighs at most p(T + [tok]).
                    if lp < r + self.cfg.tolerance.ln() {
                        self.stats.nodes_skipped += 1;
                        self.skipped += (lp - r).exp();
                        continue;
                    }
                }
                if let Some(child) = self.extend(node, tok, Some(lp))? {
                    fresh.push(child);
                }
            }
            if !children.by_byte.is_empty() && depth < max_len {
                groups.push((node, sub));
            }
        }
        let root = 0..self.trie.len();
        for f in fresh {
            groups.push((f, root.clone()));
        }
        if groups.is_empty() {
            return Err(Error::ZeroMass);
        }
        self.groups = groups;
        Ok(())
    }

    /// Whether the text is the start prefix alone: the empty user text of a tokenizer with a dummy
    /// prefix (`Vocabulary::is_bare_start_prefix`). Its only cover is the empty token sequence,
    /// so P(x...) = 1 and end-of-text is the root's, whatever tokens spell the prefix itself.
    fn at_bare_start_prefix(&self) -> bool {
        self.canon.vocab().is_bare_start_prefix(&self.text)
    }

    /// Nodes currently in groups (for inspection and tests).
    pub fn group_nodes(&self) -> Vec<(NodeId, usize)> {
        self.groups.iter().map(|(n, _)| (*n, self.nodes[*n].end)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{logp, row, tiny_parts, TINY_EOS};

    fn engine(prompt: &[u8], lazy: bool) -> CoverEngine {
        let (c, t) = tiny_parts();
        CoverEngine::new(c, t, prompt, vec![TINY_EOS], EngineConfig { tolerance: 0.0, threads: 1, lazy }).unwrap()
    }

    fn serve(e: &mut CoverEngine) {
        let w = e.n_logits();
        let r = e.requests();
        for (node, tokens) in &r.scores {
            e.provide_score(*node, logp(tokens, w)).unwrap();
        }
        for (node, tokens) in &r.rows {
            e.provide_row(*node, &row(tokens, w)[..]).unwrap();
        }
    }

    /// Every valid token sequence spelling a prefix of `text`, by enumeration.
    fn valid_spellings(e: &CoverEngine, text: &[u8]) -> Vec<Vec<TokenId>> {
        let canon = e.canon.clone();
        let mut out = vec![vec![]];
        let mut frontier = vec![(vec![], 0usize)];
        while let Some((seq, at)) = frontier.pop() {
            for (id, b) in canon.vocab().text_tokens() {
                if text[at..].starts_with(b) {
                    let s: Vec<TokenId> = [seq.as_slice(), &[id]].concat();
                    if canon.is_valid(&s).unwrap() {
                        out.push(s.clone());
                        frontier.push((s, at + b.len()));
                    }
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn build_finds_every_valid_spelling_of_every_prefix() {
        for text in [&b"a\n\nab"[..], b"ab  a", b"abc ab\n"] {
            let e = engine(text, false);
            let mut got = e.all_prefixes();
            got.sort();
            assert_eq!(got, valid_spellings(&e, text), "{:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn groups_are_the_spellings_near_the_end() {
        // "a\n\n": [a] with the tokens starting "\n\n"... none is longer than "\n\n" itself, so
        // the groups are the nodes ending at 1 (crossing "\n\n"), 2 ([a, \n], crossing "\n") and
        // 3 (the two spellings of the whole text).
        let e = engine(b"a\n\n", false);
        let mut groups: Vec<(Vec<TokenId>, usize)> = e.group_nodes().into_iter().map(|(n, end)| (e.tokens(n), end)).collect();
        groups.sort();
        assert_eq!(groups, vec![(vec![0], 1), (vec![0, 4], 2), (vec![0, 4, 4], 3), (vec![0, 7], 3)]);
        // Requests name each node once, with its tokens.
        let r = e.requests();
        assert_eq!(r.rows.len(), 4);
        assert_eq!(r.scores.len(), 4);
        assert!(r.rows.iter().all(|(n, tokens)| e.tokens(*n) == *tokens));
    }

    #[test]
    fn numerators_by_hand() {
        // "ab", by hand. The covers of "abc" are [abc] (from the root) and [ab] + a token
        // starting with "c", but [ab, c] is invalid ("ab c" merges), so P("abc"...) = p([abc]).
        let mut e = engine(b"ab", false);
        serve(&mut e);
        let d = e.distribution().unwrap();
        let w = e.n_logits();
        let abc = logp(&[8], w);
        assert!((d.log_total + d.logprobs[b'c' as usize] - abc).abs() < 1e-12);
        // EOS: encode("ab") = [ab], then end of text.
        let eos = logp(&[5], w) + row(&[5], w)[TINY_EOS as usize];
        assert!((d.log_total + d.logprobs[EOS_SLOT] - eos).abs() < 1e-12);
        // P("ab"...) = p([ab]) + p([abc]) ([a, b] is invalid).
        let prefix = (logp(&[5], w).exp() + abc.exp()).ln();
        assert!((d.log_prefix - prefix).abs() < 1e-12);
        // Advance by 'c': only [abc] is left, fresh.
        e.advance(b'c').unwrap();
        let groups: Vec<Vec<TokenId>> = e.group_nodes().into_iter().map(|(n, _)| e.tokens(n)).collect();
        assert_eq!(groups, vec![vec![8]]);
    }

    #[test]
    fn bare_start_prefix_only_for_a_dummy_prefix() {
        let e = engine(b"", false);
        assert!(!e.at_bare_start_prefix(), "no start prefix: the empty text is just empty");
        assert!(e.is_empty());
    }

    #[test]
    fn parallel_masks_equal_serial_ones() {
        // The tiny vocabulary is below the threading threshold; check the split by hand.
        let mut e = engine(b"ab a", false);
        serve(&mut e);
        let node = e.group_nodes().last().unwrap().0;
        let ks: Vec<usize> = (0..e.trie.len()).collect();
        let serial = e.check_each(node, &ks);
        e.cfg.threads = 3;
        let many: Vec<usize> = ks.iter().cycle().take(MIN_PARALLEL_CHECKS * 2 + 7).cloned().collect();
        let parallel = e.check_each(node, &many);
        // The forced-boundary shortcut gives the same verdicts as the checks.
        assert_eq!(e.check_tokens(node, &ks), serial);
        assert_eq!(parallel, many.iter().map(|&k| serial[k]).collect::<Vec<bool>>());
    }
}

//! Exact prefix probabilities along a whole text, for scoring: P(x[..m] ...) for every m.
//!
//! The next-byte distribution needs 257 numerators, and each fresh token prefix then needs the
//! validity of every token in the vocabulary. Scoring a *given* text needs only one numerator per
//! byte: by the Byte-Token Representation Lemma
//!   P(x[..m] ...) = Σ_{node T spelling x[..i], i < m} p(T) · M(T, m),
//!   M(T, m) = Σ_{v starting with x[i..m], T + [v] valid} p(v | T),
//! and the surprisal of byte m-1 is log P(x[..m-1] ...) - log P(x[..m] ...). So a node T needs
//! the validity of the tokens starting with its *next byte* x[i] only (a subtree of the trie,
//! the ranges for longer m nest inside it), never the rest of the vocabulary, and a node none
//! of whose subtree tokens is valid needs no model row at all (its p(T) comes from its parent's
//! row). End of text is p(encode(x)) p(EOS | encode(x)), from the canonical node's row.
//!
//! Protocol: `PrefixScorer::new` finds every valid token prefix along the text and decides the
//! validity of every node's subtree (no model); `requests()` lists the nodes needing a row
//! (parents before children); `provide_row` reduces each row at once to that node's masses
//! M(T, m) (a handful of numbers: the row is not kept); `result()` sums the covers.
//!
//! Only some offsets (`PrefixScorer::at_offsets`): when P(x[..m] ...) is wanted at a few m only
//! (the whole text's, for bits per byte), a node T matters only if a valid token starting with
//! x[end(T)..m] covers some wanted m; it gets the verdicts of the tokens starting with
//! x[end(T)..m] for the first such m (not its whole next-byte subtree: after a space that is
//! most of a SentencePiece vocabulary) and a row, its ancestors get rows for the steps p(T) is
//! made of, and every other node gets neither. Along a text, that is the canonical encoding's
//! prefixes (the rows one forward computes) and the few nodes within a token's length of each
//! wanted offset.
//!
//! Speed notes (what was measured, SmolLM2 tokenizer, 2 shared cores):
//! * The eager engine decides the validity of all ~49k tokens at every fresh node (0.3 s a word
//!   of prose, seconds after an indentation run); here a node checks only the tokens starting
//!   with its next byte (a few hundred after a letter, the space subtree after a word).
//! * Verdicts are memoised by the node's context and the next byte, so repeated layout
//!   (indentation, space runs in a diagram, the same word boundary) is decided once per scorer.
//!   The context is the text and tokens since the last piece cut inside the anchored text that
//!   the pre-tokenizer makes whatever follows (`Canonicalizer::forced_cut_inside`), else since
//!   the anchor: keyed by the anchored text (which holds the previous piece too) the same word
//!   after different words shared nothing. Cutting there took 4 KB of prose from 1.51 M checks
//!   and 9.9 s to 0.82 M and 3.8 s (SmolLM2's tokenizer, 2 cores), with the same verdicts.
//! * Checks run over all nodes at once, split over threads by work item rather than per node
//!   (most subtrees are too small to split on their own).

use super::shortcut::Shortcut;
use super::{CoverEngine, EngineConfig, NodeId};
use crate::canonical::range_memo::RangeKey;
use crate::canonical::{Canonicalizer, PairLeft};
use crate::error::{Error, Result};
use crate::pretokenize::Joins;
use crate::primitives::{log_add, TokenId};
use crate::trie::{LogRow, TokenTrie};
use rustc_hash::FxHashMap;
use std::ops::Range;
use std::sync::Arc;

/// Per node: where its next-byte subtree is, which of its tokens are valid, and (once the row
/// arrived) the masses M(T, m).
#[derive(Debug, Clone, Default)]
struct NodeScore {
    /// Trie range of the tokens starting with text[end] (empty at the end of the text); with only
    /// some offsets wanted, of those starting with text[end..m] for the first wanted m (the
    /// masses before m are then not the ones wanted, and `result` hides them).
    subtree: Range<usize>,
    /// Validity verdicts for `subtree`, in trie order.
    valid: Arc<Vec<bool>>,
    /// log p(token | parent), set when the parent's row arrives (0 for the root).
    step_logp: Option<f64>,
    /// ln M(T, end + 1 + j) for j = 0, 1, ... while tokens starting with text[end..end+1+j]
    /// exist (-inf where none of them is valid or all have probability 0).
    masses: Option<Vec<f64>>,
    /// ln p(EOS | T) for the canonical node of the whole text.
    eos_logp: Option<f64>,
}

/// What `result` returns: log prefix probabilities along the text (internal offsets).
#[derive(Debug, Clone)]
pub struct PrefixResult {
    /// `log_prefix[m]` = ln P(x[..m] ...) for every internal offset m = 0..=n (0 inside the start
    /// prefix: every text starts with it).
    pub log_prefix: Vec<f64>,
    /// ln p(encode(x)) + ln p(EOS | encode(x)); -inf when the text cannot end here (it is not
    /// valid UTF-8 or its encoding does not spell it).
    pub log_eos: f64,
    /// ln p(encode(x)): the canonical token sequence's log-likelihood (-inf as for `log_eos`).
    pub log_canonical: f64,
    /// Length of the start prefix (user byte j is internal byte `start + j`).
    pub start: usize,
}

pub struct PrefixScorer {
    eng: CoverEngine,
    scores: Vec<NodeScore>,
    children: Vec<Vec<NodeId>>,
    eos_node: Option<NodeId>,
    need_row: Vec<bool>,
    /// Internal offsets m where P(x[..m] ...) is wanted (`at_offsets`); None: every offset.
    wanted: Option<Vec<bool>>,
    /// Per-token validity checks run, verdicts settled by a forced piece boundary instead
    /// (`canonical/boundary.rs`), and nodes that shared another node's verdicts.
    pub validity_checks: u64,
    pub shortcut_verdicts: u64,
    pub memo_hits: u64,
    /// Verdicts found in the tokenizer's memo of earlier scorers (`canonical/range_memo.rs`).
    pub remembered_verdicts: u64,
}

/// One distinct context whose subtree needs verdicts: a node's text and tokens from `from`
/// bytes / `skip` tokens after its anchor (past a forced cut, `forced_cut_inside`), and the
/// trie range of its next byte.
struct Job {
    node: NodeId,
    from: usize,
    skip: usize,
    range: Range<usize>,
    /// The next byte's whole subtree: `range` is a part of it when only some offsets are wanted
    /// (the tokens starting with the text up to the first wanted offset).
    subtree: Range<usize>,
}

impl Job {
    fn text<'e>(&self, eng: &'e CoverEngine) -> &'e [u8] {
        let nd = &eng.nodes[self.node];
        &eng.text[nd.anchor + self.from..nd.end]
    }

    fn tail<'e>(&self, eng: &'e CoverEngine) -> &'e [TokenId] {
        &eng.nodes[self.node].tail[self.skip..]
    }
}

/// Pair-rule verdicts of one trie range (`canonical/pairs.rs`), shared by every job with the
/// same left token and range (with every offset wanted, the range is the next byte's subtree):
/// inside a space run the same few whitespace tokens come back at every position.
type PairMemo = FxHashMap<(PairLeft, usize, usize), Arc<Vec<Option<bool>>>>;

/// Solo pair verdicts by trie range and the tokens judged (`pair_solo_verdicts`): the start of
/// every left token's vector.
type SoloMemo = FxHashMap<(usize, usize, Joins), Vec<Option<bool>>>;

/// A job's verdicts: one shared vector (the pair rule settled every token; inside a space run
/// hundreds of jobs share a few vectors of 137k entries, and copying them was most of the time),
/// or the job's own with the tokens still to check left open.
enum JobVerdicts {
    Shared(Arc<Vec<bool>>),
    Own(Vec<Option<bool>>),
}

/// Verdicts for a job's subtree that need no per-token check: the pair rule where it applies,
/// then a forced piece boundary (`Shortcut`); what is left is `None` in `JobVerdicts::Own`.
fn shortcut_verdicts(
    eng: &CoverEngine,
    job: &Job,
    pair_memo: &mut PairMemo,
    solo_memo: &mut SoloMemo,
    settled: &mut FxHashMap<usize, Arc<Vec<bool>>>,
) -> JobVerdicts {
    let (canon, trie) = (&eng.canon, &eng.trie);
    let (text, tail) = (job.text(eng), job.tail(eng));
    let next = eng.text[eng.nodes[job.node].end];
    let by_pairs = canon.pair_left(text, tail, next).map(|left| {
        let (lo, hi) = (job.range.start, job.range.end);
        pair_memo
            .entry((left, lo, hi))
            .or_insert_with(|| {
                let solo = solo_memo.entry((lo, hi, left.joins())).or_insert_with(|| canon.pair_solo_verdicts(trie, job.range.clone(), left.joins()));
                Arc::new(canon.pair_verdicts_in(&canon.pair_screen(left), trie, job.range.clone(), solo))
            })
            .clone()
    });
    if let Some(p) = &by_pairs {
        if p.iter().all(Option::is_some) {
            // Keyed by the shared vector's address: one `Vec<bool>` per pair-rule vector.
            let all = settled.entry(Arc::as_ptr(p) as usize).or_insert_with(|| Arc::new(p.iter().map(|v| v.expect("all settled")).collect()));
            return JobVerdicts::Shared(all.clone());
        }
    }
    let mut shortcut = Shortcut::new(canon, text, tail);
    JobVerdicts::Own(job.range.clone().enumerate().map(|(i, k)| by_pairs.as_ref().and_then(|p| p[i]).or_else(|| shortcut.verdict(trie.id_at(k)))).collect())
}

/// (m, trie range of the tokens starting with text[end..m]) for m = end + 1, end + 2, ... while
/// such tokens exist; `first` is the range for m = end + 1 (not empty). Each range nests inside
/// the one before, so it is found by narrowing that one.
fn nested_ranges<'a>(trie: &'a TokenTrie, text: &'a [u8], end: usize, first: Range<usize>) -> impl Iterator<Item = (usize, Range<usize>)> + 'a {
    std::iter::successors(Some((end + 1, first)), move |(m, range)| {
        let m = m + 1;
        if m > text.len() {
            return None;
        }
        let range = trie.range_within(range.clone(), &text[end..m], m - end - 1);
        (!range.is_empty()).then_some((m, range))
    })
}

impl PrefixScorer {
    /// Every valid token prefix along user text `text`, with its subtree's validity decided.
    pub fn new(canon: Arc<Canonicalizer>, trie: Arc<TokenTrie>, text: &[u8], eos: Vec<TokenId>, threads: usize) -> Result<Self> {
        Self::build(canon, trie, text, eos, threads, None)
    }

    /// A scorer of P(x[..m] ...) at the user offsets `offsets` only (each at most `text.len()`),
    /// and of the end-of-text term: verdicts and rows only for the nodes these need (module doc).
    /// `result().log_prefix` is NaN at every other offset past the start prefix.
    pub fn at_offsets(canon: Arc<Canonicalizer>, trie: Arc<TokenTrie>, text: &[u8], eos: Vec<TokenId>, threads: usize, offsets: &[usize]) -> Result<Self> {
        if let Some(&bad) = offsets.iter().find(|&&m| m > text.len()) {
            return Err(Error::Protocol(format!("offset {bad} is past the end of the {}-byte text", text.len())));
        }
        let start = canon.vocab().start_prefix().len();
        let mut wanted = vec![false; start + text.len() + 1];
        for &m in offsets {
            wanted[start + m] = true;
        }
        Self::build(canon, trie, text, eos, threads, Some(wanted))
    }

    fn build(canon: Arc<Canonicalizer>, trie: Arc<TokenTrie>, text: &[u8], eos: Vec<TokenId>, threads: usize, wanted: Option<Vec<bool>>) -> Result<Self> {
        let cfg = EngineConfig { tolerance: 0.0, threads: threads.max(1), lazy: false };
        let eng = CoverEngine::new(canon, trie, text, eos, cfg)?;
        let n = eng.text.len();
        let mut children = vec![Vec::new(); eng.nodes.len()];
        for (id, nd) in eng.nodes.iter().enumerate() {
            if let Some(p) = nd.parent {
                children[p].push(id);
            }
        }
        let bare_end = eng.at_bare_start_prefix();
        let eos_node =
            if bare_end { Some(0) } else { eng.nodes.iter().position(|nd| nd.end == n && eng.canon.complete_from(&eng.text[nd.anchor..nd.end], &nd.tail)) };
        let mut s = Self {
            eng,
            scores: Vec::new(),
            children,
            eos_node,
            need_row: Vec::new(),
            wanted,
            validity_checks: 0,
            shortcut_verdicts: 0,
            memo_hits: 0,
            remembered_verdicts: 0,
        };
        s.decide_validity();
        Ok(s)
    }

    /// Decide, for every node T ending before the text's end, the validity of T + [v] for every
    /// token v starting with the next text byte.
    fn decide_validity(&mut self) {
        let eng = &self.eng;
        let n = eng.text.len();
        let mut scores: Vec<NodeScore> = eng.nodes.iter().map(|_| NodeScore::default()).collect();
        // Distinct contexts: nodes with the same text and tokens since their anchor (or since
        // the last forced piece cut inside that text) and the same next byte share verdicts. The
        // cut makes repeated words share: " the" has the same verdicts after every word.
        let mut memo: FxHashMap<(RangeKey, usize, usize), usize> = FxHashMap::default();
        let mut jobs: Vec<Job> = Vec::new(); // one per distinct context
        let mut job_of: Vec<Option<usize>> = vec![None; eng.nodes.len()];
        let mut dead: Vec<NodeId> = Vec::new(); // nodes no extension of which is valid
        for (id, nd) in eng.nodes.iter().enumerate() {
            if nd.end >= n {
                continue;
            }
            let subtree = eng.trie.range(&eng.text[nd.end..nd.end + 1]);
            if subtree.is_empty() {
                continue;
            }
            let range = match &self.wanted {
                None => subtree.clone(),
                Some(w) => match self.first_wanted_range(nd.end, subtree.clone(), w) {
                    Some(r) => r,
                    None => continue,
                },
            };
            scores[id].subtree = range.clone();
            let anchored = &eng.text[nd.anchor..nd.end];
            let (from, skip) = match eng.canon.forced_cut_inside(anchored, &nd.tail) {
                Some(cut) if !cut.context_ok => {
                    dead.push(id);
                    continue;
                }
                Some(cut) => (cut.at, cut.tokens),
                None => (0, 0),
            };
            let key = (anchored[from..].to_vec(), nd.tail[skip..].to_vec(), eng.text[nd.end]);
            let next = jobs.len();
            let j = *memo.entry((key, range.start, range.end)).or_insert(next);
            if j == next {
                jobs.push(Job { node: id, from, skip, range, subtree });
            } else {
                self.memo_hits += 1;
            }
            job_of[id] = Some(j);
        }
        for id in dead {
            scores[id].valid = Arc::new(vec![false; scores[id].subtree.len()]);
        }
        // Verdicts the pre-tokenizer's boundary settles (canonical/boundary.rs); the rest are
        // (job, trie position) work items for per-token checks, split over threads.
        let (mut pair_memo, mut solo_memo, mut settled) = (PairMemo::default(), SoloMemo::default(), FxHashMap::default());
        // Contexts an earlier scorer of this tokenizer decided need nothing (`range_memo.rs`).
        let kept = eng.canon.range_verdicts();
        let mut job_keys: Vec<RangeKey> = vec![Default::default(); jobs.len()];
        for ((key, ..), j) in memo {
            job_keys[j] = key;
        }
        // The memo keeps whole subtrees; a job on a part of one takes its slice.
        let found: Vec<Option<Arc<Vec<bool>>>> = job_keys
            .iter()
            .zip(&jobs)
            .map(|(k, job)| {
                let all = kept.get(k)?;
                if job.range == job.subtree {
                    return Some(all);
                }
                let at = job.range.start - job.subtree.start;
                Some(Arc::new(all[at..at + job.range.len()].to_vec()))
            })
            .collect();
        let remembered: Vec<bool> = found.iter().map(Option::is_some).collect();
        let mut per_job: Vec<JobVerdicts> = jobs
            .iter()
            .zip(found)
            .map(|(job, found)| match found {
                Some(all) => JobVerdicts::Shared(all),
                None => shortcut_verdicts(eng, job, &mut pair_memo, &mut solo_memo, &mut settled),
            })
            .collect();
        let items: Vec<(usize, usize)> = jobs
            .iter()
            .enumerate()
            .flat_map(|(j, job)| {
                let undecided: &[Option<bool>] = match &per_job[j] {
                    JobVerdicts::Own(v) => v,
                    JobVerdicts::Shared(_) => &[],
                };
                let start = job.range.start;
                job.range.clone().filter(move |&k| undecided.get(k - start).is_some_and(Option::is_none)).map(move |k| (j, k))
            })
            .collect();
        self.validity_checks = items.len() as u64;
        let range_total = |keep: bool| jobs.iter().zip(&remembered).filter(|(_, &r)| r == keep).map(|(job, _)| job.range.len() as u64).sum::<u64>();
        self.remembered_verdicts = range_total(true);
        self.shortcut_verdicts = range_total(false) - self.validity_checks;
        let check = |part: &[(usize, usize)]| -> Vec<bool> {
            let mut text = Vec::new();
            let mut t = Vec::new();
            part.iter()
                .map(|&(j, k)| {
                    let id = eng.trie.id_at(k);
                    text.clear();
                    text.extend_from_slice(jobs[j].text(eng));
                    text.extend_from_slice(eng.canon.vocab().token_bytes(id).unwrap_or_default());
                    t.clear();
                    t.extend_from_slice(jobs[j].tail(eng));
                    t.push(id);
                    eng.canon.valid_from(&text, &t)
                })
                .collect()
        };
        let threads = eng.cfg.threads.max(1);
        let verdicts: Vec<bool> = if items.len() < 256 || threads == 1 {
            check(&items)
        } else {
            // Small chunks handed out in turn: the cost of a check varies a lot (an invalid
            // token tries every witness), so equal contiguous halves finish unevenly.
            let chunk = 64;
            let parts: Vec<&[(usize, usize)]> = items.chunks(chunk).collect();
            let next = std::sync::atomic::AtomicUsize::new(0);
            let mut out: Vec<Vec<bool>> = vec![Vec::new(); parts.len()];
            let results = std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(|| {
                            let mut mine = Vec::new();
                            loop {
                                let p = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                if p >= parts.len() {
                                    break mine;
                                }
                                mine.push((p, check(parts[p])));
                            }
                        })
                    })
                    .collect();
                handles.into_iter().flat_map(|h| h.join().expect("validity check panicked")).collect::<Vec<_>>()
            });
            for (p, v) in results {
                out[p] = v;
            }
            out.concat()
        };
        for (&(j, k), ok) in items.iter().zip(verdicts) {
            if let JobVerdicts::Own(v) = &mut per_job[j] {
                v[k - jobs[j].range.start] = Some(ok);
            }
        }
        let per_job: Vec<Arc<Vec<bool>>> = per_job
            .into_iter()
            .map(|v| match v {
                JobVerdicts::Shared(all) => all,
                JobVerdicts::Own(v) => Arc::new(v.into_iter().map(|x| x.expect("every token decided")).collect()),
            })
            .collect();
        for (((key, verdicts), was_kept), job) in job_keys.into_iter().zip(&per_job).zip(&remembered).zip(&jobs) {
            if !was_kept && job.range == job.subtree {
                kept.insert(key, verdicts.clone());
            }
        }
        // Whether a job has a valid token at all, once per distinct vector (shared ones are many).
        let mut any_valid: FxHashMap<usize, bool> = FxHashMap::default();
        let mut need_row = vec![false; eng.nodes.len()];
        for (id, j) in job_of.iter().enumerate() {
            if let Some(j) = j {
                let v = &per_job[*j];
                scores[id].valid = v.clone();
                need_row[id] = *any_valid.entry(Arc::as_ptr(v) as usize).or_insert_with(|| v.iter().any(|&x| x));
            }
        }
        if let Some(e) = self.eos_node {
            need_row[e] = true;
        }
        if self.wanted.is_some() {
            // With every offset wanted, a node with a valid child has a valid subtree token and
            // so a row already; here the ancestors of the nodes kept need theirs for p(T).
            // A parent's id is smaller than its children's, so one backward pass reaches the root.
            for id in (1..need_row.len()).rev() {
                if need_row[id] {
                    need_row[eng.nodes[id].parent.expect("only the root has no parent")] = true;
                }
            }
        }
        scores[0].step_logp = Some(0.0);
        self.scores = scores;
        self.need_row = need_row;
    }

    /// The trie range of the tokens starting with text[end..m] for the first wanted m > end, if
    /// there are any (`subtree` is the range of text[end]). The ranges for longer m nest inside
    /// it, so it holds every token a wanted offset's masses need.
    fn first_wanted_range(&self, end: usize, subtree: Range<usize>, wanted: &[bool]) -> Option<Range<usize>> {
        nested_ranges(&self.eng.trie, &self.eng.text, end, subtree).find(|(m, _)| wanted[*m]).map(|(_, range)| range)
    }

    /// Width of the rows expected.
    pub fn n_logits(&self) -> usize {
        self.eng.n_logits()
    }

    /// Number of valid token prefixes along the text (nodes), rows needed or not.
    pub fn n_nodes(&self) -> usize {
        self.eng.nodes.len()
    }

    /// Nodes whose rows are needed, with their tokens, parents before children.
    pub fn requests(&self) -> Vec<(NodeId, Vec<TokenId>)> {
        (0..self.eng.nodes.len()).filter(|&i| self.need_row[i] && self.scores[i].masses.is_none()).map(|i| (i, self.eng.tokens(i))).collect()
    }

    /// A node's next-token row (natural-log probabilities by id): reduced at once to the masses
    /// M(T, m), the children's step probabilities and (for the canonical node) p(EOS | T).
    pub fn provide_row<R: LogRow + ?Sized>(&mut self, node: NodeId, row: &R) -> Result<()> {
        if row.len() != self.n_logits() {
            return Err(Error::RowWidth { got: row.len(), expected: self.n_logits() });
        }
        if node >= self.eng.nodes.len() {
            return Err(Error::Protocol(format!("unknown node {node}")));
        }
        let eng = &self.eng;
        let end = eng.nodes[node].end;
        let sc = &self.scores[node];
        let mut masses = Vec::new();
        if !sc.subtree.is_empty() {
            for (_, range) in nested_ranges(&eng.trie, &eng.text, end, sc.subtree.clone()) {
                let lo = sc.subtree.start;
                let mut hi = f64::NEG_INFINITY;
                for k in range.clone() {
                    if sc.valid[k - lo] {
                        let v = row.get(eng.trie.id_at(k) as usize);
                        if v.is_nan() {
                            return Err(Error::NanRow(node));
                        }
                        hi = hi.max(v);
                    }
                }
                let mut sum = 0.0;
                if hi > f64::NEG_INFINITY {
                    for k in range.clone() {
                        if sc.valid[k - lo] {
                            sum += (row.get(eng.trie.id_at(k) as usize) - hi).exp();
                        }
                    }
                }
                masses.push(if sum > 0.0 { hi + sum.ln() } else { f64::NEG_INFINITY });
            }
        }
        for &c in &self.children[node] {
            let tok = eng.nodes[c].token.expect("a child has a token");
            let v = row.get(tok as usize);
            if v.is_nan() {
                return Err(Error::NanRow(node));
            }
            self.scores[c].step_logp = Some(v);
        }
        if self.eos_node == Some(node) {
            self.scores[node].eos_logp = Some(eng.eos.iter().map(|&e| row.get(e as usize)).fold(f64::NEG_INFINITY, log_add));
        }
        self.scores[node].masses = Some(masses);
        self.eng.stats.rows_received += 1;
        Ok(())
    }

    /// log p(T) from the step probabilities along its path (None if a row is still missing).
    fn node_logp(&self, mut node: NodeId, memo: &mut [Option<f64>]) -> Option<f64> {
        let mut path = Vec::new();
        let base = loop {
            if let Some(v) = memo[node] {
                break v;
            }
            path.push(node);
            match self.eng.nodes[node].parent {
                Some(p) => node = p,
                None => break 0.0,
            }
        };
        let mut acc = base;
        for &id in path.iter().rev() {
            acc += self.scores[id].step_logp?;
            memo[id] = Some(acc);
        }
        Some(acc)
    }

    /// Sum the covers: ln P(x[..m] ...) for every m, and the end-of-text term.
    pub fn result(&self) -> Result<PrefixResult> {
        let eng = &self.eng;
        let n = eng.text.len();
        let start = eng.canon.vocab().start_prefix().len();
        let mut log_prefix = vec![f64::NEG_INFINITY; n + 1];
        let mut memo = vec![None; eng.nodes.len()];
        for (id, nd) in eng.nodes.iter().enumerate() {
            if !self.need_row[id] {
                continue;
            }
            let missing = || Error::Protocol(format!("node {id} still needs its row; call requests()"));
            let masses = self.scores[id].masses.as_ref().ok_or_else(missing)?;
            let logp = self.node_logp(id, &mut memo).ok_or_else(missing)?;
            for (j, m) in masses.iter().enumerate() {
                let at = nd.end + 1 + j;
                log_prefix[at] = log_add(log_prefix[at], logp + m);
            }
        }
        if let Some(w) = &self.wanted {
            // Elsewhere only some of the covers were summed.
            for (v, _) in log_prefix.iter_mut().zip(w).filter(|(_, &w)| !w) {
                *v = f64::NAN;
            }
        }
        // Every text starts with the start prefix (and the empty text with the empty string).
        for v in log_prefix.iter_mut().take(start + 1) {
            *v = 0.0;
        }
        let (log_canonical, log_eos) = match self.eos_node {
            Some(e) => {
                let lc = self.node_logp(e, &mut memo).ok_or_else(|| Error::Protocol("the canonical node's path still needs rows".into()))?;
                let le = self.scores[e].eos_logp.ok_or_else(|| Error::Protocol("the canonical node still needs its row".into()))?;
                (lc, lc + le)
            }
            None => (f64::NEG_INFINITY, f64::NEG_INFINITY),
        };
        Ok(PrefixResult { log_prefix, log_eos, log_canonical, start })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{logp, row, tiny_parts, TINY_EOS};

    /// Tokenizers whose verdicts the shortcut test compares: the tiny toy, and the real ones the
    /// test suite's set-up converts into the cache (`python tests/support/tokenizer_assets.py`,
    /// run by `.ci/bootstrap test` before `cargo test`) when they are there.
    fn tokenizers_for_shortcut() -> Vec<(String, Arc<Canonicalizer>, Arc<TokenTrie>)> {
        let (c, t) = tiny_parts();
        let mut out = vec![("tiny".to_string(), c, t)];
        let rels =
            ["tokenizers/gpt-2", "tokenizers/llama-bpe", "tokenizers/qwen2", "models/smollm2-135m", "tokenizers/mistral-v1", "models/qwen2.5-coder-0.5b+nfc"];
        out.extend(real_tokenizers(&rels));
        out
    }

    /// The real tokenizers at these paths under the cache, those that are there.
    fn real_tokenizers(rels: &[&str]) -> Vec<(String, Arc<Canonicalizer>, Arc<TokenTrie>)> {
        let mut out = Vec::new();
        let cache = std::env::var_os("BYTECOVER_CACHE")
            .map(std::path::PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache/bytecover")));
        for rel in rels {
            // "<path>+nfc": the tokenizer with an NFC normaliser, as transformers loads Qwen2.5.
            let (dir, nfc) = match rel.strip_suffix("+nfc") {
                Some(dir) => (dir, true),
                None => (*rel, false),
            };
            let Some(path) = cache.as_ref().map(|c| c.join(dir).join("tokenizer.json")) else { continue };
            let Ok(mut json) = std::fs::read_to_string(&path) else { continue };
            if nfc {
                let mut j: serde_json::Value = serde_json::from_str(&json).unwrap();
                j["normalizer"] = serde_json::json!({"type": "NFC"});
                json = j.to_string();
            }
            let c = Arc::new(Canonicalizer::from_json(&json, None).unwrap());
            let t = Arc::new(TokenTrie::new(c.vocab()));
            out.push((rel.to_string(), c, t));
        }
        out
    }

    /// For each (context, continuation): after every valid token prefix that ends where the
    /// continuation starts and that the pair rule takes, every token of the continuation's
    /// first-byte subtree gets the same verdict from the rule token by token, from the rule over
    /// the whole range, and from the per-token check. Returns (verdicts compared, tokens the rule
    /// left open).
    fn pair_verdicts_against_checks(name: &str, c: &Arc<Canonicalizer>, t: &Arc<TokenTrie>, cases: &[(&str, &str)]) -> (u64, u64) {
        let (mut compared, mut open) = (0u64, 0u64);
        for (context, continuation) in cases {
            let text = format!("{context}{continuation}");
            let s = PrefixScorer::new(c.clone(), t.clone(), text.as_bytes(), vec![], 1).unwrap();
            let eng = &s.eng;
            let at = eng.text.len() - continuation.len();
            let next = eng.text[at];
            for nd in eng.nodes.iter().filter(|nd| nd.end == at) {
                let anchored = &eng.text[nd.anchor..nd.end];
                let Some(left) = c.pair_left(anchored, &nd.tail, next) else { continue };
                let screen = c.pair_screen(left);
                let range = t.range(&[next]);
                let whole = c.pair_verdicts_in(&screen, t, range.clone(), &c.pair_solo_verdicts(t, range.clone(), left.joins()));
                for (i, k) in range.enumerate() {
                    let tok = t.id_at(k);
                    let got = c.pair_verdict(&screen, tok);
                    assert_eq!(whole[i], got, "{name}: whole-range and token verdicts differ for {tok}");
                    let Some(got) = got else {
                        open += 1;
                        continue;
                    };
                    let mut window = anchored.to_vec();
                    window.extend_from_slice(c.vocab().token_bytes(tok).unwrap());
                    let mut tail = nd.tail.clone();
                    tail.push(tok);
                    assert_eq!(
                        got,
                        c.valid_from(&window, &tail),
                        "{name}: {:?} + token {tok} {:?}",
                        String::from_utf8_lossy(anchored),
                        c.vocab().token_string(tok)
                    );
                    compared += 1;
                }
            }
        }
        (compared, open)
    }

    /// The pair rule (`canonical/pairs.rs`) gives the per-token check's verdict for *every* token
    /// of the subtree, after every valid token prefix of these texts that ends where the marked
    /// continuation starts, on the SentencePiece-style tokenizers it is for (Gemma-3 with its
    /// added newline tokens, Llama-2, Mistral, Phi-3): after words, inside and after space runs,
    /// mid-word, after newlines, tabs and CRLF, before digits, accented letters and CJK.
    #[test]
    fn pair_rule_verdicts_equal_per_token_checks_on_every_token() {
        // (context, continuation): the subtree is that of the continuation's first byte.
        let cases: [(&str, &str); 12] = [
            ("The cat", " sat"),
            ("x =", " 1"),
            ("def f():\n    ", "    return"),
            ("        ", "return"),
            ("she hel", "lo"),
            ("a, ", "b"),
            ("1", "23"),
            ("caf", "\u{e9}"),
            ("\u{4e2d}", "\u{6587}"),
            ("a\t", "\tb"),
            ("x\r\n", " y"),
            ("<tr", ">\n"),
        ];
        let rels = ["models/gemma3-270m", "tokenizers/llama-spm", "tokenizers/mistral-v1", "tokenizers/phi-3"];
        for (name, c, t) in real_tokenizers(&rels) {
            let (compared, open) = pair_verdicts_against_checks(&name, &c, &t, &cases);
            eprintln!("{name}: {compared} pair verdicts equal the per-token checks ({open} left to them)");
            assert!(compared > 20_000, "{name}: only {compared} verdicts came from the pair rule");
        }
    }

    /// Inside a word, on byte-level BPE tokenizers with a known split pattern (GPT-2, SmolLM2,
    /// Qwen2, Llama-3), the pair rule's verdicts (`canonical/pairs.rs`, the piece case) equal the
    /// per-token check for every token of the subtree, after every valid token prefix ending
    /// where the continuation starts: mid-word, after capitals, accented letters, CJK, an opening
    /// bracket, and next to apostrophes (where the guard must leave the contractions alone).
    #[test]
    fn pair_rule_inside_a_piece_equals_per_token_checks() {
        let cases: [(&str, &str); 38] = [
            ("she hel", "lo"),
            ("Hello wor", "ld"),
            ("The interna", "tional"),
            ("HELL", "O WORLD"),
            ("caf", "\u{e9}s"),
            ("na\u{ef}v", "ety"),
            ("\u{fc}ber", "all"),
            ("\u{4e2d}\u{6587}", "\u{5b57}"),
            ("(hel", "lo)"),
            ("x'l", "lama"),
            ("don", "'t"),
            ("it'", "s ok"),
            ("we'r", "e"),
            ("'re", "ally"),
            ("a1b", "cd"),
            ("abcdefghij", "klmnop"),
            // Symbol runs, one-character pieces before letters, and letters or symbols that run
            // on into a token whose own run ends inside it (`.get` after `./`, `lo,` after `hel`).
            ("np.", "array(x)"),
            ("x = (", "self)"),
            ("foo ./", ".ci/run"),
            ("a, ", "[1]"),
            ("max", "_new_tokens"),
            ("f(a) ", "(b)"),
            (" `", "abc`"),
            ("f(", "\n)"),
            ("x;", ";; y"),
            ("\t", "abc"),
            ("a\n", "bc"),
            ("12", "ab"),
            ("\u{e9}(", "\u{fc}ber"),
            ("\"", "hello\","),
            ("\u{2014}", "dash"),
            // A symbol run that ends with a symbol that merges with letters elsewhere (Qwen2.5:
            // `" )_"` is `[" )", "_"]`, and `_init` is a token), before letters: two pieces.
            ("f( )_", "init"),
            ("x ](", "self"),
            ("{.", "get"),
            // Precomposed characters after ASCII letters and ASCII letters after them (the
            // tokenizer with NFC leaves tokens that are not in normal form to the per-token
            // check; a text that is not in normal form has no cover there).
            ("cafe", "s \u{e9}t\u{e9}"),
            ("na", "\u{ef}ve"),
            ("x ", "\u{c5}ngstrom"),
            ("x", "\u{ac01}y"),
        ];
        let rels = [
            "tokenizers/gpt-2",
            "models/smollm2-135m",
            "tokenizers/qwen2",
            "tokenizers/llama-bpe",
            "models/qwen2.5-coder-0.5b",
            "models/qwen2.5-coder-0.5b+nfc",
        ];
        for (name, c, t) in real_tokenizers(&rels) {
            let (compared, open) = pair_verdicts_against_checks(&name, &c, &t, &cases);
            eprintln!("{name}: {compared} in-piece pair verdicts equal the per-token checks ({open} left to them)");
            assert!(compared > 2_000, "{name}: only {compared} verdicts came from the pair rule");
        }
    }

    /// The whole-range pair verdicts (`pair_verdicts_in`, from the index by first symbol) equal
    /// the token-by-token ones (`pair_verdict`) for every token of the range, for 400 left tokens
    /// spread over the vocabulary (and nothing on the left), after bytes that start words, spaces,
    /// newlines, digits, punctuation and multi-byte characters.
    #[test]
    fn pair_verdicts_of_a_whole_range_equal_token_by_token_verdicts() {
        let rels = ["models/gemma3-270m", "tokenizers/llama-spm", "tokenizers/mistral-v1", "tokenizers/phi-3"];
        for (name, c, t) in real_tokenizers(&rels) {
            let mut compared = 0u64;
            let step = (c.vocab().n_ids() / 400).max(1);
            let lefts = std::iter::once(None).chain((0..c.vocab().n_ids() as TokenId).step_by(step).map(Some));
            for left_id in lefts {
                for next in [b' ', b'a', b't', b'\n', b'1', b'.', b'(', 0xe4, 0xf0] {
                    // A left token as the rule takes it: one that is the whole encoding of its bytes.
                    let left = match left_id {
                        None => PairLeft::NothingLeft,
                        Some(id) => match c.pair_left(c.vocab().token_bytes(id).unwrap_or_default(), &[id], next) {
                            Some(left) => left,
                            None => continue,
                        },
                    };
                    let screen = c.pair_screen(left);
                    let range = t.range(&[next]);
                    let whole = c.pair_verdicts_in(&screen, &t, range.clone(), &c.pair_solo_verdicts(&t, range.clone(), left.joins()));
                    for (i, k) in range.enumerate() {
                        assert_eq!(whole[i], c.pair_verdict(&screen, t.id_at(k)), "{name}: left {left_id:?}, token {}", t.id_at(k));
                        compared += 1;
                    }
                }
            }
            eprintln!("{name}: {compared} whole-range pair verdicts equal the token-by-token ones");
            assert!(compared > 1_000_000, "{name}: only {compared} verdicts compared");
        }
    }

    /// Every verdict a forced piece boundary settles (`canonical/boundary.rs`), and every verdict
    /// shared between nodes past a forced cut inside their text, equals the per-token check's,
    /// on texts with the layouts the shortcut is for (words before spaces, indentation runs,
    /// newlines, digits, contractions, symbols, CJK, emoji) and with repeated words.
    #[test]
    fn shortcut_verdicts_equal_per_token_checks() {
        let texts: [&[u8]; 11] = [
            // Repeated words after different pieces share verdicts past the forced cut before
            // them (`forced_cut_inside`); the cut after "(" or "'" or a digit is checked too.
            b"the cat and the hat; the cat's hat (the) and THE cat\n2the 12cats",
            "so \u{e9}t\u{e9} \u{e9}t\u{e9}, la \u{4e2d}\u{6587} la\ttab\ttab\r\nend".as_bytes(),
            b"ab  a\n\nabc 1 a   b  \n a",
            b"def f(x):\n        return x  + 1 # it's 42\n",
            "a  b\t\tc \n\n   d\r\n e's 1,234.5 \u{4e2d}\u{6587} caf\u{e9} \u{1f600} x".as_bytes(),
            b"    if n:\n\n        pass  \n   ",
            b"The numbers below are `k', not a[k]:\n\n                   0\n",
            b"x = [1, 2]  ;  y=(3)\n\ty 'll 've ' ",
            b"  \n \n  a",
            // Symbol runs before letters (cut after `" `"` under Llama-3's and Qwen2's patterns),
            // and bytes that occur inside added tokens (`_`, `|`, `<`; Qwen2.5's
            // `<|fim_prefix|>`), partly spelled so that a match could still cross.
            b"y = np.array(x)._get(\"./.ci/run\", max_new=[a, (b)]) | `abc` <|fim_pre <|im x_y",
            // Precomposed characters next to ASCII (in normal form: the tokenizer with NFC has
            // no cover for a text that is not).
            "caf\u{e9} na\u{ef}ve \u{c5}ngstrom \u{ac01}y (\u{e9}) x_\u{fc}".as_bytes(),
        ];
        for (name, c, t) in tokenizers_for_shortcut() {
            let (mut shortcut, mut scored, mut shared) = (0u64, 0, 0u64);
            for text in texts {
                // The tiny toy cannot spell most of these texts.
                let Ok(s) = PrefixScorer::new(c.clone(), t.clone(), text, vec![TINY_EOS], 2) else { continue };
                scored += 1;
                shortcut += s.shortcut_verdicts;
                shared += s.memo_hits;
                let eng = &s.eng;
                for (id, nd) in eng.nodes.iter().enumerate() {
                    let sc = &s.scores[id];
                    for (k, &got) in sc.subtree.clone().zip(sc.valid.iter()) {
                        let tok = eng.trie.id_at(k);
                        // Every token of small subtrees and every short token (a space before
                        // a digit, an apostrophe, a newline: where the classes meet), one in 8
                        // short tokens ending inside a character (each costs every completion),
                        // one in 32 of the rest (all of them took 8 minutes on 2 cores).
                        let bytes = c.vocab().token_bytes(tok).unwrap();
                        let partial = crate::pretokenize::incomplete_tail(bytes).is_some();
                        // A space and an unfinished character (`" \xe2"`): every one, as the
                        // shortcut splits its completions into whitespace and the rest.
                        let space_partial = bytes.len() > 1 && bytes[0] == b' ' && crate::pretokenize::first_char(&bytes[1..]).is_none();
                        let every = if space_partial {
                            1
                        } else if bytes.len() > 3 {
                            32
                        } else if partial {
                            8
                        } else {
                            1
                        };
                        if sc.subtree.len() > 2000 && k % every != 0 {
                            continue;
                        }
                        let mut window = eng.text[nd.anchor..nd.end].to_vec();
                        window.extend_from_slice(c.vocab().token_bytes(tok).unwrap());
                        let mut tail = nd.tail.clone();
                        tail.push(tok);
                        let want = c.valid_from(&window, &tail);
                        assert_eq!(got, want, "{name}: {:?} + token {tok} {:?}", String::from_utf8_lossy(&window), c.vocab().token_string(tok));
                    }
                }
            }
            eprintln!("{name}: {scored} texts, {shortcut} verdicts from the rules");
            assert!(scored > 0 && shortcut > 0, "{name}: {scored} texts scored, no verdict came from the shortcut");
            assert!(name == "tiny" || shared > 0, "{name}: no node shared another's verdicts");
        }
    }

    /// Verdicts a scorer takes from the tokenizer's memo of earlier scorers (`range_memo.rs`) are
    /// the ones it would decide itself: a text scored after others that share its words gets the
    /// same verdicts for every node, and the same rows requested, as after the memo is cleared.
    #[test]
    fn verdicts_remembered_across_scorers_equal_fresh_ones() {
        let texts: [&[u8]; 3] = [b"the cat and the hat\n    if x:\n", b"a hat, the cat; and  the\n    if y:\n        cat", b"the the the   cat"];
        for (name, c, t) in tokenizers_for_shortcut() {
            c.range_verdicts().clear();
            let verdicts = |s: &PrefixScorer| -> Vec<Vec<bool>> { s.scores.iter().map(|sc| sc.valid.to_vec()).collect() };
            let mut remembered = 0u64;
            for (i, text) in texts.iter().enumerate() {
                let Ok(warm) = PrefixScorer::new(c.clone(), t.clone(), text, vec![TINY_EOS], 2) else { continue };
                remembered += warm.remembered_verdicts;
                c.range_verdicts().clear();
                let cold = PrefixScorer::new(c.clone(), t.clone(), text, vec![TINY_EOS], 2).unwrap();
                assert_eq!(cold.remembered_verdicts, 0);
                assert_eq!(verdicts(&warm), verdicts(&cold), "{name}: text {i}");
                assert_eq!(warm.requests(), cold.requests(), "{name}: text {i}");
                // Warm the memo again with every text so far, as a data set scored in order would.
                c.range_verdicts().clear();
                for earlier in &texts[..=i] {
                    let _ = PrefixScorer::new(c.clone(), t.clone(), earlier, vec![TINY_EOS], 2);
                }
                assert!(!c.range_verdicts().is_empty(), "{name}: nothing kept after scoring");
            }
            assert!(name == "tiny" || remembered > 0, "{name}: no verdict was remembered across scorers");
        }
    }

    /// The scorer's prefix probabilities equal the eager engine's log P(x...) at every byte.
    #[test]
    fn prefix_probabilities_equal_the_eager_engine() {
        for text in [&b"ab a"[..], b"a\n\nab", b"abc ab\n", b"a  b"] {
            let (c, t) = tiny_parts();
            let mut s = PrefixScorer::new(c.clone(), t.clone(), text, vec![TINY_EOS], 2).unwrap();
            let w = s.n_logits();
            for (node, tokens) in s.requests() {
                s.provide_row(node, &row(&tokens, w)[..]).unwrap();
            }
            let got = s.result().unwrap();
            let mut e = CoverEngine::new(c, t, b"", vec![TINY_EOS], EngineConfig { tolerance: 0.0, threads: 1, lazy: false }).unwrap();
            for m in 0..=text.len() {
                let r = e.requests();
                for (node, tokens) in &r.scores {
                    e.provide_score(*node, logp(tokens, w)).unwrap();
                }
                for (node, tokens) in &r.rows {
                    e.provide_row(*node, &row(tokens, w)[..]).unwrap();
                }
                let d = e.distribution().unwrap();
                assert!(
                    (got.log_prefix[m] - d.log_prefix).abs() < 1e-9,
                    "{:?} at {m}: {} vs {}",
                    String::from_utf8_lossy(text),
                    got.log_prefix[m],
                    d.log_prefix
                );
                if m == text.len() {
                    assert!((got.log_eos - (d.log_total + d.logprobs[crate::primitives::EOS_SLOT])).abs() < 1e-9);
                } else {
                    e.advance(text[m]).unwrap();
                }
            }
        }
    }

    /// A scorer asked for a few offsets (`at_offsets`) gives the full scorer's values there and
    /// NaN elsewhere, with the same end-of-text terms, requesting a subset of the full scorer's
    /// rows; on the real tokenizers, about one row per canonical token.
    #[test]
    fn wanted_offsets_equal_the_full_scorer_there() {
        let texts: [&[u8]; 4] = [b"ab a", b"a\n\nab", b"abc ab\n", b"the cat, the  hat\n    if x:\n        y"];
        for (name, c, t) in tokenizers_for_shortcut() {
            for text in texts {
                let Ok(mut full) = PrefixScorer::new(c.clone(), t.clone(), text, vec![TINY_EOS], 2) else { continue };
                let w = full.n_logits();
                let full_asked = full.requests();
                for (node, tokens) in &full_asked {
                    full.provide_row(*node, &row(tokens, w)[..]).unwrap();
                }
                let want = full.result().unwrap();
                let n = text.len();
                // With the full scorer's verdicts in the tokenizer's memo (sliced to the parts
                // wanted) and without them (decided afresh).
                for (offsets, cleared) in [vec![n], vec![0, n / 2, n], vec![1, n - 1]].into_iter().flat_map(|o| [(o.clone(), false), (o, true)]) {
                    if cleared {
                        c.range_verdicts().clear();
                    }
                    let mut some = PrefixScorer::at_offsets(c.clone(), t.clone(), text, vec![TINY_EOS], 2, &offsets).unwrap();
                    let asked = some.requests();
                    assert!(asked.iter().all(|r| full_asked.contains(r)), "{name}: a row the full scorer never asked for");
                    for (node, tokens) in &asked {
                        some.provide_row(*node, &row(tokens, w)[..]).unwrap();
                    }
                    let got = some.result().unwrap();
                    for m in want.start..=want.start + n {
                        let (g, f) = (got.log_prefix[m], want.log_prefix[m]);
                        if m == want.start || offsets.contains(&(m - want.start)) {
                            assert!(g == f || (g - f).abs() < 1e-12, "{name} {:?} at {m}: {g} vs {f}", String::from_utf8_lossy(text));
                        } else {
                            assert!(g.is_nan(), "{name}: offset {m} was not wanted");
                        }
                    }
                    assert_eq!(got.log_eos.to_bits(), want.log_eos.to_bits(), "{name}");
                    if offsets == [n] && name != "tiny" {
                        let tokens = c.encode_text(text).unwrap().len();
                        assert!(asked.len() <= tokens + 8, "{name}: {} rows for {tokens} tokens", asked.len());
                    }
                }
            }
        }
        assert!(PrefixScorer::at_offsets(tiny_parts().0, tiny_parts().1, b"ab", vec![TINY_EOS], 1, &[3]).is_err());
    }
}

//! Lazy exact choice of the next byte: decide validity and fetch model rows only as far as the
//! choice needs them.
//!
//! The full distribution needs, at every fresh token prefix T, the validity of T + [v] for every
//! token v (tens of thousands of local encodings) and, at every byte, the row of every token
//! prefix spelling the text so far (about one model call per byte). A *choice* needs neither: the
//! 257 numerators are sums of nonnegative terms, so bounds on them often settle which byte a given
//! uniform number (or the argmax) selects long before every term is known:
//! * a token whose validity is not decided yet adds [0, p] to its byte's numerator;
//! * a token prefix T whose row has not been fetched (*deferred*) adds at most p(T) in all: every
//!   cover through it has probability at most p(T), and they may fall on any byte or EOS.
//!
//! `decide` computes the bounds, returns the byte as soon as they determine it, and otherwise
//! checks the heaviest undecided tokens (cheap, repeated with bigger batches) or asks for the rows
//! of the heaviest deferred prefixes (a model call; `pending`). The byte it returns is exactly the
//! one the full distribution would give for the same uniform number: the conditions below hold
//! for every value the unknown terms can take. What it bought: in a confident stretch only the
//! token prefix the text actually follows needs a row, about one call per token instead of one
//! per byte, and only the few heaviest tokens are checked (tests/test_lazy_choice.py checks the
//! choices against the full engine; benches/bench_generate.py measures the speed).
//!
//! When a deferred prefix's row arrives after the text has moved on, `catch_up` creates what the
//! bytes since have made of it: its crossing range and its children spelling the bytes in between
//! (deferred themselves), so the engine ends up with the same groups as the eager one.

use super::{CoverEngine, NodeId};
use crate::error::{Error, Result};
use crate::primitives::{TokenId, EOS_SLOT, N_SLOTS};
use std::ops::Range;

/// Validity of T + [v] not decided yet.
pub(super) const UNKNOWN: u8 = 0;
pub(super) const VALID: u8 = 1;
pub(super) const INVALID: u8 = 2;

/// Deferred prefixes fetched together with the heaviest: those at least this fraction of it.
/// On a CPU a forward with 2-8 rows costs about 1.5x one with a single row (SmolLM2-135M, 2
/// cores: 59 ms vs 85-90 ms), so rows that rarely matter are left for a later call. Tried: 1e-3
/// and up to 8 rows (2.4 rows per call, 2.10x `generate`).
const DEFER_FETCH_RATIO: f64 = 0.05;

/// Undecided tokens checked by the first refinement at a byte (then 4x as many each time).
pub(super) const FIRST_CHECK_BATCH: usize = 32;

/// Rows added to fill a call are taken only from prefixes ending at most this many bytes back: an
/// older one shares less of the KV trunk and would make every row of the call longer (padding).
const FILL_WINDOW: usize = 8;

/// How the next byte is chosen from the exact distribution.
#[derive(Debug, Clone, Copy)]
pub enum Pick {
    /// The most likely slot (the first of equals, like numpy's argmax).
    Greedy,
    /// Inverse CDF at `u` in [0, 1) over the `N_SLOTS` slots of the distribution raised to
    /// 1/temperature (the same rule as `numpy.random.Generator.choice`).
    Sample { u: f64, temperature: f64 },
}

/// A node's masses by next byte for one (range, depth): valid, undecided, and how many tokens
/// are undecided (so that "none left" is exact, whatever the rounding of the running sums).
#[derive(Debug, Clone)]
pub(super) struct ChildSums {
    range: Range<usize>,
    depth: usize,
    children: Vec<ChildSum>,
}

#[derive(Debug, Clone)]
struct ChildSum {
    byte: u8,
    range: Range<usize>,
    valid: f64,
    unknown: f64,
    n_unknown: u32,
}

impl ChildSum {
    fn unknown(&self) -> f64 {
        if self.n_unknown == 0 {
            0.0
        } else {
            self.unknown.max(0.0)
        }
    }
}

/// Bounds on the `N_SLOTS` numerators, all scaled by one common factor: slot c's numerator is
/// known[c] plus at most unknown[c] plus some share of `deferred` (the deferred mass may fall
/// on the slots in any proportion, or partly on none).
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Mass of tokens known to be valid (and EOS).
    pub known: [f64; N_SLOTS],
    /// Mass of tokens whose validity is undecided, by slot.
    pub unknown: [f64; N_SLOTS],
    /// Total mass of deferred token prefixes (can land on any slot).
    pub deferred: f64,
}

/// What one `refine` step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refinement {
    /// Decided the validity of some undecided tokens (no model call).
    Checked,
    /// Needs the rows in `pending()` (one model call).
    NeedRows,
    /// Nothing is uncertain: the bounds are the exact numerators.
    Settled,
}

impl Bounds {
    fn uncertain(&self) -> bool {
        self.deferred > 0.0 || self.unknown.iter().any(|&u| u > 0.0)
    }

    /// Most extra mass slot `c` can still receive.
    fn extra(&self, c: usize) -> f64 {
        self.unknown[c] + self.deferred
    }

    /// The slot with the most known mass (the first of equals).
    fn leader(&self) -> usize {
        (0..N_SLOTS).fold(0, |best, c| if self.known[c] > self.known[best] { c } else { best })
    }

    /// Slots whose undecided tokens can change the choice: for greedy the leader and every slot
    /// that could still overtake it; when sampling, all.
    fn focus(&self, pick: Pick) -> [bool; N_SLOTS] {
        let mut focus = [true; N_SLOTS];
        if let Pick::Greedy = pick {
            let b = self.leader();
            for (c, f) in focus.iter_mut().enumerate() {
                *f = c == b || self.known[c] + self.extra(c) >= self.known[b];
            }
        }
        focus
    }

    fn decision(&self, pick: Pick) -> Result<Option<u16>> {
        let total_known: f64 = self.known.iter().sum();
        if total_known <= 0.0 {
            return if self.uncertain() { Ok(None) } else { Err(Error::ZeroMass) };
        }
        let settled = !self.uncertain();
        match pick {
            Pick::Greedy => {
                let b = self.leader();
                let lb = self.known[b];
                let beats = |c: usize| {
                    let hi = self.known[c] + self.extra(c);
                    if c < b {
                        lb > hi
                    } else {
                        lb >= hi
                    }
                };
                Ok(((0..N_SLOTS).all(|c| c == b || beats(c)) || settled).then_some(b as u16))
            }
            Pick::Sample { u, temperature: 1.0 } => {
                let b = inverse_cdf(&self.known, u * total_known);
                if settled {
                    return Ok(Some(b as u16));
                }
                // For every value the unknown terms can take: S(<b) <= u Z and u Z < S(<=b),
                // i.e. (1-u) S(<b) <= u S(>=b) and u S(>b) < (1-u) S(<=b), at their worst.
                let known_below: f64 = self.known[..b].iter().sum();
                let known_above: f64 = self.known[b + 1..].iter().sum();
                let extra_below: f64 = self.unknown[..b].iter().sum::<f64>() + if b > 0 { self.deferred } else { 0.0 };
                let extra_above: f64 = self.unknown[b + 1..].iter().sum::<f64>() + if b < EOS_SLOT { self.deferred } else { 0.0 };
                let left = (1.0 - u) * (known_below + extra_below) <= u * (known_above + self.known[b]);
                let right = u * (known_above + extra_above) < (1.0 - u) * (known_below + self.known[b]);
                Ok((left && right).then_some(b as u16))
            }
            Pick::Sample { u, temperature } => {
                // Each slot's weight lies in [known^(1/t), (known + extra)^(1/t)]; the slot is
                // settled when the cumulative sums at both ends agree (independent intervals:
                // looser than the t = 1 rule, still exact).
                let scale = (0..N_SLOTS).map(|c| self.known[c] + self.extra(c)).fold(0.0, f64::max);
                let pow = |x: f64| (x / scale).powf(1.0 / temperature);
                let lo: Vec<f64> = self.known.iter().map(|&x| pow(x)).collect();
                let hi: Vec<f64> = (0..N_SLOTS).map(|c| pow(self.known[c] + self.extra(c))).collect();
                let (z_lo, z_hi): (f64, f64) = (lo.iter().sum(), hi.iter().sum());
                if z_lo <= 0.0 {
                    return Ok(None);
                }
                let b = inverse_cdf(&lo, u * z_lo);
                if settled {
                    return Ok(Some(b as u16));
                }
                let hi_below: f64 = hi[..b].iter().sum();
                let lo_upto: f64 = lo[..=b].iter().sum();
                Ok((hi_below <= u * z_lo && u * z_hi < lo_upto).then_some(b as u16))
            }
        }
    }
}

/// The first slot whose cumulative weight exceeds `target` (the last slot if rounding leaves
/// none), like numpy's `searchsorted(cumsum, target, side="right")`.
fn inverse_cdf(weights: &[f64], target: f64) -> usize {
    let mut below = 0.0;
    for (c, &w) in weights.iter().enumerate() {
        if below + w > target {
            return c;
        }
        below += w;
    }
    weights.len() - 1
}

impl CoverEngine {
    /// The next slot (0-255 a byte, `EOS_SLOT` end of text) chosen by `pick` from the exact distribution, or
    /// `None` when rows are needed first: fetch `pending()`, give them with `provide_row`, ask
    /// again. Lazy engines only.
    pub fn decide(&mut self, pick: Pick) -> Result<Option<u16>> {
        self.check_lazy("decide")?;
        if let Pick::Sample { u, temperature } = pick {
            if !((0.0..1.0).contains(&u) && temperature > 0.0 && temperature.is_finite()) {
                return Err(Error::Protocol(format!("need 0 <= u < 1 and a finite temperature > 0, got u={u}, temperature={temperature}")));
            }
        }
        self.pending.clear();
        let mut batch = FIRST_CHECK_BATCH;
        loop {
            let (reference, mut bounds) = self.bounds()?;
            let mut ignored = 0.0;
            let known: f64 = bounds.known.iter().sum();
            if self.cfg.tolerance > 0.0 && known > 0.0 {
                ignored = self.light_deferred(reference, known);
                bounds.deferred = (bounds.deferred - ignored).max(0.0);
            }
            if let Some(b) = bounds.decision(pick)? {
                if ignored > 0.0 {
                    self.worst_error = self.worst_error.max(ignored / known);
                }
                return Ok(Some(b));
            }
            // (Prefixes ignored under a tolerance are candidates for rows too: unsettled means
            // their mass could still tip the choice.)
            match self.refine_step(reference, &bounds, &bounds.focus(pick), batch) {
                Refinement::Checked => batch = batch.saturating_mul(4),
                Refinement::NeedRows => return Ok(None),
                // Nothing left to refine yet undecided: a bug, not a state to wait in.
                Refinement::Settled => return Err(Error::Protocol("decide: bounds unsettled with nothing left to check or fetch".into())),
            }
        }
    }

    /// The refinement `decide` and `refine` share. Checking tokens costs microseconds, a row a
    /// model call: check the `batch` heaviest undecided tokens of the `focus` slots while those
    /// weigh at least a tenth of the deferred prefixes; otherwise ask for the heaviest deferred
    /// rows (`pending`). `Settled` when there is neither.
    fn refine_step(&mut self, reference: f64, bounds: &Bounds, focus: &[bool; N_SLOTS], batch: usize) -> Refinement {
        let unknown: f64 = (0..N_SLOTS).filter(|&c| focus[c]).map(|c| bounds.unknown[c]).sum();
        if unknown > 0.0 && unknown >= 0.1 * bounds.deferred {
            self.check_heaviest(reference, batch, focus);
            return Refinement::Checked;
        }
        self.pending = self.heaviest_deferred(reference);
        if self.pending.is_empty() {
            Refinement::Settled
        } else {
            Refinement::NeedRows
        }
    }

    /// The current bounds on the `N_SLOTS` numerators, for a caller that chooses from a combination
    /// of several models (an ensemble): it combines each member's bounds and calls `refine` on
    /// the member whose uncertainty matters most. Lazy engines only.
    pub fn step_bounds(&mut self) -> Result<Bounds> {
        self.check_lazy("step_bounds")?;
        Ok(self.bounds()?.1)
    }

    /// One step towards exact numerators: check the heaviest undecided tokens (batches growing
    /// fourfold until the next row or byte), or, when deferred prefixes weigh more than ten times the
    /// undecided tokens, ask for the heaviest deferred rows (`pending`), as `decide` does.
    pub fn refine(&mut self) -> Result<Refinement> {
        self.check_lazy("refine")?;
        self.pending.clear();
        let (reference, bounds) = self.bounds()?;
        let step = self.refine_step(reference, &bounds, &[true; N_SLOTS], self.check_batch);
        self.check_batch = match step {
            Refinement::Checked => self.check_batch.saturating_mul(4),
            _ => FIRST_CHECK_BATCH, // rows to come bring new undecided tokens
        };
        Ok(step)
    }

    fn check_lazy(&self, what: &str) -> Result<()> {
        if self.cfg.lazy {
            Ok(())
        } else {
            Err(Error::Protocol(format!("{what}() needs an engine made with lazy=True")))
        }
    }

    /// Bounded-error mode: the mass of the lightest deferred prefixes that together weigh at
    /// most `tolerance` times the mass known valid at this step. The choice is made as if they
    /// were absent (they stay deferred, and are fetched at a later step if they grow heavy
    /// enough to count), so this step's distribution is off by at most `tolerance` in total
    /// variation; `error_bound` reports the largest such fraction used.
    fn light_deferred(&self, reference: f64, known: f64) -> f64 {
        let mut masses: Vec<f64> = self.deferred(reference).into_iter().map(|x| x.0).collect();
        masses.sort_unstable_by(f64::total_cmp);
        let budget = self.cfg.tolerance * known;
        let mut used = 0.0;
        for m in masses {
            if used + m > budget {
                break;
            }
            used += m;
        }
        used
    }

    /// (mass scaled by exp(-reference), node) of every deferred group (a node is in at most one).
    fn deferred(&self, reference: f64) -> Vec<(f64, NodeId)> {
        self.groups
            .iter()
            .filter(|(node, _)| self.nodes[*node].probs.is_none())
            .map(|(node, _)| ((self.nodes[*node].logp.unwrap_or(f64::NEG_INFINITY) - reference).exp(), *node))
            .collect()
    }

    /// Bounded-error mode: the largest bound on any step's total-variation error so far.
    pub fn error_bound(&self) -> f64 {
        self.worst_error
    }

    /// Deferred token prefixes whose rows the last `decide` asked for, with their tokens.
    pub fn pending(&self) -> Vec<(NodeId, Vec<TokenId>)> {
        self.pending.iter().map(|&n| (n, self.tokens(n))).collect()
    }

    /// A node's child sums for `range` at `depth`, computed when the range changed.
    fn ensure_sums(&mut self, node: NodeId, range: &Range<usize>, depth: usize) {
        let nd = &self.nodes[node];
        if nd.sums.as_ref().is_some_and(|c| c.range == *range && c.depth == depth) {
            return;
        }
        let Some(probs) = &nd.probs else { return };
        let children = self
            .trie
            .children(range.clone(), depth)
            .by_byte
            .into_iter()
            .map(|(byte, r)| {
                let (mut valid, mut unknown, mut n_unknown) = (0.0, 0.0, 0u32);
                for k in r.clone() {
                    match nd.checked[k] {
                        VALID => valid += probs[k],
                        UNKNOWN if probs[k] > 0.0 => {
                            unknown += probs[k];
                            n_unknown += 1;
                        }
                        _ => {}
                    }
                }
                ChildSum { byte, range: r, valid, unknown, n_unknown }
            })
            .collect();
        self.nodes[node].sums = Some(ChildSums { range: range.clone(), depth, children });
    }

    fn bounds(&mut self) -> Result<(f64, Bounds)> {
        let n = self.text.len();
        let bare = self.at_bare_start_prefix();
        let mut reference = f64::NEG_INFINITY;
        for (node, _) in &self.groups {
            let logp = self.nodes[*node].logp.ok_or_else(|| Error::Protocol(format!("node {node} still needs its score; call requests()")))?;
            reference = reference.max(logp);
        }
        let mut b = Bounds { known: [0.0; N_SLOTS], unknown: [0.0; N_SLOTS], deferred: 0.0 };
        if reference == f64::NEG_INFINITY {
            return Ok((0.0, b));
        }
        for i in 0..self.groups.len() {
            let (node, range) = self.groups[i].clone();
            let depth = n - self.nodes[node].end;
            self.ensure_sums(node, &range, depth);
            let nd = &self.nodes[node];
            let logp = nd.logp.unwrap_or(f64::NEG_INFINITY);
            let Some(sums) = nd.sums.as_ref().filter(|_| nd.probs.is_some()) else {
                b.deferred += (logp - reference).exp();
                continue;
            };
            let scale = (logp + nd.shift - reference).exp();
            for c in &sums.children {
                b.known[c.byte as usize] += scale * c.valid;
                b.unknown[c.byte as usize] += scale * c.unknown();
            }
            if depth == 0 || (node == 0 && bare) {
                b.known[EOS_SLOT] += (logp + nd.eos_logp - reference).exp();
            }
        }
        Ok((reference, b))
    }

    /// Decide validity of the `batch` heaviest undecided tokens over all groups.
    /// Only slots with `focus[slot]` are refined (those whose undecided mass can change the
    /// choice); `bounds` has made every group's sums current.
    fn check_heaviest(&mut self, reference: f64, batch: usize, focus: &[bool; N_SLOTS]) {
        let mut cands: Vec<(f64, usize, usize)> = Vec::new(); // (weight, node, trie position)
        for (node, _) in &self.groups {
            let nd = &self.nodes[*node];
            let (Some(probs), Some(sums)) = (&nd.probs, &nd.sums) else { continue };
            let scale = (nd.logp.unwrap_or(f64::NEG_INFINITY) + nd.shift - reference).exp();
            for c in sums.children.iter().filter(|c| c.n_unknown > 0 && focus[c.byte as usize]) {
                cands.extend(c.range.clone().filter(|&k| nd.checked[k] == UNKNOWN && probs[k] > 0.0).map(|k| (scale * probs[k], *node, k)));
            }
        }
        if cands.len() > batch {
            cands.select_nth_unstable_by(batch, |a, b| b.0.total_cmp(&a.0));
            cands.truncate(batch);
        }
        cands.sort_unstable_by_key(|c| (c.1, c.2));
        let mut start = 0;
        while start < cands.len() {
            let node = cands[start].1;
            let end = start + cands[start..].iter().take_while(|c| c.1 == node).count();
            let ks: Vec<usize> = cands[start..end].iter().map(|c| c.2).collect();
            let verdicts = self.check_tokens(node, &ks);
            let nd = &mut self.nodes[node];
            let probs = nd.probs.clone().expect("checked tokens belong to nodes with rows");
            for (&k, ok) in ks.iter().zip(verdicts) {
                nd.checked[k] = if ok { VALID } else { INVALID };
                if let Some(sums) = nd.sums.as_mut() {
                    let i = sums.children.partition_point(|c| c.range.end <= k);
                    let c = &mut sums.children[i];
                    c.unknown -= probs[k];
                    c.n_unknown -= 1;
                    if ok {
                        c.valid += probs[k];
                    }
                }
            }
            self.stats.validity_checks += ks.len() as u64;
            start = end;
        }
    }

    /// The deferred prefixes the next call fetches: the heaviest alone, or, when others weigh at
    /// least `DEFER_FETCH_RATIO` of it, up to 8 of the heaviest.
    fn heaviest_deferred(&self, reference: f64) -> Vec<NodeId> {
        let mut d = self.deferred(reference);
        d.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        let top = d.first().map_or(0.0, |x| x.0);
        let needed = d.iter().take_while(|x| x.0 >= DEFER_FETCH_RATIO * top).take(4).count();
        // A call with several rows costs the same for 2 or 8: fill it with the next heaviest
        // (they would otherwise grow, relative to the shrinking prefix mass, into calls of their own).
        if needed < 2 {
            return d.into_iter().take(1).map(|x| x.1).collect();
        }
        let n = self.text.len();
        let recent = |node: NodeId| self.nodes[node].end + FILL_WINDOW >= n;
        d.into_iter().enumerate().filter(|(i, x)| *i < needed || (x.0 >= 1e-4 * top && recent(x.1))).take(8).map(|(_, x)| x.1).collect()
    }

    /// A deferred node's row arrived after the text moved past `synced`: give it the crossing
    /// range it has now and create its children spelling the bytes since (deferred).
    pub(super) fn catch_up(&mut self, node: NodeId) -> Result<()> {
        let n = self.text.len();
        let (end, synced, logp, shift) = (self.nodes[node].end, self.nodes[node].synced, self.nodes[node].logp, self.nodes[node].shift);
        if synced == n {
            return Ok(());
        }
        self.nodes[node].synced = n;
        let probs = self.nodes[node].probs.clone().expect("catch_up after the row");
        let mut range = 0..self.trie.len();
        for d in 0..n - end {
            range = self.trie.range_within(range, &self.text[end..end + d + 1], d);
            if range.is_empty() {
                break;
            }
            if end + d < synced {
                continue; // children up to `synced` exist already
            }
            for k in self.trie.children(range.clone(), d + 1).exact {
                if probs[k] <= 0.0 {
                    continue;
                }
                let lp = logp.map(|l| l + shift + probs[k].ln());
                if let Some(child) = self.extend(node, self.trie.id_at(k), lp)? {
                    self.groups.push((child, 0..self.trie.len()));
                }
            }
        }
        let depth = n - end;
        let crossing = !range.is_empty() && depth < self.canon.vocab().max_token_len() && !self.trie.children(range.clone(), depth).by_byte.is_empty();
        match self.groups.iter().position(|g| g.0 == node) {
            Some(i) if crossing => self.groups[i].1 = range,
            Some(i) => {
                self.groups.remove(i);
            }
            None => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn inverse_cdf_like_numpy_searchsorted_right() {
        let w = [0.0, 1.0, 0.0, 2.0, 1.0];
        assert_eq!(inverse_cdf(&w, 0.0), 1); // the first slot with mass
        assert_eq!(inverse_cdf(&w, 0.999), 1);
        assert_eq!(inverse_cdf(&w, 1.0), 3); // a boundary goes right
        assert_eq!(inverse_cdf(&w, 3.5), 4);
        assert_eq!(inverse_cdf(&w, 4.0), 4); // rounding past the end: the last slot
    }

    #[test]
    fn settled_bounds_always_decide() {
        let mut b = Bounds { known: [0.0; N_SLOTS], unknown: [0.0; N_SLOTS], deferred: 0.0 };
        b.known[3] = 0.25;
        b.known[EOS_SLOT] = 0.75;
        assert_eq!(b.decision(Pick::Greedy).unwrap(), Some(EOS_SLOT as u16));
        assert_eq!(b.decision(Pick::Sample { u: 0.2, temperature: 1.0 }).unwrap(), Some(3));
        assert_eq!(b.decision(Pick::Sample { u: 0.3, temperature: 1.0 }).unwrap(), Some(EOS_SLOT as u16));
        // Temperature 0.5 squares the weights: 1/16 against 9/16, so u = 0.2 now lands on EOS.
        assert_eq!(b.decision(Pick::Sample { u: 0.05, temperature: 0.5 }).unwrap(), Some(3));
        assert_eq!(b.decision(Pick::Sample { u: 0.2, temperature: 0.5 }).unwrap(), Some(EOS_SLOT as u16));
        // Nothing known and nothing uncertain: zero mass.
        let empty = Bounds { known: [0.0; N_SLOTS], unknown: [0.0; N_SLOTS], deferred: 0.0 };
        assert_eq!(empty.decision(Pick::Greedy).unwrap_err(), Error::ZeroMass);
        // Nothing known yet but something uncertain: no decision.
        let open = Bounds { deferred: 1.0, ..empty };
        assert_eq!(open.decision(Pick::Greedy).unwrap(), None);
    }

    /// Sparse bounds: a few slots with known mass, some with undecided mass, maybe deferred mass.
    fn bounds() -> impl Strategy<Value = Bounds> {
        let slot = prop_oneof![0usize..4, 250usize..N_SLOTS, 0usize..N_SLOTS];
        let entry = (slot, 0.0f64..1.0, prop_oneof![Just(0.0), 0.0f64..0.3]);
        (proptest::collection::vec(entry, 1..8), prop_oneof![Just(0.0), 0.0f64..0.4]).prop_map(|(entries, deferred)| {
            let mut b = Bounds { known: [0.0; N_SLOTS], unknown: [0.0; N_SLOTS], deferred };
            for (c, k, u) in entries {
                b.known[c] += k;
                b.unknown[c] += u;
            }
            b
        })
    }

    /// The exact numerators for one way the unknowns can turn out: a fraction of each slot's
    /// undecided mass, and the deferred mass (or part of it) on one slot or spread over two.
    fn fill(b: &Bounds, fractions: &[f64], deferred_to: (usize, usize), share: f64, used: f64) -> [f64; N_SLOTS] {
        let mut x = b.known;
        for c in 0..N_SLOTS {
            x[c] += fractions[c % fractions.len()] * b.unknown[c];
        }
        x[deferred_to.0] += used * share * b.deferred;
        x[deferred_to.1] += used * (1.0 - share) * b.deferred;
        x
    }

    fn pick_of(x: &[f64; N_SLOTS], pick: Pick) -> usize {
        match pick {
            Pick::Greedy => (0..N_SLOTS).fold(0, |best, c| if x[c] > x[best] { c } else { best }),
            Pick::Sample { u, temperature } => {
                let w: Vec<f64> = x.iter().map(|v| v.powf(1.0 / temperature)).collect();
                inverse_cdf(&w, u * w.iter().sum::<f64>())
            }
        }
    }

    proptest! {
        /// Whenever the bounds decide, every way the unknowns can turn out picks that slot.
        #[test]
        fn a_decision_holds_for_every_completion(
            b in bounds(),
            u in 0.0f64..1.0,
            t in proptest::sample::select(vec![0.0, 1.0, 0.5, 2.0]),
            fills in proptest::collection::vec((proptest::collection::vec(0.0f64..1.0, 1..6), 0usize..N_SLOTS, 0usize..N_SLOTS, 0.0f64..1.0, prop_oneof![Just(1.0), 0.0f64..1.0]), 1..12),
        ) {
            let pick = if t == 0.0 { Pick::Greedy } else { Pick::Sample { u, temperature: t } };
            let Ok(Some(c)) = b.decision(pick) else { return Ok(()) };
            for (fractions, d0, d1, share, used) in fills {
                let x = fill(&b, &fractions, (d0, d1), share, used);
                // (Completions within rounding of a boundary could go either way.)
                let margin_ok = match pick {
                    Pick::Greedy => true,
                    Pick::Sample { u, temperature } => {
                        let w: Vec<f64> = x.iter().map(|v| v.powf(1.0 / temperature)).collect();
                        let z: f64 = w.iter().sum();
                        let mut acc = 0.0;
                        w.iter().all(|wc| { acc += wc; (acc - u * z).abs() > 1e-12 * z })
                    }
                };
                if margin_ok {
                    prop_assert_eq!(pick_of(&x, pick), c as usize, "{:?}", pick);
                }
            }
        }
    }
}

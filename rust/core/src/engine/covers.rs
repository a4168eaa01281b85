//! Covers of the current prefix: the token sequences a hand-off can continue from.
//!
//! A cover of x is a valid token sequence T + [v] whose last token reaches to or past the end of
//! x while T ends inside it (or T itself when it spells x exactly). Its weight is p(T + [v]),
//! and the weights sum to P(x...), so drawing a cover in proportion to its weight and then
//! decoding tokens from it samples exactly from the byte-level distribution of what follows x:
//! the bytes of v past the end of x are the first bytes of the continuation (prompt healing).

use super::CoverEngine;
use crate::error::{Error, Result};
use crate::primitives::TokenId;

/// How to pick one cover.
#[derive(Debug, Clone, Copy)]
pub enum CoverChoice {
    /// In proportion to p(cover); `u` is a uniform number in [0, 1).
    Sample(f64),
    /// The single most probable cover.
    MostLikely,
}

/// One class of covers: a group's node T with the trie positions of its crossing tokens (empty
/// for a node spelling x exactly, which is a cover on its own).
struct Class {
    node: usize,
    /// log of the scale that turns the node's `probs` into p(T + [v]).
    base: f64,
    /// Trie positions k with probs[k] > 0 of tokens longer than the rest of x.
    crossing: Vec<std::ops::Range<usize>>,
    /// log of the class weight.
    log_weight: f64,
}

impl CoverEngine {
    fn cover_classes(&self) -> Result<Vec<Class>> {
        if self.cfg.lazy {
            return Err(Error::Protocol("covers need an engine made with lazy=False (a lazy engine leaves validity undecided)".into()));
        }
        let n = self.text.len();
        // The bare start prefix: the empty sequence covers it (P(x...) = 1).
        if self.at_bare_start_prefix() {
            return Ok(vec![Class { node: 0, base: 0.0, crossing: vec![], log_weight: 0.0 }]);
        }
        let mut out = Vec::new();
        for (node, range) in &self.groups {
            let nd = &self.nodes[*node];
            let missing = || Error::Protocol(format!("node {node} still needs its row or score; call requests()"));
            let logp = nd.logp.ok_or_else(missing)?;
            let depth = n - nd.end;
            if depth == 0 {
                // Spells x exactly: a cover on its own, no row needed.
                out.push(Class { node: *node, base: 0.0, crossing: vec![], log_weight: logp });
                continue;
            }
            let probs = nd.probs.as_ref().ok_or_else(missing)?;
            let crossing: Vec<_> = self.trie.children(range.clone(), depth).by_byte.into_iter().map(|(_, r)| r).collect();
            let mass: f64 = crossing.iter().map(|r| probs[r.clone()].iter().sum::<f64>()).sum();
            if mass > 0.0 {
                let base = logp + nd.shift;
                out.push(Class { node: *node, base, crossing, log_weight: base + mass.ln() });
            }
        }
        if out.is_empty() {
            return Err(Error::ZeroMass);
        }
        Ok(out)
    }

    /// Every cover with its log-probability log p(cover) (for tests and inspection; the list
    /// holds one entry per crossing token, so it can be long right after a token boundary).
    pub fn covers(&self) -> Result<Vec<(Vec<TokenId>, f64)>> {
        let mut out = Vec::new();
        for c in self.cover_classes()? {
            let trunk = self.tokens(c.node);
            if c.crossing.is_empty() {
                out.push((trunk, c.log_weight));
                continue;
            }
            let probs = self.nodes[c.node].probs.as_ref().expect("checked in cover_classes");
            for k in c.crossing.iter().flat_map(|r| r.clone()) {
                if probs[k] > 0.0 {
                    let mut seq = trunk.clone();
                    seq.push(self.trie.id_at(k));
                    out.push((seq, c.base + probs[k].ln()));
                }
            }
        }
        Ok(out)
    }

    /// One cover and its log-probability, drawn or the most likely (see `CoverChoice`).
    pub fn choose_cover(&self, choice: CoverChoice) -> Result<(Vec<TokenId>, f64)> {
        let classes = self.cover_classes()?;
        let u = match choice {
            CoverChoice::MostLikely => {
                let (c, (k, _)) = classes.iter().map(|c| (c, self.best_in(c))).max_by(|a, b| a.1 .1.total_cmp(&b.1 .1)).expect("classes is not empty");
                return Ok(self.cover_at(c, k));
            }
            CoverChoice::Sample(u) => u.clamp(0.0, 1.0),
        };
        // First the class in proportion to its mass, then a token within it with what is left of u.
        let top = classes.iter().map(|c| c.log_weight).fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = classes.iter().map(|c| (c.log_weight - top).exp()).collect();
        let mut left = u * weights.iter().sum::<f64>();
        let mut pick = classes.len() - 1;
        for (i, w) in weights.iter().enumerate() {
            if left < *w {
                pick = i;
                break;
            }
            left -= w;
        }
        let class = &classes[pick];
        if class.crossing.is_empty() {
            return Ok(self.cover_at(class, None));
        }
        let probs = self.nodes[class.node].probs.as_ref().expect("checked in cover_classes");
        let total: f64 = class.crossing.iter().map(|r| probs[r.clone()].iter().sum::<f64>()).sum();
        let mut left = (left / weights[pick]).clamp(0.0, 1.0) * total;
        let mut chosen = None;
        for k in class.crossing.iter().flat_map(|r| r.clone()) {
            if probs[k] <= 0.0 {
                continue;
            }
            chosen = Some(k);
            if left < probs[k] {
                break;
            }
            left -= probs[k];
        }
        Ok(self.cover_at(class, chosen))
    }

    /// The most probable crossing token of a class (None for an exact node) and its log-weight.
    fn best_in(&self, c: &Class) -> (Option<usize>, f64) {
        if c.crossing.is_empty() {
            return (None, c.log_weight);
        }
        let probs = self.nodes[c.node].probs.as_ref().expect("checked in cover_classes");
        let (k, p) = c.crossing.iter().flat_map(|r| r.clone()).map(|k| (k, probs[k])).max_by(|a, b| a.1.total_cmp(&b.1)).expect("a class with mass has tokens");
        (Some(k), c.base + p.ln())
    }

    fn cover_at(&self, c: &Class, k: Option<usize>) -> (Vec<TokenId>, f64) {
        let mut seq = self.tokens(c.node);
        match k {
            None => (seq, c.log_weight),
            Some(k) => {
                seq.push(self.trie.id_at(k));
                let p = self.nodes[c.node].probs.as_ref().expect("checked in cover_classes")[k];
                (seq, c.base + p.ln())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;
    use crate::test_support::{logp, row, tiny_parts, TINY_EOS};

    fn served(prompt: &[u8]) -> CoverEngine {
        let (c, t) = tiny_parts();
        let mut e = CoverEngine::new(c, t, prompt, vec![TINY_EOS], EngineConfig { tolerance: 0.0, threads: 1, lazy: false }).unwrap();
        let w = e.n_logits();
        let r = e.requests();
        for (node, tokens) in &r.scores {
            e.provide_score(*node, logp(tokens, w)).unwrap();
        }
        for (node, tokens) in &r.rows {
            e.provide_row(*node, &row(tokens, w)[..]).unwrap();
        }
        e
    }

    #[test]
    fn draws_at_the_ends_of_the_unit_interval() {
        let e = served(b"a\n\n");
        let covers = e.covers().unwrap();
        // [a, \n, \n] and [a, \n\n] spell the text exactly; no token crosses its end.
        let mut seqs: Vec<Vec<TokenId>> = covers.iter().map(|c| c.0.clone()).collect();
        seqs.sort();
        assert_eq!(seqs, vec![vec![0, 4, 4], vec![0, 7]]);
        // u = 0 takes the first class, u just below 1 (or above: clamped) the last.
        let first = e.choose_cover(CoverChoice::Sample(0.0)).unwrap();
        let last = e.choose_cover(CoverChoice::Sample(1.0 - 1e-12)).unwrap();
        assert_eq!(e.choose_cover(CoverChoice::Sample(7.0)).unwrap().0, last.0);
        assert_eq!(e.choose_cover(CoverChoice::Sample(-1.0)).unwrap().0, first.0);
        assert_ne!(first.0, last.0);
        let best = covers.iter().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
        assert_eq!(e.choose_cover(CoverChoice::MostLikely).unwrap().0, best.0);
    }

    #[test]
    fn crossing_covers_carry_their_token_probability() {
        // "a": [a] itself, and every token longer than "a" that starts with it ([ab], [abc]).
        let e = served(b"a");
        let w = e.n_logits();
        let mut covers = e.covers().unwrap();
        covers.sort_by(|a, b| a.0.cmp(&b.0));
        let seqs: Vec<Vec<TokenId>> = covers.iter().map(|c| c.0.clone()).collect();
        assert_eq!(seqs, vec![vec![0], vec![5], vec![8]]);
        for (seq, lp) in &covers {
            assert!((lp - logp(seq, w)).abs() < 1e-12, "{seq:?}");
        }
        // Their sum is P("a"...).
        let sum: f64 = covers.iter().map(|c| c.1.exp()).sum();
        assert!((sum.ln() - e.distribution().unwrap().log_prefix).abs() < 1e-12);
    }
}

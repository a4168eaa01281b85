//! Validity verdicts of whole next-byte subtrees after a context, kept per tokenizer across
//! scorers (`engine/prefix.rs`).
//!
//! A scorer decides, for every distinct context (the text and tokens since the last forced piece
//! cut, and the next byte), the validity of every token of the next byte's subtree. Those verdicts
//! depend on the context and the tokenizer only, so a data set scored text after text decides
//! " the" after a word once, not once per text. Bounded: when the verdicts held would pass
//! `budget` bytes the memo starts afresh (whole subtrees are a few kB to 137 kB each; a plain
//! reset keeps the bound without bookkeeping per entry).

use crate::primitives::TokenId;
use rustc_hash::FxHashMap;
use std::sync::{Arc, Mutex};

/// A context as scorers key its subtree's verdicts: the text and tokens since its anchor or last
/// forced piece cut, and the next byte.
pub type RangeKey = (Vec<u8>, Vec<TokenId>, u8);

/// Verdicts held by default: 256 MB of one-byte verdicts.
pub const DEFAULT_BUDGET: usize = 256 << 20;

#[derive(Debug)]
pub struct RangeVerdictMemo {
    inner: Mutex<Held>,
    budget: usize,
}

#[derive(Debug, Default)]
struct Held {
    map: FxHashMap<RangeKey, Arc<Vec<bool>>>,
    bytes: usize,
}

impl Default for RangeVerdictMemo {
    fn default() -> Self {
        Self::with_budget(DEFAULT_BUDGET)
    }
}

impl RangeVerdictMemo {
    pub fn with_budget(budget: usize) -> Self {
        Self { inner: Mutex::new(Held::default()), budget }
    }

    pub fn get(&self, key: &RangeKey) -> Option<Arc<Vec<bool>>> {
        self.held().map.get(key).cloned()
    }

    /// Keep `verdicts` for `key` (a vector over the budget on its own is not kept).
    pub fn insert(&self, key: RangeKey, verdicts: Arc<Vec<bool>>) {
        let size = verdicts.len() + key.0.len() + 4 * key.1.len();
        if size > self.budget {
            return;
        }
        let mut held = self.held();
        if held.bytes + size > self.budget {
            held.map.clear();
            held.bytes = 0;
        }
        if held.map.insert(key, verdicts).is_none() {
            held.bytes += size;
        }
    }

    pub fn clear(&self) {
        let mut held = self.held();
        held.map.clear();
        held.bytes = 0;
    }

    /// Contexts held.
    pub fn len(&self) -> usize {
        self.held().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        // A panic while holding the lock leaves a consistent map (each insert is one call).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_verdicts_and_starts_afresh_past_its_budget() {
        let memo = RangeVerdictMemo::with_budget(100);
        let key = |b: u8| (vec![b], vec![1], b' ');
        memo.insert(key(1), Arc::new(vec![true; 40]));
        memo.insert(key(2), Arc::new(vec![false; 40]));
        assert_eq!(memo.get(&key(1)).unwrap().len(), 40);
        assert_eq!(memo.len(), 2);
        memo.insert(key(3), Arc::new(vec![true; 40])); // 3 x 45 bytes > 100: afresh
        assert_eq!(memo.len(), 1);
        assert!(memo.get(&key(1)).is_none() && memo.get(&key(3)).is_some());
        memo.insert(key(4), Arc::new(vec![true; 500])); // over the budget alone: not kept
        assert!(memo.get(&key(4)).is_none());
        memo.clear();
        assert!(memo.is_empty());
    }
}

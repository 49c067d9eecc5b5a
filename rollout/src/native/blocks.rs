//! The engine's bookkeeping of the paged KV cache: which blocks are free, how many holders each
//! block has (the sequences whose tables list it, and the prefix cache), and which blocks hold
//! which prompt prefixes.
//!
//! A block returns to the free list when its last holder lets go. The prefix cache keys each
//! full prompt block by the entry of the block before it and its own tokens, so a lookup walks a
//! prompt block by block and two prompts share exactly their common leading blocks. Entries
//! only the cache holds are evicted, least recently used first, when an allocation needs their
//! blocks. An entry's id is never reused, so an evicted entry's successors can no longer be
//! reached (they are evicted in turn).

use std::collections::HashMap;

/// A cached prompt block.
struct Entry {
    block: i64,
    /// Never reused: the key of the next block's entry.
    id: u64,
    /// Blocks before it in its prompt.
    depth: usize,
    /// When a lookup last matched it (the eviction order).
    used: u64,
}

/// Free blocks, holders and the prefix cache of one KV cache.
pub(super) struct Blocks {
    size: usize,
    free: Vec<i64>,
    holders: Vec<u32>,
    prefixes: HashMap<(u64, Vec<u32>), Entry>,
    next_id: u64,
    clock: u64,
    peak: usize,
}

/// The parent key of a prompt's first block.
const ROOT: u64 = 0;

impl Blocks {
    /// `count` free blocks of `size` positions.
    pub(super) fn new(count: usize, size: usize) -> Self {
        Self {
            size,
            free: (0..count as i64).rev().collect(),
            holders: vec![0; count],
            prefixes: HashMap::new(),
            next_id: ROOT + 1,
            clock: 0,
            peak: 0,
        }
    }

    /// Positions per block.
    pub(super) fn size(&self) -> usize {
        self.size
    }

    /// Blocks in the cache.
    pub(super) fn count(&self) -> usize {
        self.holders.len()
    }

    /// Most blocks held at once.
    pub(super) fn peak(&self) -> usize {
        self.peak
    }

    /// Blocks an allocation could have now: the free ones and those only the prefix cache holds.
    pub(super) fn available(&self) -> usize {
        self.free.len()
            + self
                .prefixes
                .values()
                .filter(|e| self.holders[e.block as usize] == 1)
                .count()
    }

    /// `n` blocks, each held once, evicting cached prefixes as needed; `None` (nothing taken)
    /// when fewer are [`available`](Self::available).
    pub(super) fn allocate(&mut self, n: usize) -> Option<Vec<i64>> {
        if self.available() < n {
            return None;
        }
        while self.free.len() < n {
            self.evict_one();
        }
        // The free list's end holds the lowest ids first freed: a sequence's blocks then run
        // upwards in memory, as its positions do.
        let mut blocks = self.free.split_off(self.free.len() - n);
        blocks.reverse();
        for &b in &blocks {
            self.holders[b as usize] = 1;
        }
        self.peak = self.peak.max(self.count() - self.free.len());
        Some(blocks)
    }

    /// One more holder of each of `blocks`.
    pub(super) fn hold(&mut self, blocks: &[i64]) {
        for &b in blocks {
            self.holders[b as usize] += 1;
        }
    }

    /// One holder fewer of each of `blocks`; those left without one are free.
    pub(super) fn release(&mut self, blocks: &[i64]) {
        for &b in blocks {
            let holders = &mut self.holders[b as usize];
            *holders = holders.saturating_sub(1);
            if *holders == 0 {
                self.free.push(b);
            }
        }
    }

    /// The cached blocks holding `prompt`'s leading full blocks, at most `limit` of them, each
    /// held once more for the caller.
    pub(super) fn lookup(&mut self, prompt: &[u32], limit: usize) -> Vec<i64> {
        self.clock += 1;
        let mut parent = ROOT;
        let mut found = Vec::new();
        for tokens in prompt.chunks_exact(self.size).take(limit) {
            let Some(entry) = self.prefixes.get_mut(&(parent, tokens.to_vec())) else {
                break;
            };
            entry.used = self.clock;
            parent = entry.id;
            found.push(entry.block);
        }
        self.hold(&found);
        found
    }

    /// Remember that `blocks` hold `prompt`'s leading full blocks (the cache holds each block
    /// it had not cached yet).
    pub(super) fn remember(&mut self, prompt: &[u32], blocks: &[i64]) {
        self.clock += 1;
        let mut parent = ROOT;
        for (depth, (tokens, &block)) in prompt.chunks_exact(self.size).zip(blocks).enumerate() {
            let key = (parent, tokens.to_vec());
            if let Some(entry) = self.prefixes.get(&key) {
                parent = entry.id;
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            self.holders[block as usize] += 1;
            let used = self.clock;
            self.prefixes.insert(
                key,
                Entry {
                    block,
                    id,
                    depth,
                    used,
                },
            );
            parent = id;
        }
    }

    /// Drop every cached prefix (new weights make their keys and values stale).
    pub(super) fn forget_prefixes(&mut self) {
        let blocks: Vec<i64> = self.prefixes.drain().map(|(_, e)| e.block).collect();
        self.release(&blocks);
    }

    /// Evict the least recently used entry only the cache holds (the deepest first among
    /// equally recent ones, so a prompt's chain shortens from its end).
    fn evict_one(&mut self) {
        let victim = self
            .prefixes
            .iter()
            .filter(|(_, e)| self.holders[e.block as usize] == 1)
            .min_by_key(|(_, e)| (e.used, std::cmp::Reverse(e.depth)))
            .map(|(key, _)| key.clone());
        if let Some(entry) = victim.and_then(|key| self.prefixes.remove(&key)) {
            self.release(&[entry.block]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Blocks;

    /// Two prompts sharing their first two blocks of four tokens: the second finds them, holds
    /// them, and the blocks stay until every holder let go; evicted prefixes free their blocks
    /// for a later allocation, least recently used first.
    #[test]
    fn prompts_share_leading_blocks_and_cached_ones_are_evicted_when_needed() {
        let mut blocks = Blocks::new(6, 4);
        let first: Vec<u32> = (0..10).collect();
        let mine = blocks.allocate(3).expect("room");
        assert!(blocks.lookup(&first, 2).is_empty());
        blocks.remember(&first, &mine[..2]);
        let mut second: Vec<u32> = (0..8).collect();
        second.extend([50, 51, 52]);
        let shared = blocks.lookup(&second, 2);
        assert_eq!(shared, mine[..2]);
        let other: Vec<u32> = (100..112).collect();
        assert_eq!(blocks.lookup(&other, 3), Vec::<i64>::new());
        // 3 free; the first prompt's blocks are held by it, the second and the cache.
        assert_eq!(blocks.available(), 3);
        blocks.release(&mine);
        blocks.release(&shared);
        // Block 3 of the first prompt was never cached; its two full blocks are only cached.
        assert_eq!(blocks.available(), 6);
        let all = blocks.allocate(6).expect("evicts the cached prefixes");
        assert_eq!(all.len(), 6);
        assert!(blocks.lookup(&first, 2).is_empty(), "evicted");
        assert!(blocks.allocate(1).is_none());
        assert_eq!(blocks.peak(), 6);
    }
}

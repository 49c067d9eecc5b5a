//! Admission: which queued completions start now, the cache blocks each gets, and which of the
//! admitted prompts are prefilled together.
//!
//! A request's completions share its prompt: its full blocks are prefilled once and listed in
//! every completion's block table; the partial last block (if any) is the first completion's,
//! and each other completion gets a copy of it once the prompt is prefilled (copy on write).
//! Leading full blocks another prompt already cached are reused (the prefix cache), so only the
//! rest is prefilled. Admission reserves every block a completion can need (prompt and
//! `max_new_tokens`), so a running sequence never waits for memory; the queue is served in
//! order and stops at the first request that does not fit.
//!
//! A prompt may reuse blocks another prompt of the same round is about to prefill; it then
//! prefills in a later phase. Within a phase the longest prompts go first, and a run is cut
//! where right-padding every prompt to the run's longest would add more than a quarter to the
//! positions computed.

use std::collections::{HashMap, VecDeque};

use rlvr_core::GenerationRequest;

use super::blocks::Blocks;

/// A request admitted this round.
pub(super) struct Admitted {
    /// Its index in the call's requests.
    pub request: usize,
    /// Index of its first completion admitted now.
    pub first: usize,
    /// The blocks of its prompt: reused ones, then those this round prefills.
    pub prompt_blocks: Vec<i64>,
    /// Prompt positions already in reused blocks (prefill starts there).
    pub cached: usize,
    /// Each admitted completion's blocks past the prompt's full blocks; the first
    /// completion's start with the prompt's partial block, if it has one.
    pub tails: Vec<Vec<i64>>,
    /// Positions each completion may fill (prompt and new tokens).
    pub capacity: usize,
    /// Prefill phase: after every prompt whose blocks it reuses.
    phase: usize,
}

/// What admission needs to know of the call.
pub(super) struct Limits {
    /// New tokens a completion may generate.
    pub max_new_tokens: usize,
    /// Positions the model allows.
    pub max_positions: usize,
}

/// Admit queued `(request, next completion index)` entries while `rows` more sequences may run
/// and `blocks` has room; the queue keeps what did not fit.
pub(super) fn admit(
    queue: &mut VecDeque<(usize, usize)>,
    requests: &[GenerationRequest],
    mut rows: usize,
    blocks: &mut Blocks,
    limits: &Limits,
) -> Vec<Admitted> {
    let size = blocks.size();
    let mut admitted = Vec::new();
    // Blocks this round prefills, with the phase that prefills them.
    let mut pending: HashMap<i64, usize> = HashMap::new();
    while let (Some(&(r, first)), true) = (queue.front(), rows > 0) {
        if first >= requests[r].n {
            queue.pop_front();
            continue;
        }
        let prompt = &requests[r].prompt_ids;
        let len = prompt.len();
        // The first token comes from the prefill and is not cached, but one is always drawn.
        let capacity = (len + limits.max_new_tokens.max(1)).min(limits.max_positions);
        let (full, prompt_count, sequence) = (len / size, len.div_ceil(size), capacity.div_ceil(size));
        // At least the prompt's last token is computed: its logits start every completion.
        let reused = blocks.lookup(prompt, (len - 1) / size);
        let first_needs = (prompt_count - reused.len()) + (sequence - prompt_count);
        let next_needs = sequence - full;
        let available = blocks.available();
        if available < first_needs {
            blocks.release(&reused);
            break;
        }
        let take = (1 + (available - first_needs) / next_needs)
            .min(rows)
            .min(requests[r].n - first);
        let Some(mut fresh) = blocks.allocate(first_needs + (take - 1) * next_needs) else {
            blocks.release(&reused);
            break;
        };
        let phase = reused
            .iter()
            .filter_map(|b| pending.get(b).map(|p| p + 1))
            .max()
            .unwrap_or(0);
        let mut prompt_blocks = reused;
        let cached = prompt_blocks.len() * size;
        prompt_blocks.extend(fresh.drain(..prompt_count - prompt_blocks.len()));
        for &b in &prompt_blocks[cached / size..] {
            pending.insert(b, phase);
        }
        let mut tails = vec![prompt_blocks[full..].to_vec()];
        tails[0].extend(fresh.drain(..sequence - prompt_count));
        for _ in 1..take {
            tails.push(fresh.drain(..next_needs).collect());
            blocks.hold(&prompt_blocks[..full]);
        }
        blocks.remember(prompt, &prompt_blocks[..full]);
        admitted.push(Admitted {
            request: r,
            first,
            prompt_blocks,
            cached,
            tails,
            capacity,
            phase,
        });
        rows -= take;
        if first + take == requests[r].n {
            queue.pop_front();
        } else if let Some(front) = queue.front_mut() {
            front.1 = first + take;
        }
    }
    admitted.sort_by_key(|a| (a.phase, std::cmp::Reverse(uncached(a, requests))));
    admitted
}

/// Prompt tokens `a` prefills.
fn uncached(a: &Admitted, requests: &[GenerationRequest]) -> usize {
    requests[a.request].prompt_ids.len() - a.cached
}

/// `admitted` (as [`admit`] orders it) cut into runs to prefill together: one phase, and at
/// most a quarter more positions, once each prompt is right-padded to the run's first
/// (longest), than the prompts bring.
pub(super) fn prefill_runs<'a>(
    admitted: &'a [Admitted],
    requests: &[GenerationRequest],
) -> Vec<&'a [Admitted]> {
    let len = |a: &Admitted| uncached(a, requests);
    let mut runs = Vec::new();
    let (mut start, mut tokens) = (0, 0);
    for (i, a) in admitted.iter().enumerate() {
        if i > start {
            let padded = len(&admitted[start]) * (i - start + 1);
            if a.phase != admitted[start].phase || 4 * padded > 5 * (tokens + len(a)) {
                runs.push(&admitted[start..i]);
                (start, tokens) = (i, 0);
            }
        }
        tokens += len(a);
    }
    if start < admitted.len() {
        runs.push(&admitted[start..]);
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: u64, prompt_ids: Vec<u32>, n: usize) -> GenerationRequest {
        GenerationRequest {
            id,
            prompt_ids,
            n,
            seed: id,
        }
    }

    const LIMITS: Limits = Limits {
        max_new_tokens: 6,
        max_positions: 1000,
    };

    /// Blocks of 4 positions. A prompt of 10 tokens with three completions (16 positions each):
    /// prompt blocks 3, the first completion's tail the partial block and one more, the others
    /// 2 blocks each (a copy of the partial block, one more). A second prompt sharing its first
    /// 8 tokens reuses those two blocks and prefills after it; a third of 8 tokens reuses one
    /// block only (its last token is recomputed). A fourth does not fit and waits.
    #[test]
    fn completions_share_their_prompt_and_prompts_their_common_prefix() {
        let shared: Vec<u32> = (0..8).collect();
        let with = |tail: &[u32]| [shared.as_slice(), tail].concat();
        let requests = vec![
            request(0, with(&[8, 9]), 3),
            request(1, with(&[20, 21, 22, 23, 24]), 1),
            request(2, shared.clone(), 1),
            request(3, (100..140).collect(), 1),
        ];
        let mut queue: VecDeque<_> = (0..requests.len()).map(|r| (r, 0)).collect();
        let mut blocks = Blocks::new(20, 4);
        let admitted = admit(&mut queue, &requests, 64, &mut blocks, &LIMITS);
        assert_eq!(queue, [(3, 0)]);
        let placed: Vec<_> = admitted
            .iter()
            .map(|a| (a.request, a.phase, a.cached, a.prompt_blocks.len(), a.tails.len()))
            .collect();
        assert_eq!(placed, [(0, 0, 0, 3, 3), (1, 1, 8, 4, 1), (2, 1, 4, 2, 1)]);
        let [zero, one, two] = &admitted[..] else {
            panic!("three admitted");
        };
        assert_eq!(one.prompt_blocks[..2], zero.prompt_blocks[..2]);
        assert_eq!(two.prompt_blocks[0], zero.prompt_blocks[0]);
        assert_ne!(two.prompt_blocks[1], zero.prompt_blocks[1]);
        assert_eq!(
            zero.tails[0][0], zero.prompt_blocks[2],
            "the partial block is the first's"
        );
        assert!(zero.tails.iter().all(|t| t.len() == 2));
        // 3 + 1 + 2 + 2 for request 0, 2 + 1 for request 1 (19 positions: 5 blocks, 2 reused),
        // 1 + 2 for request 2 (14 positions: 4 blocks, 1 reused); request 3 needs 12 of 6.
        assert_eq!(blocks.count() - blocks.available(), 14);
        let runs: Vec<Vec<usize>> = prefill_runs(&admitted, &requests)
            .iter()
            .map(|run| run.iter().map(|a| a.request).collect())
            .collect();
        assert_eq!(runs, [vec![0], vec![1, 2]]);
    }
}

//! Admission: which queued completions enter which free cache slots, and which of the admitted
//! prompts are prefilled together.
//!
//! Each admitted request gets one prefill slot, taken from the front of the free slots so that
//! prefills batch over contiguous slots, and its other completions' slots from the back (they
//! copy the prefilled prompt). Among one round's admissions the longest prompts take the lowest
//! prefill slots, so a run of contiguous slots holds prompts of falling length, and it is cut
//! where right-padding every prompt to the run's longest would add more than a quarter to the
//! positions computed.

use std::collections::VecDeque;

use rlvr_core::GenerationRequest;

/// A request admitted into cache slots this round.
pub(super) struct Admitted {
    /// Its index in the call's requests.
    pub request: usize,
    /// Index of its first completion admitted now.
    pub first: usize,
    /// Slot its prompt is prefilled into (and its first completion decodes in).
    pub prefill: usize,
    /// Slots of its other completions, which copy the prefill.
    pub extra: Vec<usize>,
}

/// Admit queued `(request, next completion index)` entries into the `free` slots (ascending),
/// in slot order; the queue keeps what did not fit.
pub(super) fn admit(
    queue: &mut VecDeque<(usize, usize)>,
    requests: &[GenerationRequest],
    mut free: VecDeque<usize>,
) -> Vec<Admitted> {
    let mut admitted = Vec::new();
    while let (Some(&(r, first)), false) = (queue.front(), free.is_empty()) {
        let take = free.len().min(requests[r].n - first);
        if take > 0 {
            let prefill = free.pop_front().unwrap_or_default();
            let extra = (1..take).filter_map(|_| free.pop_back()).collect();
            admitted.push(Admitted {
                request: r,
                first,
                prefill,
                extra,
            });
        }
        if first + take == requests[r].n {
            queue.pop_front();
        } else if let Some(front) = queue.front_mut() {
            front.1 = first + take;
        }
    }
    let mut slots: Vec<usize> = admitted.iter().map(|a| a.prefill).collect();
    slots.sort_unstable();
    admitted.sort_by_key(|a| std::cmp::Reverse(requests[a.request].prompt_ids.len()));
    for (a, slot) in admitted.iter_mut().zip(slots) {
        a.prefill = slot;
    }
    admitted
}

/// `admitted` (as [`admit`] orders it) cut into runs to prefill together: contiguous prefill
/// slots, and at most a quarter more positions, once each prompt is right-padded to the run's
/// first (longest), than the prompts hold.
pub(super) fn prefill_runs<'a>(
    admitted: &'a [Admitted],
    requests: &[GenerationRequest],
) -> Vec<&'a [Admitted]> {
    let len = |a: &Admitted| requests[a.request].prompt_ids.len();
    let mut runs = Vec::new();
    let (mut start, mut tokens) = (0, 0);
    for (i, a) in admitted.iter().enumerate() {
        if i > start {
            let contiguous = a.prefill == admitted[i - 1].prefill + 1;
            let padded = len(&admitted[start]) * (i - start + 1);
            if !contiguous || 4 * padded > 5 * (tokens + len(a)) {
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

    fn request(id: u64, len: usize, n: usize) -> GenerationRequest {
        GenerationRequest {
            id,
            prompt_ids: vec![1; len],
            n,
            seed: id,
        }
    }

    /// Prompts of 18, 100, 48, 95 (three samples), 50, 90 and 20 tokens (two samples) into
    /// slots 0–4 and 6–9: prefill slots from the front, extra samples' from the back, the
    /// longest prompts in the lowest prefill slots; runs stop at the hole at slot 5 and where
    /// padding would add more than a quarter; the last request's second sample waits.
    #[test]
    fn longest_prompts_first_and_runs_cut_where_padding_wastes() {
        let requests: Vec<_> = [(18, 1), (100, 1), (48, 1), (95, 3), (50, 1), (90, 1), (20, 2)]
            .iter()
            .enumerate()
            .map(|(i, &(len, n))| request(i as u64, len, n))
            .collect();
        let mut queue: VecDeque<_> = (0..requests.len()).map(|r| (r, 0)).collect();
        let free: VecDeque<usize> = [0, 1, 2, 3, 4, 6, 7, 8, 9].into();
        let admitted = admit(&mut queue, &requests, free);
        let placed: Vec<_> = admitted
            .iter()
            .map(|a| (a.request, a.first, a.prefill, a.extra.clone()))
            .collect();
        assert_eq!(
            placed,
            [
                (1, 0, 0, vec![]),
                (3, 0, 1, vec![9, 8]),
                (5, 0, 2, vec![]),
                (4, 0, 3, vec![]),
                (2, 0, 4, vec![]),
                (6, 0, 6, vec![]),
                (0, 0, 7, vec![]),
            ]
        );
        assert_eq!(queue, [(6, 1)]);
        let runs: Vec<Vec<usize>> = prefill_runs(&admitted, &requests)
            .iter()
            .map(|run| run.iter().map(|a| a.request).collect())
            .collect();
        // 100, 95, 90, 50 pad to 400 positions for 335 tokens (within a quarter), adding 48
        // would pad 500 for 383; 20 and 18 pad 40 for 38.
        assert_eq!(runs, [vec![1, 3, 5, 4], vec![2], vec![6, 0]]);
    }
}

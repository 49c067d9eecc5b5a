//! A policy batch laid out as plain rows, one whole sequence per response, for the passes that
//! run the model on plain rows rather than with the prompt shared.

use rlvr_core::PolicyBatch;
use tch::{Device, Tensor};

use crate::model::Documents;

/// A policy batch laid out one whole sequence per response: its prompt (left-padded), then
/// the response (right-padded), `[rows, prompt_cols + cols]`. The padding on either side is a
/// document of its own (kept out of the real tokens' attention) and positions count from each
/// sequence's first real token, so the real tokens compute what [`super::response_states`] computes
/// with the prompt shared. What passes that run the model on plain rows take: gradient
/// checkpointing and ZeRO-3's unit-by-unit passes.
pub(crate) struct Flat {
    input_ids: Tensor,
    documents: Documents,
    responses: Tensor,
    prompt_cols: i64,
}

impl Flat {
    pub(crate) fn new(b: &PolicyBatch, device: Device) -> Self {
        let (p, r) = (b.prompt_cols, b.cols);
        let n = b.rows * (p + r);
        let (mut ids, mut docs, mut pos) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for row in 0..b.rows {
            let g = b.group_of[row] as usize;
            let prompt = b.prompt_ids[g * p..(g + 1) * p]
                .iter()
                .zip(&b.prompt_real[g * p..(g + 1) * p]);
            let response = b.response_ids[row * r..(row + 1) * r]
                .iter()
                .zip(&b.mask[row * r..(row + 1) * r])
                .map(|(&t, &m)| (t, m > 0.0));
            let mut next = 0i64;
            for (i, (id, real)) in prompt.map(|(&t, &real)| (t, real)).chain(response).enumerate() {
                ids.push(id);
                if real {
                    docs.push(1i64);
                    pos.push(next);
                    next += 1;
                } else {
                    // Left padding before the sequence, right padding after it.
                    docs.push(if i < p { 0 } else { 2 });
                    pos.push(0);
                }
            }
        }
        let shape = [b.rows as i64, (p + r) as i64];
        let on = |v: &[i64]| Tensor::from_slice(v).view(shape).to_device(device);
        Self {
            input_ids: on(&ids),
            documents: Documents {
                position_ids: on(&pos),
                document_ids: on(&docs),
            },
            responses: Tensor::from_slice(&b.response_ids)
                .view([b.rows as i64, r as i64])
                .to_device(device),
            prompt_cols: p as i64,
        }
    }

    /// Token ids `[rows, prompt_cols + cols]`.
    pub(crate) fn input_ids(&self) -> &Tensor {
        &self.input_ids
    }

    /// Each token's document and position.
    pub(crate) fn documents(&self) -> &Documents {
        &self.documents
    }

    /// Response token ids `[rows, cols]`.
    pub(crate) fn responses(&self) -> &Tensor {
        &self.responses
    }

    /// The states each response token is generated from, out of the final hidden states `h`
    /// `[rows, prompt_cols + cols, hidden]`: the prompt's last position's, then each response
    /// token's but the last.
    pub(crate) fn response_states(&self, h: &Tensor) -> Tensor {
        let r = self.responses.size()[1];
        h.narrow(1, self.prompt_cols - 1, r)
    }

    /// The state after each response's last token, `[rows, hidden]`, out of the final hidden
    /// states `h` (`lens` `[rows]`: each response's token count, at least 1).
    pub(crate) fn last_states(&self, h: &Tensor, lens: &Tensor) -> Tensor {
        let hidden = h.size()[2];
        let at = (lens + (self.prompt_cols - 1))
            .view([-1, 1, 1])
            .expand([-1, 1, hidden], false);
        h.gather(1, &at, false).squeeze_dim(1)
    }
}

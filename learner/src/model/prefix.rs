//! The forward pass of RL batches, where several responses continue one prompt (GRPO's groups):
//! each prompt runs once and its responses attend to its keys and values, instead of every
//! response re-running its prompt. Gradients from all of a group's responses flow back into the
//! one prompt pass. Positions are absolute per row, so the result is the plain causal forward
//! of `prompt + response` for every row (up to float rounding).

use tch::{Kind, Tensor};

use super::attention::Attention;
use super::layers::Rope;
use super::CausalLm;

/// What every layer needs: rotary tables, masks and the group of each response row.
struct Layout {
    prompt_rope: Rope,
    response_rope: Rope,
    /// `[G, 1, P, P]`: causal over real prompt tokens (a padding query sees itself only).
    prompt_mask: Tensor,
    /// `[N, 1, R, P + R]`: the group's real prompt tokens, then causal over the response.
    response_mask: Tensor,
    group_of: Tensor,
}

impl Attention {
    /// Attention of prompts `xp` over themselves and of responses `xr` over their group's
    /// prompt and themselves.
    fn forward_shared(&self, xp: &Tensor, xr: &Tensor, l: &Layout) -> (Tensor, Tensor) {
        let (qp, kp, vp) = self.qkv(xp, &l.prompt_rope);
        let (qr, kr, vr) = self.qkv(xr, &l.response_rope);
        let (kp, vp) = (self.repeat_kv(kp), self.repeat_kv(vp));
        let (kr, vr) = (self.repeat_kv(kr), self.repeat_kv(vr));
        let yp = Tensor::scaled_dot_product_attention(
            &qp,
            &kp,
            &vp,
            Some(&l.prompt_mask),
            0.0,
            false,
            None,
            false,
        );
        let keys = Tensor::cat(&[kp.index_select(0, &l.group_of), kr], 2);
        let values = Tensor::cat(&[vp.index_select(0, &l.group_of), vr], 2);
        let yr = Tensor::scaled_dot_product_attention(
            &qr,
            &keys,
            &values,
            Some(&l.response_mask),
            0.0,
            false,
            None,
            false,
        );
        (self.output(&yp), self.output(&yr))
    }
}

impl CausalLm {
    /// Final hidden states of prompts shared by groups of responses: `prompts` `[G, P]`
    /// left-padded, `prompt_real` `[G, P]` (bool, false on padding), `responses` `[N, R]`
    /// right-padded, `group_of` `[N]` (int64, each response's prompt row). Returns the prompts'
    /// states `[G, P, hidden]` and the responses' `[N, R, hidden]`; the last prompt position
    /// predicts each response's first token.
    pub fn hidden_shared(
        &self,
        prompts: &Tensor,
        prompt_real: &Tensor,
        responses: &Tensor,
        group_of: &Tensor,
    ) -> (Tensor, Tensor) {
        let dev = prompts.device();
        let (p, r) = (prompts.size()[1], responses.size()[1]);
        let lens = prompt_real.sum_dim_intlist(1, false, Kind::Int64);
        let pads = -&lens + p;
        let prompt_pos =
            (Tensor::arange(p, (Kind::Int64, dev)).unsqueeze(0) - pads.unsqueeze(1)).clamp_min(0);
        let response_pos =
            lens.index_select(0, group_of).unsqueeze(1) + Tensor::arange(r, (Kind::Int64, dev)).unsqueeze(0);
        let causal = |n: i64| Tensor::ones([n, n], (Kind::Bool, dev)).tril(0);
        let eye = Tensor::eye(p, (Kind::Bool, dev));
        let prompt_mask =
            (causal(p).unsqueeze(0).logical_and(&prompt_real.unsqueeze(1))).logical_or(&eye.unsqueeze(0));
        let n = responses.size()[0];
        let seen = prompt_real
            .index_select(0, group_of)
            .unsqueeze(1)
            .expand([n, r, p], false);
        let response_mask = Tensor::cat(&[seen, causal(r).unsqueeze(0).expand([n, r, r], false)], 2);
        let layout = Layout {
            prompt_rope: Rope::at(&self.inv_freq, &prompt_pos, self.embed_tokens.kind()),
            response_rope: Rope::at(&self.inv_freq, &response_pos, self.embed_tokens.kind()),
            prompt_mask: prompt_mask.unsqueeze(1),
            response_mask: response_mask.unsqueeze(1),
            group_of: group_of.shallow_clone(),
        };
        let (mut xp, mut xr) = (self.embed(prompts), self.embed(responses));
        for layer in &self.layers {
            let out = layer.forward_streams(&[xp, xr], |attn, xs| {
                let (ap, ar) = attn.forward_shared(&xs[0], &xs[1], &layout);
                vec![ap, ar]
            });
            [xp, xr] = <[Tensor; 2]>::try_from(out).unwrap_or_default();
        }
        (self.norm.forward(&xp), self.norm.forward(&xr))
    }
}

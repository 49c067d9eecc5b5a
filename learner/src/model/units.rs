//! Passes over the model one parameter unit at a time — unit 0 the embedding, units 1..=L the
//! decoder layers, unit L+1 the final norm and (untied) LM head — for training whose
//! parameters are not all resident: ZeRO-3 makes a unit whole just before it runs, releases it
//! after, and takes its gradients as they are made ([`Units`]). The backward pass recomputes
//! each layer from its saved input, as [`CausalLm::backward_checkpointed`] does, so only one
//! layer's parameters and activations are alive at a time. The embedding stays whole for the
//! pass (a tied head uses it at the top, the embedding's gradient is taken at the bottom).

use tch::{Kind, Tensor};

use super::{CausalLm, Context, Documents};

/// Where a unit-by-unit pass gets its parameters and sends their gradients.
pub trait Units {
    /// What a failure to gather or scatter is.
    type Error;
    /// Make unit `unit`'s parameters whole.
    fn gather(&mut self, unit: usize) -> Result<(), Self::Error>;
    /// Let unit `unit`'s parameters go.
    fn release(&mut self, unit: usize);
    /// Gradients of unit `unit`'s parameters, in [`CausalLm::unit`] order (an undefined tensor:
    /// no gradient); called once or more per pass, the calls adding up.
    fn gradients(&mut self, unit: usize, grads: Vec<Tensor>) -> Result<(), Self::Error>;
}

impl CausalLm {
    /// Parameter units: the embedding, the layers, the head.
    pub fn unit_count(&self) -> usize {
        self.layers.len() + 2
    }

    /// Every unit's parameter tensors, in unit order.
    pub fn units(&self) -> Vec<Vec<Tensor>> {
        (0..self.unit_count()).map(|u| self.unit(u)).collect()
    }

    /// The parameter tensors of unit `unit`: `[embedding]`, a layer's (in the block's order),
    /// or `[norm, lm_head]` (`[norm]` with a tied head).
    pub fn unit(&self, unit: usize) -> Vec<Tensor> {
        if unit == 0 {
            return vec![self.embed_tokens.shallow_clone()];
        }
        if let Some(layer) = self.layers.get(unit - 1) {
            return layer.parameters();
        }
        let mut head = vec![self.norm.weight.shallow_clone()];
        head.extend(self.lm_head.as_ref().map(|h| h.weight.shallow_clone()));
        head
    }

    /// The decoder layers on `x` without autograd, each gathered only while it runs; each
    /// layer's input is kept in `inputs` when given.
    fn layers_by_unit<U: Units>(
        &self,
        mut x: Tensor,
        ctx: &Context,
        units: &mut U,
        mut inputs: Option<&mut Vec<Tensor>>,
    ) -> Result<Tensor, U::Error> {
        for (i, layer) in self.layers.iter().enumerate() {
            units.gather(i + 1)?;
            let next = tch::no_grad(|| layer.forward(&x, ctx));
            units.release(i + 1);
            if let Some(kept) = inputs.as_deref_mut() {
                kept.push(x);
            }
            x = next;
        }
        Ok(x)
    }

    /// `loss` of the final hidden states, with no gradient, each unit gathered only while it
    /// runs (the head unit for the loss).
    pub fn forward_by_unit<U: Units>(
        &self,
        input_ids: &Tensor,
        documents: Option<&Documents>,
        loss: impl FnOnce(&Tensor) -> Tensor,
        units: &mut U,
    ) -> Result<Tensor, U::Error> {
        tch::no_grad(|| {
            let ctx = self.context(input_ids.size()[1], documents);
            let head = self.layers.len() + 1;
            units.gather(0)?;
            let x = self.embed(input_ids);
            let x = self.layers_by_unit(x, &ctx, units, None)?;
            units.gather(head)?;
            let value = loss(&self.norm.forward(&x));
            units.release(head);
            units.release(0);
            Ok(value)
        })
    }

    /// Back-propagate `loss` of the final hidden states unit by unit, handing each unit's
    /// gradients to `units` (nothing accumulates in the parameters' `.grad`). Returns the loss.
    pub fn backward_by_unit<U: Units>(
        &self,
        input_ids: &Tensor,
        documents: Option<&Documents>,
        loss: impl FnOnce(&Tensor) -> Tensor,
        units: &mut U,
    ) -> Result<Tensor, U::Error> {
        self.backward_by_unit_with(input_ids, documents, loss, &[], units)
    }

    /// [`CausalLm::backward_by_unit`] for a loss that also reads `head_extra`, parameters
    /// beyond the model's own that belong to its head unit (after [`CausalLm::unit`]'s): a
    /// value or reward model's scalar head.
    pub fn backward_by_unit_with<U: Units>(
        &self,
        input_ids: &Tensor,
        documents: Option<&Documents>,
        loss: impl FnOnce(&Tensor) -> Tensor,
        head_extra: &[Tensor],
        units: &mut U,
    ) -> Result<Tensor, U::Error> {
        let ctx = self.context(input_ids.size()[1], documents);
        let head = self.layers.len() + 1;
        units.gather(0)?;
        // Forward without autograd, keeping each layer's input.
        let mut inputs = Vec::with_capacity(self.layers.len());
        let x = tch::no_grad(|| self.embed(input_ids));
        let x = self.layers_by_unit(x, &ctx, units, Some(&mut inputs))?;
        // The loss, and the gradients of the head and of the last layer's output.
        units.gather(head)?;
        let top = x.detach().set_requires_grad(true);
        let value = loss(&self.norm.forward(&top));
        let mut head_params = self.unit(head);
        head_params.extend(head_extra.iter().map(Tensor::shallow_clone));
        let tied = self.lm_head.is_none();
        let mut wrt: Vec<&Tensor> = vec![&top];
        wrt.extend(&head_params);
        if tied {
            wrt.push(&self.embed_tokens);
        }
        let mut grads = Tensor::run_backward(&[&value], &wrt, false, false);
        if tied {
            let g_embed = grads.pop().unwrap_or_default();
            units.gradients(0, vec![g_embed])?;
        }
        let mut grad = grads.remove(0);
        units.gradients(head, grads)?;
        units.release(head);
        // Each layer, last to first: recomputed from its input, its gradients taken.
        for (i, (layer, input)) in self.layers.iter().zip(&inputs).enumerate().rev() {
            units.gather(i + 1)?;
            let xi = input.detach().set_requires_grad(true);
            let out = (layer.forward(&xi, &ctx) * &grad).sum(Kind::Float);
            let params = self.unit(i + 1);
            let mut wrt: Vec<&Tensor> = vec![&xi];
            wrt.extend(&params);
            let mut grads = Tensor::run_backward(&[&out], &wrt, false, false);
            grad = grads.remove(0);
            units.gradients(i + 1, grads)?;
            units.release(i + 1);
        }
        let out = (self.embed(input_ids) * &grad).sum(Kind::Float);
        let g_embed = Tensor::run_backward(&[&out], &[&self.embed_tokens], false, false);
        units.gradients(0, g_embed)?;
        units.release(0);
        Ok(value.detach())
    }
}

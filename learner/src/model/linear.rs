//! Projections: the linear map of every layer, and on the CPU with few rows (a
//! decode step) the `W · xᵀ` form that the decode path keeps transposed.

use tch::nn::{Init, Path};
use tch::Tensor;

use super::layers::{param, Fill, NORMAL};
use super::skinny;

/// A linear map, weight `[out, in]` as in HF, with a bias where the family has one.
#[derive(Debug)]
pub(super) struct Linear {
    pub(super) weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// A `[out_dim, in_dim]` weight (and an `[out_dim]` bias) under `p`.
    pub(super) fn new(p: Path, in_dim: i64, out_dim: i64, bias: bool, fill: Fill) -> Self {
        Self {
            weight: param(&p, "weight", &[out_dim, in_dim], NORMAL, fill),
            bias: bias.then(|| param(&p, "bias", &[out_dim], Init::Const(0.0), fill)),
        }
    }

    /// `x · Wᵀ + b`, `[..., out]`.
    pub(super) fn forward(&self, x: &Tensor) -> Tensor {
        match &self.bias {
            Some(b) if !few_rows(x) => x.linear(&self.weight, Some(b)),
            Some(b) => project(x, &self.weight) + b,
            None => project(x, &self.weight),
        }
    }

    /// `W · xᵀ + b`, `[out, rows]` (see [`project_t`]).
    pub(super) fn forward_t(&self, x: &Tensor) -> Tensor {
        self.add_bias_t(&project_t(x, &self.weight))
    }

    /// `yt` (`[out, rows]`, a product with this weight) plus the bias, if any, per row.
    pub(super) fn add_bias_t(&self, yt: &Tensor) -> Tensor {
        match &self.bias {
            Some(b) => yt + b.unsqueeze(1),
            None => yt.shallow_clone(),
        }
    }

    /// The weight, then the bias if any.
    pub(super) fn parameters(&self) -> Vec<Tensor> {
        std::iter::once(&self.weight)
            .chain(&self.bias)
            .map(Tensor::shallow_clone)
            .collect()
    }
}

/// Projections of one input whose weights (and biases) lie in one tensor, so that one product
/// makes all their outputs: an inference engine's q/k/v and gate/up
/// ([`crate::model::CausalLm::fuse_projections`]). Each projection's weight becomes a view of
/// the stack, so weights loaded into it by name land in the stack.
#[derive(Debug)]
pub(super) struct Fused {
    weight: Tensor,
    bias: Option<Tensor>,
    /// Output features of each projection, in order.
    sizes: Vec<i64>,
    /// Where each projection's weight and bias must still point for the stack to be theirs.
    views: Vec<(usize, Option<usize>)>,
}

impl Fused {
    /// Stack `linears` (weights of one element type and input size, all with biases or none)
    /// and make each weight and bias a view of the stack. `None`, changing nothing, where that
    /// does not apply: weights that train (autograd needs their own leaves), or mixed ones.
    pub(super) fn new(linears: &[&Linear]) -> Option<Self> {
        let first = &linears.first()?.weight;
        let alike = linears.iter().all(|l| {
            let w = &l.weight;
            !w.requires_grad()
                && (w.kind(), w.device()) == (first.kind(), first.device())
                && w.size().get(1) == first.size().get(1)
                && l.bias.is_some() == linears[0].bias.is_some()
        });
        if !alike {
            return None;
        }
        let weight = Tensor::cat(&linears.iter().map(|l| &l.weight).collect::<Vec<_>>(), 0);
        let bias = linears[0].bias.as_ref().map(|_| {
            Tensor::cat(
                &linears.iter().filter_map(|l| l.bias.as_ref()).collect::<Vec<_>>(),
                0,
            )
        });
        let sizes: Vec<i64> = linears.iter().map(|l| l.weight.size()[0]).collect();
        let mut views = Vec::with_capacity(linears.len());
        let mut first_row = 0;
        for (l, &rows) in linears.iter().zip(&sizes) {
            let mut w = l.weight.shallow_clone();
            w.set_data(&weight.narrow(0, first_row, rows));
            let b = l.bias.as_ref().zip(bias.as_ref()).map(|(b, stack)| {
                let mut b = b.shallow_clone();
                b.set_data(&stack.narrow(0, first_row, rows));
                b.data_ptr() as usize
            });
            views.push((w.data_ptr() as usize, b));
            first_row += rows;
        }
        Some(Self {
            weight,
            bias,
            sizes,
            views,
        })
    }

    /// Each projection's output for `x` (`[..., in]`): views of one product. `None` once a
    /// weight or bias no longer is its view of the stack (a conversion gave it memory of its
    /// own), so the caller projects one by one instead.
    pub(super) fn forward(&self, linears: &[&Linear], x: &Tensor) -> Option<Vec<Tensor>> {
        let intact = linears.len() == self.views.len()
            && linears.iter().zip(&self.views).all(|(l, &(w, b))| {
                l.weight.data_ptr() as usize == w && l.bias.as_ref().map(|b| b.data_ptr() as usize) == b
            });
        if !intact {
            return None;
        }
        let y = x.linear(&self.weight, self.bias.as_ref());
        let mut first = 0;
        Some(
            self.sizes
                .iter()
                .map(|&n| {
                    first += n;
                    y.narrow(-1, first - n, n)
                })
                .collect(),
        )
    }
}

/// Rows at or below which a CPU projection is computed as `W · xᵀ` (see [`project_t`]).
const FEW_ROWS: i64 = 64;

/// Weight rows multiplied at once by [`times`] where the kernel in `skinny.rs` does not apply
/// (libtorch's `mm`, i.e. MKL on the CPU): SmolLM2-135M's LM head (49,152 rows) against 32
/// columns ran about 20% faster in pieces of this size than in one MKL product.
const PIECE_ROWS: i64 = 1024;

/// Whether `x` (`[..., in]`) is few rows on the CPU, as in a decode step.
pub(super) fn few_rows(x: &Tensor) -> bool {
    let inner = x.size().last().copied().unwrap_or(1).max(1);
    x.device() == tch::Device::Cpu && x.numel() as i64 / inner <= FEW_ROWS
}

/// `W · xᵀ`, `[out, rows]`, for `W` of shape `[out, in]` and `x` of `[..., in]` (see [`times`]).
/// With few rows on the CPU this streams the large weight as the left operand: even through
/// MKL, measured 25% faster than `x · Wᵀ` for SmolLM2-135M's MLP and 35% for its LM head at 32
/// rows (`rollout/examples/profile_decode.rs`).
fn project_t(x: &Tensor, w: &Tensor) -> Tensor {
    times(w, &columns(x))
}

/// `x` (`[..., in]`) as the columns of `[in, rows]`: a transposed view.
fn columns(x: &Tensor) -> Tensor {
    let inner = x.size().last().copied().unwrap_or(1);
    x.reshape([-1, inner]).tr()
}

/// `W · B` for `W` of shape `[out, in]` and few columns `B` (`[in, cols]`): on an AVX2 CPU in f32
/// outside autograd by the kernel in `skinny.rs`; otherwise libtorch's `mm`, a tall weight
/// outside autograd [`PIECE_ROWS`] rows at a time into one result.
pub(super) fn times(w: &Tensor, b: &Tensor) -> Tensor {
    if let Some(product) = skinny::product(&[w], b) {
        return product;
    }
    let out = w.size()[0];
    if out <= 2 * PIECE_ROWS || w.requires_grad() || b.requires_grad() {
        return w.mm(b);
    }
    let result = Tensor::empty([out, b.size()[1]], (w.kind(), w.device()));
    for (i, piece) in w.split(PIECE_ROWS, 0).iter().enumerate() {
        let rows = result.narrow(0, i as i64 * PIECE_ROWS, piece.size()[0]);
        let _ = piece.mm_out(&rows, b);
    }
    result
}

/// `W · xᵀ` for each of `ws` (`[out_i, in]`), for `x` of few rows on the CPU: one call of the
/// kernel in `skinny.rs` for all of them (one packing of `x`, one parallel region) where it
/// applies, each result a view of its rows; otherwise one product each.
pub(super) fn project_all_t(ws: &[&Tensor], x: &Tensor) -> Vec<Tensor> {
    let xt = columns(x);
    let Some(stacked) = skinny::product(ws, &xt) else {
        return ws.iter().map(|w| times(w, &xt)).collect();
    };
    let mut first = 0;
    ws.iter()
        .map(|w| {
            let rows = w.size()[0];
            first += rows;
            stacked.narrow(0, first - rows, rows)
        })
        .collect()
}

/// `x · Wᵀ` for `W` of shape `[out, in]`: `[..., out]`, contiguous. Few rows on the CPU go
/// through [`project_t`].
pub(super) fn project(x: &Tensor, w: &Tensor) -> Tensor {
    if !few_rows(x) {
        return x.linear::<Tensor>(w, None);
    }
    untranspose(&project_t(x, w), x).contiguous()
}

/// `W · xᵀ` (`[out, rows]`) seen in the shape of `x` with its last dimension `out`: a view with
/// transposed strides, no copy. Decode-step callers that only add or rotate the result skip
/// the copy back to `[rows, out]` this way.
pub(super) fn untranspose(yt: &Tensor, x: &Tensor) -> Tensor {
    let mut shape = x.size();
    let last = shape.len() - 1;
    shape[last] = yt.size()[0];
    yt.tr().reshape(shape.as_slice())
}

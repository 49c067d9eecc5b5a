//! Tensor parallelism (Megatron's split of a decoder layer): each of `world` ranks holds
//! `1/world` of every layer's heads and MLP channels — query, key, value, gate and up
//! projections split by output rows (column-parallel), output and down projections by input
//! columns (row-parallel) — so attention and the MLP each end in a partial sum that one
//! all-reduce completes. Embeddings, norms and the head stay whole on every rank. A rank's
//! model is the family's own model built from [`shard_config`] (its share of the heads and
//! channels) with the group set ([`super::CausalLm::set_tensor_parallel`]); [`shard_of`] cuts a
//! whole checkpoint tensor into a rank's part.

use std::sync::Arc;

use rlvr_dist::{ProcessGroup, ReduceOp};
use tch::Tensor;

use super::config::{Config, ConfigError, QkNorm};

/// How a parameter is split across ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    /// By output rows (dimension 0): query, key, value, gate and up projections and their biases.
    Rows,
    /// By input columns (dimension 1): the output and down projections.
    Columns,
    /// Not split: embeddings, norms, the head.
    Whole,
}

fn split_of(name: &str) -> Split {
    const ROWS: [&str; 5] = ["q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"];
    let mut parts = name.rsplit('.');
    let (_, module) = (parts.next(), parts.next().unwrap_or(""));
    if ROWS.contains(&module) {
        Split::Rows
    } else if module == "o_proj" || module == "down_proj" {
        Split::Columns
    } else {
        Split::Whole
    }
}

/// The configuration of one rank's share of `config` over `world` ranks: its query and
/// key/value heads and MLP channels divided by `world`. Refuses what would not split evenly,
/// and families whose split would need more than the two all-reduces: biases on the output or
/// down projection (each rank would add them), and OLMo 2's query/key norm over the whole
/// projection (its statistics span every rank's heads).
pub fn shard_config(config: &Config, world: usize) -> Result<Config, ConfigError> {
    let world = world as i64;
    let refuse = |field: &str, message: String| {
        Err(ConfigError {
            field: field.to_string(),
            message,
        })
    };
    if world < 1 {
        return refuse("tensor_parallel", "must be at least 1".into());
    }
    for (field, value) in [
        ("num_attention_heads", config.num_attention_heads),
        ("num_key_value_heads", config.kv_heads()),
        ("intermediate_size", config.intermediate_size),
    ] {
        if value % world != 0 {
            return refuse(
                field,
                format!("{value} does not split over tensor_parallel = {world}; use a divisor of it"),
            );
        }
    }
    let layers = config.layers();
    if layers.o_bias || layers.mlp_bias {
        return refuse(
            if layers.o_bias { "attention_bias" } else { "mlp_bias" },
            "tensor parallelism splits layers without output or MLP biases (Llama 3, Qwen 2/2.5/3, OLMo 2 without its norm)".into(),
        );
    }
    if world > 1 && layers.qk_norm == QkNorm::Whole {
        return refuse(
            "model_type",
            "OLMo 2 norms queries and keys over every head: not split by tensor parallelism (Llama 3, Qwen 2/2.5/3 are)".into(),
        );
    }
    let mut shard = config.clone();
    shard.num_attention_heads /= world;
    shard.num_key_value_heads /= world;
    shard.intermediate_size /= world;
    Ok(shard)
}

/// Rank `rank`'s part of the whole tensor `name` over `world` ranks (a view; the tensor itself
/// for parameters every rank holds whole).
pub fn shard_of(name: &str, whole: &Tensor, rank: usize, world: usize) -> Tensor {
    let dim: usize = match split_of(name) {
        Split::Rows => 0,
        Split::Columns => 1,
        Split::Whole => return whole.shallow_clone(),
    };
    if world <= 1 || whole.dim() <= dim {
        return whole.shallow_clone();
    }
    let size = whole.size()[dim] / world as i64;
    whole.narrow(dim as i64, rank as i64 * size, size)
}

/// Complete a row-parallel projection's partial sums: the sum over the group's ranks.
///
/// # Panics
///
/// When the collective fails (a rank died or the group's store went away): a decode step
/// cannot continue with part of its sum, and the worker running it fails and is restarted.
pub(super) fn all_reduce(group: &Arc<ProcessGroup>, partial: Tensor) -> Tensor {
    let mut sum = partial.contiguous();
    if let Err(e) = group.all_reduce(&mut sum, ReduceOp::Sum) {
        panic!("tensor-parallel all-reduce failed: {e}");
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn projections_split_by_rows_or_columns_and_the_rest_stays_whole() {
        let w = Tensor::arange(24, (Kind::Float, Device::Cpu)).view([4, 6]);
        let q = shard_of("model.layers.0.self_attn.q_proj.weight", &w, 1, 2);
        assert_eq!(q.size(), [2, 6]);
        assert_eq!(q.double_value(&[0, 0]), 12.0);
        let o = shard_of("model.layers.3.self_attn.o_proj.weight", &w, 1, 2);
        assert_eq!(o.size(), [4, 3]);
        assert_eq!(o.double_value(&[0, 0]), 3.0);
        let bias = Tensor::arange(4, (Kind::Float, Device::Cpu));
        assert_eq!(
            shard_of("model.layers.0.self_attn.k_proj.bias", &bias, 1, 2).size(),
            [2]
        );
        for name in [
            "model.embed_tokens.weight",
            "lm_head.weight",
            "model.layers.0.input_layernorm.weight",
        ] {
            assert_eq!(shard_of(name, &w, 1, 2).size(), [4, 6], "{name}");
        }
    }
}

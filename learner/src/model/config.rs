//! The model configuration, read from a Hugging Face `config.json` and dispatched on its
//! `model_type`: one [`Config`] for every family rlvr runs (Llama 2/3.x and SmolLM2, Mistral,
//! Qwen2/2.5, Qwen3, OLMo 2). What a family does differently is data ([`Layers`]) that the one
//! implementation of each layer reads. A value rlvr does not implement — an unknown
//! `model_type`, an active sliding window, a RoPE scaling other than `llama3`, an activation
//! other than SiLU, quantised weights — is refused with the field and what is supported, never
//! dropped. Both the transformers 4 and 5 spellings of the RoPE settings are read.

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

mod hf;

/// The model families rlvr implements, by their `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `llama`: Llama 2, Llama 3.x (with `llama3` RoPE scaling), SmolLM2.
    Llama,
    /// `mistral`: Llama's layers without biases; only without an active sliding window.
    Mistral,
    /// `qwen2`: Qwen2 and Qwen2.5, biases on the query, key and value projections.
    Qwen2,
    /// `qwen3`: an explicit `head_dim` and an RMSNorm over each query and key head.
    Qwen3,
    /// `olmo2`: norms after attention and after the MLP (none before), and an RMSNorm over the
    /// whole query and key projections.
    Olmo2,
}

impl Family {
    /// Every family, in the order messages list them.
    pub const ALL: [Family; 5] = [
        Family::Llama,
        Family::Mistral,
        Family::Qwen2,
        Family::Qwen3,
        Family::Olmo2,
    ];

    /// The family of a `model_type`.
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.model_type() == model_type)
    }

    /// The `model_type` of `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
            Family::Olmo2 => "olmo2",
        }
    }

    /// The transformers class prefix (`Qwen2` of `Qwen2ForCausalLM`).
    fn class_prefix(self) -> &'static str {
        match self {
            Family::Llama => "Llama",
            Family::Mistral => "Mistral",
            Family::Qwen2 => "Qwen2",
            Family::Qwen3 => "Qwen3",
            Family::Olmo2 => "Olmo2",
        }
    }

    /// The transformers class of a causal LM of this family.
    pub fn causal_lm_class(self) -> String {
        format!("{}ForCausalLM", self.class_prefix())
    }

    /// The transformers class of a reward model (a scalar `score` head) of this family.
    pub fn sequence_classification_class(self) -> String {
        format!("{}ForSequenceClassification", self.class_prefix())
    }

    /// transformers' defaults for keys a `config.json` may leave out: `rms_norm_eps`,
    /// `max_position_embeddings`, and `head_dim` when the family has a fixed one.
    fn defaults(self) -> (f64, i64, Option<i64>) {
        match self {
            Family::Llama => (1e-6, 2048, None),
            Family::Mistral => (1e-6, 4096 * 32, None),
            Family::Qwen2 => (1e-6, 32768, None),
            Family::Qwen3 => (1e-6, 32768, Some(128)),
            Family::Olmo2 => (1e-5, 2048, None),
        }
    }

    /// The names of every family, for messages.
    pub fn supported() -> String {
        Self::ALL.map(Family::model_type).join(", ")
    }
}

/// Where a decoder layer's RMSNorms sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormPosition {
    /// Before attention (`input_layernorm`) and before the MLP (`post_attention_layernorm`),
    /// as Llama.
    Pre,
    /// After attention (`post_attention_layernorm`) and after the MLP
    /// (`post_feedforward_layernorm`), before each residual add, as OLMo 2.
    Post,
}

/// An RMSNorm of the queries and keys before the rotary embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkNorm {
    /// None (Llama, Mistral, Qwen2).
    None,
    /// Over each head, weights `[head_dim]` (Qwen3).
    PerHead,
    /// Over the whole projection, weights `[heads · head_dim]` (OLMo 2).
    Whole,
}

/// What a family's decoder layers have: the differences the shared layers read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layers {
    /// Biases on the query, key and value projections.
    pub qkv_bias: bool,
    /// A bias on the attention output projection.
    pub o_bias: bool,
    /// Biases on the MLP's three projections.
    pub mlp_bias: bool,
    /// Query/key normalisation.
    pub qk_norm: QkNorm,
    /// Where the layer's norms sit.
    pub norms: NormPosition,
    /// The norm multiplies by its weight in f32 before casting back (OLMo 2), instead of
    /// casting first (Llama); the two differ only below f32.
    pub norm_weight_in_f32: bool,
}

/// Model configuration, with Hugging Face `config.json` field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub struct Config {
    /// The family (`model_type`).
    pub family: Family,
    /// Width of the residual stream.
    pub hidden_size: i64,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: i64,
    /// Decoder layers.
    pub num_hidden_layers: i64,
    /// Query heads.
    pub num_attention_heads: i64,
    /// Key/value heads (grouped-query attention).
    pub num_key_value_heads: i64,
    /// Width of one head (`hidden_size / num_attention_heads` unless the config says).
    pub head_dim: i64,
    /// Vocabulary size.
    pub vocab_size: i64,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE frequency scaling (`llama3` for Llama 3.1).
    pub rope_scaling: Option<RopeScaling>,
    /// Longest position.
    pub max_position_embeddings: i64,
    /// LM head shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// `attention_bias` (Llama, Qwen3, OLMo 2: every attention projection has a bias).
    pub attention_bias: bool,
    /// `mlp_bias` (Llama only).
    pub mlp_bias: bool,
    /// Beginning-of-sequence id.
    pub bos_token_id: Option<i64>,
    /// Padding id: as in transformers (`nn.Embedding(padding_idx=...)`), its embedding row
    /// gets no gradient.
    pub pad_token_id: Option<i64>,
    /// End-of-sequence ids (Llama 3.1 lists three); generation stops on any.
    pub eos_token_ids: Vec<i64>,
    /// Keys of the source `config.json` that change nothing rlvr computes (`pad_token_id`,
    /// `initializer_range`, `use_cache`, ...), written back unchanged.
    pub passthrough: Map<String, Value>,
}

/// RoPE scaling parameters, as in Llama 3.1's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    /// `llama3` (the only scaling implemented; others are refused when read).
    #[serde(alias = "type")]
    pub rope_type: String,
    /// Overall stretch of low frequencies.
    pub factor: f64,
    /// Wavelength boundary (as a divisor of the original context) below which frequencies are
    /// scaled fully.
    pub low_freq_factor: f64,
    /// Wavelength boundary above which frequencies are kept.
    pub high_freq_factor: f64,
    /// Context length of pretraining.
    pub original_max_position_embeddings: f64,
}

/// Keys rlvr reads itself (and writes from the [`Config`]'s fields).
const READ: &[&str] = &[
    "model_type",
    "architectures",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "max_position_embeddings",
    "tie_word_embeddings",
    "attention_bias",
    "mlp_bias",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "hidden_act",
    "hidden_activation",
    "sliding_window",
    "use_sliding_window",
    "max_window_layers",
    "layer_types",
    "attention_dropout",
    "torch_dtype",
    "dtype",
];

/// Keys whose presence (with a value other than null, false or 1) changes the computation in
/// a way rlvr does not implement, with what they would need.
const REFUSED: &[(&str, &str)] = &[
    (
        "quantization_config",
        "quantised weights are not loaded; give f32, bf16 or f16 safetensors",
    ),
    ("clip_qkv", "clipping of q/k/v (OLMo 1) is not implemented"),
    (
        "partial_rotary_factor",
        "rotary embeddings over part of a head are not implemented",
    ),
    (
        "pretraining_tp",
        "only pretraining_tp = 1 (the same computation as one piece) is read",
    ),
];

/// Why a `config.json` cannot be used: the field and what is supported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field at fault (dotted for nested keys).
    pub field: String,
    /// What is wrong and what is supported.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "field `{}`: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Key/value heads.
    pub fn kv_heads(&self) -> i64 {
        self.num_key_value_heads
    }

    /// What this family's decoder layers have.
    pub fn layers(&self) -> Layers {
        let pre = NormPosition::Pre;
        let (qkv_bias, o_bias, qk_norm, norms) = match self.family {
            Family::Llama => (self.attention_bias, self.attention_bias, QkNorm::None, pre),
            Family::Mistral => (false, false, QkNorm::None, pre),
            Family::Qwen2 => (true, false, QkNorm::None, pre),
            Family::Qwen3 => (self.attention_bias, self.attention_bias, QkNorm::PerHead, pre),
            Family::Olmo2 => (
                self.attention_bias,
                self.attention_bias,
                QkNorm::Whole,
                NormPosition::Post,
            ),
        };
        Layers {
            qkv_bias,
            o_bias,
            mlp_bias: self.mlp_bias,
            qk_norm,
            norms,
            norm_weight_in_f32: self.family == Family::Olmo2,
        }
    }

    /// A Llama of this shape from scratch (the tiny recipes): no token ids, nothing carried.
    #[allow(clippy::too_many_arguments)]
    pub fn llama(
        hidden_size: i64,
        intermediate_size: i64,
        num_hidden_layers: i64,
        num_attention_heads: i64,
        num_key_value_heads: i64,
        vocab_size: i64,
        max_position_embeddings: i64,
        tie_word_embeddings: bool,
    ) -> Self {
        Self {
            family: Family::Llama,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim: hidden_size / num_attention_heads.max(1),
            vocab_size,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scaling: None,
            max_position_embeddings,
            tie_word_embeddings,
            attention_bias: false,
            mlp_bias: false,
            bos_token_id: None,
            pad_token_id: None,
            eos_token_ids: Vec::new(),
            passthrough: Map::new(),
        }
    }

    /// Inverse RoPE frequencies, `llama3` scaling applied when configured.
    pub(crate) fn inv_freq(&self) -> Vec<f64> {
        let d = self.head_dim;
        let base: Vec<f64> = (0..d / 2)
            .map(|i| 1.0 / self.rope_theta.powf(2.0 * i as f64 / d as f64))
            .collect();
        let Some(s) = &self.rope_scaling else {
            return base;
        };
        let low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
        let high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
        base.into_iter()
            .map(|f| {
                let wavelen = 2.0 * PI / f;
                if wavelen < high_wavelen {
                    f
                } else if wavelen > low_wavelen {
                    f / s.factor
                } else {
                    let smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor)
                        / (s.high_freq_factor - s.low_freq_factor);
                    (1.0 - smooth) * f / s.factor + smooth * f
                }
            })
            .collect()
    }
}

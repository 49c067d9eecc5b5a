//! The Llama configuration as Hugging Face's `config.json` spells it (both the transformers 4
//! and 5 forms of the RoPE settings), and the rotary frequencies it implies (with Llama 3.1's
//! `llama3` scaling).

use std::f64::consts::PI;

use serde::{Deserialize, Serialize};

/// Model configuration, with Hugging Face `config.json` field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Width of the residual stream.
    pub hidden_size: i64,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: i64,
    /// Decoder layers.
    pub num_hidden_layers: i64,
    /// Query heads.
    pub num_attention_heads: i64,
    /// Key/value heads (grouped-query attention); defaults to the query heads.
    #[serde(default)]
    pub num_key_value_heads: Option<i64>,
    /// Vocabulary size.
    pub vocab_size: i64,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// RoPE frequency scaling (`llama3` for Llama 3.1).
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    /// Longest position.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: i64,
    /// LM head shares the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence id.
    #[serde(default)]
    pub bos_token_id: Option<i64>,
    /// End-of-sequence id (Llama 3.1 lists several; the first is used here).
    #[serde(default, deserialize_with = "one_or_many")]
    pub eos_token_id: Option<i64>,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_theta() -> f64 {
    10000.0
}
fn default_max_pos() -> i64 {
    2048
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(i64),
        Many(Vec<i64>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => None,
        Some(OneOrMany::One(v)) => Some(v),
        Some(OneOrMany::Many(v)) => v.first().copied(),
    })
}

/// RoPE scaling parameters, as in Llama 3.1's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    /// `llama3` (others are rejected when the model is built).
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

impl Config {
    /// Read a Hugging Face `config.json`. Files written by transformers 5 keep RoPE's base and
    /// scaling in a `rope_parameters` table (`rope_theta`, `rope_type`, and the `llama3`
    /// factors) instead of top-level `rope_theta` / `rope_scaling`; both forms are read.
    pub fn from_hf_json(text: &str) -> serde_json::Result<Self> {
        let mut config: Config = serde_json::from_str(text)?;
        let raw: serde_json::Value = serde_json::from_str(text)?;
        if let Some(rope) = raw.get("rope_parameters").filter(|r| r.is_object()) {
            if let Some(theta) = rope.get("rope_theta").and_then(serde_json::Value::as_f64) {
                config.rope_theta = theta;
            }
            let kind = rope.get("rope_type").and_then(serde_json::Value::as_str);
            config.rope_scaling = match kind {
                None | Some("default") => None,
                Some(_) => Some(serde_json::from_value(rope.clone())?),
            };
        }
        Ok(config)
    }

    /// Key/value heads.
    pub fn kv_heads(&self) -> i64 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one head.
    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }

    /// The `config.json` that `transformers` loads as `LlamaForCausalLM`.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            m.insert("num_key_value_heads".into(), self.kv_heads().into());
            m.insert("architectures".into(), serde_json::json!(["LlamaForCausalLM"]));
            m.insert("model_type".into(), "llama".into());
            m.insert("hidden_act".into(), "silu".into());
            m.insert("attention_bias".into(), false.into());
            m.insert("mlp_bias".into(), false.into());
            m.insert("head_dim".into(), self.head_dim().into());
            m.insert("initializer_range".into(), 0.02.into());
            m.insert("torch_dtype".into(), "float32".into());
        }
        v
    }

    /// Inverse RoPE frequencies, `llama3` scaling applied when configured.
    pub(crate) fn inv_freq(&self) -> Vec<f64> {
        let d = self.head_dim();
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

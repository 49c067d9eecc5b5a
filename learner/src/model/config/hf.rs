//! Reading a Hugging Face `config.json` into a [`Config`] (each field typed, each value rlvr
//! does not implement refused with the field) and writing one back for `transformers`.

use serde_json::{json, Map, Value};

use super::{Config, ConfigError, Family, RopeScaling, READ, REFUSED};

fn refuse<T>(field: &str, message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError {
        field: field.into(),
        message: message.into(),
    })
}

/// Typed reads of a `config.json` object, each failing with the field's name.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn int(&self, key: &str) -> Result<Option<i64>, ConfigError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_i64().map(Some).ok_or_else(|| ConfigError {
                field: key.into(),
                message: format!("expected an integer, found {v}"),
            }),
        }
    }

    fn required(&self, key: &str) -> Result<i64, ConfigError> {
        match self.int(key)? {
            Some(v) if v > 0 => Ok(v),
            Some(v) => refuse(key, format!("must be positive, found {v}")),
            None => refuse(key, "missing; every supported family needs it"),
        }
    }

    fn float(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| ConfigError {
                field: key.into(),
                message: format!("expected a number, found {v}"),
            }),
        }
    }

    fn flag(&self, key: &str) -> Result<bool, ConfigError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(v) => v.as_bool().ok_or_else(|| ConfigError {
                field: key.into(),
                message: format!("expected true or false, found {v}"),
            }),
        }
    }
}

impl Config {
    /// Read a Hugging Face `config.json`, refusing what rlvr does not implement.
    pub fn from_hf_json(text: &str) -> Result<Self, ConfigError> {
        let value: Value = serde_json::from_str(text).map_err(|e| ConfigError {
            field: String::new(),
            message: format!("not JSON (line {}): {e}", e.line()),
        })?;
        Self::from_value(value)
    }

    /// [`Config::from_hf_json`] of parsed JSON.
    pub fn from_value(value: Value) -> Result<Self, ConfigError> {
        let Value::Object(map) = value else {
            return refuse("", "expected a JSON object");
        };
        let f = Fields(&map);
        let family = match map.get("model_type").and_then(Value::as_str) {
            Some(t) => Family::from_model_type(t).ok_or_else(|| ConfigError {
                field: "model_type".into(),
                message: format!("`{t}` is not supported; supported: {}", Family::supported()),
            })?,
            None => {
                return refuse(
                    "model_type",
                    format!("missing; supported: {}", Family::supported()),
                )
            }
        };
        if let Some(archs) = map.get("architectures").filter(|v| !v.is_null()) {
            let known = [family.causal_lm_class(), family.sequence_classification_class()];
            let list = archs.as_array().ok_or_else(|| ConfigError {
                field: "architectures".into(),
                message: format!("expected a list, found {archs}"),
            })?;
            for a in list {
                if !a.as_str().is_some_and(|a| known.iter().any(|k| k == a)) {
                    return refuse(
                        "architectures",
                        format!(
                            "{a} is not supported for model_type `{}`; supported: {}",
                            family.model_type(),
                            known.join(", ")
                        ),
                    );
                }
            }
        }
        for key in ["hidden_act", "hidden_activation"] {
            if let Some(act) = map.get(key).filter(|v| !v.is_null()) {
                if act.as_str() != Some("silu") {
                    return refuse(key, format!("{act} is not supported; supported: \"silu\""));
                }
            }
        }
        if f.float("attention_dropout")?.unwrap_or(0.0) != 0.0 {
            return refuse("attention_dropout", "rlvr trains without dropout; supported: 0.0");
        }
        for (key, why) in REFUSED {
            let active = match map.get(*key) {
                None | Some(Value::Null) | Some(Value::Bool(false)) => false,
                Some(v) => v.as_f64() != Some(1.0),
            };
            if active {
                return refuse(key, *why);
            }
        }
        let (default_eps, default_max_pos, default_head_dim) = family.defaults();
        let hidden_size = f.required("hidden_size")?;
        let num_attention_heads = f.required("num_attention_heads")?;
        let max_position_embeddings = f.int("max_position_embeddings")?.unwrap_or(default_max_pos);
        Self::check_sliding_window(family, &f, max_position_embeddings)?;
        let head_dim = match f.int("head_dim")? {
            Some(d) => d,
            None => default_head_dim.unwrap_or(hidden_size / num_attention_heads),
        };
        let num_key_value_heads = match f.int("num_key_value_heads")? {
            Some(n) => n,
            None if family == Family::Mistral => 8,
            None => num_attention_heads,
        };
        if head_dim <= 0 || head_dim % 2 != 0 {
            return refuse(
                "head_dim",
                format!("must be positive and even (rotary halves), found {head_dim}"),
            );
        }
        if num_key_value_heads <= 0 || num_attention_heads % num_key_value_heads != 0 {
            return refuse(
                "num_key_value_heads",
                format!(
                    "must divide num_attention_heads ({num_attention_heads}), found {num_key_value_heads}"
                ),
            );
        }
        let (rope_theta, rope_scaling) = Self::rope(&map)?;
        let eos_token_ids = match map.get("eos_token_id") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(ids)) => ids
                .iter()
                .map(|v| v.as_i64())
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| ConfigError {
                    field: "eos_token_id".into(),
                    message: "expected an integer or a list of integers".into(),
                })?,
            Some(v) => vec![v.as_i64().ok_or_else(|| ConfigError {
                field: "eos_token_id".into(),
                message: format!("expected an integer or a list of integers, found {v}"),
            })?],
        };
        let attention_bias = f.flag("attention_bias")?;
        let mlp_bias = f.flag("mlp_bias")?;
        match family {
            Family::Mistral if attention_bias || mlp_bias => {
                return refuse(
                    "attention_bias",
                    "Mistral's projections have no biases; supported: false",
                )
            }
            Family::Llama => {}
            _ if mlp_bias => return refuse("mlp_bias", "only Llama configs may set mlp_bias"),
            _ => {}
        }
        let passthrough = map
            .iter()
            .filter(|(k, _)| !READ.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Self {
            family,
            hidden_size,
            intermediate_size: f.required("intermediate_size")?,
            num_hidden_layers: f.required("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            vocab_size: f.required("vocab_size")?,
            rms_norm_eps: f.float("rms_norm_eps")?.unwrap_or(default_eps),
            rope_theta,
            rope_scaling,
            max_position_embeddings,
            tie_word_embeddings: f.flag("tie_word_embeddings")?,
            attention_bias,
            mlp_bias,
            bos_token_id: f.int("bos_token_id")?,
            pad_token_id: f.int("pad_token_id")?,
            eos_token_ids,
            passthrough,
        })
    }

    /// Refuse a sliding window that would limit attention within the model's context: rlvr's
    /// attention is full.
    fn check_sliding_window(family: Family, f: &Fields, max_pos: i64) -> Result<(), ConfigError> {
        let window = f.int("sliding_window")?;
        let layer_sliding =
            f.0.get("layer_types")
                .and_then(Value::as_array)
                .is_some_and(|types| types.iter().any(|t| t.as_str() != Some("full_attention")));
        let active = match family {
            Family::Mistral => window.is_some_and(|w| w < max_pos),
            Family::Qwen2 | Family::Qwen3 => f.flag("use_sliding_window")? || layer_sliding,
            _ => window.is_some() || layer_sliding,
        };
        if active {
            return refuse(
                "sliding_window",
                format!(
                    "an active sliding window ({}) is not implemented; supported: full attention (sliding_window null, or use_sliding_window false)",
                    window.map_or("per layer_types".into(), |w| w.to_string())
                ),
            );
        }
        Ok(())
    }

    /// RoPE base and scaling from the transformers 4 keys (`rope_theta`, `rope_scaling`) or
    /// transformers 5's `rope_parameters` table.
    fn rope(map: &Map<String, Value>) -> Result<(f64, Option<RopeScaling>), ConfigError> {
        let mut theta = Fields(map).float("rope_theta")?.unwrap_or(10000.0);
        let mut scaling = map.get("rope_scaling").filter(|v| !v.is_null()).cloned();
        let mut field = "rope_scaling";
        if let Some(params) = map.get("rope_parameters").filter(|r| r.is_object()) {
            if let Some(t) = params.get("rope_theta").and_then(Value::as_f64) {
                theta = t;
            }
            scaling = Some(params.clone());
            field = "rope_parameters";
        }
        let Some(scaling) = scaling else {
            return Ok((theta, None));
        };
        let kind = scaling
            .get("rope_type")
            .or_else(|| scaling.get("type"))
            .and_then(Value::as_str);
        match kind {
            None | Some("default") => Ok((theta, None)),
            Some("llama3") => serde_json::from_value(scaling.clone())
                .map(|s| (theta, Some(s)))
                .map_err(|e| ConfigError {
                    field: field.into(),
                    message: format!("llama3 scaling: {e}"),
                }),
            Some(other) => refuse(
                &format!("{field}.rope_type"),
                format!("`{other}` is not implemented; supported: default, llama3"),
            ),
        }
    }

    /// The `config.json` that `transformers` loads as this family's causal LM, with `dtype`
    /// (`float32`, `bfloat16`) as `torch_dtype`.
    pub fn to_hf_json(&self, dtype: &str) -> Value {
        let mut m = self.passthrough.clone();
        let fam = self.family;
        let mut set = |k: &str, v: Value| {
            m.insert(k.into(), v);
        };
        set("architectures", json!([fam.causal_lm_class()]));
        set("model_type", fam.model_type().into());
        set("hidden_size", self.hidden_size.into());
        set("intermediate_size", self.intermediate_size.into());
        set("num_hidden_layers", self.num_hidden_layers.into());
        set("num_attention_heads", self.num_attention_heads.into());
        set("num_key_value_heads", self.num_key_value_heads.into());
        set("head_dim", self.head_dim.into());
        set("vocab_size", self.vocab_size.into());
        set("rms_norm_eps", self.rms_norm_eps.into());
        set("rope_theta", self.rope_theta.into());
        set(
            "rope_scaling",
            serde_json::to_value(&self.rope_scaling).unwrap_or(Value::Null),
        );
        set("max_position_embeddings", self.max_position_embeddings.into());
        set("tie_word_embeddings", self.tie_word_embeddings.into());
        set("hidden_act", "silu".into());
        set("attention_dropout", 0.0.into());
        match fam {
            Family::Llama => {
                set("attention_bias", self.attention_bias.into());
                set("mlp_bias", self.mlp_bias.into());
            }
            Family::Qwen3 | Family::Olmo2 => set("attention_bias", self.attention_bias.into()),
            Family::Mistral => set("sliding_window", Value::Null),
            Family::Qwen2 => {}
        }
        if matches!(fam, Family::Qwen2 | Family::Qwen3) {
            set("use_sliding_window", false.into());
            set("sliding_window", Value::Null);
        }
        set("bos_token_id", self.bos_token_id.map_or(Value::Null, Value::from));
        set("pad_token_id", self.pad_token_id.map_or(Value::Null, Value::from));
        set(
            "eos_token_id",
            match self.eos_token_ids.as_slice() {
                [] => Value::Null,
                [one] => (*one).into(),
                many => json!(many),
            },
        );
        set("torch_dtype", dtype.into());
        Value::Object(m)
    }
}

impl TryFrom<Value> for Config {
    type Error = ConfigError;
    fn try_from(value: Value) -> Result<Self, ConfigError> {
        Self::from_value(value)
    }
}

impl From<Config> for Value {
    fn from(config: Config) -> Value {
        config.to_hf_json("float32")
    }
}

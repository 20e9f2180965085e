//! A `tokenizers::Tokenizer` built from GGUF metadata (byte-level BPE, `tokenizer.ggml.*`).

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::Error;

/// Qwen2's split regex (from its tokenizer.json): single digits, letters with one leading
/// non-letter, punctuation runs with trailing newlines, newline runs.
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's split regex: like Qwen2's, but digits in groups of up to three.
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF token types (llama.cpp `llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// The tokenizer of a GGUF model plus the special ids generation needs.
#[derive(Clone)]
pub(crate) struct GgufTokenizer {
    pub tokenizer: Tokenizer,
    pub bos_id: Option<u32>,
    /// Whether the model expects BOS before the prompt (`tokenizer.ggml.add_bos_token`).
    pub add_bos: bool,
    /// Ids that end generation: EOS/EOT from the metadata plus known end-of-turn tokens.
    pub stop_ids: Vec<u32>,
}

/// Builds the tokenizer of a byte-level BPE GGUF (`tokenizer.ggml.model == "gpt2"`).
///
/// The pre-tokenizer follows `tokenizer.ggml.pre` as llama.cpp does: `qwen2` (Qwen2 regex,
/// NFC), `smollm`/`starcoder` (individual digits, then the GPT-2 regex), `gpt2`, and
/// `llama-bpe`. Control and user-defined tokens are added whole, so `<|im_start|>` in text
/// encodes to its single id; control tokens are skipped by `decode(_, true)`.
pub fn tokenizer_from_gguf(metadata: &HashMap<String, Value>) -> Result<Tokenizer, Error> {
    Ok(build(metadata)?.tokenizer)
}

pub(crate) fn build(md: &HashMap<String, Value>) -> Result<GgufTokenizer, Error> {
    let model = get_str(md, "tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(Error::Tokenizer(format!(
            "unsupported tokenizer.ggml.model {model:?} (only byte-level BPE \"gpt2\")"
        )));
    }
    let pre = md
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .map_or("default", String::as_str);

    let tokens: Vec<String> = get_array(md, "tokenizer.ggml.tokens")?
        .iter()
        .map(|v| v.to_string().cloned())
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Tokenizer(format!("tokenizer.ggml.tokens: {e}")))?;
    let merges: Vec<(String, String)> = get_array(md, "tokenizer.ggml.merges")?
        .iter()
        .map(|v| {
            let s = v.to_string().map_err(|e| e.to_string())?;
            s.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| format!("malformed merge {s:?}"))
        })
        .collect::<Result<_, String>>()
        .map_err(|e| Error::Tokenizer(format!("tokenizer.ggml.merges: {e}")))?;
    let types: Vec<i64> = match md.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(Error::tokenizer)?
            .iter()
            .map(|t| as_i64(t).unwrap_or(1))
            .collect(),
        None => Vec::new(),
    };

    let mut vocab = Vocab::default();
    for (id, tok) in tokens.iter().enumerate() {
        let id = u32::try_from(id).map_err(Error::tokenizer)?;
        vocab.entry(tok.clone()).or_insert(id);
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| Error::Tokenizer(format!("building BPE: {e}")))?;
    let mut tokenizer = Tokenizer::new(bpe);

    let byte_level_no_regex = || ByteLevel::new(false, false, false);
    let split = |regex: &str| -> Result<PreTokenizerWrapper, Error> {
        Split::new(
            SplitPattern::Regex(regex.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map(PreTokenizerWrapper::from)
        .map_err(|e| Error::Tokenizer(format!("pre-tokenizer regex: {e}")))
    };
    let pre_tokenizer = match pre {
        "qwen2" | "deepseek-r1-qwen" | "stablelm2" => {
            tokenizer
                .with_normalizer(Some(NFC))
                .map_err(Error::tokenizer)?;
            Sequence::new(vec![split(QWEN2_REGEX)?, byte_level_no_regex().into()])
        }
        "llama-bpe" | "llama3" => {
            Sequence::new(vec![split(LLAMA3_REGEX)?, byte_level_no_regex().into()])
        }
        "smollm" | "starcoder" | "refact" | "codeshell" => Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ]),
        "gpt2" | "default" | "gpt-2" | "mpt" | "olmo" => {
            Sequence::new(vec![ByteLevel::new(false, true, true).into()])
        }
        other => {
            return Err(Error::Tokenizer(format!(
                "unsupported tokenizer.ggml.pre {other:?}"
            )));
        }
    };
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevel::default()));

    let mut specials = Vec::new();
    let mut user_defined = Vec::new();
    for (tok, ty) in tokens.iter().zip(types.iter()) {
        match *ty {
            TOKEN_TYPE_CONTROL => specials.push(AddedToken::from(tok.clone(), true)),
            TOKEN_TYPE_USER_DEFINED => user_defined.push(AddedToken::from(tok.clone(), false)),
            _ => {}
        }
    }
    tokenizer
        .add_special_tokens(specials)
        .map_err(Error::tokenizer)?;
    tokenizer
        .add_tokens(user_defined)
        .map_err(Error::tokenizer)?;

    let id_of = |key: &str| {
        md.get(key)
            .and_then(as_i64)
            .and_then(|i| u32::try_from(i).ok())
    };
    let bos_id = id_of("tokenizer.ggml.bos_token_id");
    let add_bos = md
        .get("tokenizer.ggml.add_bos_token")
        .and_then(|v| v.to_bool().ok())
        .unwrap_or(false);
    let stop_ids = stop_ids(
        &tokenizer,
        ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"]
            .iter()
            .filter_map(|k| id_of(k)),
    );
    if stop_ids.is_empty() {
        return Err(Error::Tokenizer(
            "GGUF names no end-of-sequence token".to_string(),
        ));
    }
    Ok(GgufTokenizer {
        tokenizer,
        bos_id,
        add_bos,
        stop_ids,
    })
}

/// The Jinja chat template stored in the GGUF (`tokenizer.chat_template`).
pub(crate) fn chat_template(md: &HashMap<String, Value>) -> Result<String, Error> {
    md.get("tokenizer.chat_template")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .ok_or_else(|| Error::Load("GGUF has no tokenizer.chat_template".into()))
}

/// `explicit` plus the ids of the end-of-turn tokens chat models use, sorted, deduplicated.
pub(crate) fn stop_ids(tokenizer: &Tokenizer, explicit: impl Iterator<Item = u32>) -> Vec<u32> {
    let mut ids: Vec<u32> = explicit.collect();
    for name in [
        "<|im_end|>",
        "<|endoftext|>",
        "<|eot_id|>",
        "<|end|>",
        "</s>",
    ] {
        ids.extend(tokenizer.token_to_id(name));
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn get_array<'a>(md: &'a HashMap<String, Value>, key: &str) -> Result<&'a Vec<Value>, Error> {
    md.get(key)
        .ok_or_else(|| Error::Tokenizer(format!("GGUF metadata lacks {key}")))?
        .to_vec()
        .map_err(|e| Error::Tokenizer(format!("{key}: {e}")))
}

fn get_str<'a>(md: &'a HashMap<String, Value>, key: &str) -> Result<&'a str, Error> {
    md.get(key)
        .ok_or_else(|| Error::Tokenizer(format!("GGUF metadata lacks {key}")))?
        .to_string()
        .map(String::as_str)
        .map_err(|e| Error::Tokenizer(format!("{key}: {e}")))
}

/// Any GGUF integer as i64.
pub(crate) fn as_i64(v: &Value) -> Option<i64> {
    Some(match v {
        Value::U8(x) => i64::from(*x),
        Value::I8(x) => i64::from(*x),
        Value::U16(x) => i64::from(*x),
        Value::I16(x) => i64::from(*x),
        Value::U32(x) => i64::from(*x),
        Value::I32(x) => i64::from(*x),
        Value::U64(x) => i64::try_from(*x).ok()?,
        Value::I64(x) => *x,
        _ => return None,
    })
}

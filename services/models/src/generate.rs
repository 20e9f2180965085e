//! GGUF chat generation (quantized llama / qwen2) with streaming, cancellation and seeded
//! sampling.

use std::io::{Read, Seek};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use serde::{Deserialize, Serialize};

use crate::files::open_llm;
use crate::gguf_tokenizer::{self, GgufTokenizer, as_i64};
use crate::hf::HfWeights;
use crate::qwen2::{KvSnapshot, Qwen2};
use crate::template::ChatTemplate;
use crate::{Error, LlmChoice};

/// Prompt tokens fed per forward pass; bounds the attention scratch memory of long prompts.
const PREFILL_CHUNK: usize = 512;

/// One chat turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// How to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    /// Most tokens to generate (lowered to what fits the context).
    pub max_tokens: usize,
    /// Sampling temperature; `0` (or less) is greedy decoding.
    pub temperature: f64,
    /// Nucleus sampling mass, when sampling.
    pub top_p: Option<f64>,
    /// Seed of the sampler: the same seed, prompt and params give the same output.
    pub seed: u64,
    /// A reply whose probability is measured after the prompt, before anything is generated.
    pub probe: Option<ReplyProbe>,
}

/// A reply the model is scored on before it generates (see [`Generation::probe_probability`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyProbe {
    /// The reply, as the model would write it at the start of its turn.
    pub reply: String,
    /// When the reply's probability is above this, nothing is generated
    /// ([`StopReason::Probe`]); 1 or more never stops.
    pub stop_above: f32,
}

impl Default for GenerationParams {
    fn default() -> Self {
        GenerationParams {
            max_tokens: 256,
            temperature: 0.0,
            top_p: None,
            seed: 42,
            probe: None,
        }
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-sequence / end-of-turn token.
    EndOfText,
    /// `max_tokens` tokens were generated.
    MaxTokens,
    /// The `on_token` callback returned `false`.
    Cancelled,
    /// The context window is full (prompt + generated tokens).
    ContextFull,
    /// The probe reply's probability was above [`ReplyProbe::stop_above`]; nothing was
    /// generated.
    Probe,
}

/// The result of [`Generator::generate`].
#[derive(Debug, Clone)]
pub struct Generation {
    /// The generated text, without the end token; equals the concatenation of the deltas
    /// passed to `on_token`.
    pub text: String,
    pub prompt_tokens: usize,
    /// Tokens generated, the end token excluded.
    pub generated_tokens: usize,
    pub stop: StopReason,
    /// From the call to the first sampled token (tokenizing and prompt processing).
    pub time_to_first_token: Duration,
    pub total: Duration,
    /// The probability the model gave, after the prompt, to writing exactly
    /// [`ReplyProbe::reply`] (the product of its tokens' probabilities, teacher-forced).
    /// `None` without a probe, and for models whose KV cache cannot be rolled back
    /// (safetensors llama).
    pub probe_probability: Option<f32>,
    /// The log-probability of each generated token under the model's distribution (before
    /// temperature or top-p), in order.
    pub token_logprobs: Vec<f32>,
}

enum Weights {
    /// quire's own pass over a GGUF's quantized weights, Qwen2 or llama ([`crate::qwen2`]).
    Qwen2(Box<Qwen2>),
    /// A safetensors model in full precision.
    Hf(HfWeights),
}

impl Weights {
    fn forward(&mut self, x: &Tensor, pos: usize) -> candle_core::Result<Tensor> {
        match self {
            Weights::Qwen2(m) => m.forward(x, pos),
            Weights::Hf(m) => m.forward(x, pos),
        }
    }

    fn clear_kv_cache(&mut self) -> candle_core::Result<()> {
        match self {
            Weights::Qwen2(m) => m.clear_kv_cache(),
            Weights::Hf(m) => m.clear_kv_cache()?,
        }
        Ok(())
    }

    /// quire's own Qwen2 pass, whose KV cache can be saved and restored.
    fn qwen2(&mut self) -> Option<&mut Qwen2> {
        match self {
            Weights::Qwen2(m) => Some(m),
            Weights::Hf(HfWeights::Qwen2(m)) => Some(m),
            _ => None,
        }
    }

    /// The KV cache as it is, for models that can restore one.
    fn snapshot(&mut self) -> candle_core::Result<Option<KvSnapshot>> {
        self.qwen2().map(|m| m.kv_snapshot()).transpose()
    }

    fn restore(&mut self, kv: &KvSnapshot) -> candle_core::Result<()> {
        match self.qwen2() {
            Some(m) => m.restore_kv(kv),
            None => candle_core::bail!("this model cannot restore a KV cache"),
        }
    }

    /// Most prompt tokens per forward pass.
    fn prefill_chunk(&self) -> usize {
        match self {
            Weights::Qwen2(_) => PREFILL_CHUNK,
            Weights::Hf(_) => usize::MAX,
        }
    }
}

/// Timings of [`Generator::bench_decode`].
#[derive(Debug, Clone)]
pub struct DecodeTiming {
    pub prompt_tokens: usize,
    /// From the first forward pass to the first token's logits on the host.
    pub prefill: Duration,
    pub generated_tokens: usize,
    /// From the first sampled token to the last token's logits on the host.
    pub decode: Duration,
    /// The generated ids, in order.
    pub tokens: Vec<u32>,
    /// The five largest logits after the prompt, as (id, logit), largest first.
    pub first_top: Vec<(u32, f32)>,
}

/// A loaded GGUF chat model. `Send + Sync`: the weights are loaded once; concurrent
/// [`Generator::generate`] calls are serialised (one KV cache), while tokenizing and prompt
/// rendering run concurrently.
pub struct Generator {
    name: String,
    weights: Mutex<Weights>,
    tok: GgufTokenizer,
    template: ChatTemplate,
    context_length: usize,
    device: Device,
    /// KV caches of recent conversation prefixes (most recent last), so prompts that share
    /// one skip it. Locked only while `weights` is.
    prefixes: Mutex<Vec<CachedPrefix>>,
}

/// Conversation prefixes kept (answer styles and the rerank prompt each have one).
const PREFIX_CACHE_ENTRIES: usize = 4;

/// A prompt's token ids and how many lead with the (cacheable) conversation before its last
/// message.
struct Prompt {
    ids: Vec<u32>,
    shared: usize,
}

/// The KV cache after the prefix `ids`.
struct CachedPrefix {
    ids: Vec<u32>,
    kv: KvSnapshot,
}

impl Generator {
    /// Loads `choice` from `model_dir` (for Qwen, the 22 parts are read in place through a
    /// chained reader).
    ///
    /// Errors: [`Error::ModelMissing`] (its message says to run `quire models fetch`) when a
    /// file is absent; [`Error::Load`] for unreadable or malformed GGUFs;
    /// [`Error::Tokenizer`] / [`Error::Template`] when the metadata cannot be used.
    pub fn load(model_dir: &Path, choice: LlmChoice) -> Result<Generator, Error> {
        let mut reader = open_llm(model_dir, choice)?;
        let device = crate::select_device();
        let started = Instant::now();
        let generator = Self::from_reader(&mut reader, choice, device)?;
        tracing::info!(
            model = %choice,
            context = generator.context_length,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded chat model"
        );
        Ok(generator)
    }

    /// Loads a Hugging Face model directory (see [`crate::hf`]): safetensors weights of a
    /// `qwen2` or `llama` model, run in [`crate::model_dtype`] (bf16 on a GPU).
    pub fn load_dir(dir: &Path) -> Result<Generator, Error> {
        let device = crate::select_device();
        let started = Instant::now();
        let m = crate::hf::load(dir, &device, crate::model_dtype(&device))?;
        let token_text = |id: Option<u32>| {
            id.and_then(|i| m.tok.tokenizer.id_to_token(i))
                .unwrap_or_default()
        };
        let eos = token_text(m.tok.stop_ids.first().copied());
        let template = ChatTemplate::new(m.template, token_text(m.tok.bos_id), eos)?;
        let name = dir.file_name().map_or_else(
            || dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        tracing::info!(
            model = %name,
            device = ?device,
            context = m.context_length,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded safetensors chat model"
        );
        Ok(Generator {
            name,
            weights: Mutex::new(Weights::Hf(m.weights)),
            tok: m.tok,
            template,
            context_length: m.context_length,
            device,
            prefixes: Mutex::new(Vec::new()),
        })
    }

    /// Speed test: runs `prompt_ids` through the model, then generates exactly
    /// `new_tokens` tokens greedily, ignoring end tokens. No text is decoded.
    pub fn bench_decode(
        &self,
        prompt_ids: &[u32],
        new_tokens: usize,
    ) -> Result<DecodeTiming, Error> {
        if prompt_ids.is_empty() || prompt_ids.len() + new_tokens > self.context_length {
            return Err(Error::ContextOverflow {
                prompt_tokens: prompt_ids.len(),
                context_length: self.context_length,
            });
        }
        let mut weights = self
            .weights
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        weights.clear_kv_cache().map_err(Error::inference)?;
        let started = Instant::now();
        let mut logits = self.run_chunks(&mut weights, prompt_ids, 0)?;
        let mut next = argmax(&logits)?;
        let prefill = started.elapsed();
        let mut first_top: Vec<(u32, f32)> = logits
            .to_vec1::<f32>()
            .map_err(Error::inference)?
            .into_iter()
            .enumerate()
            .map(|(i, l)| (i as u32, l))
            .collect();
        first_top.sort_by(|a, b| b.1.total_cmp(&a.1));
        first_top.truncate(5);
        let mut tokens = Vec::with_capacity(new_tokens);
        tokens.push(next);
        let decode_start = Instant::now();
        for i in 1..new_tokens {
            logits = self.forward(&mut weights, &[next], prompt_ids.len() + i - 1)?;
            next = argmax(&logits)?;
            tokens.push(next);
        }
        let decode = decode_start.elapsed();
        weights.clear_kv_cache().map_err(Error::inference)?;
        Ok(DecodeTiming {
            prompt_tokens: prompt_ids.len(),
            prefill,
            generated_tokens: tokens.len(),
            decode,
            tokens,
            first_top,
        })
    }

    fn from_reader<R: Read + Seek>(
        reader: &mut R,
        choice: LlmChoice,
        device: Device,
    ) -> Result<Generator, Error> {
        let content = gguf_file::Content::read(reader)
            .map_err(|e| Error::Load(format!("reading GGUF header: {e}")))?;
        let md = &content.metadata;
        let arch = md
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        let tok = gguf_tokenizer::build(md)?;
        let template_src = gguf_tokenizer::chat_template(md)?;
        let token_text = |id: Option<u32>| {
            id.and_then(|i| tok.tokenizer.id_to_token(i))
                .unwrap_or_default()
        };
        let eos_key = md
            .get("tokenizer.ggml.eos_token_id")
            .and_then(as_i64)
            .and_then(|i| u32::try_from(i).ok());
        let template =
            ChatTemplate::new(template_src, token_text(tok.bos_id), token_text(eos_key))?;
        let (weights, context_length) = match arch.as_str() {
            "llama" | "qwen2" => {
                let (w, ctx) = Qwen2::from_gguf(&content, reader, &device).map_err(Error::load)?;
                (Weights::Qwen2(Box::new(w)), ctx)
            }
            other => {
                return Err(Error::Load(format!(
                    "unsupported GGUF architecture {other:?} (expected llama or qwen2)"
                )));
            }
        };
        Ok(Generator {
            name: choice.to_string(),
            weights: Mutex::new(weights),
            tok,
            template,
            context_length,
            device,
            prefixes: Mutex::new(Vec::new()),
        })
    }

    /// Conversation prefixes whose KV cache is kept for the next prompts that start with
    /// them (0 for models without a restorable cache).
    pub fn cached_prefixes(&self) -> usize {
        self.prefixes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// The model's name, as in [`LlmChoice`]'s `Display`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Tokens that fit the context window: prompt plus generated tokens.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// The tokenizer built from the GGUF metadata.
    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        &self.tok.tokenizer
    }

    /// Tokens `text` takes in a prompt; special-token text such as `<|im_start|>` counts as
    /// one token.
    pub fn count_tokens(&self, text: &str) -> Result<usize, Error> {
        Ok(self.encode(text)?.len())
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, Error> {
        let enc = self
            .tok
            .tokenizer
            .encode(text, false)
            .map_err(Error::tokenizer)?;
        Ok(enc.get_ids().to_vec())
    }

    /// The prompt text for `messages`: the GGUF's chat template with
    /// `add_generation_prompt = true`.
    pub fn render_prompt(&self, messages: &[ChatMessage]) -> Result<String, Error> {
        self.template.render(messages)
    }

    /// Generates the assistant's reply to `messages`.
    ///
    /// `on_token` receives each new piece of text as soon as it is complete UTF-8 (bytes of a
    /// character split across tokens are held back); returning `false` stops generation with
    /// [`StopReason::Cancelled`]. Generation stops at the model's end tokens, after
    /// `params.max_tokens` tokens, or when the context is full. `max_tokens` is lowered to
    /// what fits after the prompt; a prompt that leaves no room fails with
    /// [`Error::ContextOverflow`]. With a fixed seed the output is deterministic.
    pub fn generate(
        &self,
        messages: &[ChatMessage],
        params: &GenerationParams,
        on_token: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation, Error> {
        let started = Instant::now();
        let prompt = self.prompt(messages)?;
        let prompt_tokens = prompt.ids.len();
        let room = self.context_length - prompt_tokens;
        let (limit, limit_reason) = if params.max_tokens > room {
            (room, StopReason::ContextFull)
        } else {
            (params.max_tokens, StopReason::MaxTokens)
        };

        let probe_ids = match &params.probe {
            Some(p) => self.encode(&p.reply)?,
            None => Vec::new(),
        };
        let mut probe_probability = None;
        let mut token_logprobs = Vec::new();
        let mut sampler = LogitsProcessor::from_sampling(params.seed, sampling(params));
        let mut stream = TextStream::default();
        let mut generated: Vec<u32> = Vec::new();
        let mut first_token_at = None;
        let mut stop = limit_reason;

        // A panic elsewhere while holding the lock leaves nothing we rely on: the KV cache
        // is cleared before use.
        let mut weights = self
            .weights
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let result = (|| -> Result<(), Error> {
            weights.clear_kv_cache().map_err(Error::inference)?;
            if limit == 0 {
                return Ok(());
            }
            let mut logits = self.prefill(&mut weights, &prompt)?;
            if let Some(probe) = &params.probe {
                probe_probability = self
                    .reply_logprob(&mut weights, &logits, &probe_ids, prompt_tokens)?
                    .map(f32::exp);
                if probe_probability.is_some_and(|p| p > probe.stop_above) {
                    stop = StopReason::Probe;
                    return Ok(());
                }
            }
            loop {
                let next = sampler.sample(&logits).map_err(Error::inference)?;
                first_token_at.get_or_insert_with(Instant::now);
                if self.tok.stop_ids.contains(&next) {
                    stop = StopReason::EndOfText;
                    return Ok(());
                }
                token_logprobs.push(logprob_of(&logits, next)?);
                generated.push(next);
                if let Some(delta) = stream.push(&self.tok.tokenizer, &generated)?
                    && !on_token(&delta)
                {
                    stop = StopReason::Cancelled;
                    return Ok(());
                }
                if generated.len() >= limit {
                    return Ok(());
                }
                let pos = prompt_tokens + generated.len() - 1;
                logits = self.forward(&mut weights, &[next], pos)?;
            }
        })();
        // Freeing the cache only releases memory; the next call clears it again first.
        if let Err(e) = weights.clear_kv_cache() {
            tracing::warn!("clearing the KV cache failed: {e}");
        }
        drop(weights);
        result?;

        if stop != StopReason::Cancelled
            && let Some(rest) = stream.finish(&self.tok.tokenizer, &generated)?
        {
            // The caller is not asked again whether to continue: nothing follows.
            let _ = on_token(&rest);
        }
        let total = started.elapsed();
        Ok(Generation {
            text: stream.emitted,
            prompt_tokens,
            generated_tokens: generated.len(),
            stop,
            time_to_first_token: first_token_at.map_or(total, |t| t.duration_since(started)),
            total,
            probe_probability,
            token_logprobs,
        })
    }

    /// The log-probability of the model continuing the cached prompt (`prompt_tokens` long,
    /// whose last logits are `first`) with exactly `reply`, teacher-forced in one pass. The KV
    /// cache is as it was after the prompt when this returns. `None` for an empty reply, one
    /// that does not fit the context, or a model whose cache cannot be rolled back.
    fn reply_logprob(
        &self,
        weights: &mut Weights,
        first: &Tensor,
        reply: &[u32],
        prompt_tokens: usize,
    ) -> Result<Option<f32>, Error> {
        let Some(&head) = reply.first() else {
            return Ok(None);
        };
        if prompt_tokens + reply.len() > self.context_length {
            return Ok(None);
        }
        let Some(m) = weights.qwen2() else {
            return Ok(None);
        };
        let held = m.kv_len();
        let mut total = logprob_of(first, head)?;
        let rest = &reply[1..];
        if !rest.is_empty() {
            let input = Tensor::new(&reply[..rest.len()], &self.device)
                .and_then(|t| t.unsqueeze(0))
                .map_err(Error::inference)?;
            let logits = m
                .forward_tail(&input, prompt_tokens, rest.len())
                .and_then(|l| l.squeeze(0))
                .and_then(|l| l.to_dtype(DType::F32))
                .map_err(Error::inference)?;
            for (i, &id) in rest.iter().enumerate() {
                let row = logits.get(i).map_err(Error::inference)?;
                total += logprob_of(&row, id)?;
            }
        }
        m.truncate_kv(held).map_err(Error::inference)?;
        Ok(Some(total))
    }

    /// The logit the model gives, as the first token of its reply to `messages`, to the first
    /// token of each of `choices` (a choice that tokenizes to nothing gets `-inf`). One prompt
    /// pass, no sampling: the cost of reading the prompt, nothing more. Deterministic.
    ///
    /// Errors: [`Error::ContextOverflow`] when the prompt does not fit the context.
    pub fn first_token_logits(
        &self,
        messages: &[ChatMessage],
        choices: &[&str],
    ) -> Result<Vec<f32>, Error> {
        let prompt = self.prompt(messages)?;
        let choice_ids = choices
            .iter()
            .map(|c| Ok(self.encode(c)?.first().copied()))
            .collect::<Result<Vec<Option<u32>>, Error>>()?;
        let mut weights = self
            .weights
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        weights.clear_kv_cache().map_err(Error::inference)?;
        let logits = self.prefill(&mut weights, &prompt);
        if let Err(e) = weights.clear_kv_cache() {
            tracing::warn!("clearing the KV cache failed: {e}");
        }
        drop(weights);
        let logits = logits?.to_vec1::<f32>().map_err(Error::inference)?;
        Ok(choice_ids
            .into_iter()
            .map(|id| {
                id.and_then(|i| logits.get(i as usize).copied())
                    .unwrap_or(f32::NEG_INFINITY)
            })
            .collect())
    }

    /// The token ids of the rendered prompt for `messages`, the BOS token first when the model
    /// wants one, and how many of them render the messages before the last (0 unless those
    /// start with a system message and their tokens are a prefix of the whole prompt's).
    ///
    /// Errors: [`Error::ContextOverflow`] when the prompt is empty or leaves no room in the
    /// context for a token of reply.
    fn prompt(&self, messages: &[ChatMessage]) -> Result<Prompt, Error> {
        let mut ids = Vec::new();
        if self.tok.add_bos {
            ids.extend(self.tok.bos_id);
        }
        let bos = ids.len();
        ids.extend(self.encode(&self.render_prompt(messages)?)?);
        if ids.is_empty() || ids.len() >= self.context_length {
            return Err(Error::ContextOverflow {
                prompt_tokens: ids.len(),
                context_length: self.context_length,
            });
        }
        let mut shared = 0;
        if let [lead @ .., _] = messages
            && lead.first().is_some_and(|m| m.role == "system")
        {
            let text = self.template.render_with(lead, false)?;
            let lead_ids = self.encode(&text)?;
            if ids[bos..].starts_with(&lead_ids) {
                shared = bos + lead_ids.len();
            }
        }
        Ok(Prompt { ids, shared })
    }

    /// Runs the prompt from position 0 and returns the last position's logits.
    ///
    /// The first `prompt.shared` tokens (the system message and any example turns) always run
    /// as their own pass, and the rest from there in chunks the model can take. That schedule
    /// does not depend on what is cached, so a prefix restored from [`Generator::prefixes`]
    /// gives exactly the logits a fresh pass would; models without a KV snapshot run
    /// everything fresh.
    fn prefill(&self, weights: &mut Weights, prompt: &Prompt) -> Result<Tensor, Error> {
        let ids = &prompt.ids;
        let shared = prompt.shared.min(ids.len().saturating_sub(1));
        let mut start = 0;
        if shared > 0 && weights.qwen2().is_some() {
            let prefix = &ids[..shared];
            let mut cache = self
                .prefixes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match cache.iter().position(|p| p.ids == prefix) {
                Some(i) => {
                    let hit = cache.remove(i);
                    weights.restore(&hit.kv).map_err(Error::inference)?;
                    cache.push(hit);
                }
                None => {
                    self.run_chunks(weights, prefix, 0)?;
                    if let Some(kv) = weights.snapshot().map_err(Error::inference)? {
                        if cache.len() >= PREFIX_CACHE_ENTRIES {
                            cache.remove(0);
                        }
                        cache.push(CachedPrefix {
                            ids: prefix.to_vec(),
                            kv,
                        });
                    }
                }
            }
            start = shared;
        }
        self.run_chunks(weights, &ids[start..], start)
    }

    /// Runs `ids` at positions `pos..` in chunks the model can take; the last one's logits.
    fn run_chunks(&self, weights: &mut Weights, ids: &[u32], pos: usize) -> Result<Tensor, Error> {
        let size = weights.prefill_chunk();
        let mut logits = None;
        for (i, chunk) in ids.chunks(size).enumerate() {
            logits = Some(self.forward(weights, chunk, pos + i * size)?);
        }
        logits.ok_or_else(|| Error::Inference("empty prompt".into()))
    }

    /// Runs `ids` at positions `pos..` and returns the last position's logits as f32.
    fn forward(&self, weights: &mut Weights, ids: &[u32], pos: usize) -> Result<Tensor, Error> {
        let input = Tensor::new(ids, &self.device)
            .and_then(|t| t.unsqueeze(0))
            .map_err(Error::inference)?;
        weights
            .forward(&input, pos)
            .and_then(|l| l.flatten_all())
            .and_then(|l| l.to_dtype(DType::F32))
            .map_err(Error::inference)
    }
}

/// The log-probability of token `id` under the distribution of `logits` (vocab).
fn logprob_of(logits: &Tensor, id: u32) -> Result<f32, Error> {
    candle_nn::ops::log_softmax(logits, candle_core::D::Minus1)
        .and_then(|l| l.get(id as usize))
        .and_then(|l| l.to_scalar::<f32>())
        .map_err(Error::inference)
}

/// The id of the largest logit (the greedy choice); copies the logits to the host.
fn argmax(logits: &Tensor) -> Result<u32, Error> {
    logits
        .argmax(0)
        .and_then(|t| t.to_scalar::<u32>())
        .map_err(Error::inference)
}

fn sampling(params: &GenerationParams) -> Sampling {
    if params.temperature <= 0.0 || !params.temperature.is_finite() {
        return Sampling::ArgMax;
    }
    let temperature = params.temperature;
    match params.top_p {
        Some(p) if p > 0.0 && p < 1.0 => Sampling::TopP { p, temperature },
        _ => Sampling::All { temperature },
    }
}

/// Turns the growing list of generated ids into text deltas that never split a character.
#[derive(Default)]
struct TextStream {
    /// Text handed out so far.
    emitted: String,
}

impl TextStream {
    /// The new complete text after the latest id, if any.
    fn push(&mut self, tok: &tokenizers::Tokenizer, ids: &[u32]) -> Result<Option<String>, Error> {
        let text = tok.decode(ids, true).map_err(Error::tokenizer)?;
        // An incomplete UTF-8 sequence decodes to U+FFFD at the end; wait for more bytes.
        if text.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        Ok(self.take_new(text))
    }

    /// Whatever is left at the end, even if it ends in an incomplete sequence.
    fn finish(
        &mut self,
        tok: &tokenizers::Tokenizer,
        ids: &[u32],
    ) -> Result<Option<String>, Error> {
        let text = tok.decode(ids, true).map_err(Error::tokenizer)?;
        Ok(self.take_new(text))
    }

    fn take_new(&mut self, text: String) -> Option<String> {
        // Byte-level decoding is prefix-stable except for replaced incomplete sequences.
        let delta = match text.strip_prefix(self.emitted.as_str()) {
            Some(rest) => rest.to_string(),
            None => {
                let common = common_prefix_len(&self.emitted, &text);
                tracing::debug!("decoded text changed before the stream position");
                text.get(common..).unwrap_or_default().to_string()
            }
        };
        if delta.is_empty() {
            return None;
        }
        self.emitted.push_str(&delta);
        Some(delta)
    }
}

fn common_prefix_len(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, ca), cb)| ca != cb)
        .map_or(a.len().min(b.len()), |((i, _), _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn generator_is_send_and_sync() {
        assert_send_sync::<Generator>();
    }

    #[test]
    fn missing_model_says_how_to_fetch() {
        for choice in LlmChoice::ALL {
            let err = match Generator::load(Path::new("/nonexistent/quire-models"), choice) {
                Err(e) => e,
                Ok(_) => panic!("loaded from a missing directory"),
            };
            assert!(matches!(err, Error::ModelMissing { .. }));
            let msg = err.to_string();
            assert!(msg.contains("quire models fetch"), "{msg}");
            assert!(msg.contains("/nonexistent/quire-models/"), "{msg}");
        }
    }

    #[test]
    fn greedy_unless_temperature_is_positive() {
        let mut p = GenerationParams::default();
        assert!(matches!(sampling(&p), Sampling::ArgMax));
        p.temperature = 0.7;
        assert!(matches!(sampling(&p), Sampling::All { .. }));
        p.top_p = Some(0.9);
        assert!(matches!(sampling(&p), Sampling::TopP { .. }));
    }

    /// A tiny random-weight Qwen2 in a Hugging Face directory, with SmolLM2's tokenizer and
    /// chat template (ChatML, as Qwen's). `None` when SmolLM2 is not installed.
    fn tiny_qwen2(dir: &Path) -> Option<Generator> {
        let models = crate::default_model_dir();
        if let Err(e) = crate::export_tokenizer(&models, LlmChoice::SmolLm2_135M, dir) {
            eprintln!("\n!!!!!!!! SKIPPED: SmolLM2 not installed ({e}) !!!!!!!!\n");
            return None;
        }
        let vocab = 49_152;
        let config = serde_json::json!({
            "model_type": "qwen2", "vocab_size": vocab, "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "max_position_embeddings": 4096, "sliding_window": 4096,
            "max_window_layers": 2, "tie_word_embeddings": true, "rope_theta": 10000.0,
            "rms_norm_eps": 1e-6, "use_sliding_window": false, "hidden_act": "silu",
            "bos_token_id": 1, "eos_token_id": 2
        });
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let cfg: candle_transformers::models::qwen2::Config =
            serde_json::from_value(config).unwrap();
        let vars = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
        Qwen2::load(&cfg, vb).unwrap();
        vars.save(dir.join("model.safetensors")).unwrap();
        Some(Generator::load_dir(dir).unwrap())
    }

    /// A system message and a worked example before the question.
    fn chat(user: &str) -> Vec<ChatMessage> {
        vec![
            ChatMessage::new("system", "You answer from the sources. ".repeat(20)),
            ChatMessage::new("user", "When did the bridge open?"),
            ChatMessage::new("assistant", "1932 [1]"),
            ChatMessage::new("user", user),
        ]
    }

    /// A restored conversation prefix (system message and example turns) gives exactly the
    /// logits and tokens a fresh pass does.
    #[test]
    fn reused_system_prefix_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let Some(warm) = tiny_qwen2(dir.path()) else {
            return;
        };
        let choices = ["yes", "no", "The"];
        let params = GenerationParams {
            max_tokens: 12,
            ..Default::default()
        };
        let first = warm
            .first_token_logits(&chat("Is it raining?"), &choices)
            .unwrap();
        assert_eq!(warm.cached_prefixes(), 1);
        // Another question after the same system message and example reuses their cache.
        let second = warm
            .first_token_logits(&chat("Who wrote it?"), &choices)
            .unwrap();
        let reply = warm
            .generate(&chat("Who wrote it?"), &params, &mut |_| true)
            .unwrap();
        assert_eq!(warm.cached_prefixes(), 1);

        let cold = Generator::load_dir(dir.path()).unwrap();
        assert_eq!(cold.cached_prefixes(), 0);
        assert_eq!(
            cold.first_token_logits(&chat("Who wrote it?"), &choices)
                .unwrap(),
            second
        );
        let cold = Generator::load_dir(dir.path()).unwrap();
        let fresh = cold
            .generate(&chat("Who wrote it?"), &params, &mut |_| true)
            .unwrap();
        assert_eq!(fresh.text, reply.text);
        assert_eq!(fresh.generated_tokens, reply.generated_tokens);
        assert_ne!(first, second, "different questions gave the same logits");
    }

    #[test]
    fn common_prefix_respects_char_boundaries() {
        assert_eq!(common_prefix_len("abc", "abd"), 2);
        assert_eq!(common_prefix_len("ab", "abc"), 2);
        assert_eq!(common_prefix_len("é", "è"), 0);
    }
}

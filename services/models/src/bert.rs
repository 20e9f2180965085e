//! A BERT encoder forward pass on candle tensors, for GPUs and non-f32 precisions (the CPU
//! in f32 takes [`crate::bert_cpu`]).
//!
//! Same maths as `candle_transformers::models::bert::BertModel` (post-LayerNorm BERT with
//! erf-GELU): every linear layer is one matmul over all `batch × seq` rows against a weight
//! stored transposed at load time, with its bias folded in ([`BiasMode`]); Q, K and V are one
//! fused projection, with the 1/√d attention scale folded into Q.

use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;

type Result<T> = candle_core::Result<T>;

/// A linear layer `x · w + b` with `w` stored as (in, out), contiguous.
struct Linear {
    w: Tensor,
    b: Tensor,
    /// How the bias is added; set by [`Linear::fold_bias`].
    bias: BiasPath,
}

enum BiasPath {
    /// A broadcast add after the matmul.
    Broadcast,
    /// `w` with `b` as an extra input row and zero rows up to a multiple of 8 inputs
    /// ([`BIAS_PAD`]): the matmul adds the bias itself.
    Folded(Tensor),
    /// `b` as a (1, out) row, expanded by a rank-1 matmul.
    Outer(Tensor),
}

/// How a linear layer adds its bias off the CPU. candle's CUDA kernels for broadcast and
/// strided element-wise work (a bias add, `cat`) do 64-bit integer divisions per element and
/// run far below memory speed, so the bias is better added through cuBLAS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BiasMode {
    /// `x·w` then a broadcast add of `b`.
    Broadcast,
    /// `[x, 1, 0…]·[w; b; 0…]`: one matmul, after a `cat` of the input.
    Folded,
    /// `x·w + 1·b`: the bias expanded by a rank-1 matmul, then a contiguous add.
    Outer,
}

impl BiasMode {
    /// `QUIRE_BERT_BIAS` (`broadcast`, `folded`, `outer`) for measuring the three on a
    /// device; otherwise [`BiasMode::Folded`], the fastest measured on an H200.
    fn from_env() -> BiasMode {
        match std::env::var("QUIRE_BERT_BIAS").as_deref() {
            Ok("broadcast") => BiasMode::Broadcast,
            Ok("outer") => BiasMode::Outer,
            _ => BiasMode::Folded,
        }
    }
}

/// Per-pass inputs of the bias strategies: (rows, [`BIAS_PAD`]) ones-then-zeros and a
/// (rows, 1) column of ones.
struct BiasCols {
    pad: Tensor,
    ones: Tensor,
}

/// Columns appended to a layer's input when its bias is folded into the weights: a column
/// of ones, then zeros, so the inner dimension stays a multiple of 8 for the tensor cores.
const BIAS_PAD: usize = 8;

impl Linear {
    fn load(vb: VarBuilder, inp: usize, out: usize) -> Result<Linear> {
        let w = vb.get((out, inp), "weight")?.t()?.contiguous()?;
        let b = vb.get(out, "bias")?;
        Ok(Linear {
            w,
            b,
            bias: BiasPath::Broadcast,
        })
    }

    /// Moves the bias into the matmul. On CUDA, candle adds a broadcast bias with a strided
    /// kernel that does 64-bit divisions per element: on an H200 that add took several times
    /// longer than the matmul (measured with `quire bench encoder --profile`).
    fn fold_bias(&mut self, mode: BiasMode) -> Result<()> {
        let out = self.b.dim(0)?;
        let row = self.b.reshape((1, out))?;
        self.bias = match mode {
            BiasMode::Broadcast => BiasPath::Broadcast,
            BiasMode::Folded => {
                let zeros = Tensor::zeros((BIAS_PAD - 1, out), self.w.dtype(), self.w.device())?;
                BiasPath::Folded(Tensor::cat(&[&self.w, &row, &zeros], 0)?)
            }
            BiasMode::Outer => BiasPath::Outer(row),
        };
        Ok(())
    }

    /// `x` is (rows, in); `cols` the per-pass inputs of a folded or outer bias.
    fn forward(&self, x: &Tensor, cols: Option<&BiasCols>) -> Result<Tensor> {
        match (&self.bias, cols) {
            (BiasPath::Folded(w), Some(c)) => Tensor::cat(&[x, &c.pad], 1)?.matmul(w),
            (BiasPath::Outer(row), Some(c)) => x.matmul(&self.w)? + c.ones.matmul(row)?,
            _ => x.matmul(&self.w)?.broadcast_add(&self.b),
        }
    }
}

struct Norm {
    w: Tensor,
    b: Tensor,
    eps: f32,
}

impl Norm {
    fn load(vb: VarBuilder, size: usize, eps: f64) -> Result<Norm> {
        Ok(Norm {
            w: vb.get(size, "weight")?,
            b: vb.get(size, "bias")?,
            eps: eps as f32,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.w, &self.b, self.eps)
    }
}

struct Layer {
    /// Q, K, V side by side, Q pre-scaled by 1/√head_dim.
    qkv: Linear,
    out: Linear,
    ln1: Norm,
    up: Linear,
    down: Linear,
    ln2: Norm,
}

/// The BERT encoder of a sentence-embedding model.
pub(crate) struct Bert {
    word: Tensor,
    /// Position embeddings plus the token-type-0 embedding.
    position: Tensor,
    emb_ln: Norm,
    layers: Vec<Layer>,
    heads: usize,
    hidden: usize,
}

/// The encoder's weights (under `bert.` when the file has that prefix) and the size of one
/// attention head; errors when the hidden size is not a multiple of the head count.
pub(crate) fn encoder_root<'a>(
    vb: VarBuilder<'a>,
    cfg: &Config,
) -> Result<(VarBuilder<'a>, usize)> {
    let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
        vb.pp("bert")
    } else {
        vb
    };
    let (h, heads) = (cfg.hidden_size, cfg.num_attention_heads);
    if heads == 0 || h % heads != 0 {
        candle_core::bail!("hidden size {h} is not a multiple of the head count {heads}");
    }
    Ok((vb, h / heads))
}

impl Bert {
    /// Loads the weights named as in Hugging Face's `BertModel` (with or without a `bert.`
    /// prefix).
    pub(crate) fn load(vb: VarBuilder, cfg: &Config) -> Result<Bert> {
        let (vb, head_dim) = encoder_root(vb, cfg)?;
        let (h, inter) = (cfg.hidden_size, cfg.intermediate_size);
        let emb = vb.pp("embeddings");
        let word = emb.get((cfg.vocab_size, h), "word_embeddings.weight")?;
        let position = emb.get(
            (cfg.max_position_embeddings, h),
            "position_embeddings.weight",
        )?;
        let token_type0 = emb
            .get((cfg.type_vocab_size, h), "token_type_embeddings.weight")?
            .get(0)?;
        let emb_ln = Norm::load(emb.pp("LayerNorm"), h, cfg.layer_norm_eps)?;
        let scale = 1.0 / (head_dim as f64).sqrt();
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let att = l.pp("attention.self");
            let q = Linear::load(att.pp("query"), h, h)?;
            let k = Linear::load(att.pp("key"), h, h)?;
            let v = Linear::load(att.pp("value"), h, h)?;
            let qkv = Linear {
                w: Tensor::cat(&[(q.w * scale)?, k.w, v.w], 1)?.contiguous()?,
                b: Tensor::cat(&[(q.b * scale)?, k.b, v.b], 0)?,
                bias: BiasPath::Broadcast,
            };
            layers.push(Layer {
                qkv,
                out: Linear::load(l.pp("attention.output.dense"), h, h)?,
                ln1: Norm::load(l.pp("attention.output.LayerNorm"), h, cfg.layer_norm_eps)?,
                up: Linear::load(l.pp("intermediate.dense"), h, inter)?,
                down: Linear::load(l.pp("output.dense"), inter, h)?,
                ln2: Norm::load(l.pp("output.LayerNorm"), h, cfg.layer_norm_eps)?,
            });
        }
        let mode = BiasMode::from_env();
        tracing::debug!(?mode, "BERT bias mode");
        for layer in &mut layers {
            for linear in [
                &mut layer.qkv,
                &mut layer.out,
                &mut layer.up,
                &mut layer.down,
            ] {
                linear.fold_bias(mode)?;
            }
        }
        Ok(Bert {
            word,
            // Every token has type 0: its embedding is folded into the positions.
            position: position.broadcast_add(&token_type0)?,
            emb_ln,
            layers,
            heads: cfg.num_attention_heads,
            hidden: h,
        })
    }

    /// Hidden states (n, seq, hidden) for token ids (n, seq). `mask` is the 0/1 attention
    /// mask (n, seq) when some sequence is padded: padded positions attend to nothing and are
    /// attended to by nothing. `None` means every position is a token.
    ///
    /// With `profile`, the device is synchronised after each stage and the stage's wall time
    /// added to it (slower; for finding where time goes).
    pub(crate) fn forward(
        &self,
        ids: &Tensor,
        mask: Option<&Tensor>,
        profile: Option<&mut StageProfile>,
    ) -> Result<Tensor> {
        let mut laps = Laps::new(profile, ids.device());
        let (n, seq) = ids.dims2()?;
        let (h, heads) = (self.hidden, self.heads);
        let d = h / heads;
        let rows = n * seq;
        let x = self
            .word
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((n, seq, h))?;
        let x = x.broadcast_add(&self.position.narrow(0, 0, seq)?)?;
        let mut x = self.emb_ln.forward(&x.reshape((rows, h))?)?;
        let key_mask = match mask {
            None => KeyMask::None,
            // The key mask (0 where attended, a large negative where padded) as an extra column of K against a column of ones in Q, so the
            // scores matmul adds it (a broadcast add over the scores is slow on CUDA, as in
            // `Linear::fold_bias`). -1e4 is finite in every float type and still gives a
            // softmax weight of exactly 0.
            Some(mask) => {
                let (dt, dev) = (x.dtype(), x.device());
                let bias = ((mask.to_dtype(DType::F32)? - 1.0)? * 1e4)?
                    .to_dtype(dt)?
                    .reshape((n, 1, seq, 1))?
                    .broadcast_as((n, heads, seq, 1))?
                    .contiguous()?;
                let zeros = Tensor::zeros((n, heads, seq, BIAS_PAD - 1), dt, dev)?;
                let ones = Tensor::ones((n, heads, seq, 1), dt, dev)?;
                KeyMask::Columns {
                    q: Tensor::cat(&[&ones, &zeros], 3)?,
                    k: Tensor::cat(&[&bias, &zeros], 3)?,
                }
            }
        };
        let ones = Tensor::ones((rows, 1), x.dtype(), x.device())?;
        let zeros = Tensor::zeros((rows, BIAS_PAD - 1), x.dtype(), x.device())?;
        let cols = BiasCols {
            pad: Tensor::cat(&[&ones, &zeros], 1)?,
            ones,
        };
        let pad = Some(&cols);
        laps.lap("embeddings")?;
        for layer in &self.layers {
            let qkv = layer.qkv.forward(&x, pad)?;
            laps.lap("qkv projection")?;
            let qkv = qkv
                .reshape((n, seq, 3, heads, d))?
                .permute((2, 0, 3, 1, 4))?
                .contiguous()?; // (3, n, heads, seq, d)
            laps.lap("qkv to heads")?;
            let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
            let scores = match &key_mask {
                KeyMask::None => q.matmul(&k.t()?)?,
                KeyMask::Columns { q: qm, k: km } => {
                    let q = Tensor::cat(&[&q, qm], 3)?;
                    let k = Tensor::cat(&[&k, km], 3)?;
                    q.matmul(&k.t()?)?
                }
            };
            laps.lap("scores matmul (with mask)")?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            laps.lap("softmax")?;
            let ctx = probs.matmul(&v)?;
            laps.lap("context matmul")?;
            let ctx = ctx.transpose(1, 2)?.contiguous()?.reshape((rows, h))?;
            laps.lap("heads to rows")?;
            let attn = layer.out.forward(&ctx, pad)?;
            laps.lap("output projection")?;
            x = layer.ln1.forward(&(attn + &x)?)?;
            laps.lap("residual + layernorm")?;
            let up = layer.up.forward(&x, pad)?.gelu_erf()?;
            laps.lap("up projection + gelu")?;
            let down = layer.down.forward(&up, pad)?;
            laps.lap("down projection")?;
            x = layer.ln2.forward(&(down + &x)?)?;
            laps.lap("residual + layernorm")?;
        }
        x.reshape((n, seq, h))
    }
}

/// How padded keys are kept out of attention.
enum KeyMask {
    /// No padding in the batch.
    None,
    /// (n, heads, seq, [`BIAS_PAD`]) columns appended to Q (a one, then zeros) and to K (the
    /// bias, then zeros): the scores matmul adds the bias.
    Columns { q: Tensor, k: Tensor },
}

/// Wall time per stage of profiled forward passes, summed over layers and passes, in the
/// order stages first ran.
#[derive(Debug, Clone, Default)]
pub struct StageProfile {
    pub stages: Vec<(&'static str, Duration)>,
}

pub(crate) struct Laps<'a> {
    profile: Option<&'a mut StageProfile>,
    device: Device,
    last: Instant,
}

impl<'a> Laps<'a> {
    /// Starts timing now; with no `profile`, laps cost nothing.
    pub(crate) fn new(profile: Option<&'a mut StageProfile>, device: &Device) -> Laps<'a> {
        Laps {
            profile,
            device: device.clone(),
            last: Instant::now(),
        }
    }

    /// Charges the time since the previous lap to `stage`, once the device is idle.
    pub(crate) fn lap(&mut self, stage: &'static str) -> Result<()> {
        let Some(profile) = self.profile.as_deref_mut() else {
            return Ok(());
        };
        self.device.synchronize()?;
        let now = Instant::now();
        let spent = now - self.last;
        self.last = now;
        match profile.stages.iter_mut().find(|(name, _)| *name == stage) {
            Some((_, total)) => *total += spent,
            None => profile.stages.push((stage, spent)),
        }
        Ok(())
    }
}

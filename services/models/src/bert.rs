//! A BERT encoder forward pass for sentence embeddings, written for CPU throughput.
//!
//! Same maths as `candle_transformers::models::bert::BertModel` (post-LayerNorm BERT with
//! erf-GELU), arranged for speed on a few cores:
//! - every linear layer is one matmul over all `batch × seq` rows against a weight stored
//!   transposed and contiguous at load time;
//! - Q, K and V are one fused projection, with the 1/√d attention scale folded into Q;
//! - softmax and LayerNorm use candle's fused last-dimension kernels;
//! - bias + GELU is one fused, multi-threaded pass ([`BiasGelu`]) with a fast f32 erf.
//!
//! The test in `tests/models.rs` checks its output against candle's `BertModel`.

use std::time::{Duration, Instant};

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;
use rayon::prelude::*;

type Result<T> = candle_core::Result<T>;

/// e^x for f32 without a libm call, so loops over it vectorise: x = k·ln2 + r with
/// |r| ≤ ln2/2, e^r by a degree-6 polynomial, 2^k by building the exponent bits.
/// Relative error below 1e-6 for x in [-87, 88]; smaller x gives about 1e-38, larger saturates.
#[inline(always)]
fn fast_exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Round to nearest by adding 1.5·2^23: plain arithmetic, so the loop vectorises on any
    // x86-64 (f32::round is a libm call without SSE4.1).
    const SHIFTER: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + SHIFTER;
    let k = shifted - SHIFTER;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67
                    + r * (0.041_666_668 + r * (0.008_333_334 + r * 0.001_388_889)))));
    // The low bits of `shifted` hold k (in [-126, 127] here) in two's complement.
    let k_bits = shifted.to_bits().wrapping_add(127) << 23;
    p * f32::from_bits(k_bits)
}

/// The f32 values a custom op reads: contiguous CPU storage only.
fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: f32 input expected");
    };
    match layout.contiguous_offsets() {
        Some((start, end)) if end <= data.len() => Ok(&data[start..end]),
        _ => candle_core::bail!("{op}: contiguous input expected"),
    }
}

/// Applies `f(dst_row, src_row)` to rows of `cols` values of a contiguous f32 tensor, in
/// parallel, into a new tensor of the same shape.
fn map_rows(
    storage: &CpuStorage,
    layout: &Layout,
    cols: usize,
    op: &str,
    f: impl Fn(&mut [f32], &[f32]) + Sync,
) -> Result<(CpuStorage, Shape)> {
    let src = contiguous_f32(storage, layout, op)?;
    if cols == 0 || src.len() % cols != 0 {
        candle_core::bail!("{op}: rows of {cols} do not divide {:?}", layout.dims());
    }
    let mut dst = vec![0f32; src.len()];
    dst.par_chunks_mut(cols)
        .zip(src.par_chunks(cols))
        .for_each(|(d, s)| f(d, s));
    Ok((CpuStorage::F32(dst), layout.shape().clone()))
}

/// Softmax over the last dimension, rows in parallel, with [`fast_exp`]. CPU and f32 only.
struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "quire-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let cols = layout.dims().last().copied().unwrap_or(0);
        map_rows(storage, layout, cols, "softmax", |d, s| {
            let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for (d, &s) in d.iter_mut().zip(s) {
                *d = fast_exp(s - max);
                sum += *d;
            }
            let inv = 1.0 / sum;
            for d in d.iter_mut() {
                *d *= inv;
            }
        })
    }
}

/// erf(x) for f32, Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7).
#[inline]
fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152_1,
        1.061_405_4,
    ];
    let sign = x.signum();
    let x = x.abs();
    let t = 1.0 / (1.0 + P * x);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    sign * (1.0 - poly * fast_exp(-x * x))
}

#[inline]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `gelu(x + bias)` over the last dimension, rows in parallel. CPU and f32 only; other
/// devices take the generic path in [`Bert::bias_gelu`].
struct BiasGelu {
    bias: Vec<f32>,
}

impl CustomOp1 for BiasGelu {
    fn name(&self) -> &'static str {
        "quire-bias-gelu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        map_rows(storage, layout, self.bias.len(), "bias-gelu", |d, s| {
            for ((d, &s), &b) in d.iter_mut().zip(s).zip(&self.bias) {
                *d = gelu(s + b);
            }
        })
    }
}

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
    /// The up projection's bias, host-side, for the fused CPU kernel (f32 on the CPU only).
    up_act: Option<BiasGelu>,
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
    /// f32 on the CPU: the fused kernels of this module apply. Elsewhere candle's own ops run
    /// (CUDA, or other precisions).
    fused_cpu: bool,
}

impl Bert {
    /// Loads the weights named as in Hugging Face's `BertModel` (with or without a `bert.`
    /// prefix).
    pub(crate) fn load(vb: VarBuilder, cfg: &Config) -> Result<Bert> {
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let (h, inter) = (cfg.hidden_size, cfg.intermediate_size);
        if cfg.num_attention_heads == 0 || h % cfg.num_attention_heads != 0 {
            candle_core::bail!("hidden size {h} is not a multiple of the head count");
        }
        let head_dim = h / cfg.num_attention_heads;
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
        let fused_cpu = matches!(vb.device(), Device::Cpu) && vb.dtype() == DType::F32;
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
            let up = Linear::load(l.pp("intermediate.dense"), h, inter)?;
            layers.push(Layer {
                qkv,
                out: Linear::load(l.pp("attention.output.dense"), h, h)?,
                ln1: Norm::load(l.pp("attention.output.LayerNorm"), h, cfg.layer_norm_eps)?,
                up_act: if fused_cpu {
                    Some(BiasGelu {
                        bias: up.b.to_vec1::<f32>()?,
                    })
                } else {
                    None
                },
                up,
                down: Linear::load(l.pp("output.dense"), inter, h)?,
                ln2: Norm::load(l.pp("output.LayerNorm"), h, cfg.layer_norm_eps)?,
            });
        }
        if !fused_cpu {
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
        }
        Ok(Bert {
            word,
            // Every token has type 0: its embedding is folded into the positions.
            position: position.broadcast_add(&token_type0)?,
            emb_ln,
            layers,
            heads: cfg.num_attention_heads,
            hidden: h,
            fused_cpu,
        })
    }

    fn bias_gelu(&self, layer: &Layer, x: &Tensor, pad: Option<&BiasCols>) -> Result<Tensor> {
        match &layer.up_act {
            Some(op) if self.fused_cpu => x.matmul(&layer.up.w)?.apply_op1_no_bwd(op),
            _ => layer.up.forward(x, pad)?.gelu_erf(),
        }
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
        let mut laps = Laps {
            profile,
            device: ids.device().clone(),
            last: Instant::now(),
        };
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
            // 0 where attended, -1e30 where padded, added to the scores: (n, 1, 1, seq).
            Some(mask) if self.fused_cpu => {
                KeyMask::Add(((mask.to_dtype(DType::F32)? - 1.0)? * 1e30)?.reshape((n, 1, 1, seq))?)
            }
            // The same bias as an extra column of K against a column of ones in Q, so the
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
        let pad = if self.fused_cpu {
            None
        } else {
            let ones = Tensor::ones((rows, 1), x.dtype(), x.device())?;
            let zeros = Tensor::zeros((rows, BIAS_PAD - 1), x.dtype(), x.device())?;
            Some(BiasCols {
                pad: Tensor::cat(&[&ones, &zeros], 1)?,
                ones,
            })
        };
        let pad = pad.as_ref();
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
                KeyMask::Add(bias) => q.matmul(&k.t()?)?.broadcast_add(bias)?,
                KeyMask::Columns { q: qm, k: km } => {
                    let q = Tensor::cat(&[&q, qm], 3)?;
                    let k = Tensor::cat(&[&k, km], 3)?;
                    q.matmul(&k.t()?)?
                }
            };
            laps.lap("scores matmul (with mask)")?;
            let probs = if self.fused_cpu {
                scores.apply_op1_no_bwd(&Softmax)?
            } else {
                candle_nn::ops::softmax_last_dim(&scores)?
            };
            laps.lap("softmax")?;
            let ctx = probs.matmul(&v)?;
            laps.lap("context matmul")?;
            let ctx = ctx.transpose(1, 2)?.contiguous()?.reshape((rows, h))?;
            laps.lap("heads to rows")?;
            let attn = layer.out.forward(&ctx, pad)?;
            laps.lap("output projection")?;
            x = layer.ln1.forward(&(attn + &x)?)?;
            laps.lap("residual + layernorm")?;
            let up = self.bias_gelu(layer, &x, pad)?;
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
    /// A (n, 1, 1, seq) bias added to the scores (f32 on the CPU).
    Add(Tensor),
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

struct Laps<'a> {
    profile: Option<&'a mut StageProfile>,
    device: Device,
    last: Instant,
}

impl Laps<'_> {
    /// Charges the time since the previous lap to `stage`, once the device is idle.
    fn lap(&mut self, stage: &'static str) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_erf_matches_the_reference() {
        let mut worst = 0f32;
        for i in -4000..=4000 {
            let x = i as f32 / 1000.0;
            let want = candle_core::cpu::erf::erf_f32(x);
            worst = worst.max((erf(x) - want).abs());
        }
        assert!(worst < 5e-7, "max |erf error| {worst}");
    }

    #[test]
    fn fast_exp_matches_std() {
        let mut worst = 0f32;
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let rel = ((fast_exp(x) - x.exp()) / x.exp()).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 1e-6, "max relative exp error {worst}");
        // Far below the range it bottoms out at ~1e-38, never NaN or negative.
        assert!((0.0..1e-37).contains(&fast_exp(-1e30)));
    }

    #[test]
    fn softmax_rows_sum_to_one_and_ignore_masked_keys() {
        let x = Tensor::new(
            &[[1.0f32, 2.0, 3.0, -1e30], [0.0, 0.0, 0.0, 0.0]],
            &Device::Cpu,
        )
        .unwrap();
        let ours: Vec<Vec<f32>> = x.apply_op1_no_bwd(&Softmax).unwrap().to_vec2().unwrap();
        let want: Vec<Vec<f32>> = candle_nn::ops::softmax_last_dim(&x)
            .unwrap()
            .to_vec2()
            .unwrap();
        for (a, b) in ours.iter().flatten().zip(want.iter().flatten()) {
            assert!((a - b).abs() < 1e-6, "{ours:?} vs {want:?}");
        }
        // A masked key gets a weight of at most ~1e-38.
        assert!(ours[0][3] < 1e-30);
    }
}

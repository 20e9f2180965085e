//! The BERT encoder on the CPU in f32: padding-free, on plain buffers.
//!
//! Same maths as `candle_transformers::models::bert::BertModel` (post-LayerNorm BERT,
//! erf-GELU), arranged for throughput on a few cores:
//! - sequences are packed row after row, with no padding tokens: every linear layer,
//!   LayerNorm and GELU runs over the real tokens only;
//! - attention runs per sequence and head, reading Q, K and V in place from the fused QKV
//!   projection and writing its context straight into the packed rows (no transposes to and
//!   from heads, no mask), with the 1/√d scale folded into Q;
//! - matrix products call the gemm crate (its AVX-512 kernels where the CPU has them);
//! - the element-wise work after each product is one fused pass (bias + GELU; bias +
//!   residual + LayerNorm; softmax), compiled for AVX-512 and for AVX2 and picked at run time.
//!
//! `tests/models.rs` checks its embeddings against candle's `BertModel`.

use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;
use gemm::Parallelism;
use rayon::prelude::*;

use crate::Error;
use crate::amx::{self, PackedWeights};
use crate::bert::{Laps, StageProfile, encoder_root};

/// A dense layer `x · w + b`.
struct Dense {
    w: DenseWeights,
    b: Vec<f32>,
    inp: usize,
    out: usize,
}

impl Dense {
    fn load(vb: VarBuilder, inp: usize, out: usize) -> candle_core::Result<Dense> {
        let w = vb.get((out, inp), "weight")?.t()?.contiguous()?;
        Ok(Dense::new(
            w.flatten_all()?.to_vec1()?,
            vb.get(out, "bias")?.to_vec1()?,
            inp,
            out,
        ))
    }

    /// `w` (in, out) row-major, packed for AMX where [`amx::available`] and the shape allows.
    fn new(w: Vec<f32>, b: Vec<f32>, inp: usize, out: usize) -> Dense {
        let packed = amx::available()
            .then(|| PackedWeights::pack(&w, inp, out))
            .flatten();
        let w = match packed {
            Some(p) => DenseWeights::Amx(p),
            None => DenseWeights::F32(w),
        };
        Dense { w, b, inp, out }
    }

    /// `dst = x · w` over `x.len() / inp` rows, without the bias; with `bias_first`, `dst`
    /// starts as the bias in every row, so the product adds onto it.
    fn matmul(&self, x: &[f32], dst: &mut Rows, bias_first: bool) -> Result<(), Error> {
        let rows = x.len() / self.inp;
        dst.zeros(rows * self.out);
        if bias_first {
            for row in dst.chunks_exact_mut(self.out) {
                row.copy_from_slice(&self.b);
            }
        }
        match &self.w {
            DenseWeights::Amx(p) => amx::matmul(dst, x, p, rows, bias_first),
            DenseWeights::F32(w) => matmul(dst, x, w, rows, self.inp, self.out, bias_first),
        }
    }
}

/// A dense layer's weights: (in, out) row-major for gemm, or packed in AMX tiles.
enum DenseWeights {
    F32(Vec<f32>),
    Amx(PackedWeights),
}

/// f32 values starting on a 64-byte cache line: AMX tiles load rows that start on a line
/// about twice as fast (`amx.rs`). Dereferences to the values.
#[derive(Default)]
struct Rows {
    lines: Vec<Line16>,
    len: usize,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line16([f32; 16]);

impl Rows {
    /// Makes the buffer `len` zeros, keeping its allocation.
    fn zeros(&mut self, len: usize) {
        self.lines.clear();
        self.lines.resize(len.div_ceil(16), Line16([0.0; 16]));
        self.len = len;
    }
}

impl std::ops::Deref for Rows {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        // SAFETY: `Line16` is 16 f32 with no padding, and `lines` holds at least `len` values.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast(), self.len) }
    }
}

impl std::ops::DerefMut for Rows {
    fn deref_mut(&mut self) -> &mut [f32] {
        // SAFETY: as in `deref`, and the borrow is unique.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast(), self.len) }
    }
}

/// LayerNorm weights.
struct Norm {
    w: Vec<f32>,
    b: Vec<f32>,
}

impl Norm {
    fn load(vb: VarBuilder, size: usize) -> candle_core::Result<Norm> {
        Ok(Norm {
            w: vb.get(size, "weight")?.to_vec1()?,
            b: vb.get(size, "bias")?.to_vec1()?,
        })
    }
}

struct Layer {
    /// Q, K, V side by side (3 × hidden outputs), Q pre-scaled by 1/√head_dim.
    qkv: Dense,
    out: Dense,
    ln1: Norm,
    up: Dense,
    down: Dense,
    ln2: Norm,
}

/// The encoder: token ids in, hidden states or pooled unit vectors out.
pub(crate) struct CpuBert {
    /// (vocab, hidden) word embeddings.
    word: Vec<f32>,
    /// (max positions, hidden) position embeddings plus the token-type-0 embedding.
    position: Vec<f32>,
    emb_ln: Norm,
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    vocab: usize,
    max_positions: usize,
    eps: f32,
}

impl CpuBert {
    /// Loads the weights named as in Hugging Face's `BertModel` (with or without a `bert.`
    /// prefix) from an f32 CPU `vb`.
    pub(crate) fn load(vb: VarBuilder, cfg: &Config) -> Result<CpuBert, Error> {
        Self::load_inner(vb, cfg).map_err(Error::load)
    }

    fn load_inner(vb: VarBuilder, cfg: &Config) -> candle_core::Result<CpuBert> {
        let (vb, head_dim) = encoder_root(vb, cfg)?;
        let (h, inter) = (cfg.hidden_size, cfg.intermediate_size);
        let scale = 1.0 / (head_dim as f64).sqrt();
        let emb = vb.pp("embeddings");
        let token_type0 = emb
            .get((cfg.type_vocab_size, h), "token_type_embeddings.weight")?
            .get(0)?;
        let position = emb
            .get(
                (cfg.max_position_embeddings, h),
                "position_embeddings.weight",
            )?
            .broadcast_add(&token_type0)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let att = l.pp("attention.self");
            let get = |name: &str| -> candle_core::Result<_> {
                Ok((
                    att.pp(name).get((h, h), "weight")?,
                    att.pp(name).get(h, "bias")?,
                ))
            };
            let ((qw, qb), (kw, kb), (vw, vb_)) = (get("query")?, get("key")?, get("value")?);
            // (out, in) weights stacked along out, then stored (in, out).
            let w = candle_core::Tensor::cat(&[(qw * scale)?, kw, vw], 0)?
                .t()?
                .contiguous()?;
            let b = candle_core::Tensor::cat(&[(qb * scale)?, kb, vb_], 0)?;
            layers.push(Layer {
                qkv: Dense::new(w.flatten_all()?.to_vec1()?, b.to_vec1()?, h, 3 * h),
                out: Dense::load(l.pp("attention.output.dense"), h, h)?,
                ln1: Norm::load(l.pp("attention.output.LayerNorm"), h)?,
                up: Dense::load(l.pp("intermediate.dense"), h, inter)?,
                down: Dense::load(l.pp("output.dense"), inter, h)?,
                ln2: Norm::load(l.pp("output.LayerNorm"), h)?,
            });
        }
        Ok(CpuBert {
            word: emb
                .get((cfg.vocab_size, h), "word_embeddings.weight")?
                .flatten_all()?
                .to_vec1()?,
            position: position.flatten_all()?.to_vec1()?,
            emb_ln: Norm::load(emb.pp("LayerNorm"), h)?,
            layers,
            hidden: h,
            heads: cfg.num_attention_heads,
            vocab: cfg.vocab_size,
            max_positions: cfg.max_position_embeddings,
            eps: cfg.layer_norm_eps as f32,
        })
    }

    /// Mean-pooled, L2-normalised vectors, one per sequence, in order (sentence-transformers'
    /// pooling). Each sequence is embedded as if alone: no padding, no mask. Errors on an
    /// empty sequence, an id outside the vocabulary, or a sequence longer than the model's
    /// positions.
    pub(crate) fn embed(
        &self,
        seqs: &[&[u32]],
        profile: Option<&mut StageProfile>,
    ) -> Result<Vec<Vec<f32>>, Error> {
        let h = self.hidden;
        let x = self.forward(seqs, profile)?;
        let mut out = Vec::with_capacity(seqs.len());
        let mut start = 0;
        for s in seqs {
            let mut mean = vec![0f32; h];
            for row in x[start * h..(start + s.len()) * h].chunks_exact(h) {
                for (m, v) in mean.iter_mut().zip(row) {
                    *m += v;
                }
            }
            start += s.len();
            let inv_len = 1.0 / s.len() as f32;
            mean.iter_mut().for_each(|m| *m *= inv_len);
            let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            mean.iter_mut().for_each(|m| *m /= norm);
            out.push(mean);
        }
        Ok(out)
    }

    /// Hidden states of the packed sequences: (total tokens, hidden), row-major.
    pub(crate) fn forward(
        &self,
        seqs: &[&[u32]],
        profile: Option<&mut StageProfile>,
    ) -> Result<Vec<f32>, Error> {
        let mut laps = Laps::new(profile, &candle_core::Device::Cpu);
        let h = self.hidden;
        let mut spans = Vec::with_capacity(seqs.len());
        let mut rows = 0;
        for s in seqs {
            if s.is_empty() || s.len() > self.max_positions {
                return Err(Error::Inference(format!(
                    "a sequence of {} tokens; the encoder takes 1 to {}",
                    s.len(),
                    self.max_positions
                )));
            }
            if let Some(id) = s.iter().find(|&&id| id as usize >= self.vocab) {
                return Err(Error::Inference(format!(
                    "token id {id} outside the vocabulary of {}",
                    self.vocab
                )));
            }
            spans.push((rows, s.len()));
            rows += s.len();
        }
        // Embeddings: word + position (+ type 0), then LayerNorm.
        let mut x = Vec::with_capacity(rows * h);
        for s in seqs {
            for (pos, &id) in s.iter().enumerate() {
                let (w, p) = (id as usize * h, pos * h);
                x.extend(
                    self.word[w..w + h]
                        .iter()
                        .zip(&self.position[p..p + h])
                        .map(|(a, b)| a + b),
                );
            }
        }
        par_rows(&mut x, h, |chunk| {
            norm_rows(chunk, &[], &[], &self.emb_ln.w, &self.emb_ln.b, self.eps)
        });
        laps.lap("embeddings").map_err(Error::inference)?;
        let (mut qkv, mut ctx, mut tmp) = (Rows::default(), vec![0f32; rows * h], Rows::default());
        for layer in &self.layers {
            layer.qkv.matmul(&x, &mut qkv, true)?;
            laps.lap("qkv projection").map_err(Error::inference)?;
            self.attention(&qkv, &mut ctx, &spans)?;
            laps.lap("attention").map_err(Error::inference)?;
            layer.out.matmul(&ctx, &mut tmp, false)?;
            laps.lap("output projection").map_err(Error::inference)?;
            add_norm(&mut x, &tmp, &layer.out.b, &layer.ln1, self.eps);
            laps.lap("residual + layernorm").map_err(Error::inference)?;
            layer.up.matmul(&x, &mut tmp, false)?;
            par_rows(&mut tmp, layer.up.out, |chunk| {
                bias_gelu_rows(chunk, &layer.up.b)
            });
            laps.lap("up projection + gelu").map_err(Error::inference)?;
            let up = std::mem::take(&mut tmp);
            layer.down.matmul(&up, &mut tmp, false)?;
            laps.lap("down projection").map_err(Error::inference)?;
            add_norm(&mut x, &tmp, &layer.down.b, &layer.ln2, self.eps);
            tmp = up;
            laps.lap("residual + layernorm").map_err(Error::inference)?;
        }
        Ok(x)
    }

    /// Self-attention of every (sequence, head): `ctx` rows get softmax(Q·Kᵀ)·V, with Q, K
    /// and V read from the packed `qkv` rows (Q already scaled).
    fn attention(
        &self,
        qkv: &[f32],
        ctx: &mut [f32],
        spans: &[(usize, usize)],
    ) -> Result<(), Error> {
        let (h, heads) = (self.hidden, self.heads);
        let d = h / heads;
        let rows: usize = spans.iter().map(|s| s.1).sum();
        if qkv.len() != rows * 3 * h || ctx.len() != rows * h {
            return Err(Error::Inference("attention: buffer sizes disagree".into()));
        }
        let out = SharedRows(ctx.as_mut_ptr());
        (0..spans.len() * heads).into_par_iter().for_each_init(
            Vec::new,
            |scores: &mut Vec<f32>, task| {
                let ((first, len), head) = (spans[task / heads], task % heads);
                scores.clear();
                scores.resize(len * len, 0.0);
                let q = first * 3 * h + head * d;
                let (k, v) = (q + h, q + 2 * h);
                let stride = (3 * h) as isize;
                // SAFETY: Q, K and V of this sequence and head lie inside `qkv` (rows
                // `first..first + len` of 3h values, checked above), `scores` holds len × len,
                // and this task alone writes ctx rows `first..first + len`, columns
                // `head·d..(head+1)·d`, which lie inside `ctx`.
                unsafe {
                    // scores = Q (len × d) · Kᵀ (d × len)
                    let (q, kt) = (qkv.as_ptr().add(q), qkv.as_ptr().add(k));
                    gemm_into(
                        len,
                        len,
                        d,
                        scores.as_mut_ptr(),
                        len,
                        false,
                        (q, 1, stride),
                        (kt, stride, 1),
                        Parallelism::None,
                    );
                    softmax_rows(scores, len);
                    // ctx = P (len × len) · V (len × d)
                    let dst = out.get().add(first * h + head * d);
                    let (p, v) = (scores.as_ptr(), qkv.as_ptr().add(v));
                    gemm_into(
                        len,
                        d,
                        len,
                        dst,
                        h,
                        false,
                        (p, 1, len as isize),
                        (v, 1, stride),
                        Parallelism::None,
                    );
                }
            },
        );
        Ok(())
    }
}

/// Output rows written by parallel tasks at disjoint places (attention heads, AMX column
/// blocks).
#[derive(Clone, Copy)]
pub(crate) struct SharedRows(pub(crate) *mut f32);
// SAFETY: tasks write disjoint blocks: (rows, head columns) in `CpuBert::attention`, column
// ranges in `amx::matmul`, query heads or rows in `crate::attention`.
unsafe impl Send for SharedRows {}
unsafe impl Sync for SharedRows {}

impl SharedRows {
    /// Through a method, so closures capture the whole (Send) wrapper, not its field.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// `dst (m × n) = a (m × k) · b (k × n)`, plus `dst`'s previous value with `accumulate`;
/// all row-major and contiguous. Uses every rayon thread.
fn matmul(
    dst: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) -> Result<(), Error> {
    if dst.len() != m * n || a.len() != m * k || b.len() != k * n {
        return Err(Error::Inference(format!(
            "matmul: {} × {} · {} × {} into {} values",
            m,
            k,
            k,
            n,
            dst.len()
        )));
    }
    if m == 0 {
        return Ok(());
    }
    // SAFETY: the three slices hold exactly the m × n, m × k and k × n values the strides
    // address (checked above), and `dst` does not overlap the inputs (a &mut borrow).
    unsafe {
        let threads = Parallelism::Rayon(rayon::current_num_threads());
        let (lhs, rhs) = ((a.as_ptr(), 1, k as isize), (b.as_ptr(), 1, n as isize));
        gemm_into(m, n, k, dst.as_mut_ptr(), n, accumulate, lhs, rhs, threads);
    }
    Ok(())
}

/// An operand of [`gemm_into`]: its first element, column stride and row stride.
type Operand = (*const f32, isize, isize);

/// `dst (m × n, row stride dst_rs, unit column stride) = lhs · rhs`, plus `dst`'s previous
/// value with `accumulate`.
///
/// # Safety
/// Every element the sizes and strides address must lie inside its allocation, and `dst`
/// must not overlap `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_into(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: Operand,
    rhs: Operand,
    parallelism: Parallelism,
) {
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs.0,
            lhs.1,
            lhs.2,
            rhs.0,
            rhs.1,
            rhs.2,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Runs `f` over chunks of whole rows of `x` (rows of `cols`), in parallel.
fn par_rows(x: &mut [f32], cols: usize, f: impl Fn(&mut [f32]) + Sync + Send) {
    let rows_per_task = (16_384 / cols.max(1)).max(1);
    x.par_chunks_mut(rows_per_task * cols.max(1)).for_each(f);
}

/// `x = LayerNorm(x + y + bias)` row by row, in parallel.
fn add_norm(x: &mut [f32], y: &[f32], bias: &[f32], norm: &Norm, eps: f32) {
    let cols = norm.w.len();
    let rows_per_task = (16_384 / cols.max(1)).max(1);
    x.par_chunks_mut(rows_per_task * cols)
        .zip(y.par_chunks(rows_per_task * cols))
        .for_each(|(x, y)| norm_rows(x, y, bias, &norm.w, &norm.b, eps));
}

/// Defines `$name` as a kernel compiled three times (AVX-512, AVX2 + FMA, and baseline
/// x86-64 or the target's default elsewhere), picking the best the CPU has at each call.
/// The body must be `#[inline(always)]`-friendly: plain loops the compiler vectorises.
macro_rules! simd_kernel {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$doc])*
        fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn portable($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                fn avx512($($arg: $ty),*) {
                    portable($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    portable($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has every feature `avx512` is compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has every feature `avx2` is compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            portable($($arg),*)
        }
    };
}

const LANES: usize = 16;

/// Sum of `x`, in [`LANES`] partial sums so the loop vectorises.
#[inline(always)]
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    acc.iter().sum::<f32>() + tail
}

/// Maximum of `x` (−∞ when empty), in [`LANES`] partial maxima.
#[inline(always)]
fn lane_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.max(v);
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    acc.iter().copied().fold(tail, f32::max)
}

simd_kernel! {
    /// Softmax of each row of `cols` values of `x`, in place.
    fn softmax_rows(x: &mut [f32], cols: usize) {
        for row in x.chunks_exact_mut(cols.max(1)) {
            let max = lane_max(row);
            for v in row.iter_mut() {
                *v = fast_exp(*v - max);
            }
            let inv = 1.0 / lane_sum(row, |v| v);
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }
}

simd_kernel! {
    /// `x = gelu(x + bias)` for each row of `bias.len()` values, in place.
    fn bias_gelu_rows(x: &mut [f32], bias: &[f32]) {
        for row in x.chunks_exact_mut(bias.len().max(1)) {
            for (v, &b) in row.iter_mut().zip(bias) {
                *v = gelu(*v + b);
            }
        }
    }
}

simd_kernel! {
    /// For each row of `w.len()` values: `x = LayerNorm(x + y + bias)·w + b`, in place.
    /// An empty `y` (and `bias`) normalises `x` alone.
    fn norm_rows(x: &mut [f32], y: &[f32], bias: &[f32], w: &[f32], b: &[f32], eps: f32) {
        let cols = w.len().max(1);
        for (i, row) in x.chunks_exact_mut(cols).enumerate() {
            if let Some(y) = y.get(i * cols..(i + 1) * cols) {
                for ((v, &y), &c) in row.iter_mut().zip(y).zip(bias) {
                    *v += y + c;
                }
            }
            let mean = lane_sum(row, |v| v) / cols as f32;
            let var = lane_sum(row, |v| (v - mean) * (v - mean)) / cols as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for ((v, &w), &b) in row.iter_mut().zip(w).zip(b) {
                *v = (*v - mean) * inv * w + b;
            }
        }
    }
}

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

/// erf(x) for f32, Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7).
#[inline(always)]
fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152_1,
        1.061_405_4,
    ];
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    (1.0 - poly * fast_exp(-a * a)).copysign(x)
}

#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
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
    fn softmax_rows_match_candle() {
        let rows: Vec<f32> = (0..3 * 37)
            .map(|i| ((i * 7919) % 113) as f32 / 9.0)
            .collect();
        let mut ours = rows.clone();
        softmax_rows(&mut ours, 37);
        let x = candle_core::Tensor::from_vec(rows, (3, 37), &candle_core::Device::Cpu).unwrap();
        assert_close(&ours, candle_nn::ops::softmax_last_dim(&x), 1e-6);
    }

    #[test]
    fn norm_rows_match_candle_layer_norm() {
        let cols = 40;
        let x: Vec<f32> = (0..2 * cols)
            .map(|i| ((i * 31) % 17) as f32 - 8.0)
            .collect();
        let y: Vec<f32> = (0..2 * cols).map(|i| (i % 5) as f32 * 0.25).collect();
        let bias: Vec<f32> = (0..cols).map(|i| i as f32 * 0.01).collect();
        let w: Vec<f32> = (0..cols).map(|i| 1.0 + i as f32 * 0.02).collect();
        let b: Vec<f32> = (0..cols).map(|i| i as f32 * -0.03).collect();
        let mut ours = x.clone();
        norm_rows(&mut ours, &y, &bias, &w, &b, 1e-12);
        let dev = candle_core::Device::Cpu;
        let t = |v: &[f32], shape: &[usize]| {
            candle_core::Tensor::from_vec(v.to_vec(), shape, &dev).unwrap()
        };
        let summed = (t(&x, &[2, cols]) + t(&y, &[2, cols]))
            .unwrap()
            .broadcast_add(&t(&bias, &[cols]))
            .unwrap();
        let want = candle_nn::ops::layer_norm(&summed, &t(&w, &[cols]), &t(&b, &[cols]), 1e-12);
        assert_close(&ours, want, 1e-5);
    }

    fn assert_close(ours: &[f32], want: candle_core::Result<candle_core::Tensor>, tol: f32) {
        let want: Vec<f32> = want.unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(ours.len(), want.len());
        for (a, b) in ours.iter().zip(&want) {
            assert!((a - b).abs() < tol, "{a} vs {b}");
        }
    }
}

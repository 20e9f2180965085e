//! Qwen2 causal LM with a KV cache, from safetensors (full precision) or a GGUF (quantized).
//! Llama-architecture GGUFs (SmolLM2) run through the same pass: see [`Qwen2::from_gguf`].
//!
//! The architecture of `candle_transformers::models::qwen2` (Q/K/V projections with bias,
//! grouped-query attention, SwiGLU MLP, RMSNorm, rotary embeddings), written here for three
//! reasons:
//! - candle 0.11 builds the rotary table in the model's precision, and bf16 holds integers
//!   exactly only up to 256, so every position past 256 was rounded (1999 became 2000) and
//!   long prompts in bf16 gave different logits from the reference. Here the table is
//!   computed in f32 and only its cos/sin values are cast, as transformers does. Attention
//!   probabilities are also computed in f32.
//! - candle's quantized Qwen2 expands the token-embedding table to f32 (151,936 × 1,536:
//!   933 MB for Qwen2.5-1.5B). Here, on the CPU, the table stays quantized and only the rows
//!   of the tokens being read are dequantized; the tied output head shares it.
//! - In decode (one token), Q4_K and Q6_K matrices are read as stored, not through candle's
//!   larger repacked copy ([`crate::gemv`]). The Q, K and V projections, and the MLP's gate
//!   and up, run as one pass that quantizes the input once when their weights share a type
//!   (quire's kernels for Q4_K, Q6_K and Q4_1; `QTensor::gemv_fused_shared_lhs` for others).
//! - Q4_1 matrices (SmolLM2's), which candle multiplies with scalar loops, go through quire's
//!   own kernel ([`crate::q4_1`]) for prompts and decode alike, kept as stored.
//! - The KV cache is written in place into buffers with room to grow ([`KvCache`]): a decode
//!   step appends one position instead of copying the whole cache.
//! - Grouped-query attention reads each KV head once for all the query heads it serves,
//!   instead of copying K and V per query head (candle's `repeat_kv`): for Qwen2.5-1.5B that
//!   copy moved six times the KV cache for every token.
//! - Attention on the CPU goes through [`crate::attention`]: a decode step reads the cache in
//!   place, one work item per KV head, instead of two small matmuls and a softmax through
//!   candle; a prompt runs in blocks of query positions that skip the keys they may not see.

use std::io::{Read, Seek};
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor, gguf_file};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, Linear, RmsNorm, VarBuilder};
use candle_transformers::models::qwen2::Config;

/// cos and sin of every position's rotation angles, (max positions, head_dim / 2).
struct Rotary {
    cos: Tensor,
    sin: Tensor,
    /// Rotate adjacent pairs (llama.cpp's llama GGUFs, whose Q and K rows are permuted for
    /// it) instead of the two halves of each head (Qwen2, transformers).
    interleaved: bool,
}

impl Rotary {
    /// The table for `positions` positions of heads of `dim` values, rotation base `theta`.
    fn new(
        dim: usize,
        theta: f64,
        positions: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Rotary> {
        // In f32, as transformers computes it (and llama.cpp, within rounding): quantized
        // activations turn one-ulp differences here into visibly different logits.
        let base = theta as f32;
        let inv_freq: Vec<f32> = (0..dim)
            .step_by(2)
            .map(|i| 1.0 / base.powf(i as f32 / dim as f32))
            .collect();
        let half = inv_freq.len();
        let max = positions;
        let positions: Vec<f32> = (0..max).map(|p| p as f32).collect();
        let positions = Tensor::from_vec(positions, (max, 1), device)?;
        let inv_freq = Tensor::from_vec(inv_freq, (1, half), device)?;
        let angles = positions.broadcast_mul(&inv_freq)?; // f32, exact positions
        Ok(Rotary {
            cos: angles.cos()?.to_dtype(dtype)?,
            sin: angles.sin()?.to_dtype(dtype)?,
            interleaved: false,
        })
    }

    /// Rotates `q` and `k` (batch, heads, seq, head_dim) for positions `offset..offset+seq`.
    fn apply(&self, q: &Tensor, k: &Tensor, offset: usize) -> Result<(Tensor, Tensor)> {
        let seq = q.dim(2)?;
        let cos = self.cos.narrow(0, offset, seq)?;
        let sin = self.sin.narrow(0, offset, seq)?;
        let rope = if self.interleaved {
            candle_nn::rotary_emb::rope_i
        } else {
            candle_nn::rotary_emb::rope
        };
        Ok((
            rope(&q.contiguous()?, &cos, &sin)?,
            rope(&k.contiguous()?, &cos, &sin)?,
        ))
    }
}

/// Errors unless `hidden` splits into `heads` heads and `heads` into groups per KV head.
fn check_heads(hidden: usize, heads: usize, kv_heads: usize) -> Result<()> {
    if heads == 0
        || kv_heads == 0
        || !hidden.is_multiple_of(heads)
        || !heads.is_multiple_of(kv_heads)
    {
        candle_core::bail!(
            "qwen2: hidden {hidden}, {heads} heads, {kv_heads} KV heads do not divide evenly"
        );
    }
    Ok(())
}

/// A linear layer: full-precision weights, or quantized ones with an optional f32 bias.
enum Proj {
    Dense(Linear),
    Quant(QMatMul, Option<Tensor>),
}

impl Proj {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Proj::Dense(l) => l.forward(x),
            Proj::Quant(w, b) => {
                let row = match w {
                    QMatMul::QTensor(t) => own_products(&[t], x)?.and_then(|mut ys| ys.pop()),
                    _ => None,
                };
                let y = match row {
                    Some(y) => y,
                    None => w.forward(x)?,
                };
                Self::add_bias(y, b.as_ref())
            }
        }
    }

    fn add_bias(y: Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        match bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    /// The quantized weights, when they are a quantized tensor.
    fn qtensor(&self) -> Option<&QTensor> {
        match self {
            Proj::Quant(QMatMul::QTensor(t), _) => Some(t),
            _ => None,
        }
    }

    /// Applies every projection to `x`. Quantized weights of one type share one quantization
    /// of `x` and one pass: quire's kernels where they apply ([`own_products`]), else, for a
    /// single token, candle's fused pass; otherwise each runs alone. Same results.
    fn forward_all<const N: usize>(projs: [&Proj; N], x: &Tensor) -> Result<[Tensor; N]> {
        let rows: usize = x.dims().iter().rev().skip(1).product();
        let qs: Option<Vec<&QTensor>> = projs.iter().map(|p| p.qtensor()).collect();
        let fused = match qs {
            Some(qs) => match own_products(&qs, x)? {
                Some(ys) => Some(ys),
                None if rows == 1
                    && qs.windows(2).all(|w| w[0].dtype() == w[1].dtype())
                    // Q4_K rows read the compact weights instead (`crate::gemv`).
                    && qs.first().is_some_and(|q| q.dtype() != GgmlDType::Q4K) =>
                {
                    QTensor::gemv_fused_shared_lhs(&qs, &x.contiguous()?)?
                }
                None => None,
            },
            None => None,
        };
        let outs: Vec<Tensor> = match fused {
            Some(outs) => outs
                .into_iter()
                .zip(projs)
                .map(|(y, p)| match p {
                    Proj::Quant(_, b) => Self::add_bias(y, b.as_ref()),
                    Proj::Dense(_) => Ok(y),
                })
                .collect::<Result<_>>()?,
            None => projs.iter().map(|p| p.forward(x)).collect::<Result<_>>()?,
        };
        outs.try_into()
            .map_err(|_| candle_core::Error::Msg("a projection gave no output".into()))
    }
}

/// `x · wᵢᵀ` for every `wᵢ` through quire's own CPU kernels, which quantize `x` once for all
/// of them: [`crate::q4_1`] when all are Q4_1, [`crate::gemv`] when all are Q4_K or all Q6_K
/// (one row; a prompt's rows too on AVX-512 VNNI, unless candle's tiles are switched on:
/// [`crate::gemv::prompt_tiles`]). `None` where neither applies (the caller then uses candle).
fn own_products(ws: &[&QTensor], x: &Tensor) -> Result<Option<Vec<Tensor>>> {
    match crate::q4_1::matmul(ws, x)? {
        Some(ys) => Ok(Some(ys)),
        None => crate::gemv::matmul(ws, x),
    }
}

/// The token-embedding table: full precision, or quantized rows dequantized on lookup.
enum Embed {
    Dense(Embedding),
    Quant { table: Arc<QTensor>, hidden: usize },
}

impl Embed {
    /// (batch, seq) ids → (batch, seq, hidden) f32 rows.
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (table, hidden) = match self {
            Embed::Dense(e) => return e.forward(ids),
            Embed::Quant { table, hidden } => (table, *hidden),
        };
        let dtype = table.dtype();
        let vocab = table.shape().dims2()?.0;
        let row_bytes = hidden / dtype.block_size() * dtype.type_size();
        let data = table.data()?;
        let wanted = ids.flatten_all()?.to_vec1::<u32>()?;
        let mut rows = Vec::with_capacity(wanted.len() * row_bytes);
        for &id in &wanted {
            let id = id as usize;
            if id >= vocab {
                candle_core::bail!("token id {id} is outside the vocabulary ({vocab})");
            }
            rows.extend_from_slice(&data[id * row_bytes..(id + 1) * row_bytes]);
        }
        let picked = candle_core::quantized::ggml_file::qtensor_from_ggml(
            dtype,
            &rows,
            vec![wanted.len(), hidden],
            &Device::Cpu,
        )?;
        let mut dims = ids.dims().to_vec();
        dims.push(hidden);
        picked.dequantize(ids.device())?.reshape(dims)
    }
}

/// Reads named tensors of a GGUF onto a device.
struct GgufTensors<'a, R> {
    content: &'a gguf_file::Content,
    reader: &'a mut R,
    device: &'a Device,
}

impl<R: Read + Seek> GgufTensors<'_, R> {
    /// The tensor as stored (quantized or not), except on the CPU where see
    /// [`fast_on_cpu`].
    fn quantized(&mut self, name: &str) -> Result<Arc<QTensor>> {
        let t = self.content.tensor(self.reader, name, self.device)?;
        let t = if self.device.is_cpu() {
            fast_on_cpu(t)?
        } else {
            t
        };
        Ok(Arc::new(t))
    }

    /// The tensor in f32 (norm weights, biases).
    fn full(&mut self, name: &str) -> Result<Tensor> {
        self.content
            .tensor(self.reader, name, self.device)?
            .dequantize(self.device)
    }
}

/// A Q5_0 or Q5_1 matrix as Q8_0; others as they are (Q4_1, SmolLM2's type, has its own
/// kernel: [`crate::q4_1`]). candle 0.11 multiplies those two types with scalar loops only,
/// Q8_0 with an AVX kernel many times faster. Q8_0 keeps each value to within about 1/254 of
/// its block's largest magnitude, a fraction of these types' own step (1/31 of the block's
/// range); the cost is about twice their memory.
fn fast_on_cpu(t: QTensor) -> Result<QTensor> {
    let slow = matches!(t.dtype(), GgmlDType::Q5_0 | GgmlDType::Q5_1);
    let fits = t
        .shape()
        .dims()
        .last()
        .is_some_and(|d| d.is_multiple_of(GgmlDType::Q8_0.block_size()));
    if !(slow && fits) {
        return Ok(t);
    }
    QTensor::quantize(&t.dequantize(&Device::Cpu)?, GgmlDType::Q8_0)
}

struct Attention {
    q: Proj,
    k: Proj,
    v: Proj,
    o: Proj,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    cache: Option<KvCache>,
}

/// One layer's keys and values, written in place into buffers with room for more tokens, so
/// a decode step appends one position instead of copying the whole cache.
struct KvCache {
    /// (batch, kv_heads, capacity, head_dim) each; positions `..len` hold tokens.
    k: Tensor,
    v: Tensor,
    len: usize,
}

/// Buffers grow to a multiple of this many positions (and at least double).
const KV_STEP: usize = 256;

impl KvCache {
    /// Appends `k` and `v` (batch, kv_heads, seq, head_dim) at position `offset`, which must
    /// be the number of tokens held, and returns views of every held position.
    fn append(
        slot: &mut Option<KvCache>,
        k: &Tensor,
        v: &Tensor,
        offset: usize,
    ) -> Result<(Tensor, Tensor)> {
        let held = slot.as_ref().map_or(0, |c| c.len);
        if offset != held {
            candle_core::bail!("position {offset} does not follow the {held} cached tokens");
        }
        let seq = k.dim(2)?;
        let cache = KvCache::reserve(slot, k, held + seq)?;
        cache.k.slice_set(&k.contiguous()?, 2, held)?;
        cache.v.slice_set(&v.contiguous()?, 2, held)?;
        cache.len = held + seq;
        Ok((
            cache.k.narrow(2, 0, cache.len)?,
            cache.v.narrow(2, 0, cache.len)?,
        ))
    }

    /// The cache in `slot`, with buffers shaped like `like` (batch, kv_heads, _, head_dim)
    /// and room for `needed` positions; held positions are kept.
    fn reserve<'a>(
        slot: &'a mut Option<KvCache>,
        like: &Tensor,
        needed: usize,
    ) -> Result<&'a mut KvCache> {
        let capacity = slot.as_ref().map_or(0, |c| c.k.dim(2).unwrap_or(0));
        if needed > capacity {
            let (b, heads, _, d) = like.dims4()?;
            let room = needed.max(2 * capacity).next_multiple_of(KV_STEP);
            let fresh = |old: Option<&Tensor>, len: usize| -> Result<Tensor> {
                let t = Tensor::zeros((b, heads, room, d), like.dtype(), like.device())?;
                if let Some(old) = old.filter(|_| len > 0) {
                    t.slice_set(&old.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
                }
                Ok(t)
            };
            let len = slot.as_ref().map_or(0, |c| c.len);
            *slot = Some(KvCache {
                k: fresh(slot.as_ref().map(|c| &c.k), len)?,
                v: fresh(slot.as_ref().map(|c| &c.v), len)?,
                len,
            });
        }
        slot.as_mut()
            .ok_or_else(|| candle_core::Error::Msg("KV cache missing after reserve".into()))
    }

    /// A copy of the held positions, unaffected by later writes.
    fn snapshot(&self) -> Result<(Tensor, Tensor)> {
        let held = |t: &Tensor| {
            let t = t.narrow(2, 0, self.len)?;
            // A narrow that spans the whole buffer is the buffer itself: copy it.
            if t.is_contiguous() {
                t.copy()
            } else {
                t.contiguous()
            }
        };
        Ok((held(&self.k)?, held(&self.v)?))
    }
}

impl Attention {
    fn load(cfg: &Config, vb: VarBuilder) -> Result<Attention> {
        let (h, heads, kv_heads) = (
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
        );
        check_heads(h, heads, kv_heads)?;
        let d = h / heads;
        Ok(Attention {
            q: Proj::Dense(candle_nn::linear(h, heads * d, vb.pp("q_proj"))?),
            k: Proj::Dense(candle_nn::linear(h, kv_heads * d, vb.pp("k_proj"))?),
            v: Proj::Dense(candle_nn::linear(h, kv_heads * d, vb.pp("v_proj"))?),
            o: Proj::Dense(candle_nn::linear_no_bias(heads * d, h, vb.pp("o_proj"))?),
            heads,
            kv_heads,
            head_dim: d,
            cache: None,
        })
    }

    fn forward(
        &mut self,
        x: &Tensor,
        rotary: &Rotary,
        offset: usize,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, seq, _) = x.dims3()?;
        let heads = |t: Tensor, n: usize| {
            t.reshape((b, seq, n, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let [q, k, v] = Proj::forward_all([&self.q, &self.k, &self.v], x)?;
        let q = heads(q, self.heads)?;
        let k = heads(k, self.kv_heads)?;
        let v = heads(v, self.kv_heads)?;
        let (q, k) = rotary.apply(&q, &k, offset)?;
        let (k, v) = KvCache::append(&mut self.cache, &k, &v, offset)?;
        attend(&q, &k, &v, mask, self.kv_heads)?
            .transpose(1, 2)?
            .reshape((b, seq, self.heads * self.head_dim))
            .and_then(|y| self.o.forward(&y))
    }
}

/// Causal softmax attention of `q` (b, heads, seq, d), the last `seq` of `total` positions,
/// over `k`, `v` (b, kv_heads, total, d): query `i` sees keys `..= total - seq + i`. Returns
/// (b, heads, seq, d). Query head `h` uses KV head `h / (heads / kv_heads)`, as
/// `repeat_interleave` does in transformers. Scores and probabilities are in f32.
///
/// Where [`cpu_attention`] holds, the work goes to [`crate::attention`], which applies the
/// causal rule itself: [`crate::attention::one_query`] for a decode step,
/// [`crate::attention::causal`] for a prompt, and `mask` is not read. Elsewhere a prompt needs
/// `mask` = [`causal_mask`]`(seq, total - seq)`, built once per pass by the caller.
fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    kv_heads: usize,
) -> Result<Tensor> {
    if cpu_attention(q) {
        return match q.dim(2)? {
            1 => crate::attention::one_query(q, k, v, kv_heads),
            _ => crate::attention::causal(q, k, v, kv_heads),
        };
    }
    attend_matmul(q, k, v, mask, kv_heads)
}

/// True when [`attend`] runs quire's CPU attention for activations like `t` (f32 on the CPU;
/// the keys and values share their type), so no mask tensor is needed.
fn cpu_attention(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// [`attend`] as two matmuls over the whole score matrix, with an additive `mask` (1, 1, seq,
/// total), and a softmax, on any device. The query heads that share a KV head are
/// consecutive, so they become extra rows of one product against it: K and V are never
/// copied per query head.
fn attend_matmul(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    kv_heads: usize,
) -> Result<Tensor> {
    let (b, heads, seq, d) = q.dims4()?;
    let groups = heads / kv_heads;
    let total = k.dim(2)?;
    let q = q.reshape((b, kv_heads, groups * seq, d))?;
    let scale = 1.0 / (d as f64).sqrt();
    let scores = (q.matmul(&k.t()?)? * scale)?.to_dtype(DType::F32)?;
    let scores = match mask {
        Some(m) => scores
            .reshape((b, kv_heads, groups, seq, total))?
            .broadcast_add(&m.unsqueeze(0)?)?
            .reshape((b, kv_heads, groups * seq, total))?,
        None => scores,
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
    probs.matmul(v)?.reshape((b, heads, seq, d))
}

/// The additive mask (1, 1, seq, offset + seq) for `seq` new tokens after `offset` cached
/// ones: token i (at offset + i) sees the cached positions and itself, not later tokens.
fn causal_mask(seq: usize, offset: usize, device: &Device) -> Result<Tensor> {
    let total = offset + seq;
    let rows: Vec<f32> = (0..seq)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j > offset + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(rows, (1, 1, seq, total), device)
}

struct Layer {
    attn: Attention,
    gate: Proj,
    up: Proj,
    down: Proj,
    ln1: RmsNorm,
    ln2: RmsNorm,
}

/// A copy of a [`Qwen2`]'s KV cache, per layer.
pub(crate) struct KvSnapshot(Vec<Option<(Tensor, Tensor)>>);

/// A Qwen2 model with its KV cache.
pub(crate) struct Qwen2 {
    embed: Embed,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Proj,
    rotary: Rotary,
}

impl Qwen2 {
    /// Loads the weights named as in transformers' `Qwen2ForCausalLM`; `lm_head` falls back
    /// to the token embeddings when the file has none (tied embeddings).
    pub(crate) fn load(cfg: &Config, vb: VarBuilder) -> Result<Qwen2> {
        let m = vb.pp("model");
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        let embed = candle_nn::embedding(cfg.vocab_size, h, m.pp("embed_tokens"))?;
        let dense = |i, o, vb: VarBuilder| candle_nn::linear_no_bias(i, o, vb).map(Proj::Dense);
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = m.pp(format!("layers.{i}"));
            let mlp = l.pp("mlp");
            let inter = cfg.intermediate_size;
            layers.push(Layer {
                attn: Attention::load(cfg, l.pp("self_attn"))?,
                gate: dense(h, inter, mlp.pp("gate_proj"))?,
                up: dense(h, inter, mlp.pp("up_proj"))?,
                down: dense(inter, h, mlp.pp("down_proj"))?,
                ln1: candle_nn::rms_norm(h, eps, l.pp("input_layernorm"))?,
                ln2: candle_nn::rms_norm(h, eps, l.pp("post_attention_layernorm"))?,
            });
        }
        let lm_head = if vb.contains_tensor("lm_head.weight") {
            dense(h, cfg.vocab_size, vb.pp("lm_head"))?
        } else {
            Proj::Dense(Linear::new(embed.embeddings().clone(), None))
        };
        let head_dim = h / cfg.num_attention_heads;
        Ok(Qwen2 {
            rotary: Rotary::new(
                head_dim,
                cfg.rope_theta,
                cfg.max_position_embeddings,
                vb.dtype(),
                vb.device(),
            )?,
            norm: candle_nn::rms_norm(h, eps, m.pp("norm"))?,
            embed: Embed::Dense(embed),
            layers,
            lm_head,
        })
    }

    /// Loads a `qwen2` or `llama` GGUF (llama.cpp's tensor names), keeping the matrices
    /// quantized. A llama model is the same stack without Q/K/V biases, with the rotary
    /// embedding on adjacent pairs (llama.cpp's layout for llama GGUFs). On
    /// the CPU the token-embedding table stays quantized too (rows are dequantized as they
    /// are read); elsewhere it is dequantized once. Returns the model and its context length.
    pub(crate) fn from_gguf<R: Read + Seek>(
        content: &gguf_file::Content,
        reader: &mut R,
        device: &Device,
    ) -> Result<(Qwen2, usize)> {
        let get = |key: &str| match content.metadata.get(key) {
            Some(v) => Ok(v),
            None => candle_core::bail!("GGUF lacks {key}"),
        };
        let arch = get("general.architecture")?.to_string()?.clone();
        if arch != "qwen2" && arch != "llama" {
            candle_core::bail!("GGUF architecture {arch:?}: expected qwen2 or llama");
        }
        let md = |key: &str| get(&format!("{arch}.{key}"));
        let heads = md("attention.head_count")?.to_u32()? as usize;
        let kv_heads = md("attention.head_count_kv")?.to_u32()? as usize;
        let h = md("embedding_length")?.to_u32()? as usize;
        let context = md("context_length")?.to_u32()? as usize;
        let blocks = md("block_count")?.to_u32()? as usize;
        let eps = f64::from(md("attention.layer_norm_rms_epsilon")?.to_f32()?);
        let theta = md("rope.freq_base")
            .and_then(|v| v.to_f32())
            .map_or(10_000.0, f64::from);
        check_heads(h, heads, kv_heads)?;
        if let Ok(dims) = md("rope.dimension_count")
            && dims.to_u32()? as usize != h / heads
        {
            candle_core::bail!("partial rotary embeddings are not supported");
        }
        // Scaled rotary embeddings (Llama 3.1's rope_freqs, YaRN) and mixtures of experts
        // would load and then answer wrongly; refuse them.
        let scaled = md("rope.scaling.type")
            .ok()
            .and_then(|v| v.to_string().ok())
            .is_some_and(|t| t != "none");
        if scaled || content.tensor_infos.contains_key("rope_freqs.weight") {
            candle_core::bail!("scaled rotary embeddings are not supported");
        }
        if md("expert_count")
            .and_then(|v| v.to_u32())
            .is_ok_and(|n| n > 0)
        {
            candle_core::bail!("mixture-of-experts models are not supported");
        }
        let mut g = GgufTensors {
            content,
            reader,
            device,
        };
        let quant = |t: Arc<QTensor>| QMatMul::from_arc(t).map(|m| Proj::Quant(m, None));
        let token_table = g.quantized("token_embd.weight")?;
        let lm_head = match g.quantized("output.weight") {
            Ok(t) => quant(t)?,
            // Tied embeddings: the output head is the token table.
            Err(_) => quant(token_table.clone())?,
        };
        let embed = if device.is_cpu() {
            Embed::Quant {
                table: token_table,
                hidden: h,
            }
        } else {
            Embed::Dense(Embedding::new(token_table.dequantize(device)?, h))
        };
        let final_norm = RmsNorm::new(g.full("output_norm.weight")?, eps);
        let mut layers = Vec::with_capacity(blocks);
        for i in 0..blocks {
            let p = |name: &str| format!("blk.{i}.{name}");
            // Qwen2 has Q, K and V biases; llama has none.
            let mut biased = |name: &str| -> Result<Proj> {
                let w = QMatMul::from_arc(g.quantized(&p(&format!("{name}.weight")))?)?;
                let bias = p(&format!("{name}.bias"));
                let b = match content.tensor_infos.contains_key(&bias) {
                    true => Some(g.full(&bias)?),
                    false => None,
                };
                Ok(Proj::Quant(w, b))
            };
            let (q, k, v) = (biased("attn_q")?, biased("attn_k")?, biased("attn_v")?);
            let attn = Attention {
                q,
                k,
                v,
                o: quant(g.quantized(&p("attn_output.weight"))?)?,
                heads,
                kv_heads,
                head_dim: h / heads,
                cache: None,
            };
            layers.push(Layer {
                attn,
                gate: quant(g.quantized(&p("ffn_gate.weight"))?)?,
                up: quant(g.quantized(&p("ffn_up.weight"))?)?,
                down: quant(g.quantized(&p("ffn_down.weight"))?)?,
                ln1: RmsNorm::new(g.full(&p("attn_norm.weight"))?, eps),
                ln2: RmsNorm::new(g.full(&p("ffn_norm.weight"))?, eps),
            });
        }
        let mut rotary = Rotary::new(h / heads, theta, context, DType::F32, device)?;
        rotary.interleaved = arch == "llama";
        let model = Qwen2 {
            rotary,
            norm: final_norm,
            embed,
            layers,
            lm_head,
        };
        Ok((model, context))
    }

    /// Logits (batch, 1, vocab) for the last of `ids` (batch, seq), which continue the cached
    /// sequence at position `offset`. The tokens join the cache.
    pub(crate) fn forward(&mut self, ids: &Tensor, offset: usize) -> Result<Tensor> {
        self.forward_tail(ids, offset, 1)
    }

    /// Logits (batch, tail, vocab) for the last `tail` of `ids` (batch, seq); otherwise as
    /// [`Qwen2::forward`]. `tail` must be between 1 and `seq`.
    pub(crate) fn forward_tail(
        &mut self,
        ids: &Tensor,
        offset: usize,
        tail: usize,
    ) -> Result<Tensor> {
        let (_, seq) = ids.dims2()?;
        if tail == 0 || tail > seq {
            candle_core::bail!("asked for the logits of {tail} of {seq} positions");
        }
        let mut x = self.embed.forward(ids)?;
        let mask = if seq > 1 && !cpu_attention(&x) {
            Some(causal_mask(seq, offset, ids.device())?)
        } else {
            None
        };
        for layer in &mut self.layers {
            let attn =
                layer
                    .attn
                    .forward(&x.apply(&layer.ln1)?, &self.rotary, offset, mask.as_ref())?;
            x = (x + attn)?;
            let h = x.apply(&layer.ln2)?;
            let [gate, up] = Proj::forward_all([&layer.gate, &layer.up], &h)?;
            let mlp = layer.down.forward(&(candle_nn::ops::silu(&gate)? * up)?)?;
            x = (x + mlp)?;
        }
        let last = x.narrow(1, seq - tail, tail)?.apply(&self.norm)?;
        self.lm_head.forward(&last)
    }

    /// A copy of the KV cache as it is now (the held positions only), unaffected by later
    /// tokens.
    pub(crate) fn kv_snapshot(&self) -> Result<KvSnapshot> {
        let layers = self
            .layers
            .iter()
            .map(|l| l.attn.cache.as_ref().map(KvCache::snapshot).transpose())
            .collect::<Result<_>>()?;
        Ok(KvSnapshot(layers))
    }

    /// Replaces the KV cache with a copy of `snapshot`; the next token goes at the position
    /// after it.
    pub(crate) fn restore_kv(&mut self, snapshot: &KvSnapshot) -> Result<()> {
        if snapshot.0.len() != self.layers.len() {
            candle_core::bail!("KV snapshot of another model");
        }
        for (layer, kv) in self.layers.iter_mut().zip(&snapshot.0) {
            let slot = &mut layer.attn.cache;
            if let Some(c) = slot.as_mut() {
                c.len = 0;
            }
            if let Some((k, v)) = kv {
                KvCache::append(slot, k, v, 0)?;
            }
        }
        Ok(())
    }

    /// Tokens held in the KV cache.
    pub(crate) fn kv_len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.attn.cache.as_ref())
            .map_or(0, |c| c.len)
    }

    /// Forgets the cached tokens after the first `len` (no copy); the next token goes at
    /// position `len`.
    pub(crate) fn truncate_kv(&mut self, len: usize) -> Result<()> {
        for layer in &mut self.layers {
            match layer.attn.cache.as_mut() {
                Some(c) if len <= c.len => c.len = len,
                _ if len == 0 => {}
                _ => candle_core::bail!("cannot keep {len} KV positions: fewer are held"),
            }
        }
        Ok(())
    }

    /// Forgets every cached token.
    pub(crate) fn clear_kv_cache(&mut self) {
        for layer in &mut self.layers {
            layer.attn.cache = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Q5_1 matrix comes back as Q8_0 holding the same values (to Q8_0's step); other
    /// types, Q4_1 among them, are left as they are.
    #[test]
    fn slow_weight_types_are_requantized_to_q8_0() {
        let cpu = Device::Cpu;
        let values: Vec<f32> = (0..4 * 64)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let dense = Tensor::from_vec(values, (4, 64), &cpu).unwrap();
        let q51 = QTensor::quantize(&dense, GgmlDType::Q5_1).unwrap();
        let values = |q: &QTensor| -> Vec<f32> {
            let t = q.dequantize(&cpu).unwrap();
            t.flatten_all().unwrap().to_vec1().unwrap()
        };
        let before = values(&q51);
        let converted = fast_on_cpu(q51).unwrap();
        assert_eq!(converted.dtype(), GgmlDType::Q8_0);
        let after = values(&converted);
        // Half a Q8_0 step (1/254 of the largest magnitude), plus its f16 block scale.
        let largest = before.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (a, b) in before.iter().zip(&after) {
            assert!((a - b).abs() <= largest / 200.0, "{a} became {b}");
        }
        for dtype in [GgmlDType::F32, GgmlDType::Q4K, GgmlDType::Q4_1] {
            let t = QTensor::quantize(&Tensor::zeros((4, 256), DType::F32, &cpu).unwrap(), dtype);
            assert_eq!(fast_on_cpu(t.unwrap()).unwrap().dtype(), dtype);
        }
    }

    /// Grouped attention equals attention over K and V repeated for every query head.
    /// Appending across a buffer's end keeps every position; a snapshot is a copy that later
    /// writes do not change; truncating drops only the positions after the cut.
    #[test]
    fn kv_cache_grows_in_place_and_snapshots_are_copies() {
        let cpu = Device::Cpu;
        let block = |start: usize, len: usize| {
            let v: Vec<f32> = (start..start + len)
                .flat_map(|p| (0..2 * 4).map(move |i| (p * 10 + i) as f32))
                .collect();
            // (batch, kv_heads, positions, head_dim); value = position * 10 + (head, dim).
            Tensor::from_vec(v, (len, 2, 4), &cpu)
                .and_then(|t| t.transpose(0, 1))
                .and_then(|t| t.unsqueeze(0))
                .and_then(|t| t.contiguous())
                .unwrap()
        };
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mut slot = None;
        KvCache::append(&mut slot, &block(0, 250), &block(0, 250), 0).unwrap();
        let (k, _) = KvCache::append(&mut slot, &block(250, 10), &block(250, 10), 250).unwrap();
        assert_eq!(k.dims(), &[1, 2, 260, 4]);
        assert_eq!(flat(&k), flat(&block(0, 260)));
        assert!(
            slot.as_ref().unwrap().k.dim(2).unwrap() >= 512,
            "grew by at least double"
        );
        // A position that does not follow the cache is refused.
        assert!(KvCache::append(&mut slot, &block(0, 1), &block(0, 1), 7).is_err());

        let (snap_k, _) = slot.as_ref().unwrap().snapshot().unwrap();
        // Overwrite position 200 onwards with other values.
        slot.as_mut().unwrap().len = 200;
        KvCache::append(&mut slot, &block(900, 60), &block(900, 60), 200).unwrap();
        assert_eq!(flat(&snap_k), flat(&block(0, 260)), "snapshot unchanged");

        slot.as_mut().unwrap().len = 100;
        let (k, _) = KvCache::append(&mut slot, &block(100, 1), &block(100, 1), 100).unwrap();
        assert_eq!(flat(&k), flat(&block(0, 101)));
    }

    #[test]
    fn grouped_attention_matches_repeated_kv() {
        let dev = Device::Cpu;
        let (heads, kv, seq, total, d) = (6, 2, 3, 5, 4);
        let q = Tensor::randn(0f32, 1.0, (1, heads, seq, d), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (1, kv, total, d), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (1, kv, total, d), &dev).unwrap();
        let mask = causal_mask(seq, total - seq, &dev).unwrap();
        let got = attend(&q, &k, &v, Some(&mask), kv).unwrap();
        // Reference: head h reads KV head h / (heads / kv).
        let per = heads / kv;
        let mut want = Vec::new();
        for h in 0..heads {
            let qh = q.narrow(1, h, 1).unwrap();
            let kh = k.narrow(1, h / per, 1).unwrap();
            let vh = v.narrow(1, h / per, 1).unwrap();
            let s = (qh.matmul(&kh.t().unwrap()).unwrap() / (d as f64).sqrt()).unwrap();
            let s = s.broadcast_add(&mask).unwrap();
            let p = candle_nn::ops::softmax_last_dim(&s).unwrap();
            want.push(p.matmul(&vh).unwrap());
        }
        let want = Tensor::cat(&want, 1).unwrap();
        let diff = crate::max_abs_diff(&got, &want);
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn blocked_causal_attention_matches_the_masked_matmul() {
        let dev = Device::Cpu;
        // 150 queries (two full blocks and a partial one) after 37 cached positions, K and V
        // views of a larger cache buffer, as in a prompt that follows a cached prefix.
        let (heads, kv, seq, offset, room, d) = (6, 2, 150, 37, 256, 20);
        let total = offset + seq;
        let q = Tensor::randn(0f32, 1.0, (1, heads, seq, d), &dev).unwrap();
        let kbuf = Tensor::randn(0f32, 1.0, (1, kv, room, d), &dev).unwrap();
        let vbuf = Tensor::randn(0f32, 1.0, (1, kv, room, d), &dev).unwrap();
        let k = kbuf.narrow(2, 0, total).unwrap();
        let v = vbuf.narrow(2, 0, total).unwrap();
        let mask = causal_mask(seq, offset, &dev).unwrap();
        let want = attend_matmul(&q, &k, &v, Some(&mask), kv).unwrap();
        // The CPU path applies the causal rule itself: it needs no mask tensor.
        let got = attend(&q, &k, &v, None, kv).unwrap();
        assert_eq!(got.dims(), want.dims());
        let diff = crate::max_abs_diff(&got, &want);
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn rotary_positions_are_exact_in_bf16_tables() {
        let cfg: Config = serde_json::from_value(serde_json::json!({
            "vocab_size": 8, "hidden_size": 8, "intermediate_size": 8,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
            "max_position_embeddings": 2048, "sliding_window": 2048, "max_window_layers": 1,
            "tie_word_embeddings": true, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
            "use_sliding_window": false, "hidden_act": "silu"
        }))
        .unwrap();
        let dim = cfg.hidden_size / cfg.num_attention_heads;
        let r = Rotary::new(
            dim,
            cfg.rope_theta,
            cfg.max_position_embeddings,
            DType::BF16,
            &Device::Cpu,
        )
        .unwrap();
        // Position 1999, first frequency (1 rad per position): cos(1999) in bf16.
        let got = r.cos.get(1999).unwrap().get(0).unwrap();
        let got = got
            .to_dtype(DType::F32)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            (got - 1999f32.cos()).abs() < 0.01,
            "{got} vs {}",
            1999f32.cos()
        );
        // candle's table rounded position 1999 to 2000 before taking the cosine.
        assert!((1999f32.cos() - 2000f32.cos()).abs() > 0.5);
    }
}

/// Needs the Qwen2.5 GGUF in the model directory (`quire models fetch --llm qwen2.5-1.5b`),
/// which CI does not fetch: `cargo test -p quire-models -- --ignored same_logits`.
#[cfg(test)]
mod against_candle {
    use super::*;
    use candle_transformers::models::quantized_qwen2;

    use crate::max_abs_diff as max_diff;

    /// quire's pass over the GGUF gives candle's quantized Qwen2 logits, for a prompt and for
    /// a token decoded after it, while its token table stays quantized. They were equal bit
    /// for bit until attention stopped copying K and V per query head: that reorders f32 sums,
    /// and quantizing the activations of the next layer turns the last-bit differences into
    /// logit differences of about 0.5 (computing one prompt in one pass or token by token
    /// differs by as much in candle itself). So: the same greedy token (or, after the decoded
    /// token, a tie within 0.01: decode reads Q4_K weights through another kernel, see
    /// [`crate::gemv`], and this prompt leaves two tokens 0.002 apart), logits within 1.
    #[test]
    #[ignore]
    fn same_logits_as_candles_quantized_qwen2() {
        let dir = crate::default_model_dir();
        let dev = Device::Cpu;
        let open = || crate::files::open_llm(&dir, crate::LlmChoice::Qwen25Coder1_5B).unwrap();
        let mut r = open();
        let content = gguf_file::Content::read(&mut r).unwrap();
        let (mut ours, _) = Qwen2::from_gguf(&content, &mut r, &dev).unwrap();
        assert!(matches!(ours.embed, Embed::Quant { .. }));
        let mut r = open();
        let content = gguf_file::Content::read(&mut r).unwrap();
        let mut theirs = quantized_qwen2::ModelWeights::from_gguf(content, &mut r, &dev).unwrap();
        let prompt = Tensor::new(&[[9u32, 400, 1000, 2000, 3000, 4000, 151_000]], &dev).unwrap();
        let next = Tensor::new(&[[5000u32]], &dev).unwrap();
        let argmax = |t: &Tensor| {
            t.flatten_all()
                .unwrap()
                .argmax(0)
                .unwrap()
                .to_scalar::<u32>()
        };
        let a = ours.forward(&prompt, 0).unwrap();
        let b = theirs.forward(&prompt, 0).unwrap();
        assert_eq!(argmax(&a).unwrap(), argmax(&b).unwrap());
        assert!(max_diff(&a, &b) < 1.0, "{}", max_diff(&a, &b));
        let a = ours.forward(&next, 7).unwrap();
        let b = theirs.forward(&next, 7).unwrap();
        same_choice(&a, &b);
        assert!(max_diff(&a, &b) < 1.0, "{}", max_diff(&a, &b));
        // 40 more prompt tokens: enough rows for quire's panels (`crate::panel`), while
        // candle multiplies them through its repacked tiles.
        let ids: Vec<u32> = (0..40u32).map(|i| 300 + 3_671 * i % 150_000).collect();
        let more = Tensor::new(ids.as_slice(), &dev)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let a = ours.forward(&more, 8).unwrap();
        let b = theirs.forward(&more, 8).unwrap();
        same_choice(&a, &b);
        assert!(max_diff(&a, &b) < 1.0, "{}", max_diff(&a, &b));
    }

    /// Panics unless candle's greedy token is ours, or ties with ours in our logits (within
    /// 0.01: the order of such a tie depends on the kernels' summation order).
    fn same_choice(ours: &Tensor, theirs: &Tensor) {
        let ours = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let theirs = theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let top = |v: &[f32]| (0..v.len()).max_by(|&i, &j| v[i].total_cmp(&v[j])).unwrap();
        let (mine, candles) = (top(&ours), top(&theirs));
        assert!(
            ours[mine] - ours[candles] < 0.01,
            "ours picks {mine} ({}), candle {candles} (ours gives it {})",
            ours[mine],
            ours[candles]
        );
    }
}

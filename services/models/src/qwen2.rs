//! Qwen2 causal LM in full precision (safetensors), with a KV cache.
//!
//! The architecture of `candle_transformers::models::qwen2` (Q/K/V projections with bias,
//! grouped-query attention, SwiGLU MLP, RMSNorm, rotary embeddings), written here for one
//! reason: candle 0.11 builds the rotary table in the model's precision, and bf16 holds
//! integers exactly only up to 256, so every position past 256 was rounded (1999 became
//! 2000) and long prompts in bf16 gave different logits from the reference. Here the table
//! is computed in f32 and only its cos/sin values are cast, as transformers does. Attention
//! probabilities are also computed in f32.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, Linear, RmsNorm, VarBuilder};
use candle_transformers::models::qwen2::Config;

/// cos and sin of every position's rotation angles, (max positions, head_dim / 2).
struct Rotary {
    cos: Tensor,
    sin: Tensor,
}

impl Rotary {
    fn new(cfg: &Config, dtype: DType, device: &Device) -> Result<Rotary> {
        let dim = cfg.hidden_size / cfg.num_attention_heads;
        let inv_freq: Vec<f32> = (0..dim)
            .step_by(2)
            .map(|i| (1.0 / cfg.rope_theta.powf(i as f64 / dim as f64)) as f32)
            .collect();
        let half = inv_freq.len();
        let positions: Vec<f32> = (0..cfg.max_position_embeddings).map(|p| p as f32).collect();
        let positions = Tensor::from_vec(positions, (cfg.max_position_embeddings, 1), device)?;
        let inv_freq = Tensor::from_vec(inv_freq, (1, half), device)?;
        let angles = positions.broadcast_mul(&inv_freq)?; // f32, exact positions
        Ok(Rotary {
            cos: angles.cos()?.to_dtype(dtype)?,
            sin: angles.sin()?.to_dtype(dtype)?,
        })
    }

    /// Rotates `q` and `k` (batch, heads, seq, head_dim) for positions `offset..offset+seq`.
    fn apply(&self, q: &Tensor, k: &Tensor, offset: usize) -> Result<(Tensor, Tensor)> {
        let seq = q.dim(2)?;
        let cos = self.cos.narrow(0, offset, seq)?;
        let sin = self.sin.narrow(0, offset, seq)?;
        Ok((
            candle_nn::rotary_emb::rope(&q.contiguous()?, &cos, &sin)?,
            candle_nn::rotary_emb::rope(&k.contiguous()?, &cos, &sin)?,
        ))
    }
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    cache: Option<(Tensor, Tensor)>,
}

impl Attention {
    fn load(cfg: &Config, vb: VarBuilder) -> Result<Attention> {
        let (h, heads, kv_heads) = (
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
        );
        if heads == 0 || kv_heads == 0 || h % heads != 0 || heads % kv_heads != 0 {
            candle_core::bail!(
                "qwen2: hidden {h}, {heads} heads, {kv_heads} KV heads do not divide evenly"
            );
        }
        let d = h / heads;
        Ok(Attention {
            q: candle_nn::linear(h, heads * d, vb.pp("q_proj"))?,
            k: candle_nn::linear(h, kv_heads * d, vb.pp("k_proj"))?,
            v: candle_nn::linear(h, kv_heads * d, vb.pp("v_proj"))?,
            o: candle_nn::linear_no_bias(heads * d, h, vb.pp("o_proj"))?,
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
        let q = heads(self.q.forward(x)?, self.heads)?;
        let k = heads(self.k.forward(x)?, self.kv_heads)?;
        let v = heads(self.v.forward(x)?, self.kv_heads)?;
        let (q, k) = rotary.apply(&q, &k, offset)?;
        let (k, v) = match &self.cache {
            Some((ck, cv)) => (Tensor::cat(&[ck, &k], 2)?, Tensor::cat(&[cv, &v], 2)?),
            None => (k, v),
        };
        self.cache = Some((k.clone(), v.clone()));
        let groups = self.heads / self.kv_heads;
        let (k, v) = (repeat_kv(&k, groups)?, repeat_kv(&v, groups)?);
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?.to_dtype(DType::F32)?;
        let scores = match mask {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
        probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, seq, self.heads * self.head_dim))?
            .apply(&self.o)
    }
}

/// (b, kv_heads, seq, d) → (b, kv_heads · groups, seq, d), each KV head serving `groups`
/// consecutive query heads.
fn repeat_kv(x: &Tensor, groups: usize) -> Result<Tensor> {
    if groups == 1 {
        return Ok(x.clone());
    }
    let (b, kv, seq, d) = x.dims4()?;
    x.unsqueeze(2)?
        .expand((b, kv, groups, seq, d))?
        .reshape((b, kv * groups, seq, d))
}

struct Layer {
    attn: Attention,
    gate: Linear,
    up: Linear,
    down: Linear,
    ln1: RmsNorm,
    ln2: RmsNorm,
}

/// A Qwen2 model with its KV cache.
pub(crate) struct Qwen2 {
    embed: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Linear,
    rotary: Rotary,
}

impl Qwen2 {
    /// Loads the weights named as in transformers' `Qwen2ForCausalLM`; `lm_head` falls back
    /// to the token embeddings when the file has none (tied embeddings).
    pub(crate) fn load(cfg: &Config, vb: VarBuilder) -> Result<Qwen2> {
        let m = vb.pp("model");
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        let embed = candle_nn::embedding(cfg.vocab_size, h, m.pp("embed_tokens"))?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = m.pp(format!("layers.{i}"));
            let mlp = l.pp("mlp");
            let inter = cfg.intermediate_size;
            layers.push(Layer {
                attn: Attention::load(cfg, l.pp("self_attn"))?,
                gate: candle_nn::linear_no_bias(h, inter, mlp.pp("gate_proj"))?,
                up: candle_nn::linear_no_bias(h, inter, mlp.pp("up_proj"))?,
                down: candle_nn::linear_no_bias(inter, h, mlp.pp("down_proj"))?,
                ln1: candle_nn::rms_norm(h, eps, l.pp("input_layernorm"))?,
                ln2: candle_nn::rms_norm(h, eps, l.pp("post_attention_layernorm"))?,
            });
        }
        let lm_head = if vb.contains_tensor("lm_head.weight") {
            candle_nn::linear_no_bias(h, cfg.vocab_size, vb.pp("lm_head"))?
        } else {
            Linear::new(embed.embeddings().clone(), None)
        };
        Ok(Qwen2 {
            rotary: Rotary::new(cfg, vb.dtype(), vb.device())?,
            norm: candle_nn::rms_norm(h, eps, m.pp("norm"))?,
            embed,
            layers,
            lm_head,
        })
    }

    /// Logits (batch, 1, vocab) for the last of `ids` (batch, seq), which continue the cached
    /// sequence at position `offset`. The tokens join the cache.
    pub(crate) fn forward(&mut self, ids: &Tensor, offset: usize) -> Result<Tensor> {
        let (_, seq) = ids.dims2()?;
        let mask = if seq > 1 {
            // Token i (at offset + i) sees cached positions and itself, not later tokens.
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
            Some(Tensor::from_vec(rows, (1, 1, seq, total), ids.device())?)
        } else {
            None
        };
        let mut x = self.embed.forward(ids)?;
        for layer in &mut self.layers {
            let attn =
                layer
                    .attn
                    .forward(&x.apply(&layer.ln1)?, &self.rotary, offset, mask.as_ref())?;
            x = (x + attn)?;
            let h = x.apply(&layer.ln2)?;
            let mlp = (candle_nn::ops::silu(&h.apply(&layer.gate)?)? * h.apply(&layer.up)?)?
                .apply(&layer.down)?;
            x = (x + mlp)?;
        }
        x.narrow(1, seq - 1, 1)?
            .apply(&self.norm)?
            .apply(&self.lm_head)
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
        let r = Rotary::new(&cfg, DType::BF16, &Device::Cpu).unwrap();
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

//! Attention on the CPU, for the two shapes a causal LM runs.
//!
//! - [`one_query`], a decode step: one query position against the KV cache, read in place.
//!   candle's general path (two matmuls and a softmax) costs more in set-up than in arithmetic
//!   for a single query row: each matmul packs its operands, starts rayon work beside candle's
//!   own pool, and asks the OS for the CPU count. Here each KV head is one work item on
//!   candle's CPU pool: its keys are read once for all the query heads that share it, then its
//!   values.
//! - [`causal`], a prompt: blocks of query positions, each multiplied only with the keys it
//!   may see, and scaled, masked and normalised in one pass. The general path builds the full
//!   score matrix (for a 1,400-token prompt, 94 MB a layer) and passes over it several times.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};

use crate::bert_cpu::SharedRows;

/// Softmax attention of `q` (b, heads, 1, d) over `k` and `v` (b, kv_heads, total, d), all
/// f32 on the CPU, with no mask (a single newest position sees every cached one). Query head
/// `h` reads KV head `h / (heads / kv_heads)`. `k` and `v` may be views with any strides whose
/// last one is 1 (such as the held part of a larger cache buffer). Returns (b, heads, 1, d).
/// Scores and probabilities are f32; only the order of summation differs from the general
/// path.
pub(crate) fn one_query(q: &Tensor, k: &Tensor, v: &Tensor, kv_heads: usize) -> Result<Tensor> {
    q.contiguous()?
        .apply_op3_no_bwd(k, v, &OneQuery { kv_heads })
}

struct OneQuery {
    kv_heads: usize,
}

/// A (b, heads, positions, d) f32 tensor's data as offsets: element `[i][h][j][..d]` starts
/// at `start + i·batch + h·head + j·position`.
struct Strided<'a> {
    data: &'a [f32],
    start: usize,
    batch: usize,
    head: usize,
    position: usize,
}

impl<'a> Strided<'a> {
    fn new(s: &'a CpuStorage, l: &Layout, dims: [usize; 4], what: &str) -> Result<Strided<'a>> {
        let CpuStorage::F32(data) = s else {
            candle_core::bail!("one-query attention: {what} must be f32");
        };
        if l.dims() != dims {
            candle_core::bail!(
                "one-query attention: {what} is {:?}, expected {dims:?}",
                l.dims()
            );
        }
        let &[batch, head, position, last] = l.stride() else {
            candle_core::bail!("one-query attention: {what} is not 4-dimensional");
        };
        if last != 1 && dims[3] > 1 {
            candle_core::bail!("one-query attention: {what}'s rows are not contiguous");
        }
        let d = dims[3];
        // The furthest element read must lie inside the storage.
        let furthest = l.start_offset()
            + (dims[0].saturating_sub(1)) * batch
            + (dims[1].saturating_sub(1)) * head
            + (dims[2].saturating_sub(1)) * position
            + d;
        if dims.contains(&0) || furthest > data.len() {
            candle_core::bail!("one-query attention: {what}'s layout lies outside its storage");
        }
        Ok(Strided {
            data,
            start: l.start_offset(),
            batch,
            head,
            position,
        })
    }

    /// Row `[i][h][j]`, `d` values.
    fn row(&self, i: usize, h: usize, j: usize, d: usize) -> &[f32] {
        let at = self.start + i * self.batch + h * self.head + j * self.position;
        &self.data[at..at + d]
    }
}

impl CustomOp3 for OneQuery {
    fn name(&self) -> &'static str {
        "one-query-attention"
    }

    fn cpu_fwd(
        &self,
        sq: &CpuStorage,
        lq: &Layout,
        sk: &CpuStorage,
        lk: &Layout,
        sv: &CpuStorage,
        lv: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let &[b, heads, one, d] = lq.dims() else {
            candle_core::bail!("one-query attention: q is not 4-dimensional");
        };
        let kv_heads = self.kv_heads;
        if one != 1 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            candle_core::bail!(
                "one-query attention: q {:?} does not fit {kv_heads} KV heads",
                lq.dims()
            );
        }
        let total = lk.dims().get(2).copied().unwrap_or(0);
        let q = Strided::new(sq, lq, [b, heads, 1, d], "q")?;
        let k = Strided::new(sk, lk, [b, kv_heads, total, d], "k")?;
        let v = Strided::new(sv, lv, [b, kv_heads, total, d], "v")?;
        let groups = heads / kv_heads;
        let scale = 1.0 / (d as f32).sqrt();
        let mut out = vec![0f32; b * heads * d];
        let dst = SharedRows(out.as_mut_ptr());
        let item = |n: usize| {
            let (i, g) = (n / kv_heads, n % kv_heads);
            let mut scores = vec![0f32; groups * total];
            for j in 0..total {
                let key = k.row(i, g, j, d);
                for h in 0..groups {
                    scores[h * total + j] = dot(q.row(i, g * groups + h, 0, d), key) * scale;
                }
            }
            for row in scores.chunks_exact_mut(total) {
                softmax(row);
            }
            let mut acc = vec![0f32; groups * d];
            for j in 0..total {
                let value = v.row(i, g, j, d);
                for (h, o) in acc.chunks_exact_mut(d).enumerate() {
                    let p = scores[h * total + j];
                    for (o, x) in o.iter_mut().zip(value) {
                        *o += p * x;
                    }
                }
            }
            let first = (i * heads + g * groups) * d;
            // SAFETY: item (i, g) alone writes query heads g·groups .. (g+1)·groups of batch
            // row i, which are `groups · d` values from `first`, inside `out` (b · heads · d).
            unsafe {
                std::ptr::copy_nonoverlapping(acc.as_ptr(), dst.get().add(first), acc.len());
            }
        };
        candle_core::utils::barrier_pool()
            .execute_chunked(b * kv_heads, |range| range.for_each(item));
        Ok((CpuStorage::F32(out), Shape::from((b, heads, 1, d))))
    }
}

/// Query positions per block in [`causal`].
const BLOCK: usize = 64;

/// Causal softmax attention of `q` (b, heads, seq, d) over `k` and `v` (b, kv_heads, total, d),
/// f32 on the CPU, where the queries are the last `seq` of the `total` positions: query `i`
/// sees keys `..= total - seq + i`, as [`crate::qwen2`]'s causal mask says. Query head `h`
/// reads KV head `h / (heads / kv_heads)`. Returns (b, heads, seq, d).
///
/// Queries go in blocks of [`BLOCK`] positions: a block's scores are one matmul against the
/// keys its last position may see, so the keys after it are never multiplied, and a block's
/// scores take a few MB instead of the whole matrix's tens.
pub(crate) fn causal(q: &Tensor, k: &Tensor, v: &Tensor, kv_heads: usize) -> Result<Tensor> {
    let (b, heads, seq, d) = q.dims4()?;
    let total = k.dim(2)?;
    if kv_heads == 0 || !heads.is_multiple_of(kv_heads) || seq == 0 || seq > total {
        candle_core::bail!(
            "causal attention: q {:?} does not fit {kv_heads} KV heads of {total} positions",
            q.dims()
        );
    }
    let groups = heads / kv_heads;
    let first = total - seq;
    let scale = 1.0 / (d as f32).sqrt();
    let mut blocks = Vec::with_capacity(seq.div_ceil(BLOCK));
    for r0 in (0..seq).step_by(BLOCK) {
        let rows = BLOCK.min(seq - r0);
        let keys = first + r0 + rows;
        // The block's query heads that share a KV head become consecutive rows of one product.
        let qb = q
            .narrow(2, r0, rows)?
            .contiguous()?
            .reshape((b, kv_heads, groups * rows, d))?;
        let scores = qb.matmul(&k.narrow(2, 0, keys)?.t()?)?;
        let probs = scores.apply_op1_no_bwd(&CausalSoftmax {
            rows,
            first: first + r0,
            scale,
        })?;
        blocks.push(
            probs
                .matmul(&v.narrow(2, 0, keys)?)?
                .reshape((b, heads, rows, d))?,
        );
    }
    Tensor::cat(&blocks, 2)
}

/// Scales a block of scores (…, groups · rows, keys), masks each row to the keys its query
/// may see, and turns the rest into probabilities. Row `r` is query position
/// `first + r % rows`, which sees keys `..= first + r % rows`.
struct CausalSoftmax {
    rows: usize,
    first: usize,
    scale: f32,
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = s else {
            candle_core::bail!("causal softmax: scores must be f32");
        };
        let Some(&keys) = l.dims().last() else {
            candle_core::bail!("causal softmax: scores have no dimensions");
        };
        let Some((start, end)) = l.contiguous_offsets() else {
            candle_core::bail!("causal softmax: scores are not contiguous");
        };
        if self.first + self.rows > keys || keys == 0 {
            candle_core::bail!(
                "causal softmax: {} queries from position {} do not fit {keys} keys",
                self.rows,
                self.first
            );
        }
        let scores = &data[start..end];
        let n_rows = scores.len() / keys;
        let mut out = vec![0f32; scores.len()];
        let dst = SharedRows(out.as_mut_ptr());
        let row = |r: usize| {
            let seen = self.first + r % self.rows + 1;
            let mut probs = scores[r * keys..r * keys + seen].to_vec();
            probs.iter_mut().for_each(|x| *x *= self.scale);
            softmax(&mut probs);
            // SAFETY: row r alone writes `out[r·keys .. r·keys + seen]`, inside `out`
            // (n_rows · keys values); the masked rest stays 0.
            unsafe {
                std::ptr::copy_nonoverlapping(probs.as_ptr(), dst.get().add(r * keys), seen);
            }
        };
        candle_core::utils::barrier_pool().execute_chunked(n_rows, |range| range.for_each(row));
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

/// `a · b` over 16 lanes (one AVX-512 register when the compiler targets it).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `row` ← softmax(`row`), in place, with the exact `exp`. Not `bert_cpu::softmax_rows`: its
/// polynomial exp (relative error 1e-6) is fine for embeddings, but here the next layers'
/// 8-bit activations amplify it: with it, the token Qwen decodes in `qwen2::against_candle`
/// no longer matched candle's.
fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in row.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|x| *x *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{D, Device};

    #[test]
    fn matches_per_head_attention_on_a_cache_view() {
        let dev = Device::Cpu;
        // d = 20 takes both the 16-lane body and the remainder; the cache holds 33 of 40
        // positions, so K and V are strided views, as in decoding.
        let (b, heads, kv, held, room, d) = (2, 6, 2, 33, 40, 20);
        let q = Tensor::randn(0f32, 1.0, (b, heads, 1, d), &dev).unwrap();
        let kbuf = Tensor::randn(0f32, 1.0, (b, kv, room, d), &dev).unwrap();
        let vbuf = Tensor::randn(0f32, 1.0, (b, kv, room, d), &dev).unwrap();
        let (k, v) = (
            kbuf.narrow(2, 0, held).unwrap(),
            vbuf.narrow(2, 0, held).unwrap(),
        );
        assert!(!k.is_contiguous());
        let got = one_query(&q, &k, &v, kv).unwrap();
        assert_eq!(got.dims(), &[b, heads, 1, d]);

        let per = heads / kv;
        let mut want = Vec::new();
        for i in 0..b {
            for h in 0..heads {
                let at = |t: &Tensor, n: usize, head: usize| {
                    t.narrow(0, n, 1).unwrap().narrow(1, head, 1).unwrap()
                };
                let (qh, kh, vh) = (at(&q, i, h), at(&k, i, h / per), at(&v, i, h / per));
                let s = (qh.matmul(&kh.t().unwrap()).unwrap() / (d as f64).sqrt()).unwrap();
                let p = candle_nn::ops::softmax(&s, D::Minus1).unwrap();
                want.push(p.matmul(&vh.contiguous().unwrap()).unwrap());
            }
        }
        let want = Tensor::cat(&want, 0)
            .unwrap()
            .reshape((b, heads, 1, d))
            .unwrap();
        let diff = crate::max_abs_diff(&got, &want);
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn a_query_that_does_not_fit_the_kv_heads_is_an_error() {
        let dev = Device::Cpu;
        let q = Tensor::zeros((1, 5, 1, 8), candle_core::DType::F32, &dev).unwrap();
        let k = Tensor::zeros((1, 2, 3, 8), candle_core::DType::F32, &dev).unwrap();
        assert!(one_query(&q, &k, &k, 2).is_err());
        let k16 = k.to_dtype(candle_core::DType::F16).unwrap();
        assert!(one_query(&q.narrow(1, 0, 4).unwrap(), &k16, &k16, 2).is_err());
    }
}

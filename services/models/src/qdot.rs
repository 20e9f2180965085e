//! The shared driver of quire's quantized products on the CPU ([`crate::q4_1`],
//! [`crate::gemv`]): the input rows are quantized once, and work items of weight rows times
//! input rows run on candle's CPU thread pool, the one candle's own matmuls use, so the two
//! never compete for cores.

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Result, Tensor};

/// Input rows that share one pass over a weight row.
pub(crate) const TILE_ROWS: usize = 4;
/// Weight rows per work item.
const GROUP_ROWS: usize = 8;

/// The instruction set the dot products use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Isa {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512 (F, BW, VL) with VNNI.
    #[cfg(target_arch = "x86_64")]
    Vnni,
}

impl Isa {
    /// The fastest this CPU runs.
    pub(crate) fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma") && has!("f16c");
            if avx2 && has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512vnni")
            {
                return Isa::Vnni;
            }
            if avx2 {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    /// Every instruction set this CPU runs, for tests.
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Isa> {
        let mut all = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            let best = Isa::detect();
            if best != Isa::Scalar {
                all.push(Isa::Avx2);
            }
            if best == Isa::Vnni {
                all.push(Isa::Vnni);
            }
        }
        all
    }
}

/// A quantized matrix's stored bytes (borrowed from its tensor) and its number of rows.
pub(crate) type Stored<'a> = (Cow<'a, [u8]>, usize);

/// The stored bytes and row count of each of `ws`, when every one is a `dtype` matrix (n, k)
/// on the CPU, `x` is f32 on the CPU with last dimension k, and k is a whole number of
/// `qk`-value blocks; `None` otherwise.
pub(crate) fn stored<'a>(
    ws: &[&'a QTensor],
    x: &Tensor,
    dtype: GgmlDType,
    qk: usize,
) -> Result<Option<Vec<Stored<'a>>>> {
    let k = x.dims().last().copied().unwrap_or(0);
    let usable = !ws.is_empty()
        && x.device().is_cpu()
        && x.dtype() == DType::F32
        && k > 0
        && k.is_multiple_of(qk)
        && ws.iter().all(|w| {
            w.dtype() == dtype
                && w.device().is_cpu()
                && w.shape().dims2().is_ok_and(|(_, wk)| wk == k)
        });
    if !usable {
        return Ok(None);
    }
    ws.iter()
        .map(|w| Ok((w.data()?, w.shape().dims2()?.0)))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// `bytes` as `len` blocks of `W`; `None` when the length or alignment does not fit.
///
/// # Safety
/// `W` must be a `repr(C)` block of plain integers, valid for any bytes.
pub(crate) unsafe fn as_blocks<W>(bytes: &[u8], len: usize) -> Option<&[W]> {
    let aligned = (bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<W>());
    if !aligned || bytes.len() != len * std::mem::size_of::<W>() {
        return None;
    }
    // SAFETY: aligned and `len` blocks long (checked above); `W` is valid for any bytes (the
    // caller's promise); the slice borrows `bytes`.
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<W>(), len) })
}

/// `x · wᵢᵀ` for each part `(wᵢ, nᵢ)`: `wᵢ` holds nᵢ rows of `kb` weight blocks, where
/// `kb · qk` is `x`'s last dimension. `x` (…, k, f32, on the CPU) is quantized once with
/// `quantize`, one row at a time; `dot(w_row, x_rows, rows, out)` writes the products of one
/// weight row with `rows` (at most [`TILE_ROWS`]) consecutive quantized input rows into
/// `out[..rows]`. Returns one tensor (…, nᵢ) per part, in order.
pub(crate) fn products<W: Sync, X: Clone + Default + Sync>(
    parts: &[(&[W], usize)],
    x: &Tensor,
    qk: usize,
    quantize: impl Fn(&[f32], &mut [X]),
    dot: impl Fn(&[W], &[X], usize, &mut [f32; TILE_ROWS]) + Sync,
) -> Result<Vec<Tensor>> {
    let k = x.dims().last().copied().unwrap_or(0);
    if qk == 0 || !k.is_multiple_of(qk) {
        candle_core::bail!("an input row of {k} values is not whole blocks of {qk}");
    }
    let kb = k / qk;
    let m: usize = x.dims().iter().rev().skip(1).product();
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    let mut xq = vec![X::default(); m * kb];
    if kb > 0 {
        for (row, out) in xs.chunks_exact(k).zip(xq.chunks_exact_mut(kb)) {
            quantize(row, out);
        }
    }
    let mut outs: Vec<Vec<f32>> = parts.iter().map(|&(_, n)| vec![0f32; m * n]).collect();
    run(parts, &xq, m, kb, &mut outs, dot);
    outs.into_iter()
        .zip(parts)
        .map(|(out, &(_, n))| Tensor::from_vec(out, with_last_dim(x, n), x.device()))
        .collect()
}

/// `x`'s dimensions with the last one replaced by `n`: the shape of `x · wᵀ` for `w` (n, k).
pub(crate) fn with_last_dim(x: &Tensor, n: usize) -> Vec<usize> {
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = n;
    }
    dims
}

/// The sum of the eight lanes of `v`.
///
/// # Safety
/// The CPU must have AVX (every caller is compiled for AVX2 or above).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn hsum256(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}

/// A pointer through which work items on candle's pool write disjoint parts of one buffer.
#[derive(Clone, Copy)]
pub(crate) struct Shared<T>(pub(crate) *mut T);
// SAFETY: every user writes disjoint elements of a buffer that outlives the pool's work, and
// the elements may move between threads (`T: Send`).
unsafe impl<T: Send> Send for Shared<T> {}
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// `len` elements from `at`.
    ///
    /// # Safety
    /// They must be inside the buffer and written by this caller only while it runs.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, at: usize, len: usize) -> &mut [T] {
        // SAFETY: the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(at), len) }
    }
}

/// Fills `outs[p]` (m × nₚ, row-major) with the products of the `m` quantized rows `xq`
/// (`kb` blocks each) and each part's matrix, on candle's CPU pool.
pub(crate) fn run<W: Sync, X: Sync>(
    parts: &[(&[W], usize)],
    xq: &[X],
    m: usize,
    kb: usize,
    outs: &mut [Vec<f32>],
    dot: impl Fn(&[W], &[X], usize, &mut [f32; TILE_ROWS]) + Sync,
) {
    let tiles = m.div_ceil(TILE_ROWS);
    // Items are (part, group of weight rows, tile of input rows), tiles varying fastest: a
    // worker's run of items keeps one group of weight rows in L1.
    let mut first_item = Vec::with_capacity(parts.len() + 1);
    let mut items = 0;
    for &(_, n) in parts {
        first_item.push(items);
        items += n.div_ceil(GROUP_ROWS) * tiles;
    }
    first_item.push(items);
    let ptrs: Vec<Shared<f32>> = outs.iter_mut().map(|o| Shared(o.as_mut_ptr())).collect();
    let item = |i: usize| {
        let p = first_item.partition_point(|&f| f <= i) - 1;
        let (w, n) = parts[p];
        let local = i - first_item[p];
        let (group, tile) = (local / tiles, local % tiles);
        let r0 = tile * TILE_ROWS;
        let rows = TILE_ROWS.min(m - r0);
        let x = &xq[r0 * kb..(r0 + rows) * kb];
        for j in group * GROUP_ROWS..n.min((group + 1) * GROUP_ROWS) {
            let mut res = [0f32; TILE_ROWS];
            dot(&w[j * kb..(j + 1) * kb], x, rows, &mut res);
            for (r, v) in res.iter().take(rows).enumerate() {
                // SAFETY: `(r0 + r, j)` is inside part `p`'s m × n output, and only the item
                // holding row group `group` and row tile `tile` writes it.
                unsafe { *ptrs[p].0.add((r0 + r) * n + j) = *v };
            }
        }
    };
    candle_core::utils::barrier_pool().execute_chunked(items, |range| range.for_each(item));
}

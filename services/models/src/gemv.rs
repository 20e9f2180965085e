//! Products with Q4_K and Q6_K matrices on the CPU, read from the matrices as stored.
//!
//! candle 0.11 multiplies Q4_K matrices through a copy of the weights repacked into 16-row
//! tiles (`repack_x86`), built on first use. The tiles hold each block's scales and minimums
//! unpacked to f32: 0.75 bytes per weight against Q4_K's 0.5625, and they come on top of the
//! stored weights. Here the input is quantized to Q8_K (candle's quantizer, so the integer
//! sums are candle's) and the blocks' dot products run on AVX-512 VNNI over 64 weights per
//! instruction ([`x86::dot_q4k`], [`x86::dot_q6k`]), through [`crate::qdot`], with the
//! weights prefetched ahead of the loads. A single row (decoding) always goes through here;
//! so do fewer than [`crate::panel::MIN_ROWS`] rows, four sharing each unpacked weight block, and
//! more rows go through [`crate::panel`]. candle's tiles are never built unless
//! `QUIRE_CPU_WEIGHT_TILES=on` (see [`prompt_tiles`]). CPUs without VNNI use candle's compact
//! AVX2 kernel (`k_quants::matmul`) for one Q4_K row, and candle's tiles otherwise.

use candle_core::quantized::k_quants::{self, BlockQ8K, GgmlType, QK_K};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Result, Tensor};

use crate::qdot::{Isa, TILE_ROWS};

/// ggml's `block_q4_K`, laid out as candle's `BlockQ4K`: super-block scale `d` and minimum
/// scale `dmin` (f16 bits), twelve bytes packing eight 6-bit scales and eight 6-bit minimums,
/// then 256 4-bit values (each 32-byte run holds two sub-blocks: one in the low nibbles,
/// the next in the high ones).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BlockQ4K {
    pub(crate) d: u16,
    pub(crate) dmin: u16,
    pub(crate) scales: [u8; 12],
    pub(crate) qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);

/// ggml's `block_q6_K`, laid out as candle's `BlockQ6K`: the low four bits of 256 values,
/// their high two bits, sixteen i8 sub-block scales, and the super-block scale `d` (f16
/// bits). Each weight is `d·scale·(q − 32)`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct BlockQ6K {
    pub(crate) ql: [u8; QK_K / 2],
    pub(crate) qh: [u8; QK_K / 4],
    pub(crate) scales: [i8; QK_K / 16],
    pub(crate) d: u16,
}
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);

/// candle's `BlockQ8K` (its fields are private to candle): scale, 256 values, and the sums
/// of each 16 of them.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Q8K {
    pub(crate) d: f32,
    pub(crate) qs: [i8; QK_K],
    pub(crate) bsums: [i16; QK_K / 16],
}
const _: () = assert!(std::mem::size_of::<Q8K>() == std::mem::size_of::<BlockQ8K>());
const _: () = assert!(std::mem::align_of::<Q8K>() == std::mem::align_of::<BlockQ8K>());

impl Default for Q8K {
    fn default() -> Q8K {
        Q8K {
            d: 0.0,
            qs: [0; QK_K],
            bsums: [0; QK_K / 16],
        }
    }
}

/// Quantizes one row to Q8_K with candle's quantizer, in place.
pub(crate) fn quantize_row(x: &[f32], out: &mut [Q8K]) {
    // SAFETY: `Q8K` mirrors `BlockQ8K`'s `repr(C)` layout (same fields in the same order;
    // size and alignment asserted above), and both are plain numbers valid for any bytes;
    // the slice borrows `out` mutably for this call only.
    let blocks =
        unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<BlockQ8K>(), out.len()) };
    BlockQ8K::from_float(x, blocks);
}

/// Whether a prompt's products with Q4_K and Q6_K matrices use candle's repacked tiles.
/// Decided once per process. On a CPU with AVX-512 VNNI, no: prompts go through
/// [`crate::panel`], which reads them as fast from the stored weights alone, unless
/// `QUIRE_CPU_WEIGHT_TILES` is `on`, `1` or `true`. Without VNNI, yes (quire has no multi-row
/// kernel for these types there). Measured: `evals/out/generation.md`.
pub(crate) fn prompt_tiles() -> bool {
    static TILES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TILES.get_or_init(|| {
        if Isa::detect() != Isa::Vnni {
            return true;
        }
        if crate::switched_on("QUIRE_CPU_WEIGHT_TILES") {
            tracing::info!("CPU generator: prompts use candle's repacked weight tiles");
            return true;
        }
        false
    })
}

/// `x · wᵢᵀ` for each `wᵢ` (nᵢ, k), all Q4_K or all Q6_K, and `x` (…, k) in f32, all on the
/// CPU, through [`stored_products`] when it applies: one row always, a prompt's rows only
/// when [`prompt_tiles`] is off. `None` otherwise (the caller then uses candle's own product).
pub(crate) fn matmul(ws: &[&QTensor], x: &Tensor) -> Result<Option<Vec<Tensor>>> {
    let rows: usize = x.dims().iter().rev().skip(1).product();
    if rows > 1 && prompt_tiles() {
        return Ok(None);
    }
    stored_products(ws, x)
}

/// The kernel `f::<R>` for each R from 1 to [`TILE_ROWS`], in that order (a [`RowsDot`] array).
#[cfg(target_arch = "x86_64")]
macro_rules! by_rows {
    ($($f:ident)::+) => {
        [$($f)::+::<1>, $($f)::+::<2>, $($f)::+::<3>, $($f)::+::<4>]
    };
}

/// `x · wᵢᵀ` for each `wᵢ` (nᵢ, k), all Q4_K or all Q6_K, and `x` (…, k) in f32, all on the
/// CPU: one tensor (…, nᵢ) per matrix. `x` is quantized once for all of them. With AVX-512
/// VNNI any number of rows is handled ([`crate::panel`] from [`crate::panel::MIN_ROWS`] rows,
/// else up to four rows share each pass over a weight row); without it, one Q4_K row only.
/// `None` otherwise. The values equal candle's products to f32 rounding: all quantize `x` to
/// Q8_K and sum the same integer products.
fn stored_products(ws: &[&QTensor], x: &Tensor) -> Result<Option<Vec<Tensor>>> {
    stored_products_from(ws, x, crate::panel::MIN_ROWS)
}

/// [`stored_products`], with panels from `panel_rows` input rows up.
fn stored_products_from(
    ws: &[&QTensor],
    x: &Tensor,
    panel_rows: usize,
) -> Result<Option<Vec<Tensor>>> {
    let rows: usize = x.dims().iter().rev().skip(1).product();
    let Some(dtype) = ws.first().map(|w| w.dtype()) else {
        return Ok(None);
    };
    if rows == 0 || !matches!(dtype, GgmlDType::Q4K | GgmlDType::Q6K) {
        return Ok(None);
    }
    let vnni = Isa::detect() == Isa::Vnni;
    if rows != 1 && !vnni {
        return Ok(None);
    }
    let Some(stored) = crate::qdot::stored(ws, x, dtype, QK_K)? else {
        return Ok(None);
    };
    let k = x.dims().last().copied().unwrap_or(0);
    if vnni && rows >= panel_rows {
        let kind = match dtype {
            GgmlDType::Q4K => crate::panel::Kind::Q4K,
            _ => crate::panel::Kind::Q6K,
        };
        let parts: Vec<(&[u8], usize)> = stored.iter().map(|(b, n)| (b.as_ref(), *n)).collect();
        return crate::panel::products(kind, &parts, x).map(Some);
    }
    match dtype {
        #[cfg(target_arch = "x86_64")]
        GgmlDType::Q4K if vnni => {
            // SAFETY: `BlockQ4K` is `repr(C)` u16s and u8s, valid for any bytes; the CPU has
            // the kernel's features (`Isa::Vnni`).
            unsafe { products(&stored, x, k, by_rows!(x86::dot_q4k)) }
        }
        #[cfg(target_arch = "x86_64")]
        GgmlDType::Q6K if vnni => {
            // SAFETY: as above; `BlockQ6K` is u8s, i8s and a u16.
            unsafe { products(&stored, x, k, by_rows!(x86::dot_q6k)) }
        }
        GgmlDType::Q4K => candle_rows(&stored, x, k),
        _ => Ok(None),
    }
}

/// A kernel's products of one weight row with `r + 1` consecutive input rows (`dots[r]`).
type RowsDot<W> = unsafe fn(&[W], &[Q8K], &mut [f32; TILE_ROWS]);

/// The products of `x` and each stored matrix of `W` blocks, with `dots[r]` for one weight row
/// and `r + 1` input rows.
///
/// # Safety
/// `W` must be a `repr(C)` block of plain numbers, and this CPU must run the `dots`.
unsafe fn products<W: Sync>(
    stored: &[crate::qdot::Stored<'_>],
    x: &Tensor,
    k: usize,
    dots: [RowsDot<W>; TILE_ROWS],
) -> Result<Option<Vec<Tensor>>> {
    let kb = k / QK_K;
    let mut parts: Vec<(&[W], usize)> = Vec::with_capacity(stored.len());
    for (bytes, n) in stored {
        // SAFETY: `W` is valid for any bytes (the caller's promise).
        match unsafe { crate::qdot::as_blocks(bytes, n * kb) } {
            Some(b) => parts.push((b, *n)),
            None => return Ok(None),
        }
    }
    crate::qdot::products(&parts, x, QK_K, quantize_row, |w, x, rows, out| {
        // SAFETY: the CPU runs the kernels (the caller's promise); `x` holds `rows` rows of
        // `w.len()` blocks, 1 ≤ rows ≤ TILE_ROWS.
        unsafe { dots[rows - 1](w, &x[..rows * w.len()], out) }
    })
    .map(Some)
}

/// The same products through candle's compact kernel, one matrix at a time.
fn candle_rows(
    stored: &[crate::qdot::Stored<'_>],
    x: &Tensor,
    k: usize,
) -> Result<Option<Vec<Tensor>>> {
    let lhs = x.flatten_all()?.to_vec1::<f32>()?;
    let mut outs = Vec::with_capacity(stored.len());
    for (bytes, n) in stored {
        // SAFETY: candle's `BlockQ4K` is a `repr(C)` block of u8s and f16s, valid for any
        // bytes.
        let Some(blocks) =
            (unsafe { crate::qdot::as_blocks::<k_quants::BlockQ4K>(bytes, n * k / QK_K) })
        else {
            return Ok(None);
        };
        let mut out = vec![0f32; *n];
        k_quants::matmul::<k_quants::BlockQ4K>((1, k, *n), &lhs, blocks, &mut out)?;
        outs.push(Tensor::from_vec(
            out,
            crate::qdot::with_last_dim(x, *n),
            x.device(),
        )?);
    }
    Ok(Some(outs))
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use super::{BlockQ4K, BlockQ6K, Q8K};
    use crate::qdot::{TILE_ROWS, hsum256};
    use std::arch::x86_64::*;

    /// How far ahead of the block being read its successors are prefetched, in bytes.
    const PREFETCH: usize = 1024;

    /// i16 lane indices into (scales 0..8, minimums 8..16): for the 64 values of 32-byte run
    /// `j`, lanes 0..16 take scale `2j` (low nibbles) and lanes 16..32 scale `2j + 1`.
    const SCALE_LANES: [[i16; 32]; 4] = lane_table(2, 16);
    /// For the 16 sums of 16 inputs: sum `i` belongs to sub-block `i / 2`, whose minimum is
    /// lane `8 + i / 2`.
    const MIN_LANES: [i16; 16] = {
        let mut lanes = [0i16; 16];
        let mut i = 0;
        while i < 16 {
            lanes[i] = (8 + i / 2) as i16;
            i += 1;
        }
        lanes
    };

    /// For each of the `R` input rows `r` (blocks `x[r·kb..(r + 1)·kb]`, `kb = w.len()`),
    /// `out[r]` = Σ over blocks of `d·Σ_sub scale·(q·y) − dmin·Σ_sub min·Σy`, in ggml's
    /// `vec_dot_q4_K_q8_K` arithmetic: the integer sums are exact, then scaled in f32. Each
    /// weight block is unpacked once for all the rows.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn dot_q4k<const R: usize>(
        w: &[BlockQ4K],
        x: &[Q8K],
        out: &mut [f32; TILE_ROWS],
    ) {
        let kb = w.len();
        assert!(R <= TILE_ROWS && x.len() >= R * kb);
        unsafe {
            let low = _mm512_set1_epi8(0x0f);
            let lanes: [__m512i; 4] =
                std::array::from_fn(|j| _mm512_loadu_si512(SCALE_LANES[j].as_ptr().cast()));
            let min_lanes = _mm256_loadu_si256(MIN_LANES.as_ptr().cast());
            let mut acc = [_mm512_setzero_ps(); R];
            let mut acc_min = [_mm256_setzero_ps(); R];
            for (b, wb) in w.iter().enumerate() {
                let ahead = (wb as *const BlockQ4K).cast::<i8>().add(PREFETCH);
                _mm_prefetch::<_MM_HINT_T0>(ahead);
                _mm_prefetch::<_MM_HINT_T0>(ahead.add(64));
                _mm_prefetch::<_MM_HINT_T0>(ahead.add(128));
                let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(
                    (wb as *const BlockQ4K).cast::<i32>(),
                )));
                let (wd, wdmin) = (
                    _mm_cvtss_f32(dm),
                    _mm_cvtss_f32(_mm_shuffle_ps::<1>(dm, dm)),
                );
                let scales_mins = _mm256_cvtepu8_epi16(unpack_scales(&wb.scales));
                let mins = _mm256_permutexvar_epi16(min_lanes, scales_mins);
                let scales = _mm512_castsi256_si512(scales_mins);
                let xs: [&Q8K; R] = std::array::from_fn(|r| x.get_unchecked(r * kb + b));

                let mut sum = [_mm512_setzero_si512(); R];
                for (j, lane) in lanes.iter().enumerate() {
                    let packed = _mm256_loadu_si256(wb.qs.as_ptr().add(32 * j).cast());
                    let both = _mm512_inserti64x4::<1>(
                        _mm512_castsi256_si512(packed),
                        _mm256_srli_epi16::<4>(packed),
                    );
                    let q = _mm512_and_si512(both, low);
                    let scale = _mm512_permutexvar_epi16(*lane, scales);
                    for (s, xb) in sum.iter_mut().zip(xs) {
                        let y = _mm512_loadu_si512(xb.qs.as_ptr().add(64 * j).cast());
                        // u4 × i8 pairs: at most 2·15·128 in magnitude, no i16 saturation.
                        let pairs = _mm512_maddubs_epi16(q, y);
                        *s = _mm512_dpwssd_epi32(*s, pairs, scale);
                    }
                }
                for r in 0..R {
                    let xb = xs[r];
                    let bsums = _mm256_loadu_si256(xb.bsums.as_ptr().cast());
                    let min_sum = _mm256_madd_epi16(bsums, mins);
                    acc_min[r] = _mm256_fmadd_ps(
                        _mm256_set1_ps(xb.d * wdmin),
                        _mm256_cvtepi32_ps(min_sum),
                        acc_min[r],
                    );
                    acc[r] = _mm512_fmadd_ps(
                        _mm512_set1_ps(xb.d * wd),
                        _mm512_cvtepi32_ps(sum[r]),
                        acc[r],
                    );
                }
            }
            for r in 0..R {
                out[r] = _mm512_reduce_add_ps(acc[r]) - hsum256(acc_min[r]);
            }
        }
    }

    /// i16 lane indices into a Q6_K block's sixteen scales: for the 64 values `64c..64c + 64`
    /// of half `h` (`Q6_LANES[2h + c]`), lane `l` covers values `2l` and `2l + 1`, of sub-block
    /// `8h + 4c + l / 8`.
    const Q6_LANES: [[i16; 32]; 4] = lane_table(4, 8);

    /// Four tables of 32 i16 lanes; lane `l` of table `i` is `stride·i + l / per`.
    const fn lane_table(stride: usize, per: usize) -> [[i16; 32]; 4] {
        let mut all = [[0i16; 32]; 4];
        let mut i = 0;
        while i < 4 {
            let mut l = 0;
            while l < 32 {
                all[i][l] = (stride * i + l / per) as i16;
                l += 1;
            }
            i += 1;
        }
        all
    }

    /// For each of the `R` input rows `r` (blocks `x[r·kb..(r + 1)·kb]`, `kb = w.len()`),
    /// `out[r]` = Σ over blocks of `d·Σ_sub scale·((q − 32)·y)`, in ggml's
    /// `vec_dot_q6_K_q8_K` arithmetic: `q·y` and `32·Σy` (from the input's sums of 16) are
    /// summed exactly as integers, then scaled in f32. Each weight block is unpacked once for
    /// all the rows.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn dot_q6k<const R: usize>(
        w: &[BlockQ6K],
        x: &[Q8K],
        out: &mut [f32; TILE_ROWS],
    ) {
        let kb = w.len();
        assert!(R <= TILE_ROWS && x.len() >= R * kb);
        unsafe {
            let low4 = _mm512_set1_epi8(0x0f);
            let low2 = _mm512_set1_epi8(0x03);
            // Shifts that bring the high bits of values 0..32 | 32..64 (then 64..96 | 96..128)
            // of a half down to bits 0..2.
            let shift_lo = _mm512_inserti64x4::<1>(_mm512_set1_epi16(0), _mm256_set1_epi16(2));
            let shift_hi = _mm512_inserti64x4::<1>(_mm512_set1_epi16(4), _mm256_set1_epi16(6));
            let lanes: [__m512i; 4] =
                std::array::from_fn(|i| _mm512_loadu_si512(Q6_LANES[i].as_ptr().cast()));
            let mut acc = [_mm512_setzero_ps(); R];
            let mut acc_offset = [_mm256_setzero_ps(); R];
            for (b, wb) in w.iter().enumerate() {
                let ahead = (wb as *const BlockQ6K).cast::<i8>().add(PREFETCH);
                _mm_prefetch::<_MM_HINT_T0>(ahead);
                _mm_prefetch::<_MM_HINT_T0>(ahead.add(64));
                _mm_prefetch::<_MM_HINT_T0>(ahead.add(128));
                _mm_prefetch::<_MM_HINT_T0>(ahead.add(192));
                let wd = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(wb.d as i32)));
                let scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(wb.scales.as_ptr().cast()));
                let scales = _mm512_castsi256_si512(scales16);
                let xs: [&Q8K; R] = std::array::from_fn(|r| x.get_unchecked(r * kb + b));

                let mut sum = [_mm512_setzero_si512(); R];
                for h in 0..2 {
                    let ql = _mm512_loadu_si512(wb.ql.as_ptr().add(64 * h).cast());
                    let qh = _mm256_loadu_si256(wb.qh.as_ptr().add(32 * h).cast());
                    let qh = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(qh), qh);
                    for (c, (bits, shift)) in
                        [(ql, shift_lo), (_mm512_srli_epi16::<4>(ql), shift_hi)]
                            .into_iter()
                            .enumerate()
                    {
                        let high = _mm512_and_si512(_mm512_srlv_epi16(qh, shift), low2);
                        let q = _mm512_or_si512(
                            _mm512_and_si512(bits, low4),
                            _mm512_slli_epi16::<4>(high),
                        );
                        let scale = _mm512_permutexvar_epi16(lanes[2 * h + c], scales);
                        for (s, xb) in sum.iter_mut().zip(xs) {
                            let y = _mm512_loadu_si512(xb.qs.as_ptr().add(128 * h + 64 * c).cast());
                            // u6 × i8 pairs: at most 2·63·128 in magnitude, no i16 saturation.
                            let pairs = _mm512_maddubs_epi16(q, y);
                            *s = _mm512_dpwssd_epi32(*s, pairs, scale);
                        }
                    }
                }
                for r in 0..R {
                    let xb = xs[r];
                    let d = xb.d * wd;
                    let bsums = _mm256_loadu_si256(xb.bsums.as_ptr().cast());
                    let offset = _mm256_madd_epi16(bsums, scales16);
                    acc_offset[r] = _mm256_fmadd_ps(
                        _mm256_set1_ps(32.0 * d),
                        _mm256_cvtepi32_ps(offset),
                        acc_offset[r],
                    );
                    acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sum[r]), acc[r]);
                }
            }
            for r in 0..R {
                out[r] = _mm512_reduce_add_ps(acc[r]) - hsum256(acc_offset[r]);
            }
        }
    }

    /// The eight 6-bit scales then the eight 6-bit minimums of a Q4_K block, one per byte
    /// (ggml's `get_scale_min_k4` for all eight sub-blocks at once).
    #[inline(always)]
    pub(crate) unsafe fn unpack_scales(packed: &[u8; 12]) -> __m128i {
        const KMASK1: u32 = 0x3f3f_3f3f;
        const KMASK2: u32 = 0x0f0f_0f0f;
        const KMASK3: u32 = 0x0303_0303;
        let word = |i: usize| {
            u32::from_le_bytes([
                packed[4 * i],
                packed[4 * i + 1],
                packed[4 * i + 2],
                packed[4 * i + 3],
            ])
        };
        let (u0, u1, u2) = (word(0), word(1), word(2));
        let scales_lo = u0 & KMASK1;
        let scales_hi = (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4);
        let mins_lo = u1 & KMASK1;
        let mins_hi = ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4);
        unsafe {
            _mm_set_epi32(
                mins_hi as i32,
                mins_lo as i32,
                scales_hi as i32,
                scales_lo as i32,
            )
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::test_values as values;
    use candle_core::Device;
    use candle_core::Module;
    use candle_core::quantized::QMatMul;

    /// For Q4_K and Q6_K, the products of two matrices (48 and 20 rows) with one input row, and
    /// with seven (a tile of four and one of three), equal candle's and are close to the exact
    /// products of the dequantized weights; so does candle's compact Q4_K kernel, used for one
    /// row without VNNI. Other types are left to candle.
    #[test]
    fn products_equal_candles() {
        for rows in [1, 7] {
            products_equal_candles_for(rows);
        }
    }

    /// Asserts that `ours`, the products of `x` (1, m, k) with `q` (the quantized `w`), equal
    /// candle's own to 1e-4 of the largest output and the exact products of the dequantized
    /// weights to 1% of it (Q8_K rounding of `x`). Returns candle's products and that largest
    /// output.
    pub(crate) fn assert_like_candle(
        w: &Tensor,
        q: &QTensor,
        x: &Tensor,
        ours: &Tensor,
    ) -> (Vec<f32>, f32) {
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let dtype = q.dtype();
        let n = q.shape().dims2().unwrap().0;
        let m = x.dims()[1];
        assert_eq!(ours.dims(), &[1, m, n]);
        let same = QTensor::quantize(w, dtype).unwrap();
        let candle = flat(&QMatMul::from_qtensor(same).unwrap().forward(x).unwrap());
        let exact_w = q.dequantize(&Device::Cpu).unwrap();
        let exact = flat(&x.broadcast_matmul(&exact_w.t().unwrap()).unwrap());
        let scale = exact.iter().fold(0f32, |a, v| a.max(v.abs()));
        for ((o, t), e) in flat(ours).iter().zip(&candle).zip(&exact) {
            assert!(
                (o - t).abs() <= 1e-4 * scale,
                "{dtype:?}: ours {o}, candle {t}"
            );
            assert!(
                (o - e).abs() <= 0.01 * scale,
                "{dtype:?}: ours {o}, exact {e}"
            );
        }
        (candle, scale)
    }

    fn products_equal_candles_for(rows: usize) {
        let cpu = Device::Cpu;
        let k = 512;
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let x = Tensor::from_vec(values(rows * k, 2), (1, rows, k), &cpu).unwrap();
        let ws: Vec<Tensor> = [(48, 1), (20, 4)]
            .into_iter()
            .map(|(n, seed)| Tensor::from_vec(values(n * k, seed), (n, k), &cpu).unwrap())
            .collect();
        for dtype in [GgmlDType::Q4K, GgmlDType::Q6K] {
            let qs: Vec<QTensor> = ws
                .iter()
                .map(|w| QTensor::quantize(w, dtype).unwrap())
                .collect();
            let refs: Vec<&QTensor> = qs.iter().collect();
            let ours = match stored_products(&refs, &x).unwrap() {
                Some(ours) => ours,
                // Without VNNI, only one Q4_K row is handled here.
                None if Isa::detect() != Isa::Vnni && (rows > 1 || dtype == GgmlDType::Q6K) => {
                    continue;
                }
                None => panic!("{rows} {dtype:?} rows are handled"),
            };
            let data: Vec<_> = qs
                .iter()
                .map(|q| (q.data().unwrap(), q.shape().dims2().unwrap().0))
                .collect();
            let compact = match dtype {
                GgmlDType::Q4K if rows == 1 => Some(candle_rows(&data, &x, k).unwrap().unwrap()),
                _ => None,
            };
            for (i, ((w, q), o)) in ws.iter().zip(&qs).zip(&ours).enumerate() {
                let (candle, scale) = assert_like_candle(w, q, &x, o);
                if let Some(compact) = &compact {
                    for (c, t) in flat(&compact[i]).iter().zip(&candle) {
                        assert!((c - t).abs() <= 1e-4 * scale, "compact {c}, candle {t}");
                    }
                }
            }
        }
        let q8 = QTensor::quantize(&ws[0], GgmlDType::Q8_0).unwrap();
        assert!(stored_products(&[&q8], &x).unwrap().is_none());
    }

    /// Where panels start to pay: the time of Qwen2.5-1.5B's Q, K and V projections (Q4_K,
    /// 2,048 × 1,536) for a few input row counts, through the row kernels and through panels,
    /// alternated, best of 9. Informs [`crate::panel::MIN_ROWS`].
    #[test]
    #[ignore = "benchmark; run with --ignored --nocapture"]
    fn panel_crossover() {
        if Isa::detect() != Isa::Vnni {
            eprintln!("skipped: no AVX-512 VNNI on this CPU");
            return;
        }
        let cpu = Device::Cpu;
        let k = 1536;
        let qs: Vec<QTensor> = [(1536, 1), (256, 2), (256, 3)]
            .into_iter()
            .map(|(n, seed)| {
                let w = Tensor::from_vec(values(n * k, seed), (n, k), &cpu).unwrap();
                QTensor::quantize(&w, GgmlDType::Q4K).unwrap()
            })
            .collect();
        let refs: Vec<&QTensor> = qs.iter().collect();
        println!("| input rows | row kernels µs | panels µs | panels / rows |");
        for m in [4, 8, 16, 24, 32, 48, 64, 128, 512] {
            let x = Tensor::from_vec(values(m * k, 7), (m, k), &cpu).unwrap();
            let mut best = [f64::MAX; 2];
            for _ in 0..9 {
                for (i, from) in [usize::MAX, 0].into_iter().enumerate() {
                    let t = std::time::Instant::now();
                    stored_products_from(&refs, &x, from).unwrap().unwrap();
                    best[i] = best[i].min(t.elapsed().as_secs_f64() * 1e6);
                }
            }
            println!(
                "| {m} | {:.0} | {:.0} | {:.2} |",
                best[0],
                best[1],
                best[1] / best[0]
            );
        }
    }
}

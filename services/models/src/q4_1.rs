//! Products with Q4_1 matrices on the CPU, read as they are stored.
//!
//! candle 0.11 multiplies Q4_1 with scalar loops only, so quire used to convert SmolLM2's
//! Q4_1 matrices to Q8_0 as it loaded them: 1.7× their bytes, and candle then kept a
//! repacked copy of those beside them. Here the weights stay as the GGUF stores them. The
//! input rows are quantized once per call to 8 bits in blocks of 32 with the block's sum
//! (ggml's Q8_1, rounded as llama.cpp rounds it), and each output is llama.cpp's
//! `Σ_blocks d_w·d_x·Σ q_w·q_x + m_w·s_x`. The integer products run on AVX-512 VNNI or AVX2,
//! chosen at run time, else on a scalar loop that sums the same integers.
//!
//! The work runs through [`crate::qdot`]: a prompt reuses each unpacked weight block for four
//! of its rows.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Result, Tensor};
use half::f16;

use crate::qdot::{Isa, TILE_ROWS};

/// Values per block, for both the weights and the quantized input.
const QK: usize = 32;

/// ggml's `block_q4_1`: scale `d` and minimum `m` as f16 bits, then 32 unsigned 4-bit values
/// `q` (value `j` in the low nibble of byte `j`, value `j + 16` in its high nibble); each
/// weight is `d·q + m`.
#[repr(C)]
#[derive(Clone, Copy)]
struct BlockQ4_1 {
    d: u16,
    m: u16,
    qs: [u8; 16],
}

/// 32 input values as `d·q`, with `s = d·Σq` (ggml's `block_q8_1`). `d` and `s` hold f16
/// values, as llama.cpp stores them, widened to f32.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct BlockQ8_1 {
    d: f32,
    s: f32,
    qs: [i8; QK],
}

/// `x · wᵢᵀ` for each `wᵢ` (nᵢ, k) in Q4_1 and `x` (…, k) in f32, all on the CPU: one tensor
/// (…, nᵢ) per matrix, in order. `x` is quantized once for all of them. `None` when those
/// conditions do not hold or `k` is not a multiple of 32; the caller then uses candle.
pub(crate) fn matmul(ws: &[&QTensor], x: &Tensor) -> Result<Option<Vec<Tensor>>> {
    let Some(stored) = crate::qdot::stored(ws, x, GgmlDType::Q4_1, QK)? else {
        return Ok(None);
    };
    let kb = x.dims().last().copied().unwrap_or(0) / QK;
    let mut parts: Vec<(&[BlockQ4_1], usize)> = Vec::with_capacity(ws.len());
    for (bytes, n) in &stored {
        match blocks(bytes, n * kb) {
            Some(b) => parts.push((b, *n)),
            None => return Ok(None),
        }
    }
    let isa = Isa::detect();
    crate::qdot::products(&parts, x, QK, quantize_row, |w, x, rows, out| {
        dot_rows(w, x, rows, out, isa)
    })
    .map(Some)
}

/// The bytes of a CPU Q4_1 tensor as its `len` blocks; `None` when the length or alignment
/// does not fit.
fn blocks(bytes: &[u8], len: usize) -> Option<&[BlockQ4_1]> {
    // SAFETY: `BlockQ4_1` is `repr(C)` u16s and u8s, valid for any bytes.
    unsafe { crate::qdot::as_blocks(bytes, len) }
}

/// Quantizes one row (a multiple of 32 values) as llama.cpp's `quantize_row_q8_1` does:
/// `d = max|x| / 127`, `q = round_half_even(x·127 / max|x|)`, `s = d·Σq`, then `d` and `s`
/// rounded to f16.
fn quantize_row(x: &[f32], out: &mut [BlockQ8_1]) {
    for (xs, b) in x.chunks_exact(QK).zip(out) {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in b.qs.iter_mut().zip(xs) {
            let r = (v * id).round_ties_even() as i32;
            *q = r as i8;
            sum += r;
        }
        b.d = f16::from_f32(d).to_f32();
        b.s = f16::from_f32(d * sum as f32).to_f32();
    }
}

/// `out[r]` = the product of weight row `w` (`kb` blocks) and input row `r` of `x` (`rows`
/// rows of `kb` blocks, at most [`TILE_ROWS`]).
fn dot_rows(w: &[BlockQ4_1], x: &[BlockQ8_1], rows: usize, out: &mut [f32; TILE_ROWS], isa: Isa) {
    match isa {
        Isa::Scalar => {
            for (r, o) in out.iter_mut().take(rows).enumerate() {
                *o = dot_scalar(w, &x[r * w.len()..(r + 1) * w.len()]);
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Vnni => {
            let vnni = isa == Isa::Vnni;
            // SAFETY: `isa` was detected on this CPU (or listed by `Isa::available`), so the
            // target features of the kernel called are present; `x` holds `rows` × `w.len()`
            // blocks.
            unsafe {
                match (rows, vnni) {
                    (1, false) => x86::dot::<1>(w, x, out),
                    (2, false) => x86::dot::<2>(w, x, out),
                    (3, false) => x86::dot::<3>(w, x, out),
                    (_, false) => x86::dot::<4>(w, x, out),
                    (1, true) => x86::dot_vnni::<1>(w, x, out),
                    (2, true) => x86::dot_vnni::<2>(w, x, out),
                    (3, true) => x86::dot_vnni::<3>(w, x, out),
                    (_, true) => x86::dot_vnni::<4>(w, x, out),
                }
            }
        }
    }
}

/// One weight row times one input row, summed as the vector kernels sum per block.
fn dot_scalar(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
    let (mut acc, mut mins) = (0f32, 0f32);
    for (wb, xb) in w.iter().zip(x) {
        let (lo, hi) = xb.qs.split_at(16);
        let sum: i32 = wb
            .qs
            .iter()
            .zip(lo.iter().zip(hi))
            .map(|(&q, (&a, &b))| (q & 15) as i32 * a as i32 + (q >> 4) as i32 * b as i32)
            .sum();
        acc += f16::from_bits(wb.d).to_f32() * xb.d * sum as f32;
        mins += f16::from_bits(wb.m).to_f32() * xb.s;
    }
    acc + mins
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{BlockQ4_1, BlockQ8_1, TILE_ROWS};
    use crate::qdot::hsum256;
    use std::arch::x86_64::*;

    /// The 32 weights of a block as unsigned bytes in value order, and its `d` and `m`.
    #[inline(always)]
    unsafe fn unpack(wb: &BlockQ4_1) -> (__m256i, f32, f32) {
        unsafe {
            let packed = _mm_loadu_si128(wb.qs.as_ptr().cast());
            let low = _mm_set1_epi8(0x0f);
            let lo = _mm_and_si128(packed, low);
            let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low);
            let dm_bits = std::ptr::read_unaligned((wb as *const BlockQ4_1).cast::<i32>());
            let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(dm_bits));
            let d = _mm_cvtss_f32(dm);
            let m = _mm_cvtss_f32(_mm_shuffle_ps::<1>(dm, dm));
            (_mm256_set_m128i(hi, lo), d, m)
        }
    }

    /// The kernel body, with the integer product `prod(q, y)` (8 lanes of i32 sums).
    #[inline(always)]
    unsafe fn dot_with<const R: usize>(
        w: &[BlockQ4_1],
        x: &[BlockQ8_1],
        out: &mut [f32; TILE_ROWS],
        prod: impl Fn(__m256i, __m256i) -> __m256i,
    ) {
        let kb = w.len();
        debug_assert!(x.len() >= R * kb);
        unsafe {
            let mut acc = [_mm256_setzero_ps(); R];
            let mut mins = [0f32; R];
            for (b, wb) in w.iter().enumerate() {
                let (q, d, m) = unpack(wb);
                for r in 0..R {
                    let xb = x.get_unchecked(r * kb + b);
                    let y = _mm256_loadu_si256(xb.qs.as_ptr().cast());
                    let p = _mm256_cvtepi32_ps(prod(q, y));
                    acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * xb.d), p, acc[r]);
                    mins[r] += m * xb.s;
                }
            }
            for r in 0..R {
                out[r] = hsum256(acc[r]) + mins[r];
            }
        }
    }

    /// AVX2: unsigned × signed byte pairs summed to i16 (at most 2·15·127, no overflow),
    /// then to i32.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot<const R: usize>(
        w: &[BlockQ4_1],
        x: &[BlockQ8_1],
        out: &mut [f32; TILE_ROWS],
    ) {
        unsafe {
            let ones = _mm256_set1_epi16(1);
            dot_with::<R>(w, x, out, |q, y| {
                _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), ones)
            })
        }
    }

    /// AVX-512 VNNI on 256-bit vectors: four byte products summed to i32 in one instruction.
    #[target_feature(enable = "avx512f,avx512vl,avx512vnni,avx2,fma,f16c")]
    pub(super) unsafe fn dot_vnni<const R: usize>(
        w: &[BlockQ4_1],
        x: &[BlockQ8_1],
        out: &mut [f32; TILE_ROWS],
    ) {
        unsafe {
            dot_with::<R>(w, x, out, |q, y| {
                _mm256_dpbusd_epi32(_mm256_setzero_si256(), q, y)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values as values;
    use candle_core::Device;

    /// For 1 to 6 input rows (partial tiles) and two matrices of 13 and 5 rows (partial
    /// groups), every instruction set gives the scalar loop's values and stays within the
    /// input's 8-bit rounding of the exact product of the dequantized weights.
    #[test]
    fn products_match_the_dequantized_weights_on_every_instruction_set() {
        let cpu = Device::Cpu;
        let k = 96;
        let w1 = Tensor::from_vec(values(13 * k, 1), (13, k), &cpu).unwrap();
        let w2 = Tensor::from_vec(values(5 * k, 2), (5, k), &cpu).unwrap();
        let q1 = QTensor::quantize(&w1, GgmlDType::Q4_1).unwrap();
        let q2 = QTensor::quantize(&w2, GgmlDType::Q4_1).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for m in 1..=6 {
            let x = Tensor::from_vec(values(m * k, 3 + m), (1, m, k), &cpu).unwrap();
            let ours = matmul(&[&q1, &q2], &x).unwrap().expect("Q4_1 is handled");
            for (q, y) in [&q1, &q2].into_iter().zip(&ours) {
                let n = q.shape().dims2().unwrap().0;
                assert_eq!(y.dims(), &[1, m, n]);
                let exact_w = q.dequantize(&cpu).unwrap();
                let exact = flat(&x.broadcast_matmul(&exact_w.t().unwrap()).unwrap());
                let scale = exact.iter().fold(0f32, |a, v| a.max(v.abs()));
                for (o, e) in flat(y).iter().zip(&exact) {
                    assert!((o - e).abs() <= 0.01 * scale, "m {m}: ours {o}, exact {e}");
                }
            }

            let xs = flat(&x);
            let mut xq = vec![BlockQ8_1::default(); m * k / QK];
            for (row, out) in xs.chunks_exact(k).zip(xq.chunks_exact_mut(k / QK)) {
                quantize_row(row, out);
            }
            let data = q1.data().unwrap();
            let w = blocks(&data, 13 * k / QK).unwrap();
            let by_isa: Vec<Vec<f32>> = Isa::available()
                .into_iter()
                .map(|isa| {
                    let mut out = vec![vec![0f32; m * 13]];
                    let dot = |w: &[BlockQ4_1], x: &[BlockQ8_1], rows, o: &mut _| {
                        dot_rows(w, x, rows, o, isa)
                    };
                    crate::qdot::run(&[(w, 13)], &xq, m, k / QK, &mut out, dot);
                    out.remove(0)
                })
                .collect();
            for other in &by_isa[1..] {
                for (a, b) in by_isa[0].iter().zip(other) {
                    assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{a} vs {b}");
                }
            }
        }
    }

    /// The input is rounded as llama.cpp rounds it: halves to even, `d` and `s` to f16.
    #[test]
    fn input_blocks_are_rounded_as_llama_cpp_does() {
        let mut x = vec![0f32; QK];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -3.5;
        x[3] = 0.4;
        let mut b = [BlockQ8_1::default()];
        quantize_row(&x, &mut b);
        assert_eq!(&b[0].qs[..5], &[127, 2, -4, 0, 0]);
        assert_eq!(b[0].d, 1.0);
        assert_eq!(b[0].s, 125.0);
        let mut zeros = [BlockQ8_1::default()];
        quantize_row(&[0f32; QK], &mut zeros);
        assert_eq!((zeros[0].d, zeros[0].s, zeros[0].qs), (0.0, 0.0, [0; QK]));
    }

    /// Other weight types, and inner sizes that are not whole blocks, are left to candle.
    #[test]
    fn other_types_and_shapes_are_declined() {
        let cpu = Device::Cpu;
        let w = Tensor::from_vec(values(4 * 64, 1), (4, 64), &cpu).unwrap();
        let x = Tensor::from_vec(values(64, 2), (1, 64), &cpu).unwrap();
        let q8 = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        assert!(matmul(&[&q8], &x).unwrap().is_none());
        let q41 = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
        let short = Tensor::from_vec(values(32, 2), (1, 32), &cpu).unwrap();
        assert!(matmul(&[&q41], &short).unwrap().is_none());
        assert!(matmul(&[&q41, &q8], &x).unwrap().is_none());
    }
}

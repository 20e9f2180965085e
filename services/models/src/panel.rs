//! A prompt's products with Q4_K and Q6_K matrices on AVX-512 VNNI, from the weights as
//! stored, with no second copy of them kept.
//!
//! candle 0.11 reads prompts through a copy of every matrix repacked into 16-row tiles, kept
//! for the life of the process beside the stored weights. Here each work item unpacks 16
//! weight rows at a time into a panel of the same shape, used for every input row of the call
//! and then dropped: one byte per weight in VNNI's order (for each run of four values, the 16
//! rows side by side), with each (row, sub-block) scale and offset in f32. One `vpdpbusd`
//! then multiplies four values of 16 weight rows with one input row, and a sub-block's
//! integer sums are scaled once. A panel is at most 16 × k bytes plus its scales (24 KiB at
//! k = 1,536), so it stays in the core's cache while every input row passes over it.
//!
//! The input rows are quantized to Q8_K with candle's quantizer, as for one row
//! ([`crate::gemv`]); the results equal candle's to f32 rounding.

use candle_core::quantized::k_quants::QK_K;
use candle_core::{Result, Tensor};

use crate::gemv::{BlockQ4K, BlockQ6K, Q8K};
use crate::qdot::Shared;

/// Weight rows per panel: one 512-bit register of i32 lanes.
const PANEL: usize = 16;
/// Input rows that share each load of the panel.
const TILE: usize = 4;
/// Four-value runs per block of 256 values.
const RUNS: usize = QK_K / 4;
/// The fewest input rows for which unpacking panels pays; fewer go through [`crate::gemv`]'s
/// row kernels. For Qwen2.5-1.5B's Q, K and V projections on the 2-core AMD EPYC
/// (`gemv::tests::panel_crossover`), panels took 1.21× the row kernels' time at 8 rows,
/// 0.81× at 16 and 0.43× at 512.
pub(crate) const MIN_ROWS: usize = 16;

/// The stored block type of a matrix.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Kind {
    /// 256 values in eight sub-blocks of 32, `d·scale·q − dmin·min`, q in 0..16.
    Q4K,
    /// 256 values in sixteen sub-blocks of 16, `d·scale·(q − 32)`, q in 0..64.
    Q6K,
}

impl Kind {
    /// Sub-blocks per block, each with its own scale.
    const fn subs(self) -> usize {
        match self {
            Kind::Q4K => 8,
            Kind::Q6K => 16,
        }
    }

    /// Bytes per stored block.
    const fn block_bytes(self) -> usize {
        match self {
            Kind::Q4K => std::mem::size_of::<BlockQ4K>(),
            Kind::Q6K => std::mem::size_of::<BlockQ6K>(),
        }
    }
}

/// 64 bytes on a cache line: one run of four values of each of the panel's 16 rows.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

/// 16 rows' unpacked values, scales and offsets, for `kb` blocks.
struct Panel {
    /// `[block][run][row][4]`: value `4·run + i` of each row's block.
    values: Vec<Line>,
    /// `[block][sub-block][row]`: the multiplier of a sub-block's integer sum.
    scales: Vec<[f32; PANEL]>,
    /// `[block][sub-block][row]`: the multiplier of the input's sum over the sub-block,
    /// subtracted (`dmin·min` for Q4_K, `32·d·scale` for Q6_K).
    offsets: Vec<[f32; PANEL]>,
}

impl Panel {
    fn new(kind: Kind, kb: usize) -> Panel {
        Panel {
            values: vec![Line([0; 64]); kb * RUNS],
            scales: vec![[0.0; PANEL]; kb * kind.subs()],
            offsets: vec![[0.0; PANEL]; kb * kind.subs()],
        }
    }
}

/// `x · wᵢᵀ` for each part `(wᵢ, nᵢ)`, where `wᵢ` holds the stored bytes of nᵢ rows of `kind`
/// blocks and `x` (…, k) is f32 on the CPU with k a whole number of blocks; one tensor
/// (…, nᵢ) per part. The caller has checked that the CPU has AVX-512 VNNI (`Isa::Vnni`).
pub(crate) fn products(kind: Kind, parts: &[(&[u8], usize)], x: &Tensor) -> Result<Vec<Tensor>> {
    let k = x.dims().last().copied().unwrap_or(0);
    if k == 0 || !k.is_multiple_of(QK_K) {
        candle_core::bail!("an input row of {k} values is not whole blocks of {QK_K}");
    }
    let kb = k / QK_K;
    for &(w, n) in parts {
        if w.len() != n * kb * kind.block_bytes() {
            candle_core::bail!("a {kind:?} matrix of {n} rows × {k} has {} bytes", w.len());
        }
    }
    let m: usize = x.dims().iter().rev().skip(1).product();
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    let (xq, sums) = quantize_rows(&xs, m, kb, kind.subs());
    let mut outs: Vec<Vec<f32>> = parts.iter().map(|&(_, n)| vec![0f32; m * n]).collect();
    #[cfg(target_arch = "x86_64")]
    {
        let ptrs: Vec<Shared<f32>> = outs.iter_mut().map(|o| Shared(o.as_mut_ptr())).collect();
        let mut first = Vec::with_capacity(parts.len() + 1);
        let mut items = 0;
        for &(_, n) in parts {
            first.push(items);
            items += n.div_ceil(PANEL);
        }
        first.push(items);
        candle_core::utils::barrier_pool().execute_chunked(items, |range| {
            let mut panel = Panel::new(kind, kb);
            for i in range {
                let p = first.partition_point(|&f| f <= i) - 1;
                let (w, n) = parts[p];
                let j0 = (i - first[p]) * PANEL;
                let rows = PANEL.min(n - j0);
                let row_bytes = kb * kind.block_bytes();
                let stored = &w[j0 * row_bytes..(j0 + rows) * row_bytes];
                // SAFETY: the caller checked for AVX-512 VNNI; `stored` holds `rows` rows of
                // `kb` blocks; each output element (r, j0 + c), c < rows, is written by the
                // item of panel `j0 / PANEL` only, inside part `p`'s m × n output.
                unsafe {
                    x86::pack(kind, stored, rows, kb, &mut panel);
                    x86::multiply(kind, &panel, &xq, &sums, m, kb, |r, out| {
                        let dst = ptrs[p].0.add(r * n + j0);
                        std::ptr::copy_nonoverlapping(out.as_ptr(), dst, rows);
                    });
                }
            }
        });
    }
    #[cfg(not(target_arch = "x86_64"))]
    candle_core::bail!("panel products need AVX-512 VNNI");
    outs.into_iter()
        .zip(parts)
        .map(|(out, &(_, n))| Tensor::from_vec(out, crate::qdot::with_last_dim(x, n), x.device()))
        .collect()
}

/// The `m` rows of `xs` (`kb` blocks of 256 each) quantized to Q8_K with candle's quantizer,
/// and each row's sums over every block's `subs` sub-blocks, times the block's scale. Rows
/// are spread over candle's pool.
fn quantize_rows(xs: &[f32], m: usize, kb: usize, subs: usize) -> (Vec<Q8K>, Vec<f32>) {
    let k = kb * QK_K;
    let mut xq = vec![Q8K::default(); m * kb];
    let mut sums = vec![0f32; m * kb * subs];
    if k == 0 || xs.len() < m * k {
        return (xq, sums);
    }
    let (qs, ss) = (Shared(xq.as_mut_ptr()), Shared(sums.as_mut_ptr()));
    candle_core::utils::barrier_pool().execute_chunked(m, |rows| {
        for r in rows {
            // SAFETY: row `r`'s blocks and sums lie inside `xq` and `sums` (m rows of each),
            // and only the item holding row `r` writes them.
            let (q, s) = unsafe { (qs.slice(r * kb, kb), ss.slice(r * kb * subs, kb * subs)) };
            crate::gemv::quantize_row(&xs[r * k..(r + 1) * k], q);
            for (block, s) in q.iter().zip(s.chunks_exact_mut(subs)) {
                let per = block.bsums.len() / subs;
                for (out, sixteens) in s.iter_mut().zip(block.bsums.chunks_exact(per)) {
                    *out = block.d * sixteens.iter().map(|&v| v as i32).sum::<i32>() as f32;
                }
            }
        }
    });
    (xq, sums)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{BlockQ4K, BlockQ6K, Kind, Line, PANEL, Panel, Q8K, RUNS, TILE};
    use std::arch::x86_64::*;
    use std::ptr::{addr_of, read_unaligned};

    /// Unpacks `rows` (at most 16) rows of `kb` stored blocks into `panel`; rows past `rows`
    /// get zero values and scales.
    ///
    /// # Safety
    /// The CPU must have AVX-512 (F, BW) and F16C; `stored` holds `rows · kb` blocks of
    /// `kind`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub(super) unsafe fn pack(
        kind: Kind,
        stored: &[u8],
        rows: usize,
        kb: usize,
        panel: &mut Panel,
    ) {
        let bytes = kind.block_bytes();
        let subs = kind.subs();
        assert!(rows <= PANEL && stored.len() >= rows * kb * bytes);
        unsafe {
            for b in 0..kb {
                let block = |r: usize| stored.as_ptr().add((r * kb + b) * bytes);
                // Four registers per row, each 64 consecutive values (16 runs of four).
                for part in 0..4 {
                    let mut regs = [_mm512_setzero_si512(); PANEL];
                    for (r, reg) in regs.iter_mut().enumerate().take(rows) {
                        *reg = match kind {
                            Kind::Q4K => q4k_values(block(r), part),
                            Kind::Q6K => q6k_values(block(r), part),
                        };
                    }
                    transpose(&mut regs);
                    for (run, reg) in regs.iter().enumerate() {
                        let line: *mut Line = &mut panel.values[b * RUNS + 16 * part + run];
                        _mm512_store_si512(line.cast(), *reg);
                    }
                }
                for r in 0..PANEL {
                    for s in 0..subs {
                        panel.scales[b * subs + s][r] = 0.0;
                        panel.offsets[b * subs + s][r] = 0.0;
                    }
                    if r >= rows {
                        continue;
                    }
                    match kind {
                        Kind::Q4K => {
                            let p = block(r).cast::<BlockQ4K>();
                            let d = f16(read_unaligned(addr_of!((*p).d)));
                            let dmin = f16(read_unaligned(addr_of!((*p).dmin)));
                            // Eight scales, then eight minimums, one per byte.
                            let mut unpacked = [0u8; 16];
                            _mm_storeu_si128(
                                unpacked.as_mut_ptr().cast(),
                                crate::gemv::x86::unpack_scales(&read_unaligned(addr_of!(
                                    (*p).scales
                                ))),
                            );
                            for s in 0..8 {
                                panel.scales[b * 8 + s][r] = d * unpacked[s] as f32;
                                panel.offsets[b * 8 + s][r] = dmin * unpacked[8 + s] as f32;
                            }
                        }
                        Kind::Q6K => {
                            let p = block(r).cast::<BlockQ6K>();
                            let d = f16(read_unaligned(addr_of!((*p).d)));
                            let scales = read_unaligned(addr_of!((*p).scales));
                            for (s, &scale) in scales.iter().enumerate() {
                                let scale = d * scale as f32;
                                panel.scales[b * 16 + s][r] = scale;
                                panel.offsets[b * 16 + s][r] = 32.0 * scale;
                            }
                        }
                    }
                }
            }
        }
    }

    /// f16 bits as f32.
    fn f16(bits: u16) -> f32 {
        half::f16::from_bits(bits).to_f32()
    }

    /// Values `64·part..64·part + 64` of a Q4_K block, one byte each (0..16).
    #[inline(always)]
    unsafe fn q4k_values(block: *const u8, part: usize) -> __m512i {
        unsafe {
            // Each 32-byte run of `qs` has 32 values in its low nibbles and the next 32 in its
            // high ones.
            let qs = addr_of!((*block.cast::<BlockQ4K>()).qs).cast::<u8>();
            let packed = _mm256_loadu_si256(qs.add(32 * part).cast());
            let both = _mm512_inserti64x4::<1>(
                _mm512_castsi256_si512(packed),
                _mm256_srli_epi16::<4>(packed),
            );
            _mm512_and_si512(both, _mm512_set1_epi8(0x0f))
        }
    }

    /// Values `64·part..64·part + 64` of a Q6_K block, one byte each (0..64): the low four
    /// bits from `ql`, the high two from `qh`, laid out as in ggml's `dequantize_row_q6_K`.
    #[inline(always)]
    unsafe fn q6k_values(block: *const u8, part: usize) -> __m512i {
        unsafe {
            let (h, c) = (part / 2, part % 2);
            let block = block.cast::<BlockQ6K>();
            let ql = _mm512_loadu_si512(addr_of!((*block).ql).cast::<u8>().add(64 * h).cast());
            let bits = if c == 0 {
                ql
            } else {
                _mm512_srli_epi16::<4>(ql)
            };
            let qh = _mm256_loadu_si256(addr_of!((*block).qh).cast::<u8>().add(32 * h).cast());
            let qh = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(qh), qh);
            // Values 0..32 of the 64 take bits (4c), 32..64 bits (4c + 2), of qh.
            let shift = _mm512_inserti64x4::<1>(
                _mm512_set1_epi16(4 * c as i16),
                _mm256_set1_epi16(4 * c as i16 + 2),
            );
            let high = _mm512_and_si512(_mm512_srlv_epi16(qh, shift), _mm512_set1_epi8(0x03));
            _mm512_or_si512(
                _mm512_and_si512(bits, _mm512_set1_epi8(0x0f)),
                _mm512_slli_epi16::<4>(high),
            )
        }
    }

    /// Transposes a 16 × 16 matrix of 32-bit elements held one row per register.
    #[inline(always)]
    unsafe fn transpose(a: &mut [__m512i; PANEL]) {
        unsafe {
            let mut b = [_mm512_setzero_si512(); PANEL];
            for i in 0..8 {
                b[2 * i] = _mm512_unpacklo_epi32(a[2 * i], a[2 * i + 1]);
                b[2 * i + 1] = _mm512_unpackhi_epi32(a[2 * i], a[2 * i + 1]);
            }
            // c[4i + k], 128-bit lane l: column 4l + k of rows 4i..4i + 4.
            let mut c = [_mm512_setzero_si512(); PANEL];
            for i in 0..4 {
                c[4 * i] = _mm512_unpacklo_epi64(b[4 * i], b[4 * i + 2]);
                c[4 * i + 1] = _mm512_unpackhi_epi64(b[4 * i], b[4 * i + 2]);
                c[4 * i + 2] = _mm512_unpacklo_epi64(b[4 * i + 1], b[4 * i + 3]);
                c[4 * i + 3] = _mm512_unpackhi_epi64(b[4 * i + 1], b[4 * i + 3]);
            }
            for k in 0..4 {
                let e0 = _mm512_shuffle_i32x4::<0b01_00_01_00>(c[k], c[4 + k]);
                let e1 = _mm512_shuffle_i32x4::<0b11_10_11_10>(c[k], c[4 + k]);
                let e2 = _mm512_shuffle_i32x4::<0b01_00_01_00>(c[8 + k], c[12 + k]);
                let e3 = _mm512_shuffle_i32x4::<0b11_10_11_10>(c[8 + k], c[12 + k]);
                a[k] = _mm512_shuffle_i32x4::<0b10_00_10_00>(e0, e2);
                a[4 + k] = _mm512_shuffle_i32x4::<0b11_01_11_01>(e0, e2);
                a[8 + k] = _mm512_shuffle_i32x4::<0b10_00_10_00>(e1, e3);
                a[12 + k] = _mm512_shuffle_i32x4::<0b11_01_11_01>(e1, e3);
            }
        }
    }

    /// Multiplies `panel` with each of the `m` quantized input rows (`kb` blocks of `xq` and
    /// `kb · subs` sub-block sums of `sums` each), calling `write(row, products of the
    /// panel's 16 rows)`.
    ///
    /// # Safety
    /// The CPU must have AVX-512 (F, BW, VL) with VNNI; `panel` is packed for `kb` blocks.
    pub(super) unsafe fn multiply(
        kind: Kind,
        panel: &Panel,
        xq: &[Q8K],
        sums: &[f32],
        m: usize,
        kb: usize,
        mut write: impl FnMut(usize, &[f32; PANEL]),
    ) {
        let mut r0 = 0;
        while r0 < m {
            let rows = TILE.min(m - r0);
            let x = &xq[r0 * kb..(r0 + rows) * kb];
            let s = &sums[r0 * kb * kind.subs()..(r0 + rows) * kb * kind.subs()];
            let mut out = [[0f32; PANEL]; TILE];
            // SAFETY: the caller's promises; `x` and `s` hold `rows` rows.
            unsafe {
                match (kind, rows) {
                    (Kind::Q4K, 4) => tile::<8, 4>(panel, x, s, kb, &mut out),
                    (Kind::Q4K, 3) => tile::<8, 3>(panel, x, s, kb, &mut out),
                    (Kind::Q4K, 2) => tile::<8, 2>(panel, x, s, kb, &mut out),
                    (Kind::Q4K, _) => tile::<8, 1>(panel, x, s, kb, &mut out),
                    (Kind::Q6K, 4) => tile::<16, 4>(panel, x, s, kb, &mut out),
                    (Kind::Q6K, 3) => tile::<16, 3>(panel, x, s, kb, &mut out),
                    (Kind::Q6K, 2) => tile::<16, 2>(panel, x, s, kb, &mut out),
                    (Kind::Q6K, _) => tile::<16, 1>(panel, x, s, kb, &mut out),
                }
            }
            for (r, o) in out.iter().take(rows).enumerate() {
                write(r0 + r, o);
            }
            r0 += rows;
        }
    }

    /// The products of the panel's 16 rows with `R` input rows, for blocks of `SUBS`
    /// sub-blocks: per block, `d_x · Σ_sub scale·(q·y) − Σ_sub offset·(d_x·Σy)`. The integer
    /// sums of each sub-block are exact; the scaling is f32.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
    unsafe fn tile<const SUBS: usize, const R: usize>(
        panel: &Panel,
        x: &[Q8K],
        sums: &[f32],
        kb: usize,
        out: &mut [[f32; PANEL]; TILE],
    ) {
        let runs_per_sub = RUNS / SUBS;
        assert!(R <= TILE && x.len() >= R * kb && sums.len() >= R * kb * SUBS);
        assert!(panel.values.len() >= kb * RUNS && panel.scales.len() >= kb * SUBS);
        unsafe {
            let mut acc = [_mm512_setzero_ps(); R];
            for b in 0..kb {
                let xs: [&Q8K; R] = std::array::from_fn(|r| x.get_unchecked(r * kb + b));
                let mut blk = [_mm512_setzero_ps(); R];
                let mut off = [_mm512_setzero_ps(); R];
                for s in 0..SUBS {
                    let mut isum = [_mm512_setzero_si512(); R];
                    for g in 0..runs_per_sub {
                        let run = s * runs_per_sub + g;
                        let w = _mm512_load_si512(
                            panel.values.get_unchecked(b * RUNS + run).0.as_ptr().cast(),
                        );
                        for r in 0..R {
                            let y = std::ptr::read_unaligned(
                                xs[r].qs.as_ptr().add(4 * run).cast::<i32>(),
                            );
                            isum[r] = _mm512_dpbusd_epi32(isum[r], w, _mm512_set1_epi32(y));
                        }
                    }
                    let scale = _mm512_loadu_ps(panel.scales.get_unchecked(b * SUBS + s).as_ptr());
                    let offset =
                        _mm512_loadu_ps(panel.offsets.get_unchecked(b * SUBS + s).as_ptr());
                    for r in 0..R {
                        blk[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[r]), scale, blk[r]);
                        let y_sum = *sums.get_unchecked((r * kb + b) * SUBS + s);
                        off[r] = _mm512_fmadd_ps(offset, _mm512_set1_ps(y_sum), off[r]);
                    }
                }
                for r in 0..R {
                    acc[r] = _mm512_fmadd_ps(blk[r], _mm512_set1_ps(xs[r].d), acc[r]);
                    acc[r] = _mm512_sub_ps(acc[r], off[r]);
                }
            }
            for r in 0..R {
                _mm512_storeu_ps(out[r].as_mut_ptr(), acc[r]);
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn transpose_swaps_rows_and_columns() {
            if !crate::panel::tests::vnni() {
                eprintln!("skipped: no AVX-512 VNNI on this CPU");
                return;
            }
            let m: Vec<[u32; 16]> = (0..16)
                .map(|r| std::array::from_fn(|c| (100 * r + c) as u32))
                .collect();
            // SAFETY: AVX-512 checked above; each row is 64 bytes.
            let t = unsafe {
                #[target_feature(enable = "avx512f")]
                unsafe fn run(m: &[[u32; 16]]) -> Vec<[u32; 16]> {
                    unsafe {
                        let mut regs: [__m512i; 16] =
                            std::array::from_fn(|r| _mm512_loadu_si512(m[r].as_ptr().cast()));
                        transpose(&mut regs);
                        regs.iter()
                            .map(|v| {
                                let mut row = [0u32; 16];
                                _mm512_storeu_si512(row.as_mut_ptr().cast(), *v);
                                row
                            })
                            .collect()
                    }
                }
                run(&m)
            };
            for r in 0..16 {
                for c in 0..16 {
                    assert_eq!(t[c][r], m[r][c], "element ({r}, {c})");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values as values;
    use candle_core::Device;
    use candle_core::quantized::{GgmlDType, QTensor};

    pub(super) fn vnni() -> bool {
        crate::qdot::Isa::detect() == crate::qdot::Isa::Vnni
    }

    /// Two Q4_K and two Q6_K matrices (40 rows: two full panels and a partial one; 16 rows),
    /// times 37 input rows (nine tiles of four and one row), equal candle's products and are
    /// close to the exact products of the dequantized weights.
    #[test]
    fn panel_products_equal_candles() {
        if !vnni() {
            eprintln!("skipped: no AVX-512 VNNI on this CPU");
            return;
        }
        let cpu = Device::Cpu;
        let (m, k) = (37, 768);
        let x = Tensor::from_vec(values(m * k, 3), (1, m, k), &cpu).unwrap();
        for (dtype, kind) in [(GgmlDType::Q4K, Kind::Q4K), (GgmlDType::Q6K, Kind::Q6K)] {
            let ws: Vec<Tensor> = [(40, 5), (16, 9)]
                .into_iter()
                .map(|(n, seed)| Tensor::from_vec(values(n * k, seed), (n, k), &cpu).unwrap())
                .collect();
            let qs: Vec<QTensor> = ws
                .iter()
                .map(|w| QTensor::quantize(w, dtype).unwrap())
                .collect();
            let data: Vec<_> = qs.iter().map(|q| q.data().unwrap()).collect();
            let parts: Vec<(&[u8], usize)> = data
                .iter()
                .zip(&qs)
                .map(|(d, q)| (d.as_ref(), q.shape().dims2().unwrap().0))
                .collect();
            let ours = products(kind, &parts, &x).unwrap();
            for ((w, q), o) in ws.iter().zip(&qs).zip(&ours) {
                crate::gemv::tests::assert_like_candle(w, q, &x, o);
            }
        }
    }

    #[test]
    fn a_matrix_of_the_wrong_size_is_an_error() {
        let x = Tensor::zeros((2, 256), candle_core::DType::F32, &Device::Cpu).unwrap();
        let bytes = vec![0u8; 144 * 3];
        assert!(products(Kind::Q4K, &[(&bytes, 2)], &x).is_err());
        let x = Tensor::zeros((2, 100), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(products(Kind::Q4K, &[(&bytes, 3)], &x).is_err());
    }
}

//! Dense-layer products on Intel AMX tiles, with f32-grade accuracy ("bf16x3").
//!
//! Each f32 operand is split into two bf16 parts, `x = hi + lo`, and a product is taken as
//! `hi·hi + hi·lo + lo·hi`, accumulated in f32 by the tile unit (oneDNN's `fp32:bf16x3`
//! mode does the same). The dropped `lo·lo` term and the rounding of `lo` leave each product
//! within about 2⁻¹⁶ of its f32 value; plain bf16 would be off by up to 2⁻⁸.
//!
//! Used when the CPU has AMX-BF16, Linux grants this process the tile state, and
//! `QUIRE_CPU_AMX` is not `off`; [`available`] says which. The weights are packed once, at
//! load; activations are split per call.

use std::ops::Range;
use std::sync::OnceLock;

use rayon::prelude::*;

/// One 64-byte cache line of bf16 values. Tiles and split rows are built of whole lines, so
/// every tile row the unit loads starts on a line: a row split across two lines made each
/// tile load about twice as slow.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u16; 32]);

const ZERO_LINE: Line = Line([0; 32]);

/// Lines in one tile: 16 rows.
const TILE_LINES: usize = 16;

/// Whether products run on AMX in this process. Decided once: CPU support (CPUID), the
/// kernel's permission for the tile state (`arch_prctl`), and `QUIRE_CPU_AMX` (`off`, `0`
/// or `false` turn it off).
pub(crate) fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let on = !crate::switched_off("QUIRE_CPU_AMX") && detect();
        if on {
            tracing::info!("CPU encoder: dense layers on AMX tiles (bf16x3)");
        } else {
            tracing::info!("CPU encoder: dense layers in f32 SIMD (no AMX, or QUIRE_CPU_AMX=off)");
        }
        on
    })
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::{__cpuid_count, __get_cpuid_max};
    // CPUID leaf 7: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE.
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86-64 CPU; leaf 7 is read only where it exists.
    let edx = unsafe {
        if __get_cpuid_max(0).0 < 7 {
            return false;
        }
        __cpuid_count(7, 0).edx
    };
    if edx & (1 << 22) == 0 || edx & (1 << 24) == 0 {
        return false;
    }
    // Linux enables the 8 KiB tile state only for processes that ask (since 5.16); the
    // answer holds for every thread of the process.
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these arguments only changes the process's permission.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// f32 to bf16, rounding to nearest even. Branch-free, so loops over it vectorise.
#[inline(always)]
fn bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounded = (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16;
    if x.is_nan() { 0x7fc0 } else { rounded }
}

/// `x` as bf16 `hi` and `lo` with `hi + lo ≈ x` to about 2⁻¹⁶ relative.
#[inline(always)]
fn split(x: f32) -> (u16, u16) {
    let hi = bf16(x);
    (hi, bf16(x - f32::from_bits(u32::from(hi) << 16)))
}

/// Splits 32 values into `hi` and `lo` lines (fixed length, so the loop vectorises).
#[inline(always)]
fn split_line(a: &[f32; 32], hi: &mut Line, lo: &mut Line) {
    for ((h, l), &x) in hi.0.iter_mut().zip(lo.0.iter_mut()).zip(a) {
        (*h, *l) = split(x);
    }
}

/// A (k × n) weight matrix as bf16 hi and lo parts, in tiles: tile `(nb, kb)` holds columns
/// `16·nb..16·nb + 16` and rows `32·kb..32·kb + 32`, with row pairs interleaved (line `r` of
/// the tile is rows `2r` and `2r + 1`, column by column), as the tile unit reads B.
pub(crate) struct PackedWeights {
    k: usize,
    n: usize,
    hi: Vec<Line>,
    lo: Vec<Line>,
}

impl PackedWeights {
    /// Packs `w` (k × n, row-major). `None` unless `k` and `n` are multiples of 32 (the tile
    /// blocking); callers then keep the f32 path.
    pub(crate) fn pack(w: &[f32], k: usize, n: usize) -> Option<PackedWeights> {
        if k == 0 || n == 0 || !k.is_multiple_of(32) || !n.is_multiple_of(32) || w.len() != k * n {
            return None;
        }
        let kt = k / 32;
        let lines = k * n / 32;
        let (mut hi, mut lo) = (vec![ZERO_LINE; lines], vec![ZERO_LINE; lines]);
        for (line, (h, l)) in hi.iter_mut().zip(lo.iter_mut()).enumerate() {
            let (tile, r) = (line / TILE_LINES, line % TILE_LINES);
            let (nb, kb) = (tile / kt, tile % kt);
            for (i, (h, l)) in h.0.iter_mut().zip(l.0.iter_mut()).enumerate() {
                let (c, pair) = (i / 2, i % 2);
                (*h, *l) = split(w[(kb * 32 + 2 * r + pair) * n + nb * 16 + c]);
            }
        }
        Some(PackedWeights { k, n, hi, lo })
    }
}

/// The tile configuration: palette 1, all eight tiles 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

const CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// The most lines of split activations a thread keeps between calls: 4 MiB for each of hi
/// and lo, 2 Mi values: 5,461 rows of 384, or 1,365 of 1,536 (MiniLM's widths).
const KEEP_LINES: usize = (4 << 20) / 64;

thread_local! {
    /// The calling thread's buffers for split activations (hi, lo), kept between calls. A
    /// call takes them out and puts them back, so a nested call (rayon work-stealing) just
    /// allocates its own.
    static SPLIT: std::cell::Cell<(Vec<Line>, Vec<Line>)> = const {
        std::cell::Cell::new((Vec::new(), Vec::new()))
    };
}

/// `dst (m × n) = a (m × k) · w`, plus `dst`'s previous value with `accumulate`; row-major
/// and contiguous, `w` packed from (k × n). Column pairs are split over the rayon threads.
/// An error unless
/// [`available`].
pub(crate) fn matmul(
    dst: &mut [f32],
    a: &[f32],
    w: &PackedWeights,
    m: usize,
    accumulate: bool,
) -> Result<(), crate::Error> {
    if !available() {
        return Err(crate::Error::Inference("AMX is not available".into()));
    }
    let (k, n) = (w.k, w.n);
    if dst.len() != m * n || a.len() != m * k {
        return Err(crate::Error::Inference(format!(
            "amx matmul: {m} × {k} · {k} × {n} into {} values",
            dst.len()
        )));
    }
    if m == 0 {
        return Ok(());
    }
    let padded = m.div_ceil(32) * 32;
    let (mut hi, mut lo) = SPLIT.take();
    {
        hi.clear();
        lo.clear();
        hi.resize(padded * k / 32, ZERO_LINE);
        lo.resize(padded * k / 32, ZERO_LINE);
        // In A tiles: 16 rows × 32 columns as 16 consecutive lines, tile (g, kb) at line
        // (g·kt + kb)·16, so a tile load reads 1 KiB in a row. Rows past m stay zero.
        let kt = k / 32;
        hi.par_chunks_mut(16 * kt)
            .zip(lo.par_chunks_mut(16 * kt))
            .zip(a.par_chunks(16 * k))
            .for_each(|((hi, lo), a)| {
                for (r, a) in a.chunks_exact(k).enumerate() {
                    for (kb, a) in a.as_chunks::<32>().0.iter().enumerate() {
                        split_line(a, &mut hi[kb * 16 + r], &mut lo[kb * 16 + r]);
                    }
                }
            });
        let pairs = n / 32;
        let tasks = rayon::current_num_threads().clamp(1, pairs);
        let per = pairs.div_ceil(tasks);
        let out = crate::bert_cpu::SharedRows(dst.as_mut_ptr());
        let (hi, lo) = (&hi[..], &lo[..]);
        (0..tasks).into_par_iter().for_each(|t| {
            let range = t * per..((t + 1) * per).min(pairs);
            // SAFETY: `hi`/`lo` hold `padded` rows of k values in tiles, `w` k × n in tiles,
            // `out` m × n (checked above), and this task alone writes columns `32·range`.
            unsafe { kernel(out.get(), hi, lo, w, m, accumulate, range) };
        });
    }
    // Keep buffers of everyday size (a document's chunks); free those of big batches, so no
    // thread holds tens of MB between calls.
    if hi.capacity() <= KEEP_LINES {
        SPLIT.set((hi, lo));
    }
    Ok(())
}

/// Runs tile instruction `$ins` (Intel syntax) with the given operands.
macro_rules! tile {
    ($ins:literal $(, $name:ident = $val:expr)*) => {
        std::arch::asm!($ins $(, $name = in(reg) $val)*, options(nostack))
    };
}

/// A 32 × 32 f32 output block on whole cache lines.
#[repr(C, align(64))]
struct Spill([f32; 32 * 32]);

/// The 32 × 32 output blocks of columns `32·pairs` for every 32 rows: four C tiles
/// (tmm0–3), two A tiles (tmm4–5) and two B tiles (tmm6–7), hi·hi, then lo·hi, then hi·lo.
/// The last row block, when m is not a multiple of 32, goes through a spill block.
///
/// # Safety
/// The CPU has AMX-BF16 and the process its tile permission ([`available`]); `dst` points to
/// m × w.n writable values no other thread touches in these columns; `hi` and `lo` hold
/// `m.div_ceil(32) · 32` rows of `w.k` values in A tiles (see [`matmul`]).
#[cfg(target_arch = "x86_64")]
unsafe fn kernel(
    dst: *mut f32,
    hi: &[Line],
    lo: &[Line],
    w: &PackedWeights,
    m: usize,
    accumulate: bool,
    pairs: Range<usize>,
) {
    let (n, kt) = (w.n, w.k / 32);
    // A and B tiles are 16 consecutive lines.
    const ROW: usize = 64;
    let mut spill = Spill([0.0; 32 * 32]);
    // SAFETY: the caller's contract; every tile access below stays inside the checked sizes.
    unsafe {
        tile!("ldtilecfg [{c}]", c = &CONFIG as *const TileConfig);
        // Rows in slabs whose split A (hi and lo) fits in about 768 KiB of L2, so it stays
        // there while every column pair passes over it; a pair's B tiles stay in L1 across
        // the slab's row blocks.
        let blocks = m.div_ceil(32);
        let slab = (768 * 1024 / (w.k * 4 * 32)).max(1);
        for first in (0..blocks).step_by(slab) {
            for pair in pairs.clone() {
                for mb in first..(first + slab).min(blocks) {
                    let rows = (m - mb * 32).min(32);
                    let corner = dst.add(mb * 32 * n + pair * 32);
                    let direct = rows == 32;
                    let (c, c_stride) = if direct {
                        (corner, n * 4)
                    } else {
                        spill.0.fill(0.0);
                        if accumulate {
                            for r in 0..rows {
                                let line = spill.0.as_mut_ptr().add(r * 32);
                                std::ptr::copy_nonoverlapping(corner.add(r * n), line, 32);
                            }
                        }
                        (spill.0.as_mut_ptr(), 128)
                    };
                    let (c00, c01) = (c, c.add(16));
                    let (c10, c11) = (c.add(4 * c_stride), c.add(4 * c_stride + 16));
                    if accumulate || !direct {
                        tile!("tileloadd tmm0, [{p} + {s}*1]", p = c00, s = c_stride);
                        tile!("tileloadd tmm1, [{p} + {s}*1]", p = c01, s = c_stride);
                        tile!("tileloadd tmm2, [{p} + {s}*1]", p = c10, s = c_stride);
                        tile!("tileloadd tmm3, [{p} + {s}*1]", p = c11, s = c_stride);
                    } else {
                        tile!("tilezero tmm0");
                        tile!("tilezero tmm1");
                        tile!("tilezero tmm2");
                        tile!("tilezero tmm3");
                    }
                    // Lines: A rows 32·mb and 32·mb + 16; B tiles (2·pair, 0) and (2·pair + 1, 0).
                    let (a0, a1) = (2 * mb * kt * TILE_LINES, (2 * mb + 1) * kt * TILE_LINES);
                    let (b0, b1) = (2 * pair * kt * TILE_LINES, (2 * pair + 1) * kt * TILE_LINES);
                    let (ah, al) = (hi.as_ptr(), lo.as_ptr());
                    let (bh, bl) = (w.hi.as_ptr(), w.lo.as_ptr());
                    for kb in 0..kt {
                        let (a0, a1) = (a0 + kb * TILE_LINES, a1 + kb * TILE_LINES);
                        let (b0, b1) = (b0 + kb * TILE_LINES, b1 + kb * TILE_LINES);
                        // hi·hi, lo·hi (B tiles kept), hi·lo.
                        for (a, b) in [(ah, Some(bh)), (al, None), (ah, Some(bl))] {
                            tile!("tileloadd tmm4, [{p} + {s}*1]", p = a.add(a0), s = ROW);
                            tile!("tileloadd tmm5, [{p} + {s}*1]", p = a.add(a1), s = ROW);
                            if let Some(b) = b {
                                tile!("tileloadd tmm6, [{p} + {s}*1]", p = b.add(b0), s = ROW);
                                tile!("tileloadd tmm7, [{p} + {s}*1]", p = b.add(b1), s = ROW);
                            }
                            tile!("tdpbf16ps tmm0, tmm4, tmm6");
                            tile!("tdpbf16ps tmm1, tmm4, tmm7");
                            tile!("tdpbf16ps tmm2, tmm5, tmm6");
                            tile!("tdpbf16ps tmm3, tmm5, tmm7");
                        }
                    }
                    tile!("tilestored [{p} + {s}*1], tmm0", p = c00, s = c_stride);
                    tile!("tilestored [{p} + {s}*1], tmm1", p = c01, s = c_stride);
                    tile!("tilestored [{p} + {s}*1], tmm2", p = c10, s = c_stride);
                    tile!("tilestored [{p} + {s}*1], tmm3", p = c11, s = c_stride);
                    if !direct {
                        for r in 0..rows {
                            let line = spill.0.as_ptr().add(r * 32);
                            std::ptr::copy_nonoverlapping(line, corner.add(r * n), 32);
                        }
                    }
                }
            }
        }
        tile!("tilerelease");
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel(
    _dst: *mut f32,
    _hi: &[Line],
    _lo: &[Line],
    _w: &PackedWeights,
    _m: usize,
    _accumulate: bool,
    _pairs: Range<usize>,
) {
    unreachable!("AMX is x86-64 only; `available` is false elsewhere")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1) with some spread of magnitudes.
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|i| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (s >> 40) as f32 / (1u64 << 24) as f32;
                (2.0 * u - 1.0) * if i % 7 == 0 { 4.0 } else { 1.0 }
            })
            .collect()
    }

    #[test]
    fn split_parts_sum_to_the_value() {
        for x in values(10_000, 3) {
            let (h, l) = split(x);
            let back = f32::from_bits(u32::from(h) << 16) + f32::from_bits(u32::from(l) << 16);
            assert!(
                (back - x).abs() <= x.abs() * 2f32.powi(-16),
                "{x} vs {back}"
            );
        }
        assert_eq!(bf16(1.0), 0x3f80);
        assert_eq!(bf16(f32::INFINITY), 0x7f80);
        assert!(f32::from_bits(u32::from(bf16(f32::NAN)) << 16).is_nan());
    }

    #[test]
    fn packing_needs_tile_multiples() {
        assert!(PackedWeights::pack(&[0.0; 32 * 48], 32, 48).is_none());
        assert!(PackedWeights::pack(&[0.0; 16 * 32], 16, 32).is_none());
        assert!(PackedWeights::pack(&[0.0; 32 * 32], 32, 32).is_some());
    }

    /// Products with tail rows, with and without accumulation, against f64 sums: as close
    /// as f32 arithmetic, not bf16's 2⁻⁸.
    #[test]
    fn amx_products_match_f64_reference() {
        if !available() {
            eprintln!("SKIPPED amx_products_match_f64_reference: no AMX-BF16 on this CPU/kernel");
            return;
        }
        // Last row blocks of 1, 13, 25 (two A tiles, the second partial) and 32 rows.
        for (m, k, n) in [(1, 32, 32), (45, 384, 96), (57, 1536, 384), (64, 64, 64)] {
            let (a, w) = (values(m * k, 1), values(k * n, 2));
            let start = values(m * n, 3);
            let packed = PackedWeights::pack(&w, k, n).expect("tile multiples");
            for accumulate in [false, true] {
                let mut dst = start.clone();
                matmul(&mut dst, &a, &packed, m, accumulate).expect("sizes agree");
                let mut worst = 0f64;
                for i in 0..m {
                    for j in 0..n {
                        let mut exact: f64 = if accumulate {
                            start[i * n + j].into()
                        } else {
                            0.0
                        };
                        let mut scale = exact.abs();
                        for p in 0..k {
                            let t = f64::from(a[i * k + p]) * f64::from(w[p * n + j]);
                            exact += t;
                            scale += t.abs();
                        }
                        let err = (f64::from(dst[i * n + j]) - exact).abs() / scale.max(1e-30);
                        worst = worst.max(err);
                    }
                }
                assert!(
                    worst < 3e-5,
                    "{m}×{k}·{k}×{n} accumulate={accumulate}: {worst}"
                );
            }
        }
    }

    #[test]
    fn mismatched_sizes_are_an_error() {
        let packed = PackedWeights::pack(&[0.0; 32 * 32], 32, 32).expect("tile multiples");
        let mut dst = vec![0.0; 31];
        assert!(matmul(&mut dst, &[0.0; 32], &packed, 1, false).is_err());
    }
}

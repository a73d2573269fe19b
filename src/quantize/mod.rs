//! Quantization: a GGUF model rewritten at fewer bits per weight, the way llama.cpp's
//! `llama-quantize` does it, so llama.cpp reads our files as its own and the two can be compared
//! on the same bytes.
//!
//! - [`mix`]: the file types (`q4_k_m`, `q6_k`, ...) and llama.cpp's choice of block format for
//!   each tensor: which matrices get more bits, and what a row that does not fit a 256-wide
//!   block falls back to
//! - [`k_quants`]: the K-quant block quantizers (`q2_K` to `q6_K`), with llama.cpp's fitting
//!   of each sub-block's scale (and minimum); candle's own use an older fit
//! - [`job`]: reading a model ([`ModelSource`]: a GGUF file, or what `hub::convert` makes of a
//!   Hugging Face folder), converting each tensor and writing the new file atomically
//!
//! The part uses nothing else of the crate (only candle and half): GGUF in, GGUF out. What a
//! quantized file costs in quality is measured by `eval::quant_eval`.

pub mod job;
pub mod k_quants;
pub mod mix;

pub use job::{quantize_gguf, quantize_model, GgufSize, ModelSource, QuantizeReport, TensorChange};
pub use mix::FileType;

//! CPU kernels: the loops where a forward pass spends its time, one file per job, each with an
//! AVX-512 VNNI and/or AVX2 version chosen at run time ([`isa`]) and a plain Rust fallback.
//!
//! - [`isa`]: which instruction set this process uses (`BILLION_LLM_ISA` overrides it)
//! - [`simd`]: shared AVX2 pieces: vector `e^x`, f32/f16 lanes, the dot product
//! - [`gemv`]: f32 matrix × vector (a decode step of an f32 model)
//! - [`q8`]: activations quantized to int8 blocks, the input side of [`packed`]
//! - [`tiles`]: the quantized matmul's micro-kernels, one per instruction set
//! - [`k_tiles`]: the micro-kernels of GGML's K formats (`q2_K` to `q6_K`), against `q8_K`
//!   activations
//! - [`packed`]: [`packed::PackedMatrix`], GGUF `q4_0`/`q4_1`/`q5_0`/`q5_1`/`q8_0` and
//!   `q2_K`…`q6_K` weights
//!   repacked for [`tiles`] and [`k_tiles`], and the matmul that hands them work
//! - [`attention`]: decode and prompt attention over an f32 or f16 KV cache
//! - [`swiglu`]: the feed-forward block's fused `silu(gate) ⊙ up`
//! - [`frozen_matmul`]: `x Wᵀ` whose backward skips the frozen weight's gradient (training)
//! - [`backprop`]: training's norms, softmax, SwiGLU, rotary embeddings and loss, fused with
//!   their backward passes
//! - [`threads`]: running a whole job on a worker of a sized rayon pool
//! - [`pool`]: the parallel loops of the kernels, on helpers that spin through a few-token
//!   forward instead of sleeping between its loops
//!
//! The part uses nothing else of the crate (only candle, half and rayon), so `model` reads as
//! plain tensor code that calls into it. Within the folder the files form no circle: `isa`
//! and `simd` are used by the others, `q8`, `tiles` and `k_tiles` by `packed`, and `pool` by
//! `packed`, `attention`, `gemv` and `swiglu`. Every public function checks the CPU itself; the
//! `unsafe` SIMD functions are private to the folder.

pub mod attention;
pub mod backprop;
pub mod frozen_matmul;
pub mod gemv;
pub mod isa;
mod k_tiles;
pub mod packed;
pub mod pool;
mod q8;
pub mod simd;
pub mod swiglu;
pub mod threads;
mod tiles;

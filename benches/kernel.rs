//! The quantized matmul kernel on its own: `cargo bench --bench kernel`.
//!
//! A 5632 × 2048 q4_0 matrix (TinyLlama's MLP shape) times 1, 64 and 512 tokens, with every
//! kernel this CPU runs (`BILLION_LLM_ISA` is not needed: both are measured). 48 copies of the
//! matrix (311 MB, ten times an EPYC's L3) are cycled so a decode step reads its weights from
//! memory, as in a real model: with 12 copies (78 MB) AMD's L3 still served part of them, and
//! the kernel read "48 GB/s" where a whole model streamed at 31. Prints GB/s of weights read
//! and integer multiply-adds per second, next to the machine's plain read bandwidth (the
//! median of 5 passes over 640 MB).

use billion_llm::kernels::isa::Isa;
use billion_llm::kernels::packed::PackedMatrix;
use billion_llm::kernels::threads::run_on_workers;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let (rows, cols) = (5632, 2048);
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    let w = Tensor::randn(0f32, 1.0, (rows, cols), &Device::Cpu)?;
    let q = QTensor::quantize(&w, GgmlDType::Q4_0)?;
    let x: Vec<f32> = (0..cols * 512).map(|i| (i as f32 * 0.37).sin()).collect();
    println!(
        "{} threads, {}",
        threads,
        billion_llm::eval::results::Hardware::detect(threads).cpu
    );
    run_on_workers(Some(threads), || -> anyhow::Result<()> {
        let words: Vec<u64> = (0..80_000_000u64).collect();
        let mut passes: Vec<f64> = (0..5)
            .map(|_| {
                let t = Instant::now();
                let folded = words
                    .par_chunks(1 << 20)
                    .map(|c| c.iter().fold(0, |a, &b| a ^ b))
                    .reduce(|| 0, |a, b| a ^ b);
                std::hint::black_box(folded);
                640e6 / t.elapsed().as_secs_f64() / 1e9
            })
            .collect();
        passes.sort_by(f64::total_cmp);
        println!("plain read: {:.1} GB/s", passes[2]);
        drop(words);
        for isa in [Isa::Avx512Vnni, Isa::Avx2] {
            if !isa.available() {
                continue;
            }
            let mats: Vec<PackedMatrix> = (0..48)
                .map(|_| PackedMatrix::with_isa(&q, isa))
                .collect::<anyhow::Result<_>>()?;
            for (m, reps) in [(1usize, 960), (64, 12), (512, 4)] {
                mats[0].matmul(&x[..m * cols], m);
                let t = Instant::now();
                for r in 0..reps {
                    std::hint::black_box(mats[r % mats.len()].matmul(&x[..m * cols], m));
                }
                let s = t.elapsed().as_secs_f64() / reps as f64;
                println!(
                    "{:<12} {m:>3} tokens: {:7.3} ms, {:5.1} GB/s of weights, {:6.1} GMAC/s",
                    isa.name(),
                    s * 1e3,
                    mats[0].size_in_bytes() as f64 / s / 1e9,
                    (rows * cols * m) as f64 / s / 1e9
                );
            }
        }
        Ok(())
    })?
}

//! The speed benchmark: prefill and decode tokens/s of our `Transformer`, side by side with
//! llama.cpp (through `llama-cpp-python`) on the same GGUF weights, in the same run.
//!
//! Method: a fixed prompt (64 and 512 tokens), 128 new tokens forced (EOS masked), greedy, a
//! warm-up run and then 5 timed runs, with 2 threads and with 1, the two engines taking turns
//! run by run; the median is reported and every run kept. Prefill is the one forward over the
//! prompt; decode is the 127 one-token forwards after it.
//!
//! `llama_cpp` drives the peer (its timed runs and its quantizer), `random_gguf` writes the
//! random-weight files both engines run; neither imports this file.

mod llama_cpp;
mod random_gguf;

pub use llama_cpp::{llama_cpp_quantize, LlamaCppPeer};
pub use random_gguf::write_random_gguf;

use crate::hub::loader::{load, LoadOptions};
use crate::model::generation::{generate, GenerateOptions, SamplingParams};
use anyhow::Result;
use candle_core::quantized::GgmlDType;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Benchmark settings (the defaults are the protocol).
#[derive(Debug, Clone, Serialize)]
pub struct SpeedSettings {
    pub threads: usize,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
    pub warmup: usize,
    pub runs: usize,
}

impl Default for SpeedSettings {
    fn default() -> Self {
        Self {
            threads: 2,
            prompt_tokens: 64,
            new_tokens: 128,
            warmup: 1,
            runs: 5,
        }
    }
}

/// Per-run figures with their median, mean and sample standard deviation.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Measured {
    pub median: f64,
    pub mean: f64,
    pub std: f64,
    pub runs: Vec<f64>,
}

impl Measured {
    pub fn new(runs: Vec<f64>) -> Self {
        let mut sorted = runs.clone();
        sorted.sort_by(f64::total_cmp);
        let median = if sorted.is_empty() {
            0.0
        } else if sorted.len() % 2 == 1 {
            sorted[sorted.len() / 2]
        } else {
            (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
        };
        let n = runs.len() as f64;
        let mean = if runs.is_empty() {
            0.0
        } else {
            runs.iter().sum::<f64>() / n
        };
        let std = if runs.len() < 2 {
            0.0
        } else {
            (runs.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        };
        Self {
            median,
            mean,
            std,
            runs,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EngineSpeed {
    pub prefill_tokens_per_s: Measured,
    pub decode_tokens_per_s: Measured,
}

/// One model in one weight format, at one prompt length and thread count, measured by both
/// engines.
#[derive(Debug, Clone, Serialize)]
pub struct SpeedCase {
    pub name: String,
    pub prompt_tokens: usize,
    pub threads: usize,
    /// How our side loaded it (`--model ... --weights ... --quantize ...`).
    pub ours_model: String,
    /// The GGUF file llama.cpp ran.
    pub gguf: String,
    /// Our quantized matrices on candle's slower matmul, by format (none: all on our kernels).
    pub fallback_matrices: std::collections::BTreeMap<String, usize>,
    pub billion_llm: EngineSpeed,
    pub llama_cpp: Option<EngineSpeed>,
    /// Ours divided by llama.cpp's medians.
    pub prefill_ratio: Option<f64>,
    pub decode_ratio: Option<f64>,
}

/// The deterministic prompt both engines read: spread over the vocabulary, no special tokens.
pub fn prompt_ids(len: usize, vocab: usize) -> Vec<u32> {
    (0..len)
        .map(|i| (100 + (i * 7919) % (vocab - 200)) as u32)
        .collect()
}

/// Times our engine on a loaded model: warm-up runs, then `s.runs` timed ones.
pub fn measure_ours(
    model: &mut crate::model::Transformer,
    prompt: &[u32],
    s: &SpeedSettings,
) -> Result<EngineSpeed> {
    Ok(measure_side_by_side(model, None, prompt, s)?.0)
}

/// One generation of ours, timed: `(prefill, decode)` tokens/s.
fn run_ours(
    model: &mut crate::model::Transformer,
    prompt: &[u32],
    s: &SpeedSettings,
) -> Result<(f64, f64)> {
    let opts = GenerateOptions {
        max_new_tokens: s.new_tokens,
        sampling: SamplingParams::default(),
        ignore_eos: true,
        stop: None,
    };
    model.reset_cache();
    let g = generate(model, prompt, &opts, |_| Ok(()));
    model.reset_cache();
    let g = g?;
    Ok((g.prefill_tokens_per_s(), g.decode_tokens_per_s()))
}

/// Warm-up runs and then `s.runs` timed runs of our engine, each followed by one of llama.cpp's
/// when `peer` is given. Alternating matters on a shared machine: a neighbour's burst of
/// memory traffic slowed runs of either engine by up to a quarter, and with one engine's runs
/// all before the other's, a burst fell on one side only and moved the ratio by as much.
pub fn measure_side_by_side(
    model: &mut crate::model::Transformer,
    mut peer: Option<&mut LlamaCppPeer>,
    prompt: &[u32],
    s: &SpeedSettings,
) -> Result<(EngineSpeed, Option<EngineSpeed>)> {
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for run in 0..s.warmup + s.runs {
        let o = run_ours(model, prompt, s)?;
        let t = peer.as_deref_mut().map(LlamaCppPeer::run).transpose()?;
        if run >= s.warmup {
            ours.push(o);
            theirs.extend(t);
        }
    }
    let speed = |runs: &[(f64, f64)]| EngineSpeed {
        prefill_tokens_per_s: Measured::new(runs.iter().map(|r| r.0).collect()),
        decode_tokens_per_s: Measured::new(runs.iter().map(|r| r.1).collect()),
    };
    Ok((speed(&ours), peer.is_some().then(|| speed(&theirs))))
}

/// Where a benchmark case's GGUF file (the one llama.cpp runs) comes from.
enum Gguf {
    /// The shipped file, run as it is by both engines.
    Shipped,
    /// Our random weights written in this format; we quantize them at load time ourselves.
    Random(GgmlDType),
    /// llama.cpp's quantizer applied to the shipped file or (`random`) to the random f32 one,
    /// with this file type; both engines run the result.
    Quantized {
        random: bool,
        file_type: &'static str,
    },
}

/// One model of the benchmark: its label, how we load it, and its GGUF file.
struct Plan {
    label: &'static str,
    ours: LoadOptions,
    model: String,
    gguf: PathBuf,
    source: Gguf,
}

/// What `bench-speed` measures: each model (label, our model spec, GGUF for llama.cpp) at each
/// prompt length of `prompts` and thread count of `threads`; the f32 model, slow to prefill
/// and only there for reference, at the first of each. `only` keeps the cases whose label
/// contains it. The K-quant files (`Q4_K_M`, `Q6_K`) need llama.cpp's quantizer, so they are
/// left out when llama.cpp is.
pub fn run_speed_benchmark(
    s: &SpeedSettings,
    (prompts, threads): (&[usize], &[usize]),
    (smollm_gguf, gemma_gguf): (&Path, &Path),
    work_dir: &Path,
    (with_llama_cpp, only): (bool, Option<&str>),
    mut log: impl FnMut(&str),
) -> Result<Vec<SpeedCase>> {
    let tinyllama = crate::hub::zoo::find("tinyllama")?;
    let tiny_cfg = tinyllama.config()?;
    let random = |quantize| LoadOptions {
        random_weights: true,
        quantize,
        offline: true,
        ..Default::default()
    };
    let tiny_f32 = work_dir.join("tinyllama-random-f32.gguf");
    let made = |name: &str| work_dir.join(name);
    let plans = vec![
        Plan {
            label: "SmolLM2-135M-Instruct Q4_1 (GGUF)",
            ours: LoadOptions::default(),
            model: smollm_gguf.display().to_string(),
            gguf: smollm_gguf.to_path_buf(),
            source: Gguf::Shipped,
        },
        Plan {
            label: "SmolLM2-135M-Instruct Q4_K_M (llama.cpp's quantizer)",
            ours: LoadOptions::default(),
            model: made("smollm2-Q4_K_M.gguf").display().to_string(),
            gguf: made("smollm2-Q4_K_M.gguf"),
            source: Gguf::Quantized {
                random: false,
                file_type: "Q4_K_M",
            },
        },
        Plan {
            label: "SmolLM2-135M-Instruct Q6_K (llama.cpp's quantizer)",
            ours: LoadOptions::default(),
            model: made("smollm2-Q6_K.gguf").display().to_string(),
            gguf: made("smollm2-Q6_K.gguf"),
            source: Gguf::Quantized {
                random: false,
                file_type: "Q6_K",
            },
        },
        Plan {
            label: "Gemma-3-270M (base) Q4_K_M (GGUF)",
            ours: LoadOptions::default(),
            model: gemma_gguf.display().to_string(),
            gguf: gemma_gguf.to_path_buf(),
            source: Gguf::Shipped,
        },
        Plan {
            label: "TinyLlama-1.1B architecture, random weights, q4_0",
            ours: random(Some(GgmlDType::Q4_0)),
            model: "tinyllama".into(),
            gguf: made("tinyllama-random-q4_0.gguf"),
            source: Gguf::Random(GgmlDType::Q4_0),
        },
        Plan {
            label: "TinyLlama-1.1B architecture, random weights, Q4_K_M (llama.cpp's quantizer)",
            ours: LoadOptions::default(),
            model: made("tinyllama-random-Q4_K_M.gguf").display().to_string(),
            gguf: made("tinyllama-random-Q4_K_M.gguf"),
            source: Gguf::Quantized {
                random: true,
                file_type: "Q4_K_M",
            },
        },
        Plan {
            label: "TinyLlama-1.1B architecture, random weights, f32",
            ours: random(None),
            model: "tinyllama".into(),
            gguf: tiny_f32.clone(),
            source: Gguf::Random(GgmlDType::F32),
        },
    ];
    let mut cases = Vec::new();
    for plan in plans {
        let label = plan.label;
        if only.is_some_and(|o| !label.contains(o)) {
            continue;
        }
        let f32_reference = matches!(plan.source, Gguf::Random(GgmlDType::F32));
        let gguf = &plan.gguf;
        match plan.source {
            Gguf::Shipped => {}
            Gguf::Random(dtype) => {
                if with_llama_cpp && !gguf.exists() {
                    log(&format!("{label}: writing {}", gguf.display()));
                    write_random_gguf(&tiny_cfg, 42, dtype, gguf)?;
                }
            }
            Gguf::Quantized { .. } if !with_llama_cpp => {
                log(&format!(
                    "{label}: skipped (llama.cpp's quantizer makes its file)"
                ));
                continue;
            }
            Gguf::Quantized { random, file_type } => {
                if !gguf.exists() {
                    let src = if random {
                        if !tiny_f32.exists() {
                            log(&format!("{label}: writing {}", tiny_f32.display()));
                            write_random_gguf(&tiny_cfg, 42, GgmlDType::F32, &tiny_f32)?;
                        }
                        tiny_f32.clone()
                    } else {
                        smollm_gguf.to_path_buf()
                    };
                    log(&format!("{label}: llama.cpp quantizes {}", src.display()));
                    llama_cpp_quantize(&src, file_type, gguf)?;
                }
            }
        }
        let (opts, model_name) = (&plan.ours, &plan.model);
        let mut m = load(model_name, opts)?;
        for &prompt_tokens in prompts
            .iter()
            .take(if f32_reference { 1 } else { prompts.len() })
        {
            for &t in threads
                .iter()
                .take(if f32_reference { 1 } else { threads.len() })
            {
                let s = SpeedSettings {
                    threads: t,
                    prompt_tokens,
                    ..s.clone()
                };
                let prompt = prompt_ids(prompt_tokens, m.model.config().vocab_size);
                log(&format!(
                    "{label}, {prompt_tokens}-token prompt, {t} threads: billion-llm{}",
                    if with_llama_cpp {
                        " and llama.cpp, run by run"
                    } else {
                        ""
                    }
                ));
                let mut peer = with_llama_cpp
                    .then(|| LlamaCppPeer::start(gguf, &prompt, s.threads, s.new_tokens))
                    .transpose()?;
                let (ours, llama_cpp) = crate::kernels::threads::run_on_workers(Some(t), || {
                    measure_side_by_side(&mut m.model, peer.as_mut(), &prompt, &s)
                })??;
                let ratio = |f: fn(&EngineSpeed) -> f64| {
                    llama_cpp.as_ref().map(|l| f(&ours) / f(l).max(1e-9))
                };
                cases.push(SpeedCase {
                    name: label.to_string(),
                    prompt_tokens,
                    threads: t,
                    ours_model: format!(
                        "{model_name}{}{}",
                        if opts.random_weights {
                            " --weights random"
                        } else {
                            ""
                        },
                        opts.quantize
                            .map(|q| format!(" --quantize {q:?}").to_lowercase())
                            .unwrap_or_default()
                    ),
                    gguf: gguf.display().to_string(),
                    fallback_matrices: m
                        .model
                        .fallback_matrices()
                        .iter()
                        .map(|(f, n)| (f.to_string(), *n))
                        .collect(),
                    prefill_ratio: ratio(|e| e.prefill_tokens_per_s.median),
                    decode_ratio: ratio(|e| e.decode_tokens_per_s.median),
                    billion_llm: ours,
                    llama_cpp,
                });
            }
        }
    }
    Ok(cases)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_runs() {
        assert_eq!(Measured::new(vec![3.0, 1.0, 2.0]).median, 2.0);
        assert_eq!(Measured::new(vec![4.0, 1.0, 2.0, 3.0]).median, 2.5);
    }

    #[test]
    fn prompt_ids_avoid_special_tokens_and_fit_the_vocabulary() {
        let ids = prompt_ids(64, 32_000);
        assert_eq!(ids.len(), 64);
        assert!(ids.iter().all(|&t| (100..31_900).contains(&t)));
    }
}

//! The speed benchmark: prefill and decode tokens/s of our `Transformer`, side by side with
//! llama.cpp (through `llama-cpp-python`) on the same GGUF weights, in the same run.
//!
//! Method: a fixed prompt (64 and 512 tokens), 128 new tokens forced (EOS masked), greedy, a
//! warm-up run and then 5 timed runs, with 2 threads and with 1, the two engines taking turns
//! run by run; the median is reported and every run kept. Prefill is the one forward over the
//! prompt; decode is the 127 one-token forwards after it.

use crate::hub::loader::{load, LoadOptions};
use crate::model::config::TransformerConfig;
use crate::model::generation::{generate, GenerateOptions, SamplingParams};
use crate::model::weights::{GgufWeights, RandomWeights, Weight, WeightNames, WeightSource};
use anyhow::{bail, Context, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device};
use serde::Serialize;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// Benchmark settings (the defaults are the issue's protocol).
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

/// llama.cpp (`scripts/llama_cpp_speed.py`) in a child process that keeps `gguf` loaded and
/// times one generation each time it is asked, so its runs can alternate with ours.
pub struct LlamaCppPeer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Collects the child's error output as it comes (a full pipe would stall the child).
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl LlamaCppPeer {
    pub fn start(gguf: &Path, prompt: &[u32], s: &SpeedSettings) -> Result<Self> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/llama_cpp_speed.py");
        let ids: Vec<String> = prompt.iter().map(|t| t.to_string()).collect();
        let mut child = Command::new("python3")
            .arg(&script)
            .args(["--model", gguf.to_str().context("non-UTF-8 path")?])
            .args(["--threads", &s.threads.to_string()])
            .args(["--prompt-ids", &ids.join(",")])
            .args(["--new-tokens", &s.new_tokens.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run python3 for the llama.cpp side")?;
        let mut err = child.stderr.take().context("no stderr")?;
        let mut peer = Self {
            stdin: child.stdin.take().context("no stdin")?,
            stdout: BufReader::new(child.stdout.take().context("no stdout")?),
            stderr: Some(std::thread::spawn(move || {
                let mut text = String::new();
                let _ = err.read_to_string(&mut text);
                text
            })),
            child,
        };
        peer.reply()?; // {"version": ...} once the model is loaded
        Ok(peer)
    }

    /// One timed generation: `(prefill, decode)` tokens/s.
    pub fn run(&mut self) -> Result<(f64, f64)> {
        writeln!(self.stdin, "run")
            .and_then(|_| self.stdin.flush())
            .context("the llama.cpp side stopped")?;
        let v = self.reply()?;
        match (
            v["prefill_tokens_per_s"].as_f64(),
            v["decode_tokens_per_s"].as_f64(),
        ) {
            (Some(p), Some(d)) => Ok((p, d)),
            _ => bail!("unexpected answer from the llama.cpp side: {v}"),
        }
    }

    /// The child's next line as JSON; its error output when it ended instead.
    fn reply(&mut self) -> Result<serde_json::Value> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            let _ = self.child.wait();
            let err = self
                .stderr
                .take()
                .and_then(|h| h.join().ok())
                .unwrap_or_default();
            bail!(
                "the llama.cpp run failed (is llama-cpp-python installed? `pip install llama-cpp-python`): {err}"
            );
        }
        Ok(serde_json::from_str(&line)?)
    }
}

impl Drop for LlamaCppPeer {
    fn drop(&mut self) {
        // Any line but "run" (or the end of its input) ends the script.
        let _ = writeln!(self.stdin, "stop").and_then(|_| self.stdin.flush());
        let _ = self.child.wait();
    }
}

/// Writes a llama-architecture GGUF with the random weights `--weights random` builds, so
/// llama.cpp can run the very architecture (and format) we measure. Linear weights and the
/// output projection are stored as `dtype`; norms stay f32. The vocabulary is placeholder
/// tokens: enough for llama.cpp to load, as the benchmark feeds token ids.
pub fn write_random_gguf(
    config: &TransformerConfig,
    seed: u64,
    dtype: GgmlDType,
    path: &Path,
) -> Result<()> {
    if config.architecture != crate::model::config::Architecture::Llama {
        bail!("only llama-family models can be written as GGUF");
    }
    let c = config;
    let mut src = RandomWeights::new(seed, DType::F32, &Device::Cpu);
    let names = WeightNames::new(c.architecture);
    let (h, hd, i) = (c.hidden_size, c.head_dim, c.intermediate_size);
    let mut wanted: Vec<(String, Vec<usize>)> = vec![
        (format!("{}.weight", names.embed), vec![c.vocab_size, h]),
        (format!("{}.weight", names.final_norm), vec![h]),
    ];
    if !c.tie_word_embeddings {
        wanted.push((format!("{}.weight", names.lm_head), vec![c.vocab_size, h]));
    }
    for layer in 0..c.num_layers {
        let n = names.block(layer);
        wanted.extend([
            (format!("{}.weight", n.q), vec![c.num_heads * hd, h]),
            (format!("{}.weight", n.k), vec![c.num_kv_heads * hd, h]),
            (format!("{}.weight", n.v), vec![c.num_kv_heads * hd, h]),
            (format!("{}.weight", n.o), vec![h, c.num_heads * hd]),
            (format!("{}.weight", n.gate), vec![i, h]),
            (format!("{}.weight", n.up), vec![i, h]),
            (format!("{}.weight", n.down), vec![h, i]),
            (format!("{}.weight", n.norm_attn), vec![h]),
            (format!("{}.weight", n.norm_mlp), vec![h]),
        ]);
    }
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for (name, dims) in wanted {
        let Weight::Dense(t) = src.get(&name, &dims)? else {
            unreachable!("random weights are dense")
        };
        let q = if dims.len() == 1 {
            GgmlDType::F32
        } else {
            dtype
        };
        let gguf = GgufWeights::gguf_name(&name).context("no GGUF name")?;
        tensors.push((gguf, QTensor::quantize(&t, q)?));
    }
    use gguf_file::Value as V;
    let tokens: Vec<V> = (0..c.vocab_size)
        .map(|t| V::String(format!("<t{t}>")))
        .collect();
    let metadata: Vec<(&str, V)> = vec![
        ("general.architecture", V::String("llama".into())),
        (
            "general.name",
            V::String("billion-llm random weights".into()),
        ),
        (
            "llama.context_length",
            V::U32(c.max_position_embeddings as u32),
        ),
        ("llama.embedding_length", V::U32(h as u32)),
        ("llama.block_count", V::U32(c.num_layers as u32)),
        ("llama.feed_forward_length", V::U32(i as u32)),
        ("llama.attention.head_count", V::U32(c.num_heads as u32)),
        (
            "llama.attention.head_count_kv",
            V::U32(c.num_kv_heads as u32),
        ),
        ("llama.rope.dimension_count", V::U32(c.rotary_dim as u32)),
        ("llama.rope.freq_base", V::F32(c.rope_theta as f32)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            V::F32(match c.norm {
                crate::model::config::Norm::RmsNorm { eps }
                | crate::model::config::Norm::LayerNorm { eps } => eps as f32,
            }),
        ),
        ("tokenizer.ggml.model", V::String("llama".into())),
        ("tokenizer.ggml.tokens", V::Array(tokens)),
        (
            "tokenizer.ggml.scores",
            V::Array(vec![V::F32(0.0); c.vocab_size]),
        ),
        (
            "tokenizer.ggml.token_type",
            V::Array(vec![V::I32(1); c.vocab_size]),
        ),
        ("tokenizer.ggml.bos_token_id", V::U32(1)),
        ("tokenizer.ggml.eos_token_id", V::U32(2)),
    ];
    let part = path.with_extension("gguf.part");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(&part)?);
    let md: Vec<(&str, &V)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut f, &md, &ts)?;
    drop(f);
    std::fs::rename(&part, path)?;
    Ok(())
}

/// What `bench-speed` measures: each model (label, our model spec, GGUF for llama.cpp) at each
/// prompt length of `prompts` and thread count of `threads`; the f32 model, slow to prefill
/// and only there for reference, at the first of each.
pub fn run_speed_benchmark(
    s: &SpeedSettings,
    (prompts, threads): (&[usize], &[usize]),
    smollm_gguf: &Path,
    work_dir: &Path,
    with_llama_cpp: bool,
    mut log: impl FnMut(&str),
) -> Result<Vec<SpeedCase>> {
    let tinyllama = crate::hub::zoo::find("tinyllama")?;
    let tiny_cfg = tinyllama.config()?;
    let mut cases = Vec::new();
    let plans: Vec<(String, LoadOptions, String, PathBuf, Option<GgmlDType>)> = vec![
        (
            "SmolLM2-135M-Instruct Q4_1 (GGUF)".into(),
            LoadOptions::default(),
            smollm_gguf.display().to_string(),
            smollm_gguf.to_path_buf(),
            None,
        ),
        (
            "TinyLlama-1.1B architecture, random weights, q4_0".into(),
            LoadOptions {
                random_weights: true,
                quantize: Some(GgmlDType::Q4_0),
                offline: true,
                ..Default::default()
            },
            "tinyllama".into(),
            work_dir.join("tinyllama-random-q4_0.gguf"),
            Some(GgmlDType::Q4_0),
        ),
        (
            "TinyLlama-1.1B architecture, random weights, f32".into(),
            LoadOptions {
                random_weights: true,
                offline: true,
                ..Default::default()
            },
            "tinyllama".into(),
            work_dir.join("tinyllama-random-f32.gguf"),
            Some(GgmlDType::F32),
        ),
    ];
    for (label, opts, model_name, gguf, export) in plans {
        let f32_reference = export == Some(GgmlDType::F32);
        let mut m = load(&model_name, &opts)?;
        if with_llama_cpp {
            if let Some(dtype) = export {
                if !gguf.exists() {
                    log(&format!("{label}: writing {}", gguf.display()));
                    write_random_gguf(&tiny_cfg, 42, dtype, &gguf)?;
                }
            }
        }
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
                    .then(|| LlamaCppPeer::start(&gguf, &prompt, &s))
                    .transpose()?;
                let (ours, llama_cpp) = crate::kernels::threads::run_on_workers(Some(t), || {
                    measure_side_by_side(&mut m.model, peer.as_mut(), &prompt, &s)
                })??;
                let ratio = |f: fn(&EngineSpeed) -> f64| {
                    llama_cpp.as_ref().map(|l| f(&ours) / f(l).max(1e-9))
                };
                cases.push(SpeedCase {
                    name: label.clone(),
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

    #[test]
    fn a_random_gguf_loads_back_into_the_transformer() {
        let json = r#"{"model_type": "llama", "vocab_size": 256, "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "max_position_embeddings": 128, "rms_norm_eps": 1e-5}"#;
        let config = TransformerConfig::from_hub_json(json).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        write_random_gguf(&config, 1, GgmlDType::Q8_0, &path).unwrap();
        let (mut weights, read) = GgufWeights::open(&path, &Device::Cpu).unwrap();
        assert_eq!(read.hidden_size, 64);
        assert_eq!(read.num_kv_heads, 2);
        assert_eq!(read.vocab_size, 256);
        let format = crate::model::WeightFormat {
            dtype: DType::F32,
            quantize: None,
        };
        let mut model =
            crate::model::Transformer::load(&read, &mut weights, format, &Device::Cpu).unwrap();
        let ids = candle_core::Tensor::new(&[[1u32, 2, 3]], &Device::Cpu).unwrap();
        assert_eq!(model.forward(&ids).unwrap().dims(), &[1, 3, 256]);
    }
}

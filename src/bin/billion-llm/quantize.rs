//! `billion-llm quantize`, `quant-eval` and `quant-study`: the command lines of
//! [`billion_llm::quantize`], which rewrites a GGUF file at fewer bits with llama.cpp's mixes,
//! of [`billion_llm::eval::quant_eval`], which measures what that cost, and of
//! [`billion_llm::eval::quant_study`], which does both for every type of one model; and
//! `quant-1b`, the command line of [`billion_llm::eval::quant_1b`]: every type's memory and
//! speed on the four 1B architectures.

use crate::args::ResultsDirArgs;
use anyhow::{bail, Result};
use billion_llm::eval::quant_eval::{self, EvalText};
use billion_llm::hub::assets::asset;
use billion_llm::hub::client::HubClient;
use billion_llm::hub::convert::{HfFiles, HfGguf};
use billion_llm::hub::loader;
use billion_llm::quantize::job::GgufFile;
use billion_llm::quantize::{self, FileType, ModelSource};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct QuantizeArgs {
    /// The model: a GGUF file (F32, F16, BF16, or already quantized: its errors then stack), or a
    /// llama-architecture Hugging Face checkpoint (a folder with config.json, safetensors and
    /// tokenizer.json, a zoo alias or a hub id), converted as llama.cpp's converter does.
    #[arg(long, short)]
    model: String,
    /// The file type: llama.cpp's names and per-tensor mixes.
    #[arg(long = "type", value_enum, ignore_case = true)]
    file_type: FileType,
    /// Where to write the new file (it must not exist yet).
    #[arg(long)]
    out: PathBuf,
    /// Print every tensor's old and new format.
    #[arg(long, short)]
    verbose: bool,
    /// CPU threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

pub fn quantize(args: &QuantizeArgs) -> Result<()> {
    // Before any download: `quantize_model` checks again, just before writing.
    if args.out.exists() {
        bail!(
            "{} already exists; choose another --out or delete it first",
            args.out.display()
        );
    }
    let mut source: Box<dyn ModelSource> = match loader::ModelSource::resolve(&args.model)? {
        loader::ModelSource::Gguf(path) => Box::new(GgufFile::open(&path)?),
        loader::ModelSource::Folder(dir) => checkpoint(&HfFiles::from_folder(&dir)?)?,
        loader::ModelSource::Hub { repo, .. } => {
            let client = HubClient::from_env().progress(std::io::stderr().is_terminal());
            checkpoint(&HfFiles::from_hub(&client.model(&repo), &repo)?)?
        }
    };
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} tensors {msg}",
    )?);
    let verbose = args.verbose;
    let report =
        quantize::quantize_model(source.as_mut(), args.file_type, &args.out, |i, n, c| {
            bar.set_length(n as u64);
            bar.set_position(i as u64 + 1);
            bar.set_message(c.name.clone());
            if verbose {
                let line = format!(
                    "{:<36} {:>6} -> {:<6} {:>10} params",
                    c.name, c.from, c.to, c.params
                );
                if bar.is_hidden() {
                    eprintln!("{line}");
                } else {
                    bar.println(line);
                }
            }
        })?;
    bar.finish_and_clear();
    if report.requantized {
        eprintln!(
            "warning: {} was already quantized; its rounding errors stack with the new ones. \
             Quantize from an F32/F16/BF16 file where you have one.",
            args.model
        );
    }
    println!(
        "wrote {} ({}: {:.1} MB of weights, {:.2} bits per weight, {} tensors)",
        args.out.display(),
        report.file_type,
        report.tensor_bytes as f64 / 1e6,
        report.bits_per_weight(),
        report.tensors.len()
    );
    Ok(())
}

/// A Hugging Face checkpoint as the GGUF file llama.cpp's converter would write, with a
/// warning for what that file cannot say as the checkpoint does.
fn checkpoint(files: &HfFiles) -> Result<Box<dyn ModelSource>> {
    let source = HfGguf::open(files)?;
    for w in &source.warnings {
        eprintln!("warning: {w}");
    }
    Ok(Box::new(source))
}

#[derive(Args, Debug, Clone)]
pub struct QuantEvalArgs {
    /// The full-precision reference GGUF (for example `quantize --type f32` of a model).
    #[arg(long)]
    reference: PathBuf,
    /// The quantized GGUF made from it.
    #[arg(long, short)]
    model: PathBuf,
    /// A text file to score instead of the default texts (MMLU questions of the subjects the
    /// benchmark does not ask, and HumanEval solutions outside its subset).
    #[arg(long)]
    text: Option<PathBuf>,
    /// Tokens per window; each window starts afresh.
    #[arg(long, default_value_t = 512)]
    context: usize,
    /// Windows scored per text.
    #[arg(long, default_value_t = 4)]
    windows: usize,
    /// CPU threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    #[command(flatten)]
    results: ResultsDirArgs,
}

pub fn quant_eval(args: &QuantEvalArgs) -> Result<()> {
    let texts = match &args.text {
        Some(path) => vec![EvalText {
            name: path.display().to_string(),
            text: std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read --text {}: {e}", path.display()))?,
        }],
        None => quant_eval::asset_texts(&asset("mmlu.jsonl")?, &asset("HumanEval.jsonl.gz")?)?,
    };
    let (run, path) = quant_eval::run(
        &args.reference,
        &args.model,
        &texts,
        args.context,
        args.windows,
        args.threads,
        &args.results.results_dir,
    )?;
    for t in run
        .texts
        .iter()
        .map(|t| (&t.text, &t.divergence))
        .chain([(&"all".to_string(), &run.overall)])
    {
        let (name, d) = t;
        println!(
            "{name:<24} {:>5} positions  KL mean {:.4} (±{:.4})  p99 {:.3}  top-1 {:.1}%  PPL {:.2} -> {:.2}",
            d.positions,
            d.mean_kl,
            d.mean_kl_stderr,
            d.kl_p99,
            100.0 * d.top1_agreement,
            d.perplexity_reference,
            d.perplexity_model
        );
    }
    println!(
        "{:.2} bits per weight; wrote {}",
        run.bits_per_weight,
        path.display()
    );
    Ok(())
}

#[derive(Args, Debug, Clone)]
pub struct QuantStudyArgs {
    /// The GGUF file every type is made from (its F32 dequantization is the reference).
    #[arg(long, short)]
    model: PathBuf,
    /// The model's name in results and the book (`SmolLM2-135M-Instruct`).
    #[arg(long)]
    name: String,
    /// The types to make and measure (default: all).
    #[arg(long = "type", value_enum, ignore_case = true, value_delimiter = ',')]
    types: Option<Vec<FileType>>,
    /// Where the reference and the quantized files are written (replaced each run).
    #[arg(long, default_value = "target/quant-study")]
    work_dir: PathBuf,
    /// Windows of --context tokens scored per text.
    #[arg(long, default_value_t = 4)]
    windows: usize,
    #[arg(long, default_value_t = 512)]
    context: usize,
    /// Time our engine only.
    #[arg(long)]
    no_llama_cpp: bool,
    /// CPU threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    #[command(flatten)]
    results: ResultsDirArgs,
}

pub fn quant_study(args: &QuantStudyArgs) -> Result<()> {
    use billion_llm::eval::quant_study::{run_study, write_study, StudySettings};
    let mut settings = StudySettings {
        context: args.context,
        windows: args.windows,
        with_llama_cpp: !args.no_llama_cpp,
        ..StudySettings::default()
    };
    settings.speed.threads = args.threads;
    if let Some(t) = &args.types {
        settings.types = t.clone();
    }
    let texts = quant_eval::asset_texts(&asset("mmlu.jsonl")?, &asset("HumanEval.jsonl.gz")?)?;
    let study = run_study(
        &args.model,
        &args.name,
        &texts,
        &args.work_dir,
        &settings,
        |m| eprintln!("{m}"),
    )?;
    println!(
        "{:<8} {:>8} {:>6} {:>9} {:>7} {:>7} {:>8} {:>8}",
        "type", "MB", "bpw", "KL", "top-1", "PPL", "decode", "vs l.cpp"
    );
    for r in &study.rows {
        println!(
            "{:<8} {:>8.1} {:>6.2} {:>9.5} {:>6.1}% {:>7.2} {:>8.1} {:>8}",
            r.file_type,
            r.file_bytes as f64 / 1e6,
            r.bits_per_weight,
            r.divergence.mean_kl,
            100.0 * r.divergence.top1_agreement,
            r.divergence.perplexity_model,
            r.billion_llm.decode_tokens_per_s.median,
            r.decode_ratio
                .map(|x| format!("{x:.2}x"))
                .unwrap_or_default()
        );
    }
    let path = write_study(&study, &args.results.results_dir)?;
    println!("wrote {}", path.display());
    Ok(())
}

#[derive(Args, Debug, Clone)]
pub struct QuantOneBArgs {
    /// The models (zoo names; default: the four compared 1B models). Random weights: no download.
    #[arg(long = "model", short)]
    models: Vec<String>,
    /// The types to measure (default: all).
    #[arg(long = "type", value_enum, ignore_case = true, value_delimiter = ',')]
    types: Option<Vec<FileType>>,
    /// Timed runs per type (after one warm-up).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Tokens decoded per run.
    #[arg(long, default_value_t = 32)]
    new_tokens: usize,
    /// The context whose memory is measured once per model (on --context-type).
    #[arg(long, default_value_t = 2048)]
    context: usize,
    #[arg(long, value_enum, ignore_case = true, default_value = "q4_0")]
    context_type: FileType,
    /// CPU threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    #[command(flatten)]
    results: ResultsDirArgs,
}

pub fn quant_1b(args: &QuantOneBArgs) -> Result<()> {
    use billion_llm::eval::quant_1b::{run_1b, write_1b, OneBSettings};
    use billion_llm::hub::zoo;
    let mut settings = OneBSettings {
        context: args.context,
        context_type: args.context_type,
        ..OneBSettings::default()
    };
    settings.speed.threads = args.threads;
    settings.speed.runs = args.runs;
    settings.speed.new_tokens = args.new_tokens;
    if let Some(t) = &args.types {
        settings.types = t.clone();
    }
    if !settings.types.contains(&settings.context_type) {
        bail!(
            "--context-type {} is not among --type: the context's memory is measured on it, so \
             add it to --type",
            settings.context_type
        );
    }
    let entries: Vec<&zoo::ZooModel> = if args.models.is_empty() {
        zoo::compared().collect()
    } else {
        args.models
            .iter()
            .map(|m| zoo::find(m))
            .collect::<Result<_>>()?
    };
    let models = entries
        .iter()
        .map(|m| Ok((m.name.to_string(), m.config()?)))
        .collect::<Result<Vec<_>>>()?;
    let run = run_1b(&models, &settings, |m| eprintln!("{m}"))?;
    println!(
        "{:<16} {:<8} {:>8} {:>9} {:>11} {:>8} {:>8}",
        "model", "type", "file MB", "peak MB", "w/ context", "decode", "prefill"
    );
    for r in &run.rows {
        println!(
            "{:<16} {:<8} {:>8.0} {:>9.0} {:>11.0} {:>8.1} {:>8.1}",
            r.model,
            r.file_type,
            r.file_bytes as f64 / 1e6,
            r.peak_rss_bytes as f64 / 1e6,
            r.with_context_bytes as f64 / 1e6,
            r.speed.decode_tokens_per_s.median,
            r.speed.prefill_tokens_per_s.median
        );
    }
    let path = write_1b(&run, &args.results.results_dir)?;
    println!("wrote {}", path.display());
    Ok(())
}

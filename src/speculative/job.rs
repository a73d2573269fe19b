//! The runs behind two commands. `billion-llm speculative` ([`run`]): decode a target with a
//! drafter, show which tokens the draft supplied, and measure plain decoding of the same target
//! on the same prompt in the same run. `billion-llm speculative-costs` ([`run_costs`]): time the
//! steps a round is made of, for the speedup formula. Each writes its results file.

use super::{
    check_same_vocab_size, check_same_vocabulary, measure_costs, CostSettings, CostedModel,
    CostsRecord, DraftModel, Drafter, KSchedule, LayerSkip, PromptLookup, SameRun,
    SpeculativeDecoder,
};
use crate::eval::memory::peak_rss_bytes;
use crate::eval::results::{write_json_atomic, RunHeader};
use crate::hub::loader::{load, LoadOptions, LoadedModel};
use crate::hub::zoo;
use crate::kernels::isa::instruction_set;
use crate::model::generation::SamplingParams;
use anyhow::{bail, Context, Result};
use candle_core::quantized::GgmlDType;
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

/// One speculative decoding, measured beside plain decoding of the same target.
#[derive(Debug, Clone)]
pub struct SpeculativeJob {
    /// The model whose output is produced: zoo alias, hub id, local folder or .gguf.
    pub target: String,
    /// Who drafts: a smaller model with the same tokenizer (alias, hub id, folder, .gguf),
    /// `layers:N` (the target's own first N layers) or `lookup` (prompt lookup, no model).
    pub draft: String,
    /// How many tokens each round drafts.
    pub schedule: KSchedule,
    pub prompt: Option<String>,
    /// Token ids instead of `prompt`.
    pub ids: Option<Vec<u32>>,
    /// Send `prompt` through the target's chat template as a user message.
    pub chat: bool,
    pub max_new_tokens: usize,
    /// 0 is greedy.
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
    /// CPU threads.
    pub threads: usize,
    /// Print one JSON object ([`Summary`]) instead of the coloured text and the statistics.
    pub json: bool,
    /// Where results/speculative-<timestamp>.json goes.
    pub results_dir: PathBuf,
}

/// What `json` prints and the results file holds (the latter with settings and machine).
#[derive(Debug, Serialize)]
pub struct Summary {
    pub tokens: Vec<u32>,
    pub text: String,
    pub acceptance_rate: f64,
    pub tokens_per_round: f64,
    pub target_forwards: usize,
    pub tokens_per_s: f64,
    pub baseline_tokens_per_s: f64,
    pub speedup: f64,
}

#[derive(Serialize)]
struct Record<'a> {
    #[serde(flatten)]
    header: RunHeader,
    target: &'a str,
    drafter: String,
    schedule: KSchedule,
    sampling: Sampling,
    prompt_tokens: usize,
    summary: &'a Summary,
    /// Rounds that drafted a token at each position, and how many of those were accepted.
    drafted_at: &'a [usize],
    accepted_at: &'a [usize],
    rounds: usize,
    /// Whether the plain and the speculative runs produced the same tokens (always, when
    /// greedy; by chance otherwise).
    same_tokens_as_plain: bool,
}

#[derive(Serialize)]
struct Sampling {
    temperature: f64,
    top_p: f64,
    seed: u64,
}

pub fn run(args: &SpeculativeJob) -> Result<()> {
    let mut target = load(&args.target, &LoadOptions::default())
        .with_context(|| format!("loading the target {}", args.target))?;
    let mut drafter = make_drafter(&args.draft, &target, &args.target)?;
    let prompt = prompt_ids(args, &target)?;
    let sampling = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
    };
    let schedule = args.schedule;
    let colour = !args.json && std::io::stdout().is_terminal();
    let mut stream = target.tokenizer.as_ref().ok().map(|t| t.output_stream());
    let mut stdout = std::io::stdout();
    let run: SameRun = SpeculativeDecoder {
        target: &mut target.model,
        drafter: drafter.as_mut(),
        schedule,
        sampling,
    }
    .generate_beside_plain(&prompt, args.max_new_tokens, |token, drafted| {
        if args.json {
            return Ok(());
        }
        if let Some(piece) = stream
            .as_mut()
            .map(|s| s.next_token(token))
            .transpose()?
            .flatten()
        {
            // Drafted and accepted tokens in green; the target's own in the default colour.
            match (colour, drafted) {
                (true, true) => write!(stdout, "\x1b[32m{piece}\x1b[0m")?,
                _ => write!(stdout, "{piece}")?,
            }
            stdout.flush()?;
        }
        Ok(())
    })?;
    let (out, plain) = (&run.speculative, &run.plain);
    let text = match target.tokenizer() {
        Ok(t) => t.decode(&out.tokens, true)?,
        Err(_) => String::new(),
    };
    let summary = Summary {
        acceptance_rate: out.acceptance_rate(),
        tokens_per_round: out.tokens_per_round(),
        target_forwards: out.target_forwards,
        tokens_per_s: out.decode_tokens_per_s(),
        baseline_tokens_per_s: plain.decode_tokens_per_s(),
        speedup: run.speedup(),
        tokens: out.tokens.clone(),
        text,
    };
    let record = Record {
        header: RunHeader::now(args.threads),
        target: &args.target,
        drafter: drafter.describe(),
        schedule,
        sampling: Sampling {
            temperature: args.temperature,
            top_p: args.top_p,
            seed: args.seed,
        },
        prompt_tokens: prompt.len(),
        summary: &summary,
        drafted_at: &out.drafted_at,
        accepted_at: &out.accepted_at,
        rounds: out.rounds,
        same_tokens_as_plain: run.same_tokens(),
    };
    let path = args
        .results_dir
        .join(record.header.file_name("speculative"));
    write_json_atomic(&path, &record)?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
        return Ok(());
    }
    println!();
    println!(
        "\n{} · acceptance {:.0}% · {:.2} tokens per round · {} target forwards\n\
         speculative {:.1} tok/s · plain {:.1} tok/s · speedup {:.2}× ({}, {} threads)\nwrote {}",
        record.drafter,
        100.0 * summary.acceptance_rate,
        summary.tokens_per_round,
        summary.target_forwards,
        summary.tokens_per_s,
        summary.baseline_tokens_per_s,
        summary.speedup,
        instruction_set(),
        args.threads,
        path.display()
    );
    Ok(())
}

/// The drafter `draft` names (`lookup`, `layers:N`, or a model: zoo alias, hub id, folder,
/// .gguf); a draft model must share the target's vocabulary.
pub fn make_drafter(
    draft: &str,
    target: &LoadedModel,
    target_name: &str,
) -> Result<Box<dyn Drafter>> {
    if draft == "lookup" {
        return Ok(Box::new(PromptLookup::default()));
    }
    if let Some(n) = draft.strip_prefix("layers:") {
        let layers: usize = n
            .parse()
            .with_context(|| format!("--draft layers:N needs a number of layers, got {n:?}"))?;
        let total = target.model.num_layers();
        if layers == 0 || layers >= total {
            bail!(
                "--draft layers:{layers}: the target has {total} layers; draft with 1 to {}",
                total - 1
            );
        }
        return Ok(Box::new(LayerSkip::new(layers)));
    }
    let loaded = load(draft, &LoadOptions::default())
        .with_context(|| format!("loading the draft {draft}"))?;
    check_same_vocab_size(
        target.model.config().vocab_size,
        loaded.model.config().vocab_size,
        target_name,
        draft,
    )?;
    check_same_vocabulary(target.tokenizer()?, loaded.tokenizer()?, target_name, draft)?;
    Ok(Box::new(DraftModel::new(loaded.model, draft)))
}

fn prompt_ids(args: &SpeculativeJob, target: &LoadedModel) -> Result<Vec<u32>> {
    match (&args.ids, &args.prompt) {
        (Some(ids), _) => Ok(ids.clone()),
        (None, Some(_)) if args.chat && target.chat_template.is_none() => {
            bail!("{} has no chat template: drop --chat", args.target)
        }
        (None, Some(text)) if args.chat => target.chat_prompt(text),
        (None, Some(text)) => target.tokenizer()?.encode(text, true),
        (None, None) => bail!("give --prompt or --ids"),
    }
}

/// What `speculative-costs` times.
#[derive(Debug, Clone)]
pub struct CostsJob {
    /// The model that verifies: zoo alias, hub id, local folder or .gguf.
    pub target: String,
    /// The model that drafts; it must share the target's vocabulary.
    pub draft: String,
    /// Both models' real configs with random weights (no download; a token costs what it
    /// costs with trained weights).
    pub random_weights: bool,
    /// Quantize both models' plain weights at load time.
    pub quantize: Option<GgmlDType>,
    /// Drafts per round whose verification (K + 1 tokens) is timed.
    pub k: Vec<usize>,
    /// Tokens in the caches when a step is timed.
    pub context: usize,
    pub warmup: usize,
    pub runs: usize,
    /// CPU threads.
    pub threads: usize,
    /// Where results/speculative-costs-<timestamp>.json goes.
    pub results_dir: PathBuf,
}

/// `billion-llm speculative-costs`: loads the target first (so the peak resident set right
/// after is its load's), then the draft, times their steps and writes the results file.
pub fn run_costs(args: &CostsJob) -> Result<()> {
    let opts = LoadOptions {
        quantize: args.quantize,
        random_weights: args.random_weights,
        ..LoadOptions::default()
    };
    let mut target =
        load(&args.target, &opts).with_context(|| format!("loading the target {}", args.target))?;
    let target_load_peak_rss_bytes = peak_rss_bytes();
    eprintln!(
        "{}: {:.1} GB of weights, loaded in {:.0} s, peak resident set {:.1} GB",
        args.target,
        target.model.weight_bytes() as f64 / 1e9,
        target.load_s,
        target_load_peak_rss_bytes as f64 / 1e9
    );
    let mut draft =
        load(&args.draft, &opts).with_context(|| format!("loading the draft {}", args.draft))?;
    let settings = CostSettings {
        ks: args.k.clone(),
        context_tokens: args.context,
        warmup: args.warmup,
        runs: args.runs,
    };
    let load_average = load_average();
    let costs = measure_costs(&mut target.model, &mut draft.model, &settings)?;
    let record = CostsRecord {
        header: RunHeader::now(args.threads),
        target: costed(&target, args),
        draft: costed(&draft, args),
        settings,
        threads: args.threads,
        costs,
        target_load_peak_rss_bytes,
        peak_rss_bytes: peak_rss_bytes(),
        load_average,
    };
    let path = args
        .results_dir
        .join(record.header.file_name("speculative-costs"));
    write_json_atomic(&path, &record)?;
    let c = &record.costs;
    println!(
        "target step {:.1} ms · draft step {:.1} ms · c = {:.3} ({}, {} threads)",
        1e3 * c.target_token_s.median,
        1e3 * c.draft_token_s.median,
        c.c,
        instruction_set(),
        args.threads
    );
    for v in &c.verify {
        println!(
            "K = {}: verifying {} tokens {:.1} ms · v = {:.2}",
            v.k,
            v.k + 1,
            1e3 * v.seconds.median,
            v.v
        );
    }
    println!("wrote {}", path.display());
    Ok(())
}

fn costed(m: &LoadedModel, args: &CostsJob) -> CostedModel {
    let parameters = m.model.config().parameter_counts().total();
    CostedModel {
        model: m.name.clone(),
        name: zoo::lookup(&m.name).map_or_else(|| m.name.clone(), |z| z.name.to_string()),
        parameters,
        weights: if args.random_weights {
            "random".into()
        } else {
            "pretrained".into()
        },
        quantization: args.quantize.map(|q| format!("{q:?}").to_lowercase()),
        weight_bytes: m.model.weight_bytes(),
        f32_bytes: 4 * parameters,
        load_s: m.load_s,
    }
}

/// The 1-minute load average (Linux), to read timings from a busy machine with.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

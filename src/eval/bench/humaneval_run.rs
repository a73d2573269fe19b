//! HumanEval in `bench`: the hub's copy of the problems, the sandbox their tests run in, and one
//! model's samples per problem (completion or chat format), each run against the tests, scored
//! as pass@k.

use super::schema::{HumanEvalResult, ProblemResult, ProblemScore};
use super::settings::BenchSettings;
use crate::eval::humaneval::{self, Format, Isolation, Outcome, Problem, Sampling, Sandbox};
use crate::eval::humaneval_chat::{self, ChatPrompter};
use crate::hub::client::HubClient;
use crate::hub::loader::LoadedModel;
use crate::model::generation::{generate, GenerateOptions};
use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The hub dataset HumanEval is read from.
pub const HUMANEVAL_DATASET: &str = "openai/openai_humaneval";
pub const HUMANEVAL_FILE: &str = "openai_humaneval/test-00000-of-00001.parquet";

/// HumanEval from the hub (or its local cache).
pub fn hub_humaneval(hub: &HubClient) -> Result<PathBuf> {
    hub.dataset(HUMANEVAL_DATASET).get(HUMANEVAL_FILE)
}

/// What one sample generated.
struct Drawn {
    text: String,
    tokens: usize,
    seconds: f64,
}

/// Draws `sampling.samples` continuations of `prompt`, each ended by EOS, by `max_new_tokens`
/// or as soon as `done` finds its text complete. The prompt is read once: all but its last token
/// fill the KV cache, and each sample rolls the cache back to them and goes on from the last
/// token, so n samples cost one prefill (counted in the first sample's seconds).
fn draw_samples(
    model: &mut LoadedModel,
    prompt: &[u32],
    sampling: &Sampling,
    max_new_tokens: usize,
    done: impl Fn(&str) -> bool,
) -> Result<Vec<Drawn>> {
    let tokenizer = model.tokenizer()?.clone();
    let Some((last, context)) = prompt.split_last() else {
        bail!("the HumanEval prompt is empty");
    };
    let start = Instant::now();
    model.model.reset_cache();
    if !context.is_empty() {
        let ids = Tensor::new(context, model.model.device())?.unsqueeze(0)?;
        model.model.forward_last(&ids)?;
    }
    let mut prefill_seconds = start.elapsed().as_secs_f64();
    let mut drawn = Vec::with_capacity(sampling.samples);
    for i in 0..sampling.samples {
        let t = Instant::now();
        model.model.truncate_cache(context.len());
        let stop = Arc::new(AtomicBool::new(false));
        let options = GenerateOptions {
            max_new_tokens,
            sampling: sampling.params(i),
            ignore_eos: false,
            stop: Some(stop.clone()),
        };
        let mut ids = Vec::new();
        generate(&mut model.model, &[*last], &options, |id| {
            ids.push(id);
            // Decoding the whole sample each step is cheap next to a forward pass.
            if done(&tokenizer.decode(&ids, true)?) {
                stop.store(true, Ordering::Relaxed);
            }
            Ok(())
        })?;
        drawn.push(Drawn {
            text: tokenizer.decode(&ids, true)?,
            tokens: ids.len(),
            seconds: t.elapsed().as_secs_f64() + std::mem::take(&mut prefill_seconds),
        });
    }
    model.model.reset_cache();
    Ok(drawn)
}

/// The format HumanEval uses for `model`: the one asked for, or (`None`, auto) chat when the
/// model has a chat template and completion otherwise. A model never trained to chat (its
/// only template is the plain transcript the zoo gives Pythia) has none.
pub fn humaneval_format(model: &LoadedModel, asked: Option<Format>) -> Result<Format> {
    let has_template = model
        .chat_template
        .as_ref()
        .is_some_and(|t| !t.is_plain_transcript());
    match asked {
        Some(Format::Chat) if !has_template => bail!(
            "{} has no chat template (a base model, or files that ship none), so HumanEval \
             cannot be put to it as a chat: use --humaneval-format completion, or auto, which \
             picks completion for such models",
            model.name
        ),
        Some(format) => Ok(format),
        None if has_template => Ok(Format::Chat),
        None => Ok(Format::Completion),
    }
}

/// HumanEval's problems with the sandbox their tests run in and what that sandbox granted.
pub struct HumanEvalSetup {
    pub problems: Vec<Problem>,
    pub sandbox: Sandbox,
    pub isolation: Isolation,
}

impl HumanEvalSetup {
    /// Loads the problems and sets up the sandbox before any model is loaded, so that a
    /// system that cannot confine model-written code says so at once.
    pub fn new(s: &BenchSettings) -> Result<Self> {
        s.humaneval_sampling.validate()?;
        let problems = humaneval::load_problems(&s.humaneval_file)?;
        let sandbox = if s.unsafe_no_sandbox {
            Sandbox::new(s.humaneval_timeout)
                .or_else(|_| Sandbox::unconfined(s.humaneval_timeout))?
        } else {
            Sandbox::new(s.humaneval_timeout)?
        };
        let isolation = sandbox.probe()?;
        if !isolation.is_full() {
            eprintln!(
                "warning: HumanEval's sandbox ({:?}) lacks: {}",
                isolation.mechanism,
                isolation.missing().join(", ")
            );
        }
        Ok(HumanEvalSetup {
            problems,
            sandbox,
            isolation,
        })
    }
}

/// The samples of one problem as they ran, and its score.
#[derive(Debug, Clone)]
pub struct ProblemRun {
    pub samples: Vec<ProblemResult>,
    pub score: ProblemScore,
}

/// Puts one problem to the model in `format`, draws `sampling.samples` answers and runs each
/// in the sandbox.
pub fn run_problem(
    model: &mut LoadedModel,
    problem: &Problem,
    format: Format,
    sampling: &Sampling,
    sandbox: &Sandbox,
) -> Result<ProblemRun> {
    let tokenizer = model.tokenizer()?.clone();
    let max_new_tokens = format.max_new_tokens();
    let prompter = match format {
        Format::Completion => None,
        Format::Chat => Some(ChatPrompter::new(
            model.chat_template.clone().with_context(|| {
                format!("{} has no chat template for the chat format", model.name)
            })?,
        )),
    };
    let drawn = match &prompter {
        None => draw_samples(
            model,
            &tokenizer.encode(&problem.prompt, true)?,
            sampling,
            max_new_tokens,
            |text| humaneval::truncate_at_stop(text).len() < text.len(),
        )?,
        // The template places the special tokens, as transformers' apply_chat_template.
        Some(chat) => draw_samples(
            model,
            &tokenizer.encode(&chat.prompt(problem)?, false)?,
            sampling,
            max_new_tokens,
            // Only the first code block is used: stop once it is closed.
            |text| humaneval_chat::first_fenced_block(&chat.answer(text)).is_some_and(|b| b.1),
        )?,
    };
    let mut samples = Vec::with_capacity(drawn.len());
    for (sample, d) in drawn.into_iter().enumerate() {
        let (completion, code, program) = match &prompter {
            None => {
                let completion = humaneval::truncate_at_stop(&d.text).to_string();
                let program = humaneval::program(problem, &completion);
                (completion, None, program)
            }
            Some(chat) => {
                let code = humaneval_chat::extract_code(&chat.answer(&d.text));
                let program = humaneval_chat::program(problem, &code);
                (d.text, Some(code), program)
            }
        };
        let run = sandbox.run(&program)?;
        samples.push(ProblemResult {
            task_id: problem.task_id.clone(),
            sample,
            whole_program: code
                .as_deref()
                .is_some_and(|c| humaneval_chat::defines_entry_point(c, problem)),
            completion,
            code,
            tokens: d.tokens,
            outcome: run.outcome,
            error: run.error,
            generate_seconds: d.seconds,
            run_seconds: run.seconds,
        });
    }
    let n = samples.len();
    let c = samples
        .iter()
        .filter(|r| r.outcome == Outcome::Passed)
        .count();
    let score = ProblemScore {
        task_id: problem.task_id.clone(),
        n,
        c,
        pass_at_k: sampling
            .ks()
            .into_iter()
            .map(|k| (k, humaneval::pass_at_k(n, c, k)))
            .collect(),
    };
    Ok(ProblemRun { samples, score })
}

/// Puts the selected HumanEval problems to the model in its format, draws the samples and
/// runs each in the sandbox; pass@k by the unbiased estimator, averaged over the problems.
pub fn run_humaneval(
    model: &mut LoadedModel,
    setup: &HumanEvalSetup,
    s: &BenchSettings,
) -> Result<HumanEvalResult> {
    let sampling = &s.humaneval_sampling;
    sampling.validate()?;
    let format = humaneval_format(model, s.humaneval_format)?;
    let problems = &setup.problems;
    let selected: Vec<&Problem> = if s.humaneval_all {
        problems.iter().collect()
    } else {
        humaneval::select(problems, &humaneval::SUBSET)?
    };
    let selected = &selected[..selected.len().min(s.limit.unwrap_or(usize::MAX))];
    let bar = s.progress_bar(selected.len(), "HumanEval problems");
    let start = Instant::now();
    let mut results = Vec::new();
    let mut per_problem = Vec::new();
    for p in selected {
        let run = run_problem(model, p, format, sampling, &setup.sandbox)?;
        bar.inc(1);
        // Without a terminal for the bar, a line per problem shows the run is alive.
        if !s.progress {
            eprintln!(
                "   HumanEval {}: {}/{} passed ({:.0} s)",
                p.task_id,
                run.score.c,
                run.score.n,
                start.elapsed().as_secs_f64()
            );
        }
        results.extend(run.samples);
        per_problem.push(run.score);
    }
    bar.finish_and_clear();
    let mean = |k: usize| {
        per_problem.iter().map(|p| p.pass_at_k[&k]).sum::<f64>() / per_problem.len().max(1) as f64
    };
    let pass_at_k: BTreeMap<usize, f64> = sampling.ks().into_iter().map(|k| (k, mean(k))).collect();
    let response_prefix = match format {
        Format::Completion => None,
        Format::Chat => model
            .chat_template
            .clone()
            .and_then(|t| ChatPrompter::new(t).response_prefix())
            .map(String::from),
    };
    Ok(HumanEvalResult {
        source: s.humaneval_file.display().to_string(),
        subset: if s.humaneval_all {
            "all 164".into()
        } else {
            format!("{} fixed problems", selected.len())
        },
        format,
        response_prefix,
        sampling: *sampling,
        max_new_tokens: Some(format.max_new_tokens()),
        passed: per_problem.iter().filter(|p| p.c > 0).count(),
        problems: per_problem.len(),
        pass_at_1: pass_at_k[&1],
        pass_at_k,
        per_problem,
        isolation: setup.isolation,
        timeout_seconds: s.humaneval_timeout.as_secs_f64(),
        seconds: start.elapsed().as_secs_f64(),
        results,
    })
}

/// Samples side by side, each with the format it was asked in: what the model wrote, the code
/// that ran, and how it ended.
pub fn samples_table(samples: &[(Format, &ProblemResult)]) -> Result<crate::report::Table> {
    use polars::prelude::{Column, DataFrame};
    let col = |name: &str, f: &dyn Fn(Format, &ProblemResult) -> String| {
        Column::new(
            name.into(),
            samples.iter().map(|(fm, r)| f(*fm, r)).collect::<Vec<_>>(),
        )
    };
    let df = DataFrame::new_infer_height(vec![
        col("problem", &|_, r| r.task_id.clone()),
        col("format", &|f, _| f.name().to_string()),
        col("the model wrote", &|_, r| r.completion.clone()),
        col("code run", &|_, r| {
            r.code.clone().unwrap_or_else(|| r.completion.clone())
        }),
        col("ran as", &|_, r| {
            if r.whole_program {
                "the program".into()
            } else {
                "the prompt's continuation".into()
            }
        }),
        col("outcome", &|_, r| format!("{:?}", r.outcome)),
        col("error", &|_, r| r.error.clone()),
    ])?;
    Ok(crate::report::Table::new("HumanEval samples", df))
}

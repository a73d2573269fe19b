//! LoRA fine-tuning: the optimizer step, training the tiny reference llama, peft round trips,
//! and bad input.

use billion_llm::finetune::adapter::TrainableAdapter;
use billion_llm::finetune::base::load_trainable;
use billion_llm::finetune::config::{LoraConfig, Targets};
use billion_llm::finetune::data::{Dataset, Example};
use billion_llm::finetune::loss::{summed_loss, Batch};
use billion_llm::finetune::optim::{Decay, Optimizer, Schedule};
use billion_llm::finetune::trainer::{Outcome, TrainSettings, Trainer};
use billion_llm::hub::loader::{load, LoadOptions};
use billion_llm::model::{max_abs_diff, Linear, Transformer};
use candle_core::{Device, Tensor, Var};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

fn reference(case: &str) -> PathBuf {
    crate::common::reference_dir(case)
}

fn tiny(case: &str) -> Transformer {
    load_trainable(reference(case).to_str().unwrap(), &Device::Cpu)
        .unwrap()
        .model
}

/// Eight fixed sequences of 24 ids; the second half of each is the "answer".
fn toy_data() -> Dataset {
    let examples = (0..8u32)
        .map(|k| {
            let ids: Vec<u32> = (0..24u32)
                .map(|t| (k * 37 + t * 11 + t * t) % 250 + 3)
                .collect();
            let trained = (0..24).map(|t| t >= 12).collect();
            Example { ids, trained }
        })
        .collect();
    Dataset {
        examples,
        ..Dataset::default()
    }
}

/// Trains to the last epoch without a held-out set or a stop request.
fn train_to_the_end(trainer: &mut Trainer, data: &Dataset, out: &std::path::Path) -> Outcome {
    let never = AtomicBool::new(false);
    trainer.train(data, None, out, &never, &mut |_| {}).unwrap()
}

fn logits(model: &mut Transformer, ids: &[u32]) -> Tensor {
    let input = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    model.forward_uncached(&input).unwrap()
}

/// The size the workbook's adapter table computes from a config alone equals what attaching the
/// adapter to the model creates, for each family, with the default targets and all-linear.
#[test]
fn adapter_size_from_the_config_equals_the_attached_adapter() {
    for case in ["llama", "llama3", "stablelm", "gpt_neox", "gemma3"] {
        for targets in [Targets::FamilyDefault, Targets::AllLinear] {
            let mut model = tiny(case);
            let lora = LoraConfig {
                r: 4,
                targets: targets.clone(),
                ..LoraConfig::default()
            };
            let counted = lora.parameter_count(model.config()).unwrap();
            let attached = TrainableAdapter::attach(&mut model, &lora, 0).unwrap();
            assert_eq!(
                counted,
                attached.trainable_parameters(),
                "{case} {targets:?}"
            );
        }
    }
}

/// The loss computes logits only at answer positions; it must equal the cross-entropy of the
/// full forward's logits at those positions, padding and prompts excluded.
#[test]
fn the_answer_only_loss_equals_the_masked_full_cross_entropy() {
    let mut model = tiny("llama");
    let data = toy_data();
    // Two examples of different lengths, so the shorter one is padded.
    let mut short = data.examples[1].clone();
    short.ids.truncate(18);
    short.trained.truncate(18);
    let refs: Vec<&Example> = vec![&data.examples[0], &short];
    let batch = Batch::new(&refs, &Device::Cpu).unwrap();
    let loss: f32 = summed_loss(&mut model, &batch)
        .unwrap()
        .to_scalar()
        .unwrap();
    let mut expected = 0f64;
    let mut count = 0;
    for e in &refs {
        let n = e.ids.len() - 1;
        let log_probs = candle_nn::ops::log_softmax(&logits(&mut model, &e.ids[..n]), 2)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for t in 0..n {
            if e.trained[t + 1] {
                expected -= f64::from(log_probs[t][e.ids[t + 1] as usize]);
                count += 1;
            }
        }
    }
    assert_eq!(batch.target_tokens, count);
    assert!(
        (f64::from(loss) - expected).abs() < 1e-4 * expected,
        "{loss} vs {expected}"
    );
}

#[test]
fn adamw_steps_equal_the_hand_computed_update() {
    let w0 = [0.5f64, -1.0, 0.25, 2.0];
    let g1 = [0.1f64, -0.2, 0.3, 0.05]; // norm 0.38: not clipped
    let g2 = [1.0f64, 2.0, -2.0, 0.5]; // norm 3.04: clipped to 1
    let (lr, wd, max_norm) = (0.01, 0.1, 1.0);
    let var = Var::new(&[[0.5f32, -1.0], [0.25, 2.0]], &Device::Cpu).unwrap();
    let schedule = Schedule {
        peak_lr: lr,
        warmup_steps: 0,
        total_steps: 4,
        decay: Decay::Linear,
    };
    let mut opt = Optimizer::new(vec![var.clone()], wd, schedule, max_norm).unwrap();
    let grad_of = |g: &[f64]| {
        let c = Tensor::new(
            &[[g[0] as f32, g[1] as f32], [g[2] as f32, g[3] as f32]],
            &Device::Cpu,
        )
        .unwrap();
        (var.as_tensor() * c)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
    };
    // Step 1: one micro-batch. Step 2: two micro-batches of the same gradient, scaled by 1/2.
    let mut acc = opt.accumulator();
    opt.accumulate(&mut acc, &grad_of(&g1)).unwrap();
    let r1 = opt.step(acc, 1.0).unwrap();
    let mut acc = opt.accumulator();
    opt.accumulate(&mut acc, &grad_of(&g2)).unwrap();
    opt.accumulate(&mut acc, &grad_of(&g2)).unwrap();
    let r2 = opt.step(acc, 0.5).unwrap();

    // By hand: AdamW (Loshchilov & Hutter) with torch's defaults and decoupled weight decay.
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
    let norm2: f64 = g2.iter().map(|g| g * g).sum::<f64>().sqrt();
    let clip = max_norm / (norm2 + 1e-6);
    let lr1 = lr; // linear decay: step 0 at the peak
    let lr2 = lr * (1.0 - 1.0 / 4.0);
    assert!((r1.lr - lr1).abs() < 1e-12 && (r2.lr - lr2).abs() < 1e-12);
    assert!((r2.grad_norm - norm2).abs() < 1e-5, "{}", r2.grad_norm);
    let expected: Vec<f64> = (0..4)
        .map(|i| {
            let m1 = (1.0 - b1) * g1[i];
            let v1 = (1.0 - b2) * g1[i] * g1[i];
            let w1 = w0[i] * (1.0 - lr1 * wd)
                - lr1 * (m1 / (1.0 - b1)) / ((v1 / (1.0 - b2)).sqrt() + eps);
            let g = g2[i] * clip;
            let m2 = b1 * m1 + (1.0 - b1) * g;
            let v2 = b2 * v1 + (1.0 - b2) * g * g;
            let m_hat = m2 / (1.0 - b1 * b1);
            let v_hat = v2 / (1.0 - b2 * b2);
            w1 * (1.0 - lr2 * wd) - lr2 * m_hat / (v_hat.sqrt() + eps)
        })
        .collect();
    let got: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
    for (g, e) in got.iter().zip(&expected) {
        assert!(
            (*g as f64 - e).abs() < 1e-6,
            "got {got:?}, expected {expected:?}"
        );
    }
}

/// Every A and B receives a gradient from one backward pass, and no base weight does.
#[test]
fn gradients_reach_only_the_adapter() {
    let mut model = tiny("llama");
    let lora = LoraConfig {
        targets: Targets::AllLinear,
        ..LoraConfig::default()
    };
    let adapter = TrainableAdapter::attach(&mut model, &lora, 1).unwrap();
    // With B = 0 the gradient of A is zero: give B a value first.
    for p in &adapter.params {
        p.b.set(&(p.b.ones_like().unwrap() * 0.01).unwrap())
            .unwrap();
    }
    let data = toy_data();
    let refs: Vec<&Example> = data.examples.iter().take(2).collect();
    let batch = Batch::new(&refs, &Device::Cpu).unwrap();
    let grads = summed_loss(&mut model, &batch).unwrap().backward().unwrap();
    for p in &adapter.params {
        for (name, var) in [("A", &p.a), ("B", &p.b)] {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{} {name}", p.module));
            let norm: f32 = g.sqr().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(norm > 0.0, "{} {name}: zero gradient", p.module);
        }
    }
    for linear in model.linears_mut() {
        let Linear::Dense { weight, .. } = &linear.base else {
            panic!("dense base expected")
        };
        assert!(
            grads.get(weight).is_none(),
            "{} got a gradient",
            linear.name
        );
    }
    assert_eq!(
        adapter.params.len(),
        2 * 7,
        "7 linears per block, lm_head excluded"
    );
}

#[test]
fn training_the_tiny_llama_lowers_the_loss_and_leaves_the_base_alone() {
    let mut model = tiny("llama");
    let before: Vec<Vec<f32>> = model
        .linears_mut()
        .iter()
        .map(|l| match &l.base {
            Linear::Dense { weight, .. } => weight.flatten_all().unwrap().to_vec1().unwrap(),
            _ => panic!("dense base expected"),
        })
        .collect();
    let probe = toy_data().examples[0].ids.clone();
    let base_logits = logits(&mut model, &probe);
    let data = toy_data();
    let lora = LoraConfig {
        targets: Targets::AllLinear,
        ..LoraConfig::default()
    };
    let settings = TrainSettings {
        epochs: 15,
        batch_size: 4,
        grad_accum: 1,
        lr: 1e-2,
        ..TrainSettings::default()
    };
    let out = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(&mut model, &lora, &settings, 8, "llama").unwrap();
    let start = trainer.evaluate(&data).unwrap();
    let outcome = trainer
        .train(
            &data,
            Some(&data),
            out.path(),
            &AtomicBool::new(false),
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(outcome, Outcome::Finished);
    let end = trainer.evaluate(&data).unwrap();
    assert_eq!(trainer.state.steps.len(), 30);
    assert_eq!(trainer.state.epochs.len(), 15);
    // Each epoch's training loss is the token-weighted mean of its steps' losses.
    for e in &trainer.state.epochs {
        let steps: Vec<_> = trainer
            .state
            .steps
            .iter()
            .filter(|s| s.epoch == e.epoch)
            .collect();
        assert_eq!(steps.len(), 2);
        let tokens: usize = steps.iter().map(|s| s.target_tokens).sum();
        let mean = steps
            .iter()
            .map(|s| s.loss * s.target_tokens as f64)
            .sum::<f64>()
            / tokens as f64;
        assert!(
            (e.train_loss - mean).abs() < 1e-9 && e.train_loss > 0.0,
            "{e:?}"
        );
    }
    let last = trainer.state.epochs.last().unwrap();
    assert!(
        (last.eval_loss.unwrap() - end).abs() < 1e-4,
        "held-out loss {last:?} vs {end}"
    );
    assert!(
        end < 0.5 * start,
        "loss went from {start} to only {end}: training does not learn"
    );
    assert!(out
        .path()
        .join("checkpoint-epoch-15/adapter_model.safetensors")
        .exists());
    drop(trainer);

    // The base weights are bit for bit what they were, and without the adapter the model
    // gives the logits it gave before training.
    for (linear, old) in model.linears_mut().into_iter().zip(&before) {
        let Linear::Dense { weight, .. } = &linear.base else {
            unreachable!()
        };
        let now: Vec<f32> = weight.flatten_all().unwrap().to_vec1().unwrap();
        assert!(now == *old, "{} changed", linear.name);
        linear.lora = None;
    }
    assert_eq!(
        max_abs_diff(&logits(&mut model, &probe), &base_logits).unwrap(),
        0.0
    );
}

#[test]
fn a_saved_adapter_reloads_with_the_same_logits() {
    for case in ["llama", "gpt_neox"] {
        let mut model = tiny(case);
        let lora = LoraConfig {
            targets: Targets::AllLinear,
            ..LoraConfig::default()
        };
        let settings = TrainSettings {
            epochs: 2,
            batch_size: 4,
            grad_accum: 1,
            lr: 1e-2,
            ..TrainSettings::default()
        };
        let out = tempfile::tempdir().unwrap();
        let mut trainer = Trainer::new(&mut model, &lora, &settings, 8, case).unwrap();
        let stop = AtomicBool::new(false);
        trainer
            .train(&toy_data(), None, out.path(), &stop, &mut |_| {})
            .unwrap();
        let dir = out.path().join("adapter");
        let config = trainer.adapter.params[0].a.dims()[0];
        assert_eq!(config, 8);
        let base_config = reference(case).join("config.json");
        let base_config =
            billion_llm::model::config::TransformerConfig::from_file(&base_config).unwrap();
        trainer.adapter.save_peft(&dir, case, &base_config).unwrap();
        let adapter = trainer.adapter.clone();
        drop(trainer);
        adapter.install(&mut model, 0.0).unwrap();
        model.set_training(false);
        let probe = &toy_data().examples[3].ids;
        let in_memory = logits(&mut model, probe);

        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(json["peft_type"], "LORA");
        assert_eq!(json["task_type"], "CAUSAL_LM");
        assert_eq!(json["r"], 8);
        let opts = LoadOptions {
            adapter: Some(dir.clone()),
            ..LoadOptions::default()
        };
        let mut reloaded = load(reference(case).to_str().unwrap(), &opts).unwrap();
        let diff = max_abs_diff(&logits(&mut reloaded.model, probe), &in_memory).unwrap();
        assert!(diff < 1e-5, "{case}: reloaded adapter differs by {diff}");
        // It really moved the model.
        let mut base = load(reference(case).to_str().unwrap(), &LoadOptions::default()).unwrap();
        let moved = max_abs_diff(&logits(&mut base.model, probe), &in_memory).unwrap();
        assert!(
            moved > 1e-2,
            "{case}: the adapter changes nothing ({moved})"
        );
    }
}

fn smollm2() -> PathBuf {
    billion_llm::hub::assets::asset(billion_llm::hub::assets::SMOLLM2_GGUF).unwrap()
}

#[test]
fn only_answer_tokens_are_trained_and_long_examples_are_cut() {
    use billion_llm::finetune::data::{read_conversations, tokenize};
    let m = load(smollm2().to_str().unwrap(), &LoadOptions::default()).unwrap();
    let template = m.chat_template.clone().unwrap();
    let tok = m.tokenizer().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let alpaca = dir.path().join("alpaca.json");
    std::fs::write(
        &alpaca,
        r#"[{"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
            {"instruction": "Say hi.", "input": "", "output": "Hi there!"}]"#,
    )
    .unwrap();
    let conversations = read_conversations(&alpaca).unwrap();
    assert_eq!(conversations[0][0].content, "Add the numbers.\n\n2 and 3");
    assert_eq!(conversations[1][0].content, "Say hi.");
    let data = tokenize(&conversations, &template, tok, 512).unwrap();
    let split = |e: &Example, answer: bool| -> String {
        let ids: Vec<u32> = e
            .ids
            .iter()
            .zip(&e.trained)
            .filter(|(_, &t)| t == answer)
            .map(|(&i, _)| i)
            .collect();
        tok.decode(&ids, false).unwrap()
    };
    assert_eq!(split(&data.examples[0], true), "5<|im_end|>\n");
    assert_eq!(
        split(&data.examples[0], false),
        template.render(&conversations[0][..1], true).unwrap()
    );

    // A chat record: both assistant turns are trained, the user turns are not.
    let chat = dir.path().join("chat.jsonl");
    std::fs::write(
        &chat,
        r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Goodbye!"}]}"#,
    )
    .unwrap();
    let conversations = read_conversations(&chat).unwrap();
    let data = tokenize(&conversations, &template, tok, 512).unwrap();
    assert_eq!(
        split(&data.examples[0], true),
        "Hello!<|im_end|>\nGoodbye!<|im_end|>\n"
    );
    let full = data.examples[0].ids.len();

    // Cut inside the second answer: kept and counted; cut before any answer: dropped.
    let cut = tokenize(&conversations, &template, tok, full - 2).unwrap();
    assert_eq!((cut.examples.len(), cut.truncated), (1, 1));
    assert_eq!(cut.examples[0].ids.len(), full - 2);
    let err = tokenize(&conversations, &template, tok, 8).unwrap_err();
    assert!(err.to_string().contains("raise --max-len"), "{err}");
}

#[test]
fn bad_input_gets_clear_errors() {
    use billion_llm::finetune::data::read_conversations;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    std::fs::write(
        &data,
        "{\"instruction\": \"a\", \"output\": \"b\"}\n\n{\"instruction\": \"c\", \"output\": \n",
    )
    .unwrap();
    let err = format!("{:#}", read_conversations(&data).unwrap_err());
    assert!(err.contains("line 3"), "{err}");
    std::fs::write(&data, "{\"prompt\": \"a\", \"completion\": \"b\"}\n").unwrap();
    let err = format!("{:#}", read_conversations(&data).unwrap_err());
    assert!(
        err.contains("line 1") && err.contains("instruction"),
        "{err}"
    );
    std::fs::write(&data, "\n  \n").unwrap();
    let err = format!("{:#}", read_conversations(&data).unwrap_err());
    assert!(err.contains("no examples"), "{err}");

    let mut model = tiny("llama");
    let zero = LoraConfig {
        r: 0,
        ..LoraConfig::default()
    };
    let err = TrainableAdapter::attach(&mut model, &zero, 1).unwrap_err();
    assert!(err.to_string().contains("at least 1"), "{err}");
    let missing = LoraConfig {
        targets: Targets::Modules(vec!["query_key_value".into()]),
        ..LoraConfig::default()
    };
    let err = TrainableAdapter::attach(&mut model, &missing, 1).unwrap_err();
    let err = err.to_string();
    assert!(
        err.contains("query_key_value") && err.contains("q_proj") && err.contains("down_proj"),
        "{err}"
    );

    // An adapter made for the llama case does not fit llama3 (one KV head, not two).
    let adapter = TrainableAdapter::attach(&mut model, &LoraConfig::default(), 1).unwrap();
    let saved = dir.path().join("adapter");
    adapter.save_peft(&saved, "llama", model.config()).unwrap();
    let opts = LoadOptions {
        adapter: Some(saved),
        ..LoadOptions::default()
    };
    let err = load(reference("llama3").to_str().unwrap(), &opts)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("another base model"), "{err}");
}

fn billion_llm(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_billion-llm"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &stderr,
    )
}

/// The command end to end on the real SmolLM2 GGUF: two steps, a checkpoint, the adapter in
/// peft format that `--adapter` applies to the quantized file and in llama.cpp's GGUF format, a
/// merged GGUF, the before/after rows on the held-out example, a results file, and no second run
/// into the same folder without --overwrite.
#[test]
fn finetune_command_trains_smollm2_and_refuses_an_existing_folder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.jsonl");
    let lines: Vec<String> = ["red", "green", "blue", "yellow"]
        .iter()
        .map(|c| {
            serde_json::json!({"instruction": format!("Name the color {c}."), "output": c})
                .to_string()
        })
        .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    let out = dir.path().join("adapter");
    let merged = dir.path().join("merged.gguf");
    let results = dir.path().join("results");
    let gguf = smollm2();
    let args = [
        "finetune",
        "--model",
        gguf.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--eval-fraction",
        "0.25",
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--grad-accum",
        "1",
        "--max-len",
        "64",
        "--out",
        out.to_str().unwrap(),
        "--merge",
        merged.to_str().unwrap(),
        "--results-dir",
        results.to_str().unwrap(),
    ];
    let (ok, log) = billion_llm(&args);
    assert!(ok, "{log}");
    assert!(log.contains("trainable params: "), "{log}");
    for f in [
        "adapter_config.json",
        "adapter_model.safetensors",
        "checkpoint-epoch-1/trainer_state.json",
        "adapter.gguf",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    assert!(merged.exists() && !dir.path().join("merged.gguf.partial").exists());
    assert!(!dir.path().join("adapter.partial").exists());
    // Readable like its folder (the safetensors crate alone leaves files owner-only).
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode(&out.join("adapter_model.safetensors")),
            mode(&out) & 0o666
        );
    }
    let report = std::fs::read_dir(&results)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    assert_eq!(
        report["steps"].as_array().unwrap().len(),
        2,
        "3 examples, batches of 2"
    );
    assert!(report["epochs"][0]["eval_loss"].as_f64().unwrap() > 0.0);
    assert!(report["train_tokens_per_s"].as_f64().unwrap() > 0.0);
    // One held-out example, asked plainly, with the 3 training examples, and with the adapter.
    assert_eq!(report["heldout"]["metric"], "exact_match");
    let rows = report["heldout"]["rows"].as_array().unwrap();
    let labels: Vec<&str> = rows.iter().map(|r| r["label"].as_str().unwrap()).collect();
    assert_eq!(
        labels,
        [
            "base model, plain prompt",
            "base model, 3 examples in the prompt",
            "LoRA adapter, plain prompt"
        ]
    );
    assert!(rows.iter().all(|r| r["examples"] == 1));
    assert!(log.contains("all right %"), "{log}");

    let (ok, log) = billion_llm(&[
        "logits",
        "--model",
        gguf.to_str().unwrap(),
        "--adapter",
        out.to_str().unwrap(),
        "--ids",
        "1,2,3",
    ]);
    assert!(ok, "{log}");

    let (ok, log) = billion_llm(&args);
    assert!(
        !ok && log.contains("already exists") && log.contains("--overwrite"),
        "{log}"
    );
    // A merged model in the way is refused before any training too.
    std::fs::remove_dir_all(&out).unwrap();
    let (ok, log) = billion_llm(&args);
    assert!(
        !ok && log.contains("merged.gguf already exists") && log.contains("--merge"),
        "{log}"
    );
    assert!(!out.exists());
}

/// A stop request saves `checkpoint-step-N` after the current step; a new trainer resumes from
/// it exactly: every later step's loss and the final adapter equal an uninterrupted run's
/// (AdamW's moments, the schedule, the batches and the dropout masks all continue). A run with
/// other settings cannot resume it.
#[test]
fn an_interrupted_run_resumes_exactly() {
    use std::sync::atomic::Ordering;
    let settings = TrainSettings {
        epochs: 2,
        batch_size: 2,
        grad_accum: 1,
        lr: 1e-2,
        ..TrainSettings::default()
    };
    let lora = LoraConfig {
        dropout: 0.1,
        ..LoraConfig::default()
    };
    let data = toy_data();
    let flat = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };

    let out = tempfile::tempdir().unwrap();
    let mut model = tiny("llama");
    let mut whole = Trainer::new(&mut model, &lora, &settings, 8, "llama").unwrap();
    let outcome = train_to_the_end(&mut whole, &data, out.path());
    assert_eq!(outcome, Outcome::Finished);
    let whole_losses: Vec<f64> = whole.state.steps.iter().map(|s| s.loss).collect();
    let whole_b = flat(whole.adapter.params[0].b.as_tensor());
    drop(whole);

    let out = tempfile::tempdir().unwrap();
    let mut model = tiny("llama");
    let mut trainer = Trainer::new(&mut model, &lora, &settings, 8, "llama").unwrap();
    let stop = AtomicBool::new(false);
    let outcome = trainer
        .train(&data, None, out.path(), &stop, &mut |s| {
            if s.step == 5 {
                stop.store(true, Ordering::Relaxed);
            }
        })
        .unwrap();
    let checkpoint = out.path().join("checkpoint-step-5");
    assert_eq!(
        outcome,
        Outcome::Interrupted {
            checkpoint: checkpoint.clone()
        }
    );
    assert!(out.path().join("checkpoint-epoch-1").exists());
    drop(trainer);

    let mut model = tiny("llama");
    let mut resumed = Trainer::new(&mut model, &lora, &settings, 8, "llama").unwrap();
    resumed.resume(&checkpoint).unwrap();
    assert_eq!(
        (
            resumed.state.global_step,
            resumed.state.epoch,
            resumed.state.step_in_epoch
        ),
        (5, 1, 1)
    );
    let outcome = train_to_the_end(&mut resumed, &data, out.path());
    assert_eq!(outcome, Outcome::Finished);
    let steps: Vec<usize> = resumed.state.steps.iter().map(|s| s.step).collect();
    assert_eq!(steps, (1..=8).collect::<Vec<_>>());
    let losses: Vec<f64> = resumed.state.steps.iter().map(|s| s.loss).collect();
    assert_eq!(
        losses, whole_losses,
        "the resumed steps are the uninterrupted run's"
    );
    assert_eq!(flat(resumed.adapter.params[0].b.as_tensor()), whole_b);
    drop(resumed);

    // Another base model, other batches, another LoRA scale or dropout, or a checkpoint without
    // optimizer state are refused.
    let mut other = tiny("llama");
    let mut wrong = Trainer::new(&mut other, &lora, &settings, 8, "llama3").unwrap();
    let err = wrong.resume(&checkpoint).unwrap_err().to_string();
    assert!(err.contains("trained on llama"), "{err}");
    drop(wrong);
    let bigger = TrainSettings {
        batch_size: 4,
        ..settings.clone()
    };
    let mut wrong = Trainer::new(&mut other, &lora, &bigger, 8, "llama").unwrap();
    let err = format!("{:#}", wrong.resume(&checkpoint).unwrap_err());
    assert!(err.contains("batch_size 2 (now 4)"), "{err}");
    drop(wrong);
    let mut wrong = Trainer::new(&mut other, &lora, &settings, 6, "llama").unwrap();
    let err = format!("{:#}", wrong.resume(&checkpoint).unwrap_err());
    assert!(err.contains("8 training examples (now 6)"), "{err}");
    drop(wrong);
    let other_lora = LoraConfig {
        alpha: 32.0,
        dropout: 0.0,
        ..lora.clone()
    };
    let mut wrong = Trainer::new(&mut other, &other_lora, &settings, 8, "llama").unwrap();
    let err = format!("{:#}", wrong.resume(&checkpoint).unwrap_err());
    assert!(
        err.contains("lora_alpha 16 (now 32)") && err.contains("lora_dropout"),
        "{err}"
    );
    drop(wrong);
    std::fs::remove_file(checkpoint.join("optimizer.safetensors")).unwrap();
    let mut wrong = Trainer::new(&mut other, &lora, &settings, 8, "llama").unwrap();
    let err = format!("{:#}", wrong.resume(&checkpoint).unwrap_err());
    assert!(err.contains("optimizer.safetensors"), "{err}");
}

/// LoRA dropout draws its masks from the run's seed: the same seed gives the same losses step
/// by step (candle's own dropout is unseeded, so two runs differed), and the losses differ
/// from a run without dropout, so the masks are applied.
#[test]
fn dropout_follows_the_seed() {
    let lora = LoraConfig {
        dropout: 0.3,
        ..LoraConfig::default()
    };
    let data = toy_data();
    let losses = |seed: u64, lora: &LoraConfig| -> Vec<f64> {
        let settings = TrainSettings {
            epochs: 1,
            batch_size: 2,
            grad_accum: 1,
            lr: 1e-2,
            seed,
            ..TrainSettings::default()
        };
        let mut model = tiny("llama");
        let mut trainer = Trainer::new(&mut model, lora, &settings, 8, "llama").unwrap();
        let out = tempfile::tempdir().unwrap();
        train_to_the_end(&mut trainer, &data, out.path());
        trainer.state.steps.iter().map(|s| s.loss).collect()
    };
    let first = losses(7, &lora);
    assert_eq!(
        first,
        losses(7, &lora),
        "the same seed, the same dropout masks"
    );
    let without = LoraConfig {
        dropout: 0.0,
        ..LoraConfig::default()
    };
    assert_ne!(first, losses(7, &without), "the dropout is applied");
}

/// `finetune-study` end to end on the real SmolLM2 GGUF, at toy size: every candidate trained
/// with the first seed and answering the validation file, the chosen one trained with the other
/// seed, the baselines with 0 and 2 examples, and every answer in the results file with the
/// held-out examples' tags.
#[test]
fn finetune_study_chooses_on_validation_and_stores_every_answer() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, colors: &[&str], tags: &[&str]| {
        let lines: Vec<String> = colors
            .iter()
            .map(|c| {
                serde_json::json!({
                    "instruction": format!("Name the color {c}."), "output": c,
                    "template": c, "tags": tags,
                })
                .to_string()
            })
            .collect();
        let path = dir.path().join(name);
        std::fs::write(&path, lines.join("\n")).unwrap();
        path
    };
    let train = write("train.jsonl", &["red", "green", "blue", "yellow"], &[]);
    let validation = write("validation.jsonl", &["black", "white"], &[]);
    let heldout = write("heldout.jsonl", &["pink", "gray"], &["unseen color"]);
    let results = dir.path().join("results");
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let args: Vec<String> = [
        "finetune-study",
        "--model",
        &path(&smollm2()),
        "--data",
        &path(&train),
        "--validation",
        &path(&validation),
        "--eval",
        &path(&heldout),
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--max-len",
        "64",
        "--setting",
        "1e-3",
        "--setting",
        "2e-4:2",
        "--seeds",
        "1,2",
        "--shots",
        "0,2",
        "--out",
        &path(&dir.path().join("runs")),
        "--results-dir",
        &path(&results),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (ok, log) = billion_llm(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{log}");
    let report = std::fs::read_dir(&results)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(report
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("finetune-study-"));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    let baselines = r["baselines"].as_array().unwrap();
    assert_eq!(baselines.len(), 2);
    assert!(
        baselines[1]["mean_prompt_tokens"].as_f64() > baselines[0]["mean_prompt_tokens"].as_f64()
    );
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(
        runs.len(),
        3,
        "two candidates with seed 1, the chosen one with seed 2"
    );
    assert!(runs[..2]
        .iter()
        .all(|run| run["validation"]["examples"] == 2 && run["seed"] == 1));
    assert!(runs[2]["validation"].is_null() && runs[2]["seed"] == 2);
    assert_eq!(runs[2]["setting"], r["chosen"]);
    for evaluation in baselines
        .iter()
        .chain(runs.iter().map(|run| &run["heldout"]))
    {
        let samples = evaluation["samples"].as_array().unwrap();
        assert_eq!(samples.len(), 2, "every held-out answer is stored");
        assert!(samples.iter().all(|s| s["tags"][0] == "unseen color"));
        assert_eq!(evaluation["by_tag"][0]["examples"], 2);
    }
    assert!(dir
        .path()
        .join("runs/lr-1e-3-accum-1-seed-1/adapter_model.safetensors")
        .exists());
}

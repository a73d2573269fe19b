//! The `billion-llm` command line: one subcommand per job of the workbook.
//!
//! The library does the work; this binary only turns arguments into its settings and prints
//! what comes back. One file per command (or per group of close ones); `args` holds the
//! argument groups several commands share.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use anyhow::Result;
use billion_llm::kernels::threads;
use clap::{Parser, Subcommand};

mod args;
mod bench;
mod book;
mod chat;
mod finetune;
mod generate;
mod models;
mod quantize;
mod speculative;

#[derive(Parser)]
#[command(
    name = "billion-llm",
    version,
    about = "What 1B-class language models can do on your own hardware"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the model zoo.
    Models,
    /// Download models into the standard Hugging Face cache (default: the four compared models).
    Download(models::DownloadArgs),
    /// Print the logits of every input position as JSON: {"logits": [[...], ...]}.
    Logits(generate::LogitsArgs),
    /// Generate text after a prompt.
    Generate(generate::GenerateArgs),
    /// Speed benchmark: prefill and decode tokens/s, side by side with llama.cpp on the same
    /// GGUF weights; writes results/speed-<timestamp>.json.
    BenchSpeed(bench::BenchSpeedArgs),
    /// MMLU (5-shot), HumanEval, speed and memory of each model -> results/bench-<timestamp>.json.
    Bench(bench::BenchArgs),
    /// Chat with a model (or compare several side by side); piped input gets one answer.
    Chat(chat::ChatArgs),
    /// Show the most likely next tokens after a prompt.
    Next(generate::NextArgs),
    /// Train a LoRA adapter on a data file (alpaca or chat JSON/JSONL); saves it in peft format
    /// and writes results/finetune-<timestamp>.json.
    Finetune(finetune::FinetuneArgs),
    /// The fine-tuning Short's experiment: candidate settings trained and chosen on a validation
    /// file, the choice trained with more seeds, few-shot baselines, all on one held-out file
    /// -> results/finetune-study-<timestamp>.json.
    FinetuneStudy(finetune::StudyArgs),
    /// Speculative decoding: a drafter proposes tokens, the target verifies them in one pass;
    /// the output is exactly the target's. Measures plain decoding beside it.
    Speculative(speculative::SpeculativeArgs),
    /// Time a draft step, a target step and a verification of K + 1 tokens (random weights
    /// work: the cost of a step depends only on the architecture) -> results/speculative-costs-<timestamp>.json.
    SpeculativeCosts(speculative::CostsArgs),
    /// Short 6's benchmark: speculative and plain decoding taking turns, per request, drafter
    /// and K schedule; medians and spread of the speedup, and prompt lookup's ceiling with K
    /// chosen in hindsight -> results/speculative-bench-<timestamp>.json.
    SpeculativeBench(speculative::BenchArgs),
    /// Write a GGUF file or a llama Hugging Face checkpoint at fewer bits per weight with
    /// llama.cpp's per-tensor mixes (q8_0 ... q2_k; f32 dequantizes, for a reference).
    Quantize(quantize::QuantizeArgs),
    /// How far a quantized model's next-token distributions are from its full-precision
    /// reference's (KL divergence, top-1 agreement, perplexity) -> results/quant-eval-<timestamp>.json.
    QuantEval(quantize::QuantEvalArgs),
    /// Short 7's study: every file type of one GGUF model, its size, KL divergence from the
    /// F32 reference, speed beside llama.cpp and answer -> results/quant-study-<timestamp>.json.
    QuantStudy(quantize::QuantStudyArgs),
    /// Every file type on the four 1B architectures (random weights, no download): peak memory
    /// with a 2,048-token context, decode and prefill speed -> results/quant-1b-<timestamp>.json.
    #[command(name = "quant-1b")]
    QuantOneB(quantize::QuantOneBArgs),
    /// Write the book's charts and tables (mdbook/src/generated) and docs/COMPARISON.md from the library and results/.
    BookAssets(book::BookAssetsArgs),
}

fn main() {
    let cli = Cli::parse();
    let threads = cli.command.threads();
    // candle reads RAYON_NUM_THREADS at every matmul it splits; it is set here, once, while this
    // is the only thread (billion_llm::kernels::threads says why).
    if let Some(n) = threads::candle_threads_variable(threads) {
        std::env::set_var("RAYON_NUM_THREADS", n);
    }
    // Training's element-wise work is ours (kernels::backprop, on rayon); candle's own pool,
    // whose workers spin after each of candle's remaining small ops, would compete with the
    // matmul threads for the cores (about 10% of a step on 2 cores). One thread: none.
    if matches!(
        cli.command,
        Command::Finetune(_) | Command::FinetuneStudy(_)
    ) && std::env::var_os("CANDLE_NUM_THREADS").is_none()
    {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    // The whole command runs on a worker of the pool its parallel work uses.
    let result = threads::run_on_workers(threads, || run(cli)).and_then(|r| r);
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

impl Command {
    /// The thread count a command asks for with `--threads`.
    fn threads(&self) -> Option<usize> {
        match self {
            Command::BenchSpeed(args) => args.threads.iter().copied().max(),
            Command::Bench(args) => Some(args.threads),
            Command::Speculative(args) => Some(args.threads),
            Command::SpeculativeCosts(args) => Some(args.threads),
            Command::SpeculativeBench(args) => Some(args.threads),
            Command::Quantize(args) => Some(args.threads),
            Command::QuantEval(args) => Some(args.threads),
            Command::QuantStudy(args) => Some(args.threads),
            Command::QuantOneB(args) => Some(args.threads),
            _ => None,
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Models => models::print_models(),
        Command::Download(args) => models::download(&args),
        Command::Logits(args) => generate::logits(&args),
        Command::Generate(args) => generate::generate(&args),
        Command::BenchSpeed(args) => bench::bench_speed(&args),
        Command::Bench(args) => bench::bench(&args),
        Command::Chat(args) => chat::run(&args),
        Command::Next(args) => generate::next(&args),
        Command::Finetune(args) => finetune::run(&args),
        Command::FinetuneStudy(args) => finetune::run_study(&args),
        Command::Speculative(args) => speculative::run(&args),
        Command::SpeculativeCosts(args) => speculative::run_costs(&args),
        Command::SpeculativeBench(args) => speculative::run_bench(&args),
        Command::Quantize(args) => quantize::quantize(&args),
        Command::QuantEval(args) => quantize::quant_eval(&args),
        Command::QuantStudy(args) => quantize::quant_study(&args),
        Command::QuantOneB(args) => quantize::quant_1b(&args),
        Command::BookAssets(args) => book::run(&args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// Parses a command line, panicking with clap's message when it is refused.
    fn parse(line: &[&str]) -> Command {
        let argv = std::iter::once("billion-llm").chain(line.iter().copied());
        match Cli::try_parse_from(argv) {
            Ok(cli) => cli.command,
            Err(e) => panic!("{line:?}: {e}"),
        }
    }

    #[test]
    fn each_command_keeps_its_own_sampling_defaults() {
        let Command::Chat(chat) = parse(&["chat", "--model", "m"]) else {
            unreachable!()
        };
        let s = &chat.sampling;
        assert_eq!(
            (s.temperature, s.top_p, s.max_new_tokens, s.seed),
            (0.7, 0.9, 256, 42)
        );
        let Command::Generate(generate) = parse(&["generate", "--model", "m", "--prompt", "p"])
        else {
            unreachable!()
        };
        let s = &generate.sampling;
        assert_eq!((s.temperature, s.top_p, s.max_new_tokens), (0.0, 1.0, 64));
        let Command::Speculative(spec) = parse(&["speculative", "--target", "t", "--draft", "d"])
        else {
            unreachable!()
        };
        assert_eq!(spec.sampling.max_new_tokens, 128);
    }

    #[test]
    fn the_old_spellings_of_the_results_folder_still_work() {
        for flag in ["--results-dir", "--out-dir", "--results"] {
            let Command::BenchSpeed(args) = parse(&["bench-speed", flag, "elsewhere"]) else {
                unreachable!()
            };
            assert_eq!(args.results.results_dir, std::path::Path::new("elsewhere"));
            let Command::BookAssets(args) = parse(&["book-assets", flag, "elsewhere"]) else {
                unreachable!()
            };
            assert_eq!(args.results_dir, std::path::Path::new("elsewhere"));
        }
    }

    #[test]
    fn a_mistyped_value_is_refused_with_the_valid_ones() {
        let argv = ["billion-llm", "generate", "-m", "m", "--prompt", "p"];
        for (flag, value, valid) in [
            ("--dtype", "f64", "f32, f16, bf16"),
            (
                "--quantize",
                "q5",
                "q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k",
            ),
            ("--weights", "trained", "pretrained, random"),
            ("--device", "gpu", "cuda:N"),
        ] {
            let err = Cli::try_parse_from(argv.iter().copied().chain([flag, value]))
                .err()
                .unwrap_or_else(|| panic!("{flag} {value} was accepted"))
                .to_string();
            assert!(err.contains(value) && err.contains(valid), "{err}");
        }
        // The spellings the hand-written parsers took keep working.
        parse(&["generate", "-m", "m", "--prompt", "p", "--quantize", "Q4K"]);
        parse(&["generate", "-m", "m", "--prompt", "p", "--dtype", "BF16"]);
        parse(&["generate", "-m", "m", "--prompt", "p", "--device", "cuda:1"]);
    }
}

//! The commands that run one model on one prompt: `logits` (every position's logits as JSON),
//! `generate` (text after a prompt, streamed) and `next` (the most likely next tokens).

use crate::args::{ModelArgs, SamplingArgs};
use anyhow::{bail, Result};
use billion_llm::model::generation::{self, GenerateOptions};
use candle_core::Tensor;
use clap::Args;
use std::io::Write;

#[derive(Args)]
pub struct LogitsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Comma-separated token ids, used exactly as given (no BOS added).
    #[arg(long, value_delimiter = ',', required = true)]
    ids: Vec<u32>,
}

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long, conflicts_with = "ids", required_unless_present = "ids")]
    prompt: Option<String>,
    /// Comma-separated token ids, used exactly as given (no BOS added).
    #[arg(long, value_delimiter = ',')]
    ids: Option<Vec<u32>>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Mask the EOS ids so generation always runs to --max-new-tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Print {"tokens", "text", "prefill_tokens_per_s", "decode_tokens_per_s"} as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct NextArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    prompt: String,
    /// How many tokens to show.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// Also write the table to results/next-tokens-<model>.json (for the book).
    #[arg(long)]
    save: bool,
}

pub fn logits(args: &LogitsArgs) -> Result<()> {
    let mut m = args.model.load()?;
    let input = Tensor::new(args.ids.as_slice(), m.model.device())?.unsqueeze(0)?;
    let logits: Vec<Vec<f32>> = m.model.forward(&input)?.squeeze(0)?.to_vec2()?;
    println!("{}", serde_json::json!({ "logits": logits }));
    Ok(())
}

pub fn generate(args: &GenerateArgs) -> Result<()> {
    let mut m = args.model.load()?;
    let prompt_ids = match (&args.ids, &args.prompt) {
        (Some(ids), _) => ids.clone(),
        (None, Some(text)) => m.tokenizer()?.encode(text, true)?,
        (None, None) => bail!("give --prompt or --ids"),
    };
    let opts = GenerateOptions {
        max_new_tokens: args.sampling.max_new_tokens,
        sampling: args.sampling.params(),
        ignore_eos: args.ignore_eos,
        stop: None,
    };
    let tokenizer = m.tokenizer.clone().ok();
    let mut stream = tokenizer
        .as_ref()
        .filter(|_| !args.json)
        .map(|t| t.output_stream());
    let mut stdout = std::io::stdout();
    let gen = generation::generate(&mut m.model, &prompt_ids, &opts, |id| {
        if let Some(s) = stream.as_mut() {
            if let Some(piece) = s.next_token(id)? {
                write!(stdout, "{piece}")?;
                stdout.flush()?;
            }
        }
        Ok(())
    })?;
    if let Some(s) = stream.as_mut() {
        if let Some(rest) = s.flush()? {
            write!(stdout, "{rest}")?;
        }
        writeln!(stdout)?;
    }
    let text = match &tokenizer {
        Some(t) => t.decode(&gen.tokens, true)?,
        None => String::new(),
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "tokens": gen.tokens,
                "text": text,
                "prefill_tokens_per_s": gen.prefill_tokens_per_s(),
                "decode_tokens_per_s": gen.decode_tokens_per_s(),
                "fallback_matrices": m.model.fallback_matrices(),
            })
        );
    } else {
        if tokenizer.is_none() {
            println!("{:?}", gen.tokens);
        }
        eprintln!(
            "{} prompt tokens, {} new: prefill {:.1} tok/s, decode {:.1} tok/s",
            gen.prompt_tokens,
            gen.tokens.len(),
            gen.prefill_tokens_per_s(),
            gen.decode_tokens_per_s()
        );
        let fallback = m.model.fallback_matrices();
        if !fallback.is_empty() {
            eprintln!(
                "on candle's slower matmul (formats our packed kernel lacks): {}",
                fallback
                    .iter()
                    .map(|(format, n)| format!("{n} {format} matrices"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(())
}

pub fn next(args: &NextArgs) -> Result<()> {
    let mut m = args.model.load()?;
    let table = billion_llm::workbook::next_token::top_next_tokens(&mut m, &args.prompt, args.top)?;
    print!("{table}");
    if args.save {
        let path = billion_llm::workbook::book::next_token_results_path(
            std::path::Path::new("results"),
            &args.model.model,
        );
        billion_llm::eval::results::write_json_atomic(&path, &table)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

//! `billion-llm book-assets`: the book's charts and tables, and docs/COMPARISON.md, written from
//! the library and the results files.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct BookAssetsArgs {
    /// Where the generated charts and tables go.
    #[arg(long, default_value = "mdbook/src/generated")]
    out: PathBuf,
    /// The results folder the measured figures are read from.
    #[arg(
        long = "results-dir",
        visible_aliases = ["out-dir", "results"],
        default_value = "results"
    )]
    pub results_dir: PathBuf,
    /// The generated comparison page.
    #[arg(long, default_value = "docs/COMPARISON.md")]
    comparison: PathBuf,
}

pub fn run(args: &BookAssetsArgs) -> Result<()> {
    let written = billion_llm::workbook::book::write_book_assets(
        &args.out,
        &args.results_dir,
        &args.comparison,
    )?;
    eprintln!("wrote {} files into {}", written.len(), args.out.display());
    Ok(())
}

//! `billion-llm models` (the zoo as a table) and `billion-llm download` (models into the hub
//! cache ahead of time).

use anyhow::{bail, Context, Result};
use billion_llm::hub::client::HubClient;
use billion_llm::hub::loader::ModelSource;
use billion_llm::hub::zoo;
use clap::Args;

#[derive(Args)]
pub struct DownloadArgs {
    /// Aliases or hub ids.
    models: Vec<String>,
}

pub fn print_models() -> Result<()> {
    println!(
        "{:<16} {:<38} {:<11} {:>7} {:<22} {:<6} {:<8}",
        "alias", "hub id", "family", "params", "license", "gated", "compared"
    );
    for m in zoo::ZOO {
        println!(
            "{:<16} {:<38} {:<11} {:>7} {:<22} {:<6} {:<8}",
            m.alias,
            m.hub_id,
            m.architecture.name(),
            m.parameters,
            m.license,
            if m.gated { "yes" } else { "no" },
            if m.compared { "yes" } else { "" }
        );
    }
    Ok(())
}

pub fn download(args: &DownloadArgs) -> Result<()> {
    let names: Vec<String> = if args.models.is_empty() {
        zoo::compared().map(|m| m.alias.to_string()).collect()
    } else {
        args.models.clone()
    };
    let hub = HubClient::from_env();
    for name in &names {
        let ModelSource::Hub { repo, .. } = ModelSource::resolve(name)? else {
            bail!("{name} is a local file or folder: there is nothing to download");
        };
        eprintln!("{name}: {repo}");
        let repo_files = hub.model(&repo);
        repo_files
            .get("config.json")
            .with_context(|| format!("downloading {repo}"))?;
        for optional in [
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
        ] {
            repo_files.get_optional(optional)?;
        }
        for w in repo_files.weight_files()? {
            eprintln!("  {}", w.display());
        }
    }
    Ok(())
}

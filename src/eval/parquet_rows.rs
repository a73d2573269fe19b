//! Rows of a Parquet file as typed records: how the hub's benchmark datasets (cais/mmlu,
//! openai/openai_humaneval) are stored.
//!
//! Each row goes through `parquet`'s record reader into JSON and then through serde into the
//! caller's struct, so a dataset needs nothing but a `#[derive(Deserialize)]` that names its
//! columns. The `parquet` crate's row reader is used rather than polars' because polars reads
//! Parquet only through its lazy/streaming engine, which would more than double the crate's
//! build time for two small files.

use anyhow::{bail, Context, Result};
use parquet::file::reader::{FileReader, SerializedFileReader};
use serde::de::DeserializeOwned;
use std::path::Path;

/// The four bytes every Parquet file starts (and ends) with.
pub const MAGIC: &[u8; 4] = b"PAR1";

/// Whether `path` looks like a Parquet file (by its first bytes, not its name).
pub fn is_parquet(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|_| &head == MAGIC)
}

/// Every row of the Parquet file at `path`, deserialized into `T`.
pub fn read_rows<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader = SerializedFileReader::new(file).with_context(|| {
        format!(
            "{} is not a readable Parquet file (truncated download? delete it and run again)",
            path.display()
        )
    })?;
    let rows = reader
        .get_row_iter(None)
        .with_context(|| format!("cannot read the rows of {}", path.display()))?;
    let mut out = Vec::new();
    for (i, row) in rows.enumerate() {
        let row = row.with_context(|| format!("{} row {i}: cannot be decoded", path.display()))?;
        let value = row.to_json_value();
        let record = serde_json::from_value(value)
            .with_context(|| format!("{} row {i}: unexpected columns", path.display()))?;
        out.push(record);
    }
    if out.is_empty() {
        bail!("{} holds no rows", path.display());
    }
    Ok(out)
}

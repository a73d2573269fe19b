//! One quantization run: read a model as GGUF metadata and tensors ([`ModelSource`]: a GGUF file,
//! or a Hugging Face folder that `hub::convert` presents the way llama.cpp's converter writes it),
//! give each tensor the format [`TensorMix`] picks, and write the new file next to its final
//! name, renamed into place only once it is complete.

use super::k_quants;
use super::mix::{is_quantizable, visiting_order, FileType, TensorMix};
use anyhow::{bail, Context, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QStorage, QTensor};
use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde::Serialize;
use std::borrow::Cow;
use std::io::Write;
use std::path::Path;

/// The architectures whose tensor names the mix knows and this workbook runs.
pub const ARCHITECTURES: [&str; 2] = ["llama", "gemma3"];

/// What happened to one tensor.
#[derive(Clone, Debug, Serialize)]
pub struct TensorChange {
    pub name: String,
    /// GGML type names, as llama.cpp prints them (`q4_K`, `f32`).
    pub from: String,
    pub to: String,
    pub params: usize,
    pub bytes: usize,
}

/// A finished run: every tensor's change and the file's size.
#[derive(Clone, Debug, Serialize)]
pub struct QuantizeReport {
    pub file_type: String,
    pub tensors: Vec<TensorChange>,
    /// Whether some tensor was already quantized, so its errors stack with the new ones.
    pub requantized: bool,
    pub params: usize,
    /// Bytes of tensor data (the file adds its metadata, a few MB of vocabulary).
    pub tensor_bytes: usize,
}

impl QuantizeReport {
    /// Bits per weight over every tensor, as llama.cpp reports a file's size.
    pub fn bits_per_weight(&self) -> f64 {
        self.tensor_bytes as f64 * 8.0 / self.params as f64
    }
}

/// GGML's name for a block format (`q4_K`, `q8_0`, `f32`).
pub fn type_name(t: GgmlDType) -> &'static str {
    match t {
        GgmlDType::F32 => "f32",
        GgmlDType::F16 => "f16",
        GgmlDType::BF16 => "bf16",
        GgmlDType::Q4_0 => "q4_0",
        GgmlDType::Q4_1 => "q4_1",
        GgmlDType::Q5_0 => "q5_0",
        GgmlDType::Q5_1 => "q5_1",
        GgmlDType::Q8_0 => "q8_0",
        GgmlDType::Q8_1 => "q8_1",
        GgmlDType::Q2K => "q2_K",
        GgmlDType::Q3K => "q3_K",
        GgmlDType::Q4K => "q4_K",
        GgmlDType::Q5K => "q5_K",
        GgmlDType::Q6K => "q6_K",
        GgmlDType::Q8K => "q8_K",
    }
}

/// Quantizes `values` (rows of `row_len`) to `dtype`, rows in parallel. The K formats use our
/// quantizers, which follow llama.cpp's; the 32-wide formats candle's, which do too.
pub fn quantize_values(values: &[f32], row_len: usize, dtype: GgmlDType) -> Result<Vec<u8>> {
    // Rows per job: enough work to be worth a thread, never a partial row.
    let rows_per_job = (1 << 16) / row_len.max(1) + 1;
    let pieces: Vec<Vec<u8>> = values
        .par_chunks(row_len * rows_per_job)
        .map(|chunk| -> Result<Vec<u8>> {
            Ok(match dtype {
                GgmlDType::Q4K => k_quants::quantize_q4_k(chunk),
                GgmlDType::Q5K => k_quants::quantize_q5_k(chunk),
                GgmlDType::Q2K => k_quants::quantize_q2_k(chunk),
                GgmlDType::Q6K => k_quants::quantize_q6_k(chunk),
                GgmlDType::Q3K => k_quants::quantize_q3_k(chunk),
                other => {
                    let t = Tensor::from_slice(chunk, chunk.len(), &Device::Cpu)?;
                    QTensor::quantize(&t, other)?.data()?.into_owned()
                }
            })
        })
        .collect::<Result<_>>()?;
    Ok(pieces.concat())
}

/// Reads a GGUF file's header and checks that every tensor's bytes are there.
pub fn read_gguf(path: &Path) -> Result<(std::fs::File, gguf_file::Content)> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let content = gguf_file::Content::read(&mut file).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a readable GGUF file ({e}). Is it complete? Download or convert it again.",
            path.display()
        )
    })?;
    let len = file.metadata()?.len();
    for (name, info) in &content.tensor_infos {
        let bytes =
            info.shape.elem_count() / info.ggml_dtype.block_size() * info.ggml_dtype.type_size();
        let end = content.tensor_data_offset + info.offset + bytes as u64;
        if end > len {
            bail!(
                "{} is truncated: tensor {name} ends at byte {end} but the file has {len}. \
                 Download or convert it again.",
                path.display()
            );
        }
    }
    Ok((file, content))
}

/// A model to quantize: GGUF metadata, and tensors under llama.cpp's names, read one at a time
/// so that only the output is held in memory.
pub trait ModelSource {
    /// Where the model comes from, for messages.
    fn describe(&self) -> String;
    /// The GGUF metadata (`general.*`, `{arch}.*`, `tokenizer.*`).
    fn metadata(&self) -> Vec<(String, gguf_file::Value)>;
    /// Every tensor's GGUF name.
    fn tensor_names(&self) -> Vec<String>;
    /// One tensor, as stored (quantized or not).
    fn tensor(&mut self, name: &str) -> Result<QTensor>;
}

/// A GGUF file as a [`ModelSource`].
pub struct GgufFile {
    path: std::path::PathBuf,
    file: std::fs::File,
    content: gguf_file::Content,
}

impl GgufFile {
    /// Opens `path`, checking that every tensor's bytes are there.
    pub fn open(path: &Path) -> Result<Self> {
        let (file, content) = read_gguf(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            content,
        })
    }
}

impl ModelSource for GgufFile {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn metadata(&self) -> Vec<(String, gguf_file::Value)> {
        self.content
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn tensor_names(&self) -> Vec<String> {
        self.content.tensor_infos.keys().cloned().collect()
    }

    fn tensor(&mut self, name: &str) -> Result<QTensor> {
        Ok(self.content.tensor(&mut self.file, name, &Device::Cpu)?)
    }
}

fn metadata_usize(md: &[(String, gguf_file::Value)], key: &str) -> Result<usize> {
    let v = md
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .with_context(|| format!("the model has no `{key}` metadata"))?;
    Ok(v.to_u32()
        .map(|x| x as usize)
        .or_else(|_| v.to_u64().map(|x| x as usize))
        .or_else(|_| v.to_i32().map(|x| x as usize))?)
}

/// Quantizes the GGUF file `input` to `file_type`, writing `out` (which must not exist).
/// `on_tensor` is called after each tensor, with its index and change, for a progress display.
pub fn quantize_gguf(
    input: &Path,
    file_type: FileType,
    out: &Path,
    on_tensor: impl FnMut(usize, usize, &TensorChange),
) -> Result<QuantizeReport> {
    quantize_model(&mut GgufFile::open(input)?, file_type, out, on_tensor)
}

/// Quantizes any [`ModelSource`] to `file_type`, writing `out` (which must not exist).
pub fn quantize_model(
    source: &mut dyn ModelSource,
    file_type: FileType,
    out: &Path,
    mut on_tensor: impl FnMut(usize, usize, &TensorChange),
) -> Result<QuantizeReport> {
    if out.exists() {
        bail!(
            "{} already exists; choose another --out or delete it first",
            out.display()
        );
    }
    let source_metadata = source.metadata();
    let arch = source_metadata
        .iter()
        .find(|(k, _)| k == "general.architecture")
        .and_then(|(_, v)| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    if !ARCHITECTURES.contains(&arch.as_str()) {
        bail!(
            "{} is a `{arch}` model; quantize knows the tensor names of {} only. \
             Use llama.cpp's llama-quantize for other architectures.",
            source.describe(),
            ARCHITECTURES.join(" and ")
        );
    }
    let n_layers = metadata_usize(&source_metadata, &format!("{arch}.block_count"))?;
    let heads = metadata_usize(&source_metadata, &format!("{arch}.attention.head_count"))?;
    let kv_heads = metadata_usize(&source_metadata, &format!("{arch}.attention.head_count_kv"))
        .unwrap_or(heads);

    let mut names = source.tensor_names();
    names.sort_by(|a, b| visiting_order(a, b));
    let mut mix = TensorMix::new(
        file_type,
        names.iter().map(|n| n.as_str()),
        n_layers,
        heads / kv_heads.max(1),
    );

    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(names.len());
    let mut changes = Vec::with_capacity(names.len());
    let mut requantized = false;
    for (i, name) in names.iter().enumerate() {
        let q = source.tensor(name)?;
        let from = q.dtype();
        let dims = q.shape().dims().to_vec();
        let row_len = *dims.last().unwrap_or(&1);
        let to = if is_quantizable(name, dims.len()) {
            mix.choose(name, row_len)
        } else {
            from
        };
        let converted = if to == from {
            q
        } else {
            let quantized_source =
                !matches!(from, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
            requantized |= quantized_source && to != GgmlDType::F32;
            let values: Vec<f32> = q.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1()?;
            let bytes = quantize_values(&values, row_len, to)
                .with_context(|| format!("quantizing {name} to {}", type_name(to)))?;
            let storage = QStorage::from_data(Cow::Owned(bytes), &Device::Cpu, to)?;
            QTensor::new(storage, dims.as_slice())?
        };
        let params = converted.shape().elem_count();
        let change = TensorChange {
            name: name.to_string(),
            from: type_name(from).into(),
            to: type_name(to).into(),
            params,
            bytes: params / to.block_size() * to.type_size(),
        };
        on_tensor(i, names.len(), &change);
        changes.push(change);
        tensors.push((name.to_string(), converted));
    }

    let mut metadata: Vec<(String, gguf_file::Value)> = source_metadata
        .into_iter()
        .filter(|(k, _)| !k.starts_with("quantize.imatrix"))
        .collect();
    metadata.retain(|(k, _)| k != "general.file_type" && k != "general.quantization_version");
    metadata.push((
        "general.file_type".into(),
        gguf_file::Value::U32(file_type.llama_ftype()),
    ));
    metadata.push((
        "general.quantization_version".into(),
        gguf_file::Value::U32(2),
    ));
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    write_atomically(out, &metadata, &tensors)?;

    Ok(QuantizeReport {
        file_type: file_type.name().into(),
        requantized,
        params: changes.iter().map(|c| c.params).sum(),
        tensor_bytes: changes.iter().map(|c| c.bytes).sum(),
        tensors: changes,
    })
}

/// Writes a GGUF file under a temporary name in `out`'s folder and renames it to `out` once
/// complete, so an interrupted run leaves no file that looks finished.
pub fn write_atomically(
    out: &Path,
    metadata: &[(String, gguf_file::Value)],
    tensors: &[(String, QTensor)],
) -> Result<()> {
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut part = tempfile::Builder::new()
        .prefix(".quantize-")
        .suffix(".gguf.part")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    {
        let mut w = std::io::BufWriter::new(part.as_file_mut());
        let md: Vec<(&str, &gguf_file::Value)> =
            metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        gguf_file::write(&mut w, &md, &ts)?;
        w.flush()?;
    }
    // A temporary file is private (0600); the model file is for everyone to read, as
    // llama.cpp's output is.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        part.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    part.as_file().sync_all()?;
    part.persist_noclobber(out).map_err(|e| {
        anyhow::anyhow!(
            "could not move the finished file to {}: {}",
            out.display(),
            e.error
        )
    })?;
    Ok(())
}

/// A GGUF file's weights: their count, their bytes and the file type it declares.
#[derive(Clone, Debug, Serialize)]
pub struct GgufSize {
    pub params: usize,
    pub tensor_bytes: usize,
    /// `general.file_type`, by our name where it is one of [`FileType::ALL`].
    pub file_type: Option<String>,
}

impl GgufSize {
    pub fn of(path: &Path) -> Result<Self> {
        let (_, content) = read_gguf(path)?;
        let (mut params, mut tensor_bytes) = (0, 0);
        for info in content.tensor_infos.values() {
            let n = info.shape.elem_count();
            params += n;
            tensor_bytes += n / info.ggml_dtype.block_size() * info.ggml_dtype.type_size();
        }
        let md: Vec<(String, gguf_file::Value)> = content.metadata.into_iter().collect();
        let code = metadata_usize(&md, "general.file_type").ok();
        let file_type = code.map(|c| {
            FileType::ALL
                .into_iter()
                .find(|t| t.llama_ftype() as usize == c)
                .map(|t| t.name().to_string())
                .unwrap_or_else(|| format!("llama_ftype {c}"))
        });
        Ok(GgufSize {
            params,
            tensor_bytes,
            file_type,
        })
    }

    /// Bits per weight over every tensor, as llama.cpp reports a file's size.
    pub fn bits_per_weight(&self) -> f64 {
        self.tensor_bytes as f64 * 8.0 / self.params.max(1) as f64
    }
}

//! File types and llama.cpp's per-tensor mix.
//!
//! A "Q4_K_M" file is not all `q4_K`: llama.cpp gives the tensors quantization hurts most more
//! bits (the output projection, some value projections and feed-forward down projections, chosen
//! by layer), and a row length that is not a multiple of a format's block falls back to a format
//! that fits. [`TensorMix`] makes the same choice, tensor by tensor, so our files match
//! llama.cpp's (`src/llama-quant.cpp`, `llama_tensor_get_type`) and the two engines can be
//! compared on the same mix.

use candle_core::quantized::GgmlDType;

/// What `billion-llm quantize --type` writes: llama.cpp's file types, by their usual names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum FileType {
    /// Full precision (dequantizes a quantized file: a reference to measure the others against).
    #[cfg_attr(feature = "cli", value(name = "f32"))]
    F32,
    /// 8-bit blocks of 32: 8.5 bits per weight, near lossless.
    #[cfg_attr(feature = "cli", value(name = "q8_0"))]
    Q8_0,
    /// 6-bit K-quant: 6.56 bits per weight.
    #[cfg_attr(feature = "cli", value(name = "q6_k"))]
    Q6K,
    /// 5-bit K-quant with q6_K on the sensitive half of value and down projections.
    #[cfg_attr(feature = "cli", value(name = "q5_k_m"))]
    Q5KM,
    /// 5-bit K-quant throughout.
    #[cfg_attr(feature = "cli", value(name = "q5_k_s"))]
    Q5KS,
    /// 5-bit blocks of 32 with a scale.
    #[cfg_attr(feature = "cli", value(name = "q5_0"))]
    Q5_0,
    /// 4-bit K-quant with q6_K on the sensitive value and down projections: the usual download.
    #[cfg_attr(feature = "cli", value(name = "q4_k_m"))]
    Q4KM,
    /// 4-bit K-quant, q5_K on the first value and down projections only.
    #[cfg_attr(feature = "cli", value(name = "q4_k_s"))]
    Q4KS,
    /// 4-bit blocks of 32 with a scale.
    #[cfg_attr(feature = "cli", value(name = "q4_0"))]
    Q4_0,
    /// 4-bit blocks of 32 with a scale and a minimum.
    #[cfg_attr(feature = "cli", value(name = "q4_1"))]
    Q4_1,
    /// 3-bit K-quant with 4- and 5-bit value, output and down projections.
    #[cfg_attr(feature = "cli", value(name = "q3_k_m"))]
    Q3KM,
    /// 2-bit K-quant with 3- and 4-bit value, output and down projections.
    #[cfg_attr(feature = "cli", value(name = "q2_k"))]
    Q2K,
}

impl FileType {
    /// Every file type, from the most bits to the fewest.
    pub const ALL: [FileType; 12] = [
        FileType::F32,
        FileType::Q8_0,
        FileType::Q6K,
        FileType::Q5KM,
        FileType::Q5KS,
        FileType::Q5_0,
        FileType::Q4KM,
        FileType::Q4KS,
        FileType::Q4_0,
        FileType::Q4_1,
        FileType::Q3KM,
        FileType::Q2K,
    ];

    /// The name on the command line and in results (`q4_k_m`).
    pub fn name(self) -> &'static str {
        match self {
            FileType::F32 => "f32",
            FileType::Q8_0 => "q8_0",
            FileType::Q6K => "q6_k",
            FileType::Q5KM => "q5_k_m",
            FileType::Q5KS => "q5_k_s",
            FileType::Q5_0 => "q5_0",
            FileType::Q4KM => "q4_k_m",
            FileType::Q4KS => "q4_k_s",
            FileType::Q4_0 => "q4_0",
            FileType::Q4_1 => "q4_1",
            FileType::Q3KM => "q3_k_m",
            FileType::Q2K => "q2_k",
        }
    }

    /// Parses a name as [`FileType::name`] writes it (any case; `Q4_K_M` works too).
    pub fn parse(name: &str) -> Option<FileType> {
        let lower = name.to_ascii_lowercase();
        FileType::ALL.into_iter().find(|t| t.name() == lower)
    }

    /// The value llama.cpp stores in `general.file_type` (`enum llama_ftype`).
    pub fn llama_ftype(self) -> u32 {
        match self {
            FileType::F32 => 0,
            FileType::Q4_0 => 2,
            FileType::Q4_1 => 3,
            FileType::Q8_0 => 7,
            FileType::Q5_0 => 8,
            FileType::Q2K => 10,
            FileType::Q3KM => 12,
            FileType::Q4KS => 14,
            FileType::Q4KM => 15,
            FileType::Q5KS => 16,
            FileType::Q5KM => 17,
            FileType::Q6K => 18,
        }
    }

    /// The block format most tensors get.
    pub fn default_type(self) -> GgmlDType {
        match self {
            FileType::F32 => GgmlDType::F32,
            FileType::Q8_0 => GgmlDType::Q8_0,
            FileType::Q6K => GgmlDType::Q6K,
            FileType::Q5KM | FileType::Q5KS => GgmlDType::Q5K,
            FileType::Q5_0 => GgmlDType::Q5_0,
            FileType::Q4KM | FileType::Q4KS => GgmlDType::Q4K,
            FileType::Q4_0 => GgmlDType::Q4_0,
            FileType::Q4_1 => GgmlDType::Q4_1,
            FileType::Q3KM => GgmlDType::Q3K,
            FileType::Q2K => GgmlDType::Q2K,
        }
    }
}

impl serde::Serialize for FileType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl std::fmt::Display for FileType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The part of a model a tensor plays, by its GGUF name: the mix treats each differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    TokenEmbedding,
    Output,
    /// Value projections (or a fused QKV): few rows, and their errors reach every later token.
    AttentionValue,
    AttentionOutput,
    FfnDown,
    Other,
}

fn role(name: &str) -> Role {
    if name == "output.weight" {
        Role::Output
    } else if name == "token_embd.weight" {
        Role::TokenEmbedding
    } else if name.contains("attn_v.weight") || name.contains("attn_qkv.weight") {
        Role::AttentionValue
    } else if name.contains("attn_output.weight") {
        Role::AttentionOutput
    } else if name.contains("ffn_down") {
        Role::FfnDown
    } else {
        Role::Other
    }
}

/// Whether llama.cpp quantizes a tensor at all: matrices named `*weight`, but not norms.
pub fn is_quantizable(name: &str, dims: usize) -> bool {
    dims >= 2 && name.ends_with("weight") && !name.contains("_norm.weight")
}

/// The order llama.cpp visits tensors in: by block number (tensors outside blocks first), then by
/// name. The mix counts value and down projections in this order.
pub fn visiting_order(a: &str, b: &str) -> std::cmp::Ordering {
    let block = |n: &str| -> i64 {
        n.strip_prefix("blk.")
            .and_then(|rest| rest.split('.').next())
            .and_then(|i| i.parse().ok())
            .unwrap_or(-1)
    };
    block(a).cmp(&block(b)).then_with(|| a.cmp(b))
}

/// The per-tensor choice for one file, made tensor by tensor in [`visiting_order`].
pub struct TensorMix {
    file_type: FileType,
    n_layers: usize,
    /// Query heads per key/value head (grouped-query attention).
    n_gqa: usize,
    tied_embeddings: bool,
    n_value: usize,
    i_value: usize,
    i_down: usize,
}

impl TensorMix {
    /// `names` are every tensor of the model (to count value projections and see whether the
    /// output projection is the embedding's).
    pub fn new<'a>(
        file_type: FileType,
        names: impl IntoIterator<Item = &'a str>,
        n_layers: usize,
        n_gqa: usize,
    ) -> Self {
        let mut n_value = 0;
        let mut tied_embeddings = true;
        for name in names {
            match role(name) {
                Role::AttentionValue => n_value += 1,
                Role::Output => tied_embeddings = false,
                _ => {}
            }
        }
        TensorMix {
            file_type,
            n_layers,
            n_gqa,
            tied_embeddings,
            n_value,
            i_value: 0,
            i_down: 0,
        }
    }

    /// The format of the next quantizable tensor, `name` with rows of `row_len` values.
    pub fn choose(&mut self, name: &str, row_len: usize) -> GgmlDType {
        let default = self.file_type.default_type();
        if self.file_type == FileType::F32 {
            return default;
        }
        // The first eighth and last eighth of the layers, and every third one between.
        let more_bits = |i: usize, n: usize| {
            i < n / 8 || i >= 7 * n / 8 || (i as i64 - (n / 8) as i64) % 3 == 2
        };
        use FileType as F;
        use GgmlDType as G;
        let ft = self.file_type;
        let mut t = default;
        match role(name) {
            Role::Output => t = self.output_type(row_len),
            Role::TokenEmbedding if self.tied_embeddings => t = self.output_type(row_len),
            Role::TokenEmbedding => {}
            Role::AttentionValue => {
                let (i, n) = (self.i_value, self.n_value);
                match ft {
                    F::Q2K => t = if self.n_gqa >= 4 { G::Q4K } else { G::Q3K },
                    F::Q3KM => t = if i < 2 { G::Q5K } else { G::Q4K },
                    F::Q4KM | F::Q5KM if more_bits(i, n) => t = G::Q6K,
                    F::Q4KS if i < 4 => t = G::Q5K,
                    _ => {}
                }
                self.i_value += 1;
            }
            Role::FfnDown => {
                let (i, n) = (self.i_down, self.n_layers);
                match ft {
                    F::Q2K => t = G::Q3K,
                    F::Q3KM => t = if i < n / 16 { G::Q5K } else { G::Q4K },
                    F::Q4KM | F::Q5KM if more_bits(i, n) => t = G::Q6K,
                    F::Q4KS if i < n / 8 => t = G::Q5K,
                    _ => {}
                }
                self.i_down += 1;
            }
            Role::AttentionOutput => match ft {
                F::Q2K => t = G::Q3K,
                F::Q3KM => t = G::Q4K,
                _ => {}
            },
            Role::Other => {}
        }
        fallback(t, row_len)
    }

    /// The output projection (and a tied embedding): q6_K, or q8_0 where rows do not fit the
    /// file's block or the file is q8_0 already.
    fn output_type(&self, row_len: usize) -> GgmlDType {
        let default = self.file_type.default_type();
        if !row_len.is_multiple_of(default.block_size()) {
            GgmlDType::Q8_0
        } else if default != GgmlDType::Q8_0 {
            GgmlDType::Q6K
        } else {
            default
        }
    }
}

/// A 256-wide K format on a row that is not a multiple of 256 becomes the 32-wide format of about
/// the same size; a row that fits no block stays f16.
pub fn fallback(t: GgmlDType, row_len: usize) -> GgmlDType {
    if row_len.is_multiple_of(t.block_size()) {
        return t;
    }
    let smaller = match t {
        GgmlDType::Q2K | GgmlDType::Q3K => GgmlDType::Q4_0,
        GgmlDType::Q4K => GgmlDType::Q5_0,
        GgmlDType::Q5K => GgmlDType::Q5_1,
        GgmlDType::Q6K => GgmlDType::Q8_0,
        other => other,
    };
    if row_len.is_multiple_of(smaller.block_size()) {
        smaller
    } else {
        GgmlDType::F16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n_layers: usize) -> Vec<String> {
        let mut v = vec!["token_embd.weight".to_string(), "output.weight".to_string()];
        for i in 0..n_layers {
            for t in [
                "attn_q",
                "attn_k",
                "attn_v",
                "attn_output",
                "ffn_gate",
                "ffn_up",
                "ffn_down",
            ] {
                v.push(format!("blk.{i}.{t}.weight"));
            }
        }
        v.sort_by(|a, b| visiting_order(a, b));
        v
    }

    fn plan(ft: FileType, n_layers: usize, row_len: usize) -> Vec<(String, GgmlDType)> {
        let names = names(n_layers);
        let mut mix = TensorMix::new(ft, names.iter().map(String::as_str), n_layers, 1);
        names
            .into_iter()
            .map(|n| {
                let t = mix.choose(&n, row_len);
                (n, t)
            })
            .collect()
    }

    #[test]
    fn blocks_are_visited_in_numeric_order() {
        let n = names(12);
        let i2 = n.iter().position(|x| x == "blk.2.attn_v.weight").unwrap();
        let i10 = n.iter().position(|x| x == "blk.10.attn_v.weight").unwrap();
        assert!(i2 < i10);
        assert_eq!(n[0], "output.weight");
    }

    #[test]
    fn q4_k_m_gives_q6_k_to_the_output_and_to_sensitive_layers() {
        // 16 layers: more bits for layers 0-1 and 14-15, and for 4, 7, 10, 13 (every third).
        let p = plan(FileType::Q4KM, 16, 2048);
        let of = |n: &str| p.iter().find(|(x, _)| x == n).unwrap().1;
        assert_eq!(of("output.weight"), GgmlDType::Q6K);
        assert_eq!(of("token_embd.weight"), GgmlDType::Q4K);
        for i in [0, 1, 4, 7, 10, 13, 14, 15] {
            assert_eq!(
                of(&format!("blk.{i}.attn_v.weight")),
                GgmlDType::Q6K,
                "layer {i}"
            );
            assert_eq!(
                of(&format!("blk.{i}.ffn_down.weight")),
                GgmlDType::Q6K,
                "layer {i}"
            );
        }
        for i in [2, 3, 5, 6, 8, 9, 11, 12] {
            assert_eq!(
                of(&format!("blk.{i}.attn_v.weight")),
                GgmlDType::Q4K,
                "layer {i}"
            );
        }
        assert_eq!(of("blk.3.attn_q.weight"), GgmlDType::Q4K);
    }

    #[test]
    fn rows_that_do_not_fit_fall_back_as_llama_cpp_does() {
        // SmolLM2's rows of 576: q4_K → q5_0, q6_K → q8_0, and the output q8_0.
        let p = plan(FileType::Q4KM, 4, 576);
        let of = |n: &str| p.iter().find(|(x, _)| x == n).unwrap().1;
        assert_eq!(of("output.weight"), GgmlDType::Q8_0);
        assert_eq!(of("blk.1.attn_q.weight"), GgmlDType::Q5_0);
        // Of 4 layers only the last gets more bits (7·4/8 = 3): q6_K, which falls back to q8_0.
        assert_eq!(of("blk.3.attn_v.weight"), GgmlDType::Q8_0);
        assert_eq!(of("blk.0.attn_v.weight"), GgmlDType::Q5_0);
        assert_eq!(fallback(GgmlDType::Q2K, 576), GgmlDType::Q4_0);
        assert_eq!(fallback(GgmlDType::Q5K, 576), GgmlDType::Q5_1);
        assert_eq!(fallback(GgmlDType::Q4_0, 100), GgmlDType::F16);
    }

    #[test]
    fn names_parse_back() {
        for t in FileType::ALL {
            assert_eq!(FileType::parse(t.name()), Some(t));
        }
        assert_eq!(FileType::parse("Q4_K_M"), Some(FileType::Q4KM));
        assert_eq!(FileType::parse("q4_k"), None);
    }
}

//! Which SIMD instructions this CPU offers the kernels, decided once per process.
//!
//! The kernels are compiled for every level and chosen at run time, so one binary runs on any
//! x86-64 host (`.cargo/config.toml` builds for x86-64-v3: AVX2, FMA, F16C) and uses AVX-512 VNNI
//! where the CPU has it. `BILLION_LLM_ISA` overrides the choice, so one machine can test and time
//! every path: `avx2` forces the AVX2 kernels on an AVX-512 host, `portable` the plain Rust and
//! candle paths that run on any CPU.

use candle_core::{DType, Device};
use std::sync::OnceLock;

/// The integer dot product the quantized kernels are built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512 (F, BW) with VNNI: `vpdpbusd` on 512-bit registers, 8 values of 8 rows per
    /// instruction.
    Avx512Vnni,
    /// AVX2 with FMA and F16C: `vpmaddubsw` + `vpmaddwd` on 256-bit registers, 8 values of 4
    /// rows at a time.
    Avx2,
}

/// The environment variable that overrides the instruction set the kernels use.
pub const ISA_VARIABLE: &str = "BILLION_LLM_ISA";

impl Isa {
    /// Whether this CPU runs `self`.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c");
            match self {
                Isa::Avx2 => avx2,
                Isa::Avx512Vnni => {
                    avx2 && is_x86_feature_detected!("avx512f")
                        && is_x86_feature_detected!("avx512bw")
                        && is_x86_feature_detected!("avx512vnni")
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = self;
            false
        }
    }

    /// The instruction set the kernels use in this process: the best this CPU has, or the one
    /// `BILLION_LLM_ISA` asks for; `None` runs the portable paths.
    pub fn detect() -> Option<Isa> {
        static ISA: OnceLock<Option<Isa>> = OnceLock::new();
        *ISA.get_or_init(|| {
            let asked = std::env::var(ISA_VARIABLE).ok();
            match Isa::choose(asked.as_deref(), Isa::available) {
                Ok(isa) => isa,
                Err(message) => {
                    eprintln!("warning: {message}");
                    Isa::choose(None, Isa::available).unwrap_or(None)
                }
            }
        })
    }

    /// The choice [`Isa::detect`] makes, given the variable's value and what the CPU has:
    /// the best available level no higher than the one asked for.
    pub fn choose(
        asked: Option<&str>,
        available: impl Fn(Isa) -> bool,
    ) -> Result<Option<Isa>, String> {
        let ceiling = match asked.map(str::to_ascii_lowercase).as_deref() {
            None | Some("") | Some("auto") => 0,
            Some("avx512vnni") | Some("avx512") | Some("vnni") => 0,
            Some("avx2") => 1,
            Some("portable") | Some("none") => return Ok(None),
            Some(other) => {
                return Err(format!(
                    "{ISA_VARIABLE}={other:?} is not an instruction set the kernels know: \
                     use avx512vnni, avx2 or portable (or unset it to use the best this CPU has)"
                ))
            }
        };
        Ok([Isa::Avx512Vnni, Isa::Avx2]
            .into_iter()
            .skip(ceiling)
            .find(|&isa| available(isa)))
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512Vnni => "AVX-512 VNNI",
            Isa::Avx2 => "AVX2",
        }
    }
}

/// Whether the SIMD kernels run in this process: AVX2, FMA and F16C at least, unless
/// `BILLION_LLM_ISA=portable`. Every public kernel checks it and falls back to plain Rust.
pub fn simd() -> bool {
    Isa::detect().is_some()
}

/// The instruction set to name next to a speed figure: llama.cpp and our kernels run
/// differently on AVX2 and AVX-512 VNNI hosts.
pub fn instruction_set() -> &'static str {
    Isa::detect().map_or(std::env::consts::ARCH, |isa| isa.name())
}

/// Whether the inference-only fused kernels apply: the attention of a prompt
/// (`attention::attend_causal`, which masks by position, so the model then makes no mask
/// tensor: `seq × (past + seq)` floats, about 0.8 million for an MMLU question after its cached
/// few-shot prefix) and the feed-forward block's SwiGLU. Both need f32 on a CPU with the SIMD
/// kernels, and neither records a gradient, so training keeps candle's ops.
pub fn fused_kernels_apply(dtype: DType, device: &Device, train: bool) -> bool {
    !train && dtype == DType::F32 && device.is_cpu() && simd()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_caps_the_instruction_set() {
        let all = |_| true;
        let avx2_only = |isa| isa == Isa::Avx2;
        assert_eq!(Isa::choose(None, all), Ok(Some(Isa::Avx512Vnni)));
        assert_eq!(Isa::choose(Some("avx2"), all), Ok(Some(Isa::Avx2)));
        assert_eq!(Isa::choose(Some("AVX2"), all), Ok(Some(Isa::Avx2)));
        assert_eq!(Isa::choose(Some("portable"), all), Ok(None));
        assert_eq!(Isa::choose(None, avx2_only), Ok(Some(Isa::Avx2)));
        // Asking for more than the CPU has gives what it has.
        assert_eq!(
            Isa::choose(Some("avx512vnni"), avx2_only),
            Ok(Some(Isa::Avx2))
        );
        assert_eq!(Isa::choose(None, |_| false), Ok(None));
        let err = Isa::choose(Some("sse"), all).unwrap_err();
        assert!(err.contains("avx2") && err.contains("portable"), "{err}");
    }

    /// The build targets x86-64-v3, so a binary built on one host runs on every AVX2 host:
    /// AVX-512 code exists only inside the kernels chosen at run time. A `target-cpu=native`
    /// build assumes whatever the build machine has beyond x86-64-v3 (AVX-512 on one host,
    /// AES, SHA or SSE4a on an AMD EPYC).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_build_assumes_x86_64_v3_and_nothing_more() {
        // What the compiler was told it may assume (read at run time, so the test reports it).
        let assumed = |enabled: bool| std::hint::black_box(enabled);
        assert!(assumed(cfg!(target_feature = "avx2")) && assumed(cfg!(target_feature = "fma")));
        let beyond_v3 = [
            ("avx512f", cfg!(target_feature = "avx512f")),
            ("avx512vnni", cfg!(target_feature = "avx512vnni")),
            ("aes", cfg!(target_feature = "aes")),
            ("pclmulqdq", cfg!(target_feature = "pclmulqdq")),
            ("sha", cfg!(target_feature = "sha")),
            ("sse4a", cfg!(target_feature = "sse4a")),
            ("adx", cfg!(target_feature = "adx")),
        ];
        let extra: Vec<&str> = beyond_v3
            .iter()
            .filter(|(_, on)| assumed(*on))
            .map(|(name, _)| *name)
            .collect();
        assert!(
            extra.is_empty(),
            "built assuming {extra:?}: the binary would not run on every AVX2 host \
             (.cargo/config.toml should set target-cpu=x86-64-v3, not native)"
        );
    }
}

//! Figures this workbook did not measure: training-token counts and benchmark scores as the
//! papers and model cards report them. Each carries its source and setting, and everything
//! built from them is labelled "published", never mixed with our measurements.

/// How many tokens a model saw in pre-training, as its authors report it.
#[derive(Debug, Clone, Copy)]
pub struct TrainingTokens {
    /// Zoo alias of the model.
    pub alias: &'static str,
    pub tokens: f64,
    /// The source's own words, short.
    pub detail: &'static str,
    pub source: &'static str,
}

pub const TRAINING_TOKENS: &[TrainingTokens] = &[
    TrainingTokens {
        alias: "tinyllama",
        tokens: 3e12,
        detail: "about 1T tokens for about 3 epochs",
        source: "TinyLlama paper, arXiv:2401.02385",
    },
    TrainingTokens {
        alias: "llama3.2-1b",
        tokens: 9e12,
        detail: "up to 9T tokens",
        source: "Llama 3.2 model card, huggingface.co/meta-llama/Llama-3.2-1B-Instruct",
    },
    TrainingTokens {
        alias: "stablelm-2-1.6b",
        tokens: 2e12,
        detail: "2 trillion tokens, two epochs",
        source: "Stable LM 2 1.6B model card, huggingface.co/stabilityai/stablelm-2-1_6b",
    },
    TrainingTokens {
        alias: "pythia-1b",
        tokens: 300e9,
        detail: "300B tokens of the Pile",
        source: "Pythia paper, arXiv:2304.01373",
    },
];

/// The compute-optimal ratio of Hoffmann et al. (2022), "Training Compute-Optimal Large Language
/// Models" (Chinchilla), arXiv:2203.15556: about 20 training tokens per parameter.
pub const CHINCHILLA_TOKENS_PER_PARAMETER: f64 = 20.0;

/// One benchmark score as published, with the harness and setting it was measured under.
#[derive(Debug, Clone, Copy)]
pub struct PublishedScore {
    /// Zoo alias of the model family.
    pub alias: &'static str,
    /// The exact checkpoint the score is for (often the base model, not the chat model).
    pub checkpoint: &'static str,
    pub benchmark: &'static str,
    pub setting: &'static str,
    /// Percent.
    pub score: f64,
    pub source: &'static str,
}

/// Published scores. Scores from different sources used different harnesses and prompts: they
/// cannot be compared with each other, nor with what `billion-llm bench` measures.
pub const PUBLISHED_SCORES: &[PublishedScore] = &[
    PublishedScore {
        alias: "tinyllama",
        checkpoint: "TinyLlama-1.1B (3T tokens, base)",
        benchmark: "HellaSwag",
        setting: "0-shot, lm-evaluation-harness",
        score: 59.20,
        source: "TinyLlama paper, arXiv:2401.02385, Table 2",
    },
    PublishedScore {
        alias: "tinyllama",
        checkpoint: "TinyLlama-1.1B (3T tokens, base)",
        benchmark: "WinoGrande",
        setting: "0-shot, lm-evaluation-harness",
        score: 59.12,
        source: "TinyLlama paper, arXiv:2401.02385, Table 2",
    },
    PublishedScore {
        alias: "tinyllama",
        checkpoint: "TinyLlama-1.1B (3T tokens, base)",
        benchmark: "7 commonsense tasks, average",
        setting: "0-shot, lm-evaluation-harness",
        score: 52.99,
        source: "TinyLlama paper, arXiv:2401.02385, Table 2",
    },
    PublishedScore {
        alias: "pythia-1b",
        checkpoint: "Pythia-1B (300B tokens)",
        benchmark: "HellaSwag (acc_norm)",
        setting: "0-shot, lm-evaluation-harness",
        score: 47.16,
        source: "TinyLlama README, baseline table, github.com/jzhang38/TinyLlama",
    },
    PublishedScore {
        alias: "llama3.2-1b",
        checkpoint: "Llama-3.2-1B (base)",
        benchmark: "MMLU",
        setting: "5-shot, macro average, Meta's harness",
        score: 32.2,
        source: "Llama 3.2 model card, huggingface.co/meta-llama/Llama-3.2-1B",
    },
    PublishedScore {
        alias: "llama3.2-1b",
        checkpoint: "Llama-3.2-1B-Instruct",
        benchmark: "MMLU",
        setting: "5-shot, macro average, Meta's harness",
        score: 49.3,
        source: "Llama 3.2 model card, huggingface.co/meta-llama/Llama-3.2-1B-Instruct",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_figure_names_a_zoo_model_and_a_source() {
        for t in TRAINING_TOKENS {
            assert!(crate::hub::zoo::lookup(t.alias).is_some(), "{}", t.alias);
            assert!(!t.source.is_empty());
        }
        for s in PUBLISHED_SCORES {
            assert!(crate::hub::zoo::lookup(s.alias).is_some(), "{}", s.alias);
            assert!((0.0..=100.0).contains(&s.score));
            assert!(!s.source.is_empty() && !s.setting.is_empty());
        }
    }
}

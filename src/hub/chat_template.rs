//! Chat templates: how a conversation becomes the one string a chat model was trained on.
//!
//! Hugging Face ships each model's template as Jinja in `tokenizer_config.json` (a GGUF file
//! under `tokenizer.chat_template`); we render it with minijinja, with the Python string
//! methods and helpers (`raise_exception`, `strftime_now`) that templates expect. Built-in
//! templates per format are the fallback when a model ships none.

use crate::hub::zoo::ChatFormat;
use anyhow::{Context, Result};
use candle_core::quantized::gguf_file;
use minijinja::{context, Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// A compiled chat template with the special tokens it refers to.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
}

const ZEPHYR: &str = "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}";
const LLAMA3: &str = "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";
const CHATML: &str = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
const LLAMA2: &str = "{% if messages[0]['role'] == 'system' %}{% set system = '<<SYS>>\n' + messages[0]['content'] + '\n<</SYS>>\n\n' %}{% set messages = messages[1:] %}{% else %}{% set system = '' %}{% endif %}{% for message in messages %}{% if message['role'] == 'user' %}{{ bos_token }}[INST] {% if loop.first %}{{ system }}{% endif %}{{ message['content'] | trim }} [/INST]{% else %} {{ message['content'] | trim }} {{ eos_token }}{% endif %}{% endfor %}";
/// Pythia and base models were never trained to chat: a plain transcript is the most honest
/// prompt. Each answer ends with the end-of-text token, so that a base model fine-tuned on
/// transcripts (`billion-llm finetune`) learns where an answer stops; the BOS token opens the
/// text for tokenizers that add one (Gemma).
const PLAIN: &str = "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] }}\n\n{% elif message['role'] == 'user' %}User: {{ message['content'] }}\n{% else %}Assistant: {{ message['content'] }}{{ eos_token }}\n{% endif %}{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}";

impl ChatTemplate {
    pub fn from_template_str(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let t = Self {
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        };
        // Compile once now so a broken template fails at load time, not mid-chat.
        t.environment()
            .template_from_str(&t.source)
            .context("the chat template does not compile")?;
        Ok(t)
    }

    /// The `chat_template` of a `tokenizer_config.json`, or `None` when it has none.
    pub fn from_tokenizer_config(path: &Path) -> Result<Option<Self>> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        let source = match v.get("chat_template") {
            Some(serde_json::Value::String(s)) => s.clone(),
            // Some configs list named templates; "default" is the chat one.
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t["name"] == "default")
                .and_then(|t| t["template"].as_str())
                .map(String::from)
                .context("chat_template list has no \"default\" entry")?,
            _ => return Ok(None),
        };
        let token = |k: &str| {
            v.get(k)
                .and_then(|t| match t {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Object(o) => {
                        o.get("content").and_then(|c| c.as_str()).map(String::from)
                    }
                    _ => None,
                })
                .unwrap_or_default()
        };
        Self::from_template_str(&source, &token("bos_token"), &token("eos_token"))
            .with_context(|| format!("in {}", path.display()))
            .map(Some)
    }

    /// The `tokenizer.chat_template` of a GGUF file, or `None`.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Option<Self>> {
        let md = &content.metadata;
        let Some(source) = md
            .get("tokenizer.chat_template")
            .and_then(|v| v.to_string().ok())
        else {
            return Ok(None);
        };
        let token = |key: &str| -> String {
            let tokens = md
                .get("tokenizer.ggml.tokens")
                .and_then(|v| v.to_vec().ok());
            md.get(key)
                .and_then(|v| v.to_u32().ok())
                .and_then(|id| tokens?.get(id as usize)?.to_string().ok().cloned())
                .unwrap_or_default()
        };
        Self::from_template_str(
            source,
            &token("tokenizer.ggml.bos_token_id"),
            &token("tokenizer.ggml.eos_token_id"),
        )
        .map(Some)
    }

    /// The built-in template of a chat format.
    pub fn builtin(format: ChatFormat, bos_token: &str, eos_token: &str) -> Self {
        let source = match format {
            ChatFormat::Zephyr => ZEPHYR,
            ChatFormat::Llama3 => LLAMA3,
            ChatFormat::ChatMl => CHATML,
            ChatFormat::Llama2 => LLAMA2,
            ChatFormat::Plain => PLAIN,
        };
        Self::from_template_str(source, bos_token, eos_token).expect("built-in templates compile")
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether this is the plain `User:`/`Assistant:` transcript given to models never trained
    /// to chat (the zoo's Pythia): a way to talk to a base model, not a chat format it learned.
    pub fn is_plain_transcript(&self) -> bool {
        self.source == PLAIN
    }

    fn environment(&self) -> Environment<'static> {
        let mut env = Environment::new();
        // transformers renders with trim_blocks and lstrip_blocks on.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        // Llama 3.2's template prints today's date into the system prompt.
        env.add_function("strftime_now", |fmt: String| -> String {
            format_today(&fmt)
        });
        env
    }

    /// Renders a conversation; with `add_generation_prompt` it ends where the assistant's
    /// answer begins.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let env = self.environment();
        let template = env.template_from_str(&self.source)?;
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
            })
            .map_err(|e| anyhow::anyhow!("rendering the chat template failed: {e:#}"))
    }
}

/// Today's date for `strftime_now`; only the formats chat templates use ("%d %b %Y").
fn format_today(fmt: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    fmt.replace("%d", &format!("{d:02}"))
        .replace("%b", MONTHS[(m - 1) as usize])
        .replace("%m", &format!("{m:02}"))
        .replace("%Y", &y.to_string())
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_930), (2024, 7, 26));
    }

    #[test]
    fn builtin_templates_render_their_formats() {
        let msgs = [
            Message::new("system", "Be brief."),
            Message::new("user", "Hi"),
        ];
        let zephyr = ChatTemplate::builtin(ChatFormat::Zephyr, "<s>", "</s>");
        assert_eq!(
            zephyr.render(&msgs, true).unwrap(),
            "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\n"
        );
        let chatml = ChatTemplate::builtin(ChatFormat::ChatMl, "", "<|im_end|>");
        assert_eq!(
            chatml.render(&msgs, true).unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let llama3 = ChatTemplate::builtin(ChatFormat::Llama3, "<|begin_of_text|>", "<|eot_id|>");
        assert_eq!(
            llama3.render(&msgs, true).unwrap(),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        let plain = ChatTemplate::builtin(ChatFormat::Plain, "", "");
        assert_eq!(
            plain.render(&msgs, true).unwrap(),
            "Be brief.\n\nUser: Hi\nAssistant:"
        );
        let answered = [&msgs[..], &[Message::new("assistant", "Hello.")]].concat();
        let plain = ChatTemplate::builtin(ChatFormat::Plain, "<bos>", "<eos>");
        assert_eq!(
            plain.render(&answered, false).unwrap(),
            "<bos>Be brief.\n\nUser: Hi\nAssistant: Hello.<eos>\n"
        );
    }

    #[test]
    fn only_the_plain_transcript_is_no_chat_format() {
        assert!(ChatTemplate::builtin(ChatFormat::Plain, "", "").is_plain_transcript());
        assert!(!ChatTemplate::builtin(ChatFormat::ChatMl, "", "").is_plain_transcript());
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = ChatTemplate::from_template_str(
            "{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first') }}{% endif %}",
            "",
            "",
        )
        .unwrap();
        let err = t
            .render(&[Message::new("assistant", "x")], false)
            .unwrap_err();
        assert!(format!("{err:#}").contains("user first"));
    }

    #[test]
    fn a_broken_template_fails_at_load() {
        assert!(ChatTemplate::from_template_str("{% for %}", "", "").is_err());
    }
}

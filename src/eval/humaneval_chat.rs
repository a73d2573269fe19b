//! HumanEval for chat models, the way EvalPlus runs instruction-tuned models: the problem goes
//! through the model's chat template as a request for a self-contained solution in a markdown
//! code block, the answer's code block is taken out, and the same sandboxed tests run on it.
//!
//! Why: a chat model asked to continue a bare function prompt answers like a chat model, with
//! prose and markdown fences, and fails for its format rather than its code (SmolLM2-135M-Instruct
//! scored 0/20 that way). Where the template lets us write the start of the assistant's turn, the
//! answer is opened for the model with EvalPlus's response prefix, which ends in a ```` ```python ````
//! fence, so the model starts right inside the code block.

use crate::eval::humaneval::{self, Problem};
use crate::hub::chat_template::{ChatTemplate, Message};
use anyhow::{Context, Result};

// ANCHOR: request
/// The request, EvalPlus's instruction for instruction-tuned models; the problem's prompt
/// follows in a ```` ```python ```` fence.
pub const INSTRUCTION: &str = "Please provide a self-contained Python script that solves the \
                               following problem in a markdown code block:";

/// EvalPlus's start of the assistant's answer: it ends inside an open code block.
pub const RESPONSE_PREFIX: &str = "Below is a Python script with a self-contained function \
                                   that solves the problem and passes corresponding tests:\n```python\n";

/// Stands for the model's answer while the template renders a conversation that already holds
/// the assistant's turn; everything from it on is cut off.
const ANSWER_MARK: &str = "<<billion-llm: the answer continues here>>";

/// The user's message for a problem: the instruction, then the prompt in a Python fence.
pub fn request(problem: &Problem) -> String {
    format!("{INSTRUCTION}\n```python\n{}\n```\n", problem.prompt.trim())
}
// ANCHOR_END: request

/// Renders HumanEval problems as chat prompts for one model's template.
#[derive(Debug, Clone)]
pub struct ChatPrompter {
    template: ChatTemplate,
    /// Whether the template lets the answer start with [`RESPONSE_PREFIX`].
    prefixed: bool,
}

impl ChatPrompter {
    /// Tries the template once: it takes the response prefix when it renders an assistant turn
    /// after the user's with the prefix verbatim (some templates refuse a conversation that
    /// ends with the assistant, or rewrite its text); otherwise prompts end at the plain
    /// generation prompt and the model opens its code block itself.
    pub fn new(template: ChatTemplate) -> Self {
        let probe = Problem {
            task_id: String::new(),
            prompt: "def f():\n    \"\"\"Return 1.\"\"\"\n".into(),
            canonical_solution: String::new(),
            test: String::new(),
            entry_point: "f".into(),
        };
        let prefixed = prefixed_prompt(&template, &probe).is_ok_and(|p| p.is_some());
        Self { template, prefixed }
    }

    /// The start of the answer written for the model, when the template allows one.
    pub fn response_prefix(&self) -> Option<&'static str> {
        self.prefixed.then_some(RESPONSE_PREFIX)
    }

    /// The prompt text for `problem`, special tokens spelled out as the template places them
    /// (encode it without adding special tokens, as transformers' `apply_chat_template` does).
    pub fn prompt(&self, problem: &Problem) -> Result<String> {
        if self.prefixed {
            return prefixed_prompt(&self.template, problem)?.with_context(|| {
                format!(
                    "the chat template wrote the response prefix for a probe but not for {}",
                    problem.task_id
                )
            });
        }
        self.template
            .render(&[Message::new("user", &request(problem))], true)
    }

    /// The model's whole answer: the response prefix (when the prompt ended with it) and what
    /// the model generated after it.
    pub fn answer(&self, generated: &str) -> String {
        format!("{}{generated}", self.response_prefix().unwrap_or(""))
    }
}

/// The conversation rendered up to the answer mark, when the template writes the assistant's
/// turn with the prefix exactly as given; `None` when it does not.
fn prefixed_prompt(template: &ChatTemplate, problem: &Problem) -> Result<Option<String>> {
    let messages = [
        Message::new("user", &request(problem)),
        Message::new("assistant", &format!("{RESPONSE_PREFIX}{ANSWER_MARK}\n```")),
    ];
    let rendered = template.render(&messages, false)?;
    Ok(rendered
        .find(ANSWER_MARK)
        .map(|at| rendered[..at].to_string())
        .filter(|prompt| prompt.ends_with(RESPONSE_PREFIX)))
}

/// The first fenced code block of a markdown text: its body, and whether its closing fence was
/// written (an unclosed block runs to the end of the text, as when generation hit its limit).
/// Fences are lines starting with three backticks, the opening one with or without a language.
pub fn first_fenced_block(text: &str) -> Option<(&str, bool)> {
    let mut offset = 0;
    let mut body_start = None;
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with("```") {
            match body_start {
                None => body_start = Some(offset + line.len()),
                Some(start) => return Some((&text[start..offset], true)),
            }
        }
        offset += line.len();
    }
    body_start.map(|start| (&text[start..], false))
}

/// The code of a chat answer: the first fenced block; without a fence, the lines from the first
/// one that looks like Python up to the first that does not (the prose after the code).
pub fn extract_code(answer: &str) -> String {
    if let Some((body, _)) = first_fenced_block(answer) {
        return body.trim_end().to_string() + "\n";
    }
    let code: Vec<&str> = answer
        .lines()
        .skip_while(|line| line.trim().is_empty() || !is_code_line(line))
        .take_while(|line| is_code_line(line))
        .collect();
    let code = code.join("\n");
    let code = code.trim_end();
    if code.is_empty() {
        String::new()
    } else {
        format!("{code}\n")
    }
}

/// Python statements that start a line; prose sentences start with a capital letter instead.
const STATEMENT_KEYWORDS: [&str; 27] = [
    "def", "class", "import", "from", "if", "elif", "else", "for", "while", "try", "except",
    "finally", "with", "return", "assert", "raise", "pass", "break", "continue", "global",
    "nonlocal", "del", "async", "await", "lambda", "yield", "print",
];

/// Whether a line can belong to a Python program: blank, indented, a comment, decorator or
/// string, a statement keyword, or a name followed by an assignment, call or subscript.
fn is_code_line(line: &str) -> bool {
    if line.trim().is_empty() || line.starts_with([' ', '\t']) {
        return true;
    }
    if ["#", "@", ")", "]", "}", "\"\"\"", "'''"]
        .iter()
        .any(|p| line.starts_with(p))
    {
        return true;
    }
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(line.len());
    let (name, rest) = line.split_at(name_end);
    if STATEMENT_KEYWORDS.contains(&name) {
        return rest.is_empty() || rest.starts_with([' ', ':', '(']);
    }
    let starts_like_a_name = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
    starts_like_a_name
        && (rest.starts_with(['(', '['])
            || ["=", "+=", "-=", "*=", "/=", "|=", "&="]
                .iter()
                .any(|op| rest.trim_start().starts_with(op)))
}

/// Whether the code defines the problem's function itself at the top level (a whole program),
/// rather than being the body that follows the prompt.
pub fn defines_entry_point(code: &str, problem: &Problem) -> bool {
    let def = format!("def {}(", problem.entry_point);
    code.lines().any(|line| line.starts_with(&def))
}

/// The program that is run for a chat answer's code. A whole program runs as it is, after the
/// prompt's own lines before the function (its imports and helpers: HumanEval/32's tests call
/// the prompt's `poly`, and signatures use `typing` names the prompt imports), so that the
/// model's definitions, coming later, are the ones tested. Other code is a function body and
/// follows the prompt, as a completion does.
pub fn program(problem: &Problem, code: &str) -> String {
    if !defines_entry_point(code, problem) {
        return humaneval::program(problem, code);
    }
    let def = format!("def {}(", problem.entry_point);
    let context = problem
        .prompt
        .match_indices(&def)
        .find(|(at, _)| *at == 0 || problem.prompt[..*at].ends_with('\n'))
        .map_or("", |(at, _)| &problem.prompt[..at]);
    format!(
        "{context}\n{code}\n\n{}\n\ncheck({})\n",
        problem.test, problem.entry_point
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::zoo::ChatFormat;

    fn problem() -> Problem {
        Problem {
            task_id: "HumanEval/x".into(),
            prompt: "import math\n\n\ndef helper(x):\n    return x\n\n\ndef add(a: int, b: int) -> int:\n    \"\"\"Add two numbers.\"\"\"\n".into(),
            canonical_solution: "    return a + b\n".into(),
            test: "def check(candidate):\n    assert candidate(1, 2) == 3\n".into(),
            entry_point: "add".into(),
        }
    }

    #[test]
    fn chatml_takes_the_response_prefix() {
        let t = ChatTemplate::builtin(ChatFormat::ChatMl, "", "<|im_end|>");
        let prompter = ChatPrompter::new(t);
        assert_eq!(prompter.response_prefix(), Some(RESPONSE_PREFIX));
        let prompt = prompter.prompt(&problem()).unwrap();
        assert!(prompt.starts_with(&format!(
            "<|im_start|>user\n{INSTRUCTION}\n```python\nimport math"
        )));
        assert!(prompt.ends_with(&format!("<|im_start|>assistant\n{RESPONSE_PREFIX}")));
        assert_eq!(
            prompter.answer("    return 1\n```"),
            format!("{RESPONSE_PREFIX}    return 1\n```")
        );
    }

    #[test]
    fn a_template_that_drops_the_answer_gets_the_generation_prompt() {
        // Writes only user turns, like a template that cannot hold an assistant's start.
        let t = ChatTemplate::from_template_str(
            "{% for m in messages %}{% if m['role'] == 'user' %}U: {{ m['content'] }}\n{% endif %}{% endfor %}{% if add_generation_prompt %}A:{% endif %}",
            "",
            "",
        )
        .unwrap();
        let prompter = ChatPrompter::new(t);
        assert_eq!(prompter.response_prefix(), None);
        assert!(prompter.prompt(&problem()).unwrap().ends_with("```\n\nA:"));
        assert_eq!(prompter.answer("x"), "x");
    }

    #[test]
    fn a_whole_program_runs_after_the_prompts_imports_and_helpers() {
        let code = "def add(a, b):\n    return helper(a) + b\n";
        assert!(defines_entry_point(code, &problem()));
        let p = program(&problem(), code);
        assert!(
            p.starts_with("import math\n\n\ndef helper(x):\n    return x\n\n\n\ndef add(a, b):")
        );
        assert!(!p.contains("Add two numbers"));
        assert!(p.ends_with("check(add)\n"));
        // A body (no definition of its own) follows the prompt, as a completion does.
        let body = program(&problem(), "    return a + b\n");
        assert!(body.starts_with(&problem().prompt));
        assert!(!defines_entry_point(
            "    def add(a, b): pass\n",
            &problem()
        ));
    }
}

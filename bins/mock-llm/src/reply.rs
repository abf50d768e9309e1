//! What the mock answers, independent of the wire format: the answer's pieces (one per stream
//! chunk), why it stopped, and the token counts. Everything here is deterministic.

use crate::directive::Directive;

/// The arguments of every mock tool call.
pub(crate) const TOOL_ARGUMENTS: &str = r#"{"location":"Paris"}"#;

/// How many characters of the user's message the default answer quotes.
const QUOTE_CHARS: usize = 100;

/// The format-neutral view of a request.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Call {
    pub model: String,
    pub stream: bool,
    /// Whether an OpenAI stream should end with a usage chunk.
    pub include_usage: bool,
    pub prompt: Prompt,
}

/// The parts of a request that the answer depends on.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Prompt {
    /// The text of every message, the system prompt included.
    pub texts: Vec<String>,
    /// The last user message's text (with the directive removed once it has been read).
    pub user_text: String,
    /// The completion budget, in words.
    pub max_tokens: Option<u32>,
    /// The name of the first tool the request declares.
    pub first_tool: Option<String>,
}

/// Why the answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    /// The whole answer was given.
    Stop,
    /// The answer was cut to the completion budget.
    Length,
    /// The answer is a tool call.
    ToolCall,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    /// The answer's words, each with the whitespace after it; for a tool call, the pieces of
    /// the arguments. One stream chunk each.
    pub pieces: Vec<String>,
    /// The name of the tool called, when `finish` is `ToolCall`.
    pub tool: Option<String>,
    pub finish: Finish,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

impl Reply {
    /// The answer as one text (the tool call's arguments for a tool call).
    pub(crate) fn text(&self) -> String {
        self.pieces.concat()
    }
}

/// Computes the answer to `prompt`. `fixed` is the server-wide answer, if one is configured.
pub(crate) fn reply(fixed: Option<&str>, directive: &Directive, prompt: &Prompt) -> Reply {
    let prompt_tokens = prompt_tokens(&prompt.texts);
    if directive.tool_call == Some(true)
        && let Some(name) = &prompt.first_tool
    {
        return Reply {
            pieces: tool_argument_pieces(),
            tool: Some(name.clone()),
            finish: Finish::ToolCall,
            prompt_tokens,
            completion_tokens: (TOOL_ARGUMENTS.len() as u64).div_ceil(4),
        };
    }
    let text = answer_text(fixed, directive, &prompt.user_text);
    let mut pieces: Vec<String> = split_words(&text).into_iter().map(str::to_owned).collect();
    let mut finish = Finish::Stop;
    if let Some(max) = prompt.max_tokens {
        let max = max as usize;
        if pieces.len() > max {
            pieces.truncate(max);
            if let Some(last) = pieces.last_mut() {
                last.truncate(last.trim_end().len());
            }
            finish = Finish::Length;
        }
    }
    Reply {
        completion_tokens: pieces.len() as u64,
        pieces,
        tool: None,
        finish,
        prompt_tokens,
    }
}

/// The answer before any cut: `words` beats the configured answer, which beats the directive's
/// `answer`, which beats the default that quotes the user.
fn answer_text(fixed: Option<&str>, directive: &Directive, user_text: &str) -> String {
    if let Some(n) = directive.words {
        return (1..=n)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
    }
    if let Some(text) = fixed.or(directive.answer.as_deref()) {
        return text.to_owned();
    }
    let quoted: String = user_text.trim().chars().take(QUOTE_CHARS).collect();
    format!("Hello from mock-llm. You said: {quoted}")
}

/// Prompt tokens: a quarter of each message's bytes, rounded up, plus four for its framing.
pub(crate) fn prompt_tokens(texts: &[String]) -> u64 {
    texts.iter().map(|t| (t.len() as u64).div_ceil(4) + 4).sum()
}

/// Splits text into words that keep the whitespace after them, so the pieces concatenate back
/// to the text. Leading whitespace stays with the first word.
pub(crate) fn split_words(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut seen_word = false;
    let mut after_space = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            after_space = true;
            continue;
        }
        if after_space && seen_word {
            pieces.push(&text[start..i]);
            start = i;
        }
        seen_word = true;
        after_space = false;
    }
    if seen_word {
        pieces.push(&text[start..]);
    }
    pieces
}

/// The tool call's arguments in three stream pieces, split where a real model's tokens might be.
fn tool_argument_pieces() -> Vec<String> {
    let (head, rest) = TOOL_ARGUMENTS.split_at(12);
    let (middle, tail) = rest.split_at(rest.len() - 1);
    vec![head.to_owned(), middle.to_owned(), tail.to_owned()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_split(text: &str, expected: &[&str]) {
        let pieces = split_words(text);
        assert_eq!(pieces, expected, "{text:?}");
        if !expected.is_empty() {
            assert_eq!(pieces.concat(), text);
        }
    }

    #[test]
    fn words_keep_their_trailing_whitespace() {
        check_split("Hello world", &["Hello ", "world"]);
        check_split("  lead  two\nlines ", &["  lead  ", "two\n", "lines "]);
        check_split("one", &["one"]);
        check_split("", &[]);
        check_split("   ", &[]);
        check_split("héllo wörld", &["héllo ", "wörld"]);
    }

    fn prompt(user: &str) -> Prompt {
        Prompt {
            texts: vec!["be brief".to_owned(), user.to_owned()],
            user_text: user.to_owned(),
            max_tokens: None,
            first_tool: None,
        }
    }

    #[test]
    fn default_answer_quotes_the_user() {
        let r = reply(None, &Directive::default(), &prompt("  What is 2+2?  "));
        assert_eq!(r.text(), "Hello from mock-llm. You said: What is 2+2?");
        assert_eq!(r.finish, Finish::Stop);
        assert_eq!(r.completion_tokens, 8);
        // "be brief": 8 bytes -> 2 + 4; the user text: 16 bytes -> 4 + 4.
        assert_eq!(r.prompt_tokens, 14);
    }

    #[test]
    fn default_answer_quotes_at_most_a_hundred_characters() {
        let long = "é".repeat(300);
        let r = reply(None, &Directive::default(), &prompt(&long));
        assert!(r.text().ends_with(&"é".repeat(100)));
        assert!(!r.text().ends_with(&"é".repeat(101)));
    }

    #[test]
    fn answer_precedence() {
        let d = Directive {
            answer: Some("from directive".to_owned()),
            ..Directive::default()
        };
        assert_eq!(reply(None, &d, &prompt("x")).text(), "from directive");
        assert_eq!(reply(Some("fixed"), &d, &prompt("x")).text(), "fixed");
        let words = Directive {
            words: Some(4),
            ..d
        };
        assert_eq!(
            reply(Some("fixed"), &words, &prompt("x")).text(),
            "w1 w2 w3 w4"
        );
    }

    #[test]
    fn max_tokens_cuts_words_and_says_length() {
        let d = Directive {
            words: Some(10),
            ..Directive::default()
        };
        let mut p = prompt("x");
        p.max_tokens = Some(3);
        let r = reply(None, &d, &p);
        assert_eq!(r.pieces, ["w1 ", "w2 ", "w3"]);
        assert_eq!(r.finish, Finish::Length);
        assert_eq!(r.completion_tokens, 3);
        p.max_tokens = Some(10);
        assert_eq!(reply(None, &d, &p).finish, Finish::Stop);
    }

    #[test]
    fn tool_call_needs_a_tool() {
        let d = Directive {
            tool_call: Some(true),
            ..Directive::default()
        };
        let mut p = prompt("weather?");
        assert_eq!(reply(None, &d, &p).finish, Finish::Stop);
        p.first_tool = Some("get_weather".to_owned());
        let r = reply(None, &d, &p);
        assert_eq!(r.finish, Finish::ToolCall);
        assert_eq!(r.tool.as_deref(), Some("get_weather"));
        assert_eq!(r.pieces.len(), 3);
        assert_eq!(r.text(), TOOL_ARGUMENTS);
        assert_eq!(r.completion_tokens, 5);
    }

    #[test]
    fn prompt_tokens_round_up_and_add_framing() {
        assert_eq!(prompt_tokens(&[]), 0);
        assert_eq!(prompt_tokens(&[String::new()]), 4);
        assert_eq!(prompt_tokens(&["abcde".to_owned(), "abcd".to_owned()]), 11);
    }
}

//! The router's own input type: a chat request reduced to what classification and selection
//! need, borrowing every string from the caller.

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Role {
    /// Instructions from the application (OpenAI's `system` and `developer` roles).
    System,
    User,
    Assistant,
    /// A tool's result fed back to the model.
    Tool,
}

/// The text of a message: one string, or the text parts of a multi-part message in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content<'a> {
    Text(&'a str),
    Parts(&'a [&'a str]),
}

impl<'a> Content<'a> {
    /// The text parts, in order (one part for [`Content::Text`]).
    pub fn parts(&self) -> impl Iterator<Item = &'a str> + 'a {
        let (single, many): (Option<&'a str>, &'a [&'a str]) = match *self {
            Content::Text(t) => (Some(t), &[]),
            Content::Parts(p) => (None, p),
        };
        single.into_iter().chain(many.iter().copied())
    }

    /// Total length of the text in bytes.
    pub fn len(&self) -> usize {
        self.parts().map(str::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.parts().all(str::is_empty)
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub role: Role,
    pub content: Content<'a>,
}

impl<'a> Message<'a> {
    pub const fn new(role: Role, text: &'a str) -> Message<'a> {
        Message {
            role,
            content: Content::Text(text),
        }
    }

    pub const fn user(text: &'a str) -> Message<'a> {
        Message::new(Role::User, text)
    }

    pub const fn assistant(text: &'a str) -> Message<'a> {
        Message::new(Role::Assistant, text)
    }

    pub const fn system(text: &'a str) -> Message<'a> {
        Message::new(Role::System, text)
    }

    /// A message made of several text parts (images are flagged on the [`Request`]).
    pub const fn with_parts(role: Role, parts: &'a [&'a str]) -> Message<'a> {
        Message {
            role,
            content: Content::Parts(parts),
        }
    }
}

/// A chat request as the router sees it.
///
/// Build it with [`Request::new`] and the `with_*` methods; the fields stay public to read and
/// to change.
///
/// ```
/// use cognitude_router::{Message, Request};
///
/// let messages = [Message::user("Summarise this contract in five bullet points: …")];
/// let request = Request::new(&messages).with_max_tokens(800).with_json_output(true);
/// assert_eq!(request.max_tokens, Some(800));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Request<'a> {
    /// The conversation, oldest first. System messages may appear here as well as in `system`.
    pub messages: &'a [Message<'a>],
    /// A system prompt given apart from the messages (Anthropic's `system` field).
    pub system: Option<&'a str>,
    /// The caller's limit on output tokens.
    pub max_tokens: Option<u64>,
    /// Tools (function definitions) are offered to the model.
    pub tools: bool,
    /// JSON output (JSON mode or a JSON schema) is requested.
    pub json_output: bool,
    /// Images are part of the input.
    pub images: bool,
}

impl<'a> Request<'a> {
    pub const fn new(messages: &'a [Message<'a>]) -> Request<'a> {
        Request {
            messages,
            system: None,
            max_tokens: None,
            tools: false,
            json_output: false,
            images: false,
        }
    }

    #[must_use]
    pub const fn with_system(mut self, system: &'a str) -> Request<'a> {
        self.system = Some(system);
        self
    }

    #[must_use]
    pub const fn with_max_tokens(mut self, max_tokens: u64) -> Request<'a> {
        self.max_tokens = Some(max_tokens);
        self
    }

    #[must_use]
    pub const fn with_tools(mut self, tools: bool) -> Request<'a> {
        self.tools = tools;
        self
    }

    #[must_use]
    pub const fn with_json_output(mut self, json_output: bool) -> Request<'a> {
        self.json_output = json_output;
        self
    }

    #[must_use]
    pub const fn with_images(mut self, images: bool) -> Request<'a> {
        self.images = images;
        self
    }

    /// The latest user message, the one the request asks the model to answer.
    pub fn last_user(&self) -> Option<&Message<'a>> {
        self.messages.iter().rev().find(|m| m.role == Role::User)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_iterate_in_order_for_both_shapes() {
        let parts = ["a", "bc", ""];
        let m = Message::with_parts(Role::User, &parts);
        assert_eq!(m.content.parts().collect::<Vec<_>>(), vec!["a", "bc", ""]);
        assert_eq!(m.content.len(), 3);
        assert!(!m.content.is_empty());
        let t = Message::user("xyz");
        assert_eq!(t.content.parts().collect::<Vec<_>>(), vec!["xyz"]);
        assert!(Message::with_parts(Role::User, &[]).content.is_empty());
    }

    #[test]
    fn last_user_skips_later_assistant_turns() {
        let msgs = [
            Message::user("first"),
            Message::assistant("answer"),
            Message::user("second"),
            Message::assistant("another"),
        ];
        let r = Request::new(&msgs);
        assert_eq!(
            r.last_user().map(|m| m.content),
            Some(Content::Text("second"))
        );
        assert_eq!(Request::new(&[]).last_user(), None);
    }
}

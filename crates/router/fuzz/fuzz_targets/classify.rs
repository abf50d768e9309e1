//! Arbitrary bytes become a conversation: the first bytes choose roles, part splits and
//! request flags, the rest is text (lossily decoded, so every script and garbage appear).
//! Classification and selection must never panic and must keep their invariants.
//!
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run classify` from crates/router on stable Rust (or
//! `cargo +nightly fuzz run classify`).

#![no_main]

use std::sync::OnceLock;

use cognitude_catalog::Catalog;
use cognitude_router::{Classifier, Content, Message, Mode, Request, Role, Selector};
use libfuzzer_sys::fuzz_target;

fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(Catalog::builtin)
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    // Split the text into up to 8 chunks at char boundaries chosen by the data.
    let mut parts: Vec<&str> = Vec::new();
    let mut start = 0;
    for (i, b) in rest.iter().enumerate().take(64) {
        if b % 9 == 0 {
            let mut cut = (start + usize::from(*b) * 7 + i).min(text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            if cut > start {
                parts.push(&text[start..cut]);
                start = cut;
            }
        }
        if parts.len() == 7 {
            break;
        }
    }
    parts.push(&text[start..]);
    let roles = [Role::User, Role::Assistant, Role::System, Role::Tool];
    let groups: Vec<&[&str]> = parts.chunks(2).collect();
    let messages: Vec<Message<'_>> = groups
        .iter()
        .enumerate()
        .map(|(i, p)| Message {
            role: roles[(usize::from(head) + i) % roles.len()],
            content: Content::Parts(p),
        })
        .collect();
    let mut request = Request::new(&messages)
        .with_tools(head & 1 != 0)
        .with_json_output(head & 2 != 0)
        .with_images(head & 4 != 0);
    if head & 8 != 0 {
        request.max_tokens = Some(u64::from(head) << (head % 48));
    }
    if head & 16 != 0 {
        request.system = parts.first().copied();
    }
    let c = Classifier::default().classify(&request);
    assert!(c.score.is_finite() && (0.0..=1.0).contains(&c.score));
    let sum: f64 = c.signals().iter().map(|s| s.contribution).sum();
    assert!((sum - c.score).abs() < 1e-9);
    let mode = Mode::ALL[usize::from(head) % 3];
    let _ = Selector::new(mode).select(catalog(), &c);
});

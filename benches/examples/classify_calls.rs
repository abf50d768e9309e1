//! Classifies the router benchmark's material, cut to a given size, a given number of times: the
//! program `benches/router_instructions.py` runs under callgrind to count the instructions one
//! call takes. An instruction count repeats from run to run and from machine to machine, where a
//! time on a shared VM can move by half.
//!
//! `cargo run --release -p cognitude-benches --example classify_calls -- 1024 1000`

use std::hint::black_box;

use anyhow::Context;
use cognitude_benches::router::text_of;
use cognitude_router::{Classifier, Message, Request};

#[expect(clippy::print_stdout, reason = "an example prints what it did")]
fn main() -> anyhow::Result<()> {
    const USAGE: &str = "usage: classify_calls BYTES CALLS";
    let mut args = std::env::args().skip(1);
    let len: usize = args.next().context(USAGE)?.parse().context(USAGE)?;
    let calls: u32 = args.next().context(USAGE)?.parse().context(USAGE)?;
    let text = text_of(len);
    let messages = [Message::user(&text)];
    let request = Request::new(&messages);
    let classifier = Classifier::default();
    let mut score = 0.0;
    for _ in 0..calls {
        score = classifier.classify(black_box(&request)).score;
    }
    println!("{} bytes, {calls} calls, score {score:.4}", text.len());
    Ok(())
}

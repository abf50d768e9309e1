//! Chooses among the router benchmark's 50 models in one mode a given number of times: the
//! program `benches/router_instructions.py` runs under callgrind to count the instructions one
//! selection takes.
//!
//! `cargo run --release -p cognitude-benches --example select_calls -- cost 1000`

use std::hint::black_box;

use anyhow::Context;
use cognitude_benches::router::SELECT_PROMPT;
use cognitude_router::{Classifier, Message, Mode, Request, Selector};
use cognitude_testkit::fifty_models;

#[expect(clippy::print_stdout, reason = "an example prints what it did")]
fn main() -> anyhow::Result<()> {
    const USAGE: &str = "usage: select_calls cost|latency|quality CALLS";
    let mut args = std::env::args().skip(1);
    let mode: Mode = args.next().context(USAGE)?.parse().context(USAGE)?;
    let calls: u32 = args.next().context(USAGE)?.parse().context(USAGE)?;
    let catalog = fifty_models();
    anyhow::ensure!(catalog.len() == 50, "the benchmark catalog must parse");
    let messages = [Message::user(SELECT_PROMPT)];
    let classification = Classifier::default().classify(&Request::new(&messages));
    let selector = Selector::new(mode);
    let mut chosen = String::new();
    for _ in 0..calls {
        let selection = selector.select(black_box(&catalog), black_box(&classification))?;
        chosen.clone_from(&selection.model.id);
    }
    println!("{mode}, {calls} calls, chose {chosen}");
    Ok(())
}

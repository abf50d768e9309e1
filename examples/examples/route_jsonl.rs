//! The `cognitude route` protocol without the server binary: JSON lines on standard input,
//! one routing decision per line on standard output, over the built-in catalog.
//!
//! ```text
//! echo '"Prove that there are infinitely many primes."' | cargo run -q -p cognitude-examples --example route_jsonl
//! cargo run -q --release -p cognitude-examples --example route_jsonl -- --mode latency < prompts.jsonl
//! ```
//!
//! It compiles the very module the `cognitude route` subcommand runs, so scores measured with it
//! (for instance by `router_apgr.py --cmd`) are the subcommand's.

#[path = "../../bins/cognitude/src/route.rs"]
mod route;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = match args.as_slice() {
        [] => None,
        [flag, mode] if flag == "--mode" => Some(mode.as_str()),
        _ => anyhow::bail!("usage: route_jsonl [--mode cost|latency|quality]"),
    };
    let catalog = cognitude_catalog::Catalog::builtin();
    route::run(
        mode,
        &catalog,
        std::io::stdin().lock(),
        std::io::stdout().lock(),
    )
}

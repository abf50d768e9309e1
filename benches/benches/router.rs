//! The router's classifier and model selection.
//!
//! - `classify/<size>`: one user message of 100 B, 200 B, 1, 2, 4, 10 and 100 KiB of mixed
//!   prompt text (prose, a list, numbers, a code block, a little non-Latin script). The budget is
//!   1 µs for 200 characters plus 1 µs per further KiB, so time should grow linearly with size.
//! - `classify/conversation`: a four-turn chat with a system prompt.
//! - `select/50-models/<mode>`: choosing among 50 models, every one eligible.
//!
//! `cargo bench -p cognitude-benches --bench router`, then `python3 benches/criterion_summary.py`
//! for the median and the fastest sample beside criterion's figure (on a shared VM the mean
//! carries the moments the machine is slow).

use std::hint::black_box;

use cognitude_benches::router::{SELECT_PROMPT, text_of};
use cognitude_router::{Classifier, Message, Mode, Request, Selector};
use cognitude_testkit::fifty_models;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn classify(c: &mut Criterion) {
    let classifier = Classifier::default();
    let mut group = c.benchmark_group("classify");
    for (name, len) in [
        ("100B", 100),
        ("200B", 200),
        ("1KiB", 1024),
        ("2KiB", 2 * 1024),
        ("4KiB", 4 * 1024),
        ("10KiB", 10 * 1024),
        ("100KiB", 100 * 1024),
    ] {
        let text = text_of(len);
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &text, |b, text| {
            let msgs = [Message::user(text)];
            let request = Request::new(&msgs);
            b.iter(|| classifier.classify(black_box(&request)));
        });
    }
    group.throughput(Throughput::Elements(1));
    let msgs = [
        Message::system("You are a careful analyst. Cite the numbers you use."),
        Message::user("Here are last quarter's figures: revenue $3.6M, churn 3.1%."),
        Message::assistant("Thanks — what would you like to know about them?"),
        Message::user("Compare them with Q3 ($4.1M, 2.3%) and explain the change."),
    ];
    let request = Request::new(&msgs).with_max_tokens(800);
    group.bench_function("conversation", |b| {
        b.iter(|| classifier.classify(black_box(&request)));
    });
    group.finish();
}

fn select(c: &mut Criterion) {
    let catalog = fifty_models();
    assert_eq!(catalog.len(), 50, "the benchmark catalog must parse");
    let msgs = [Message::user(SELECT_PROMPT)];
    let classification = Classifier::default().classify(&Request::new(&msgs));
    let mut group = c.benchmark_group("select/50-models");
    for mode in Mode::ALL {
        let selector = Selector::new(mode);
        group.bench_function(mode.as_str(), |b| {
            b.iter(|| selector.select(black_box(&catalog), black_box(&classification)));
        });
    }
    group.finish();
}

criterion_group!(benches, classify, select);
criterion_main!(benches);

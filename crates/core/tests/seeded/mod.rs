//! Seeded property-test runners, shared by the hostile-input corpora of the core and of
//! the gateway: the same inputs every run, so the counts they print (and RELIABILITY.md
//! records) are reproducible.

use proptest::test_runner::{Config, TestRng, TestRunner};

/// A seeded runner of `cases` cases that writes no regression files.
pub fn runner(cases: u32) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::deterministic_rng(config.rng_algorithm);
    TestRunner::new_with_rng(config, rng)
}

/// Text of up to `max` pieces, each one of `tokens` or a word matching the regex
/// `words`: documents that look like a file format without being valid ones.
pub fn text_of(
    tokens: &'static [&'static str],
    words: &'static str,
    max: usize,
) -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let piece = prop_oneof![
        proptest::sample::select(tokens).prop_map(str::to_owned),
        words,
    ];
    proptest::collection::vec(piece, 0..max).prop_map(|pieces| pieces.concat())
}

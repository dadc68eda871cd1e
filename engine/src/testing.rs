//! Helpers for property tests here and in the crates above.

use proptest::test_runner::{Config, RngSeed};

/// The configuration every property test of the project runs with: 100,000
/// cases and a fixed seed, so CI is deterministic. `OMNIGRAPH_FUZZ_CASES`
/// and `OMNIGRAPH_FUZZ_SEED` run more cases, or other ones.
pub fn fuzz_config() -> Config {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    Config {
        cases: u32::try_from(env("OMNIGRAPH_FUZZ_CASES", 100_000)).unwrap_or(u32::MAX),
        rng_seed: RngSeed::Fixed(env("OMNIGRAPH_FUZZ_SEED", 9)),
        failure_persistence: None,
        ..Config::default()
    }
}

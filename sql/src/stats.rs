//! Sampling for table statistics (ANALYZE).

/// `n` distinct offsets out of `0..total`, sorted, chosen uniformly
/// (Floyd's algorithm with a small xorshift generator seeded by `seed`).
/// All offsets when `total <= n`.
pub fn sample_offsets(total: u64, n: u64, seed: u64) -> Vec<u64> {
    if total <= n {
        return (0..total).collect();
    }
    let mut state = seed | 1;
    let mut next = |bound: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % bound
    };
    let mut chosen = std::collections::BTreeSet::new();
    for j in (total - n)..total {
        let t = next(j + 1);
        if !chosen.insert(t) {
            chosen.insert(j);
        }
    }
    chosen.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_tables_are_read_whole() {
        assert_eq!(sample_offsets(3, 10, 7), vec![0, 1, 2]);
        assert!(sample_offsets(0, 10, 7).is_empty());
    }

    #[test]
    fn samples_are_distinct_sorted_in_range_and_spread() {
        let s = sample_offsets(1_000_000, 30_000, 42);
        assert_eq!(s.len(), 30_000);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert!(*s.last().unwrap() < 1_000_000);
        // Roughly uniform: each tenth of the range holds about a tenth of the sample.
        for decile in 0..10u64 {
            let n = s.iter().filter(|o| **o / 100_000 == decile).count();
            assert!((2_500..3_500).contains(&n), "decile {decile}: {n}");
        }
        assert_ne!(sample_offsets(1_000, 10, 1), sample_offsets(1_000, 10, 2));
    }
}

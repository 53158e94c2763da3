//! Quantiles from Prometheus histograms, estimated the way PromQL's `histogram_quantile` does: find the bucket
//! holding the rank and interpolate linearly inside it. Used on the members' own histograms (peer round-trip time,
//! and later WAL fsync and backend commit), either as they stand (since the member started) or as the difference
//! between two polls (what happened in the last interval).

/// Cumulative bucket counts, sorted by upper bound; the last bound is usually +Inf.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    buckets: Vec<(f64, f64)>,
}

impl Histogram {
    /// Builds a histogram from `(upper bound, cumulative count)` pairs in any order.
    pub fn new(mut buckets: Vec<(f64, f64)>) -> Self {
        buckets.retain(|(le, count)| !le.is_nan() && count.is_finite());
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Histogram { buckets }
    }

    /// Number of observations (the largest cumulative count).
    pub fn count(&self) -> f64 {
        self.buckets.last().map_or(0.0, |b| b.1)
    }

    /// Observations between `previous` and `self`. `None` when the two cannot be compared: different bucket
    /// layouts, or any count that went down (the member restarted, its counters reset). A wrong quantile is
    /// worse than none, so a reset yields nothing rather than a guess.
    pub fn since(&self, previous: &Histogram) -> Option<Histogram> {
        if self.buckets.len() != previous.buckets.len() {
            return None;
        }
        let mut out = Vec::with_capacity(self.buckets.len());
        for (&(le, now), &(le_prev, before)) in self.buckets.iter().zip(&previous.buckets) {
            if le != le_prev || now < before {
                return None;
            }
            out.push((le, now - before));
        }
        Some(Histogram { buckets: out })
    }

    /// What a poll shows of a member's histogram: the observations since the previous reading when there is one,
    /// else all of them (since the member started). `None` after a reset, as for [`Histogram::since`].
    pub fn window(&self, previous: Option<&Histogram>) -> Option<Histogram> {
        match previous {
            None => Some(self.clone()),
            Some(before) => self.since(before),
        }
    }

    /// The q-quantile (0 ≤ q ≤ 1), or `None` without observations.
    ///
    /// As in PromQL: the lowest bucket is assumed to start at 0 (all our histograms measure durations), and a
    /// rank in the +Inf bucket yields the highest finite upper bound, the most that can honestly be said.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * total;
        let mut lower_bound = 0.0;
        let mut lower_count = 0.0;
        for &(le, count) in &self.buckets {
            if count >= rank && count > lower_count {
                if le.is_infinite() {
                    return Some(lower_bound);
                }
                let fraction = (rank - lower_count) / (count - lower_count);
                return Some(lower_bound + (le - lower_bound) * fraction);
            }
            if le.is_finite() {
                lower_bound = le;
            }
            lower_count = count;
        }
        Some(lower_bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(f64, f64)]) -> Histogram {
        Histogram::new(pairs.to_vec())
    }

    #[test]
    fn interpolates_inside_the_bucket_holding_the_rank() {
        // 10 observations ≤ 1ms, 10 more ≤ 2ms.
        let hist = h(&[(0.001, 10.0), (0.002, 20.0), (f64::INFINITY, 20.0)]);
        assert_eq!(hist.count(), 20.0);
        let p50 = hist.quantile(0.5).unwrap();
        assert!((p50 - 0.001).abs() < 1e-12, "p50 {p50}");
        let p75 = hist.quantile(0.75).unwrap();
        assert!((p75 - 0.0015).abs() < 1e-12, "p75 {p75}");
    }

    #[test]
    fn rank_in_the_infinite_bucket_gives_the_highest_finite_bound() {
        let hist = h(&[(f64::INFINITY, 5.0), (0.5, 1.0)]);
        assert_eq!(hist.quantile(0.99), Some(0.5));
    }

    #[test]
    fn no_observations_no_quantile() {
        assert_eq!(h(&[(0.1, 0.0), (f64::INFINITY, 0.0)]).quantile(0.5), None);
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn difference_between_polls_and_counter_reset() {
        let before = h(&[(0.001, 100.0), (0.01, 100.0), (f64::INFINITY, 100.0)]);
        let after = h(&[(0.001, 100.0), (0.01, 110.0), (f64::INFINITY, 110.0)]);
        let interval = after.since(&before).unwrap();
        assert_eq!(interval.count(), 10.0);
        // Every new observation was slow: the cumulative p99 would still say ≤ 1ms, the interval does not.
        assert!(after.quantile(0.5).unwrap() <= 0.001);
        assert!(interval.quantile(0.5).unwrap() > 0.001);
        // The member restarted: its counts start again from zero.
        let restarted = h(&[(0.001, 1.0), (0.01, 1.0), (f64::INFINITY, 1.0)]);
        assert_eq!(restarted.since(&after), None);
        // Another bucket layout cannot be compared.
        assert_eq!(h(&[(f64::INFINITY, 200.0)]).since(&after), None);
    }
}

//! `PromQL`'s `histogram_quantile` over classic `le` buckets, so tests and the demo read a
//! quantile out of a scrape the way a dashboard reads it out of Prometheus.

use crate::exposition::Sample;

/// One cumulative bucket: how many observations were at most `upper_bound` (the `le` label).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    pub upper_bound: f64,
    pub count: f64,
}

/// The buckets of histogram `name` (without the `_bucket` suffix) summed over every series
/// whose labels include all of `want`, by `le`, sorted by upper bound: `PromQL`'s
/// `sum by (le) (name_bucket{want...})`. Samples whose `le` is missing or not a number are
/// left out, as Prometheus leaves them out.
#[must_use]
#[expect(
    clippy::float_cmp,
    reason = "bounds parsed from `le` values written by one formatter: equal bounds are equal floats"
)]
pub fn buckets(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> Vec<Bucket> {
    let series = format!("{name}_bucket");
    let mut out: Vec<Bucket> = Vec::new();
    for sample in samples.iter().filter(|s| s.matches(&series, want)) {
        let Some(upper_bound) = sample.label("le").and_then(|le| le.parse::<f64>().ok()) else {
            continue;
        };
        match out.iter_mut().find(|b| b.upper_bound == upper_bound) {
            Some(bucket) => bucket.count += sample.value,
            None => out.push(Bucket {
                upper_bound,
                count: sample.value,
            }),
        }
    }
    out.sort_by(|a, b| a.upper_bound.total_cmp(&b.upper_bound));
    out
}

/// What each bucket gained from `earlier` to `later` (two scrapes of the same histogram), for
/// the quantile of the observations in between: `histogram_quantile(q, increase(...))`.
/// A bucket missing from `earlier` counts from 0; a bucket that went down (the exporter
/// restarted) gained nothing, where Prometheus's `increase` would assume a reset. Buckets only
/// in `earlier` are dropped.
#[must_use]
#[expect(
    clippy::float_cmp,
    reason = "bounds parsed from `le` values written by one formatter: equal bounds are equal floats"
)]
pub fn increase(earlier: &[Bucket], later: &[Bucket]) -> Vec<Bucket> {
    later
        .iter()
        .map(|bucket| {
            let before = earlier
                .iter()
                .find(|b| b.upper_bound == bucket.upper_bound)
                .map_or(0.0, |b| b.count);
            Bucket {
                upper_bound: bucket.upper_bound,
                count: (bucket.count - before).max(0.0),
            }
        })
        .collect()
}

/// The `q`-quantile of the observations counted by cumulative `buckets`, with the semantics
/// of Prometheus's `histogram_quantile` (`bucketQuantile` in `promql/quantile.go`) for classic
/// histograms; the result is in the unit of the upper bounds:
///
/// - `q` NaN gives NaN, `q < 0` gives −∞, `q > 1` gives +∞.
/// - The buckets may come in any order; they are sorted by upper bound, and buckets with the
///   same bound are added together. Counts that decrease with the bound (series scraped at
///   different moments) are raised to the count before them, as Prometheus does.
/// - NaN when the highest bucket is not `+Inf`, when there are fewer than two buckets, or when
///   there are no observations (the `+Inf` count is 0).
/// - Otherwise the rank `q × total` is located in the first bucket whose cumulative count
///   reaches it, and the quantile is interpolated linearly between that bucket's lower bound
///   (the previous bucket's upper bound, or 0 for the first bucket) and its upper bound, i.e.
///   observations are assumed spread evenly within a bucket.
/// - A rank that falls in the `+Inf` bucket gives the highest finite upper bound: nothing is
///   known above it. A rank in the first bucket with an upper bound ≤ 0 gives that bound.
///
/// The unit tests' cases were checked against Prometheus 2.42 (`promtool test rules`), the
/// NaN of `q = 0` over an empty first bucket included.
///
/// So the answer is an estimate whose error is at most the width of the bucket that holds the
/// rank. Prometheus also ignores tiny floating-point decreases (relative 1e-12) between
/// buckets; here any decrease is raised, which gives the same result for such inputs.
#[must_use]
#[expect(
    clippy::float_cmp,
    reason = "bounds are compared for identity, as Prometheus compares them, and a zero total \
              means no observation at all"
)]
pub fn histogram_quantile(q: f64, buckets: &[Bucket]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    let mut sorted = buckets.to_vec();
    sorted.sort_by(|a, b| a.upper_bound.total_cmp(&b.upper_bound));
    if sorted.last().is_none_or(|b| b.upper_bound != f64::INFINITY) {
        return f64::NAN;
    }
    let mut merged: Vec<Bucket> = Vec::with_capacity(sorted.len());
    for bucket in sorted {
        match merged.last_mut() {
            Some(last) if last.upper_bound == bucket.upper_bound => last.count += bucket.count,
            _ => merged.push(bucket),
        }
    }
    for i in 1..merged.len() {
        if merged[i].count < merged[i - 1].count {
            merged[i].count = merged[i - 1].count;
        }
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let total = merged[merged.len() - 1].count;
    if total == 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let inf = merged.len() - 1;
    let holder = merged[..inf]
        .iter()
        .position(|b| b.count >= rank)
        .unwrap_or(inf);
    if holder == inf {
        return merged[inf - 1].upper_bound;
    }
    if holder == 0 && merged[0].upper_bound <= 0.0 {
        return merged[0].upper_bound;
    }
    let (lower_bound, below) = match holder.checked_sub(1) {
        Some(previous) => (merged[previous].upper_bound, merged[previous].count),
        None => (0.0, 0.0),
    };
    let upper_bound = merged[holder].upper_bound;
    let in_bucket = merged[holder].count - below;
    lower_bound + (upper_bound - lower_bound) * ((rank - below) / in_bucket)
}

#[cfg(test)]
#[expect(
    clippy::float_cmp,
    reason = "the expected values are exact: bounds and sums of small integers"
)]
mod tests {
    use super::*;
    use crate::exposition::parse_metrics;

    fn b(upper_bound: f64, count: f64) -> Bucket {
        Bucket { upper_bound, count }
    }

    fn close(seen: f64, expected: f64) -> bool {
        (seen - expected).abs() < 1e-9
    }

    #[test]
    fn interpolates_linearly_within_the_bucket() {
        // 10 observations in (0, 1], 90 in (1, 2].
        let h = [b(1.0, 10.0), b(2.0, 100.0), b(f64::INFINITY, 100.0)];
        let q = |q| histogram_quantile(q, &h);
        assert!(close(q(0.05), 0.5), "rank 5 of 10 in (0, 1]: {}", q(0.05));
        assert!(
            close(q(0.1), 1.0),
            "rank 10 ends the first bucket: {}",
            q(0.1)
        );
        assert!(close(q(0.5), 1.0 + 40.0 / 90.0), "rank 50: {}", q(0.5));
        assert!(close(q(0.99), 1.0 + 89.0 / 90.0), "rank 99: {}", q(0.99));
        assert!(close(q(1.0), 2.0), "the maximum is the bound: {}", q(1.0));
        assert!(
            close(q(0.0), 0.0),
            "q=0 starts the first bucket: {}",
            q(0.0)
        );
    }

    #[test]
    fn a_rank_in_the_inf_bucket_gives_the_highest_finite_bound() {
        let h = [b(1.0, 1.0), b(2.0, 2.0), b(f64::INFINITY, 10.0)];
        assert_eq!(histogram_quantile(0.5, &h), 2.0);
        assert_eq!(histogram_quantile(1.0, &h), 2.0);
    }

    #[test]
    fn nan_when_empty_or_malformed() {
        let empty = [b(1.0, 0.0), b(f64::INFINITY, 0.0)];
        assert!(histogram_quantile(0.5, &empty).is_nan(), "no observations");
        assert!(histogram_quantile(0.5, &[]).is_nan(), "no buckets");
        assert!(
            histogram_quantile(0.5, &[b(1.0, 3.0), b(2.0, 4.0)]).is_nan(),
            "no +Inf bucket"
        );
        assert!(
            histogram_quantile(0.5, &[b(f64::INFINITY, 4.0)]).is_nan(),
            "only +Inf"
        );
        assert!(histogram_quantile(f64::NAN, &[b(1.0, 1.0), b(f64::INFINITY, 1.0)]).is_nan());
        // Prometheus too: q=0 lands in an empty first bucket, 0/0 observations within it.
        assert!(
            histogram_quantile(0.0, &[b(1.0, 0.0), b(2.0, 5.0), b(f64::INFINITY, 5.0)]).is_nan()
        );
    }

    #[test]
    fn q_out_of_range_gives_infinities() {
        let h = [b(1.0, 1.0), b(f64::INFINITY, 1.0)];
        assert_eq!(histogram_quantile(-0.1, &h), f64::NEG_INFINITY);
        assert_eq!(histogram_quantile(1.1, &h), f64::INFINITY);
    }

    #[test]
    fn order_duplicates_and_decreasing_counts() {
        let sorted = [b(1.0, 10.0), b(2.0, 100.0), b(f64::INFINITY, 100.0)];
        let shuffled = [
            b(f64::INFINITY, 100.0),
            b(2.0, 60.0),
            b(1.0, 10.0),
            b(2.0, 40.0),
        ];
        assert!(close(
            histogram_quantile(0.5, &shuffled),
            histogram_quantile(0.5, &sorted)
        ));
        // The 2.0 bucket was scraped lower than the 1.0 one: raised to 10, so all 10 are
        // at most 1.0 and the median is in (0, 1].
        let decreasing = [b(1.0, 10.0), b(2.0, 5.0), b(f64::INFINITY, 10.0)];
        assert!(close(histogram_quantile(0.5, &decreasing), 0.5));
    }

    #[test]
    fn a_first_bucket_at_or_below_zero_gives_its_bound() {
        let h = [b(-1.0, 5.0), b(1.0, 10.0), b(f64::INFINITY, 10.0)];
        assert_eq!(histogram_quantile(0.2, &h), -1.0);
    }

    #[test]
    fn increase_between_two_scrapes() {
        let earlier = [b(1.0, 10.0), b(2.0, 10.0), b(f64::INFINITY, 10.0)];
        let later = [
            b(1.0, 10.0),
            b(2.0, 110.0),
            b(4.0, 5.0),
            b(f64::INFINITY, 115.0),
        ];
        let gained = increase(&earlier, &later);
        assert_eq!(
            gained,
            vec![
                b(1.0, 0.0),
                b(2.0, 100.0),
                b(4.0, 5.0),
                b(f64::INFINITY, 105.0)
            ]
        );
        assert!(close(histogram_quantile(0.5, &gained), 1.0 + 52.5 / 100.0));
        assert!(
            histogram_quantile(0.5, &increase(&later, &later)).is_nan(),
            "nothing happened in between"
        );
        assert_eq!(
            increase(&later, &earlier)[1],
            b(2.0, 0.0),
            "a bucket that went down gained nothing"
        );
    }

    #[test]
    fn buckets_are_summed_by_le_over_matching_series() {
        let samples = parse_metrics(
            "h_bucket{cgroup=\"/a\",process=\"p\",le=\"0.5\"} 1\n\
             h_bucket{cgroup=\"/a\",process=\"p\",le=\"1\"} 2\n\
             h_bucket{cgroup=\"/a\",process=\"p\",le=\"+Inf\"} 2\n\
             h_bucket{cgroup=\"/a\",process=\"q\",le=\"+Inf\"} 3\n\
             h_bucket{cgroup=\"/a\",process=\"q\",le=\"0.5\"} 0\n\
             h_bucket{cgroup=\"/a\",process=\"q\",le=\"1\"} 3\n\
             h_bucket{cgroup=\"/b\",process=\"p\",le=\"1\"} 100\n\
             h_bucket{cgroup=\"/a\",process=\"p\"} 100\n\
             h_count{cgroup=\"/a\",process=\"p\"} 2\n",
        )
        .unwrap();
        assert_eq!(
            buckets(&samples, "h", &[("cgroup", "/a")]),
            vec![b(0.5, 1.0), b(1.0, 5.0), b(f64::INFINITY, 5.0)]
        );
        assert_eq!(
            buckets(&samples, "h", &[("process", "q"), ("cgroup", "/a")]),
            vec![b(0.5, 0.0), b(1.0, 3.0), b(f64::INFINITY, 3.0)]
        );
        assert!(buckets(&samples, "h", &[("cgroup", "/c")]).is_empty());
        let median = histogram_quantile(0.5, &buckets(&samples, "h", &[("cgroup", "/a")]));
        assert!(close(median, 0.5 + 0.5 * 1.5 / 4.0), "{median}");
    }
}

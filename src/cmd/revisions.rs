//! How the revisions of one plugin are doing, live: result events tallied by the revision
//! that answered (`mofa canary` sets a canary beside its stable revision this way).
//!
//! Result events are the fleet's own record of every answer, carrying the revision, whether
//! a canary answered, the outcome and the execution time, so the comparison needs no state
//! in the workers and sees every worker at once.

use std::collections::BTreeMap;

use serde::Serialize;

use mofa_bus::events::ResultEvent;

/// Answers of one revision.
#[derive(Debug, Default, Clone)]
struct Tally {
    canary: bool,
    errors: u64,
    durations_us: Vec<u64>,
}

/// Result events of one plugin, by revision.
#[derive(Debug, Default, Clone)]
pub struct Comparison {
    by_revision: BTreeMap<Option<u64>, Tally>,
}

/// One revision's line of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The bucket revision (`None`: a plugin from a worker's plugins directory).
    pub revision: Option<u64>,
    /// Whether a canary answered these.
    pub canary: bool,
    /// Requests answered.
    pub requests: u64,
    /// Error replies among them.
    pub errors: u64,
    /// `errors / requests`.
    pub error_rate: f64,
    /// Median execution time, microseconds.
    pub p50_us: u64,
    /// 99th percentile execution time, microseconds.
    pub p99_us: u64,
}

impl Comparison {
    /// Counts one result event.
    pub fn add(&mut self, event: &ResultEvent<'_>) {
        let tally = self.by_revision.entry(event.revision).or_default();
        tally.canary |= event.canary;
        if !event.ok {
            tally.errors += 1;
        }
        tally.durations_us.push(event.duration_us);
    }

    /// Events counted so far.
    pub fn total(&self) -> u64 {
        self.by_revision
            .values()
            .map(|t| t.durations_us.len() as u64)
            .sum()
    }

    /// One row per revision seen, oldest revision first.
    pub fn rows(&self) -> Vec<Row> {
        self.by_revision
            .iter()
            .map(|(revision, tally)| {
                let mut durations = tally.durations_us.clone();
                durations.sort_unstable();
                let requests = durations.len() as u64;
                Row {
                    revision: *revision,
                    canary: tally.canary,
                    requests,
                    errors: tally.errors,
                    error_rate: if requests == 0 {
                        0.0
                    } else {
                        tally.errors as f64 / requests as f64
                    },
                    p50_us: percentile(&durations, 0.50),
                    p99_us: percentile(&durations, 0.99),
                }
            })
            .collect()
    }
}

/// The `q` quantile of sorted `values` (nearest rank); 0 when empty.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(revision: u64, canary: bool, ok: bool, duration_us: u64) -> ResultEvent<'static> {
        ResultEvent {
            event: "result".into(),
            plugin: "p".into(),
            kind: "rhai".into(),
            revision: Some(revision),
            canary,
            worker: "w".into(),
            request_id: "r".into(),
            trace_id: None,
            ok,
            code: (!ok).then_some(500),
            message: None,
            duration_us,
            timestamp_ms: 0,
            output: None,
        }
    }

    #[test]
    fn events_are_tallied_by_revision_with_error_rates_and_percentiles() {
        let mut comparison = Comparison::default();
        for i in 1..=100 {
            comparison.add(&event(3, false, true, i));
        }
        for i in 0..10 {
            comparison.add(&event(5, true, i % 2 == 0, 1000));
        }
        let rows = comparison.rows();
        assert_eq!(comparison.total(), 110);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (
                rows[0].revision,
                rows[0].canary,
                rows[0].requests,
                rows[0].errors
            ),
            (Some(3), false, 100, 0)
        );
        assert_eq!((rows[0].p50_us, rows[0].p99_us), (50, 99));
        assert_eq!((rows[1].revision, rows[1].canary), (Some(5), true));
        assert_eq!((rows[1].errors, rows[1].error_rate), (5, 0.5));
    }
}

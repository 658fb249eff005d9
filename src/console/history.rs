//! The last minutes of the relay's counters, sampled on the HTTP thread, for the console's charts.
//!
//! A fixed ring of [`SAMPLES`] samples taken every [`INTERVAL`]: a page opened during an incident
//! shows the minutes before it was opened, and the memory is the same however busy the relay is.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::metrics::{Metrics, StreamMetrics};

/// Time between samples.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// Samples kept: ten minutes.
pub const SAMPLES: usize = 300;

/// The counters at one moment; the page turns consecutive samples into rates.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub t_ms: u64,
    pub read: u64,
    pub acknowledged: u64,
    pub published: u64,
    pub dead_lettered: u64,
    /// `None` when Redis cannot tell (the gauge is NaN).
    pub lag: Option<f64>,
    pub pending: i64,
    pub latency_sum: f64,
    pub latency_count: u64,
}

impl Sample {
    /// Every stream's counters added up (a lag Redis cannot tell on one stream makes the sum
    /// unknown: NaN adds up to NaN).
    pub fn take(metrics: &Metrics) -> Sample {
        let lag = metrics.sum(|s| s.group_lag.get());
        Sample {
            t_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            read: metrics.sum(StreamMetrics::entries_read_total),
            acknowledged: metrics.sum(|s| s.acknowledged.get()),
            published: metrics.sum(|s| s.published.get()),
            dead_lettered: metrics.sum(StreamMetrics::dead_lettered_total),
            lag: lag.is_finite().then_some(lag),
            pending: metrics.sum(|s| s.group_pending.get()),
            latency_sum: metrics.sum(|s| s.end_to_end_micros.get()) as f64 / 1e6,
            latency_count: metrics.sum(|s| s.end_to_end_count.get()),
        }
    }
}

#[derive(Debug, Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    pub fn record(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == SAMPLES {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// Every sample, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_samples_in_order() {
        let history = History::default();
        let metrics = Metrics::new(["a", "b"]);
        for i in 0..SAMPLES + 5 {
            metrics.streams()[i % 2].acknowledged.inc();
            let mut sample = Sample::take(&metrics);
            sample.t_ms = i as u64;
            history.record(sample);
        }
        let samples = history.samples();
        assert_eq!(samples.len(), SAMPLES);
        assert_eq!(samples[0].t_ms, 5);
        assert_eq!(samples.last().unwrap().acknowledged, (SAMPLES + 5) as u64);
        assert_eq!(samples[0].lag, Some(0.0));
    }
}

//! What an operator scrapes from the admin listener (`GET /admin/metrics`,
//! OpenMetrics text, which Prometheus and its kin read): how many signed
//! requests were accepted and why the others were refused, and how the
//! nonce writer keeps up (commits, their duration, how many requests share
//! one, the queue and the window's size).
//!
//! Counting is one atomic add per signed request; everything else is
//! counted per commit or read when scraped. Nothing here ever holds a
//! secret, a signature or a nonce: labels are the contract's error codes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::clock::Clock;
use crate::error::Error;
use crate::store::Store;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    /// `accepted`, or the contract's error code of the refusal.
    result: &'static str,
}

/// Every result a signed request can have: `accepted` and the refusal
/// codes of the public listener (CONTRACT.md section 4).
pub const SIGNED_REQUEST_RESULTS: &[&str] = &[
    "accepted",
    "missing_authorization",
    "malformed_authorization",
    "unknown_key",
    "key_revoked",
    "key_expired",
    "timestamp_out_of_range",
    "nonce_reused",
    "signature_mismatch",
    "content_digest_mismatch",
    "body_too_large",
    "unreadable_body",
    "body_timeout",
    "forbidden",
    "forbidden_source",
    "rate_limited",
    "unavailable",
    "ambiguous_path",
    "malformed_request",
];

/// How often the traffic history takes a sample, and how many it keeps:
/// the console's "last minutes" (15 of them).
pub const TRAFFIC_INTERVAL: Duration = Duration::from_secs(10);
const TRAFFIC_SAMPLES: usize = 91;

/// The signed-request counters at one moment.
struct Sample {
    at: i64,
    counts: Vec<u64>,
}

pub struct Metrics {
    registry: Registry,
    signed_requests: Family<Outcome, Counter>,
    /// Resolved once: the accepted path must not look up its label set.
    accepted: Counter,
    /// Samples of the counters, oldest first, for `GET /admin/traffic`.
    history: Mutex<VecDeque<Sample>>,
    /// What the samples are timed by.
    clock: Clock,
}

impl Metrics {
    pub fn new(store: Arc<Store>) -> Metrics {
        let mut registry = Registry::with_prefix("keygate");
        let signed_requests = Family::<Outcome, Counter>::default();
        registry.register(
            "signed_requests",
            "Requests to signed routes, by result: accepted, or the error code they were refused with",
            signed_requests.clone(),
        );
        let accepted = signed_requests
            .get_or_create(&Outcome { result: "accepted" })
            .clone();

        let writer = store.writer_metrics();
        registry.register(
            "nonce_commits",
            "Transactions the nonce writer committed",
            writer.commits.clone(),
        );
        registry.register(
            "nonce_failed_commits",
            "Transactions the nonce writer could not commit (their requests got 503 unavailable)",
            writer.failed_commits.clone(),
        );
        registry.register(
            "nonce_pairs_recorded",
            "(key, nonce) pairs recorded durably",
            writer.pairs_recorded.clone(),
        );
        registry.register(
            "nonce_commit_seconds",
            "Time from BEGIN to COMMIT of a nonce transaction, waits for another process's lock included",
            writer.commit_seconds.clone(),
        );
        registry.register(
            "nonce_requests_per_commit",
            "Signed requests that shared one nonce transaction",
            writer.requests_per_commit.clone(),
        );
        let clock = store.clock().clone();
        registry.register_collector(Box::new(StoreGauges(store)));
        Metrics {
            registry,
            signed_requests,
            accepted,
            history: Mutex::new(VecDeque::with_capacity(TRAFFIC_SAMPLES)),
            clock,
        }
    }

    /// Samples the counters every [`TRAFFIC_INTERVAL`] on a thread of its
    /// own, for as long as the metrics exist.
    pub fn start_sampling(self: &Arc<Self>) {
        self.take_sample();
        let metrics: Weak<Metrics> = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("keygate-traffic".into())
            .spawn(move || loop {
                std::thread::sleep(TRAFFIC_INTERVAL);
                let Some(metrics) = metrics.upgrade() else {
                    return;
                };
                metrics.take_sample();
            })
            .expect("spawn traffic sampler");
    }

    fn counts_now(&self) -> Vec<u64> {
        SIGNED_REQUEST_RESULTS
            .iter()
            .map(|result| {
                self.signed_requests
                    .get(&Outcome { result })
                    .map_or(0, |counter| counter.get())
            })
            .collect()
    }

    fn take_sample(&self) {
        let sample = Sample {
            at: self.clock.now(),
            counts: self.counts_now(),
        };
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if history.len() == TRAFFIC_SAMPLES {
            history.pop_front();
        }
        history.push_back(sample);
    }

    /// Signed requests by result in each interval of the last minutes,
    /// oldest first, the last one running up to now: what the console
    /// draws. Only results that occurred are listed.
    pub fn traffic(&self) -> serde_json::Value {
        let now = Sample {
            at: self.clock.now(),
            counts: self.counts_now(),
        };
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let samples: Vec<&Sample> = history.iter().chain(std::iter::once(&now)).collect();
        let buckets: Vec<serde_json::Value> = samples
            .windows(2)
            .map(|pair| {
                let results: serde_json::Map<String, serde_json::Value> = SIGNED_REQUEST_RESULTS
                    .iter()
                    .zip(pair[1].counts.iter().zip(&pair[0].counts))
                    .filter(|(_, (after, before))| after > before)
                    .map(|(result, (after, before))| {
                        ((*result).to_owned(), (after - before).into())
                    })
                    .collect();
                serde_json::json!({ "start": pair[0].at, "end": pair[1].at, "results": results })
            })
            .collect();
        serde_json::json!({
            "interval_seconds": TRAFFIC_INTERVAL.as_secs(),
            "buckets": buckets,
        })
    }

    /// Counts a signed request's outcome.
    pub fn signed_request(&self, outcome: Result<(), &Error>) {
        match outcome {
            Ok(()) => {
                self.accepted.inc();
            }
            Err(e) => {
                self.signed_requests
                    .get_or_create(&Outcome { result: e.code() })
                    .inc();
            }
        }
    }

    /// The OpenMetrics text of every metric, read now.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// Gauges read from the store at each scrape.
struct StoreGauges(Arc<Store>);

impl std::fmt::Debug for StoreGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreGauges")
    }
}

impl Collector for StoreGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let store = &self.0;
        let gauges = [
            (
                "nonce_window_pairs",
                "(key, nonce) pairs in the replay window now; about the signed request rate times (skew + 1 s).",
                store.nonce_window_pairs(),
            ),
            (
                "nonce_queue_length",
                "Signed requests waiting for the nonce writer now.",
                store.nonce_queue_len(),
            ),
            (
                "cached_keys",
                "Verifying keys held in memory.",
                store.cached_keys(),
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value as i64);
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        if let Some(offset) = store.database_clock_offset_secs() {
            let gauge = ConstGauge::<f64>::new(offset);
            let metric = encoder.encode_descriptor(
                "database_clock_offset_seconds",
                "The PostgreSQL server's clock minus this instance's, measured every 5 s; past the skew, signed requests are refused with 503.",
                None,
                gauge.metric_type(),
            )?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

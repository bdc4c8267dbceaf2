//! `keygate bench`: a load generator that measures what a signature costs.
//!
//! In one run it sends unauthenticated requests to a baseline route
//! (`/healthz`) and then signed requests (a fresh nonce each, so every one is
//! recorded in the nonce window) to a signed route, over the same number of
//! keep-alive connections for the same time, and reports throughput and
//! latency percentiles for both, plus their ratio. Ratios from one run on one
//! machine are what BENCHMARKS.md quotes; absolute numbers vary by machine.

use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::signature::{BodyHash, SignedParts, SigningKey, StringToSign, SCHEME};

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Base URL of the public listener, e.g. `http://127.0.0.1:8080`.
    pub base_url: String,
    pub key_id: String,
    pub secret: String,
    pub connections: usize,
    /// Generator threads; connections are split between them.
    pub threads: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub baseline_path: String,
    pub signed_path: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub route: String,
    pub requests: u64,
    pub errors: u64,
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub connections: usize,
    pub duration_secs: f64,
    pub baseline: PhaseReport,
    pub signed: PhaseReport,
    /// signed / baseline throughput.
    pub throughput_ratio: f64,
    /// signed p99 - baseline p99.
    pub added_p99_ms: f64,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Baseline,
    Signed,
}

/// What one connection's loop saw: latencies in microseconds of the
/// successful requests, and how many failed.
#[derive(Default)]
struct Samples {
    latencies_us: Vec<u32>,
    errors: u64,
}

pub fn run(options: &LoadOptions) -> Result<LoadReport, String> {
    if options.connections == 0 || options.threads == 0 {
        return Err("connections and threads must be at least 1".into());
    }
    // Warm-up (connections, caches, the server's key cache) is not counted.
    if !options.warmup.is_zero() {
        run_phase(options, Mode::Signed, options.warmup)?;
    }
    let (baseline, baseline_time) = run_phase(options, Mode::Baseline, options.duration)?;
    let (signed, signed_time) = run_phase(options, Mode::Signed, options.duration)?;
    let baseline = summarize(&options.baseline_path, baseline, baseline_time);
    let signed = summarize(&options.signed_path, signed, signed_time);
    Ok(LoadReport {
        connections: options.connections,
        duration_secs: options.duration.as_secs_f64(),
        throughput_ratio: signed.requests_per_sec
            / baseline.requests_per_sec.max(f64::MIN_POSITIVE),
        added_p99_ms: signed.p99_ms - baseline.p99_ms,
        baseline,
        signed,
    })
}

fn run_phase(
    options: &LoadOptions,
    mode: Mode,
    duration: Duration,
) -> Result<(Samples, Duration), String> {
    let started = Instant::now();
    let deadline = started + duration;
    let threads: Vec<_> = (0..options.threads)
        .map(|t| {
            // Spread connections as evenly as the division allows.
            let connections = options.connections / options.threads
                + usize::from(t < options.connections % options.threads);
            let options = options.clone();
            std::thread::spawn(move || {
                actix_web::rt::System::new().block_on(generator_thread(
                    options,
                    mode,
                    connections,
                    deadline,
                ))
            })
        })
        .collect();
    let mut all = Samples::default();
    for thread in threads {
        let samples = thread
            .join()
            .map_err(|_| "a generator thread panicked".to_string())?;
        all.latencies_us.extend(samples.latencies_us);
        all.errors += samples.errors;
    }
    Ok((all, started.elapsed()))
}

async fn generator_thread(
    options: LoadOptions,
    mode: Mode,
    connections: usize,
    deadline: Instant,
) -> Samples {
    let client = awc::Client::builder()
        .connector(awc::Connector::new().limit(connections.max(1)))
        .timeout(Duration::from_secs(10))
        .finish();
    let options = Rc::new(options);
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            actix_web::rt::spawn(connection_loop(
                client.clone(),
                options.clone(),
                mode,
                deadline,
            ))
        })
        .collect();
    let mut all = Samples::default();
    for task in tasks {
        if let Ok(samples) = task.await {
            all.latencies_us.extend(samples.latencies_us);
            all.errors += samples.errors;
        }
    }
    all
}

async fn connection_loop(
    client: awc::Client,
    options: Rc<LoadOptions>,
    mode: Mode,
    deadline: Instant,
) -> Samples {
    let path = match mode {
        Mode::Baseline => &options.baseline_path,
        Mode::Signed => &options.signed_path,
    };
    let url = format!("{}{}", options.base_url.trim_end_matches('/'), path);
    let empty_body = BodyHash::EMPTY;
    // The key schedule once per connection, as a real client would keep it.
    let signing_key = SigningKey::new(&options.secret);
    let mut samples = Samples::default();
    while Instant::now() < deadline {
        let started = Instant::now();
        let mut request = client.get(&url);
        if mode == Mode::Signed {
            let timestamp = crate::clock::Clock::system().now().to_string();
            let nonce = crate::credentials::new_nonce();
            let string_to_sign = StringToSign::new(&SignedParts {
                key_id: &options.key_id,
                timestamp: &timestamp,
                nonce: &nonce,
                method: "GET",
                request_target: path,
                body_hash: empty_body,
            });
            let authorization = format!(
                "{SCHEME} KeyId={}, Timestamp={timestamp}, Nonce={nonce}, Signature={}",
                options.key_id,
                signing_key.sign_hex(&string_to_sign)
            );
            request = request.insert_header(("Authorization", authorization));
        }
        match request.send().await {
            Ok(mut response) => {
                let ok = response.status().is_success();
                let body = response.body().await;
                if ok && body.is_ok() {
                    let micros = started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                    samples.latencies_us.push(micros);
                } else {
                    samples.errors += 1;
                }
            }
            Err(_) => {
                samples.errors += 1;
                // A refused connection fails instantly; do not spin.
                actix_web::rt::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    samples
}

fn summarize(route: &str, mut samples: Samples, elapsed: Duration) -> PhaseReport {
    samples.latencies_us.sort_unstable();
    let at = |q: f64| -> f64 {
        let n = samples.latencies_us.len();
        if n == 0 {
            return 0.0;
        }
        let index = ((n as f64 * q).ceil() as usize).clamp(1, n) - 1;
        f64::from(samples.latencies_us[index]) / 1000.0
    };
    let requests = samples.latencies_us.len() as u64;
    PhaseReport {
        route: route.to_owned(),
        requests,
        errors: samples.errors,
        requests_per_sec: requests as f64 / elapsed.as_secs_f64(),
        p50_ms: at(0.50),
        p90_ms: at(0.90),
        p99_ms: at(0.99),
        max_ms: at(1.0),
    }
}

pub fn print_report(report: &LoadReport) {
    for (label, phase) in [
        ("unauthenticated", &report.baseline),
        ("signed", &report.signed),
    ] {
        println!(
            "{label:<16} GET {:<14} {:>9.0} req/s  p50 {:>6.2} ms  p90 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms  ({} ok, {} errors)",
            phase.route,
            phase.requests_per_sec,
            phase.p50_ms,
            phase.p90_ms,
            phase.p99_ms,
            phase.max_ms,
            phase.requests,
            phase.errors
        );
    }
    println!(
        "signed / unauthenticated throughput: {:.3}   added p99: {:+.2} ms   ({} connections, {:.0} s each)",
        report.throughput_ratio, report.added_p99_ms, report.connections, report.duration_secs
    );
}

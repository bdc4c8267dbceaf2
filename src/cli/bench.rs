//! `keygate bench`: unauthenticated against signed throughput and latency
//! of a running keygate (`load_generator.rs`).

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

#[derive(Args)]
pub struct BenchArgs {
    /// Base URL of the public listener.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Key id [env: KEYGATE_KEY_ID].
    #[arg(long, env = "KEYGATE_KEY_ID")]
    key_id: String,
    /// Secret [env: KEYGATE_SECRET].
    #[arg(long, env = "KEYGATE_SECRET", hide_env_values = true)]
    secret: String,
    /// Concurrent keep-alive connections.
    #[arg(long, short = 'c', default_value_t = 64)]
    connections: usize,
    /// Generator threads. Two, because one thread signing and parsing
    /// responses saturates before keygate does on /healthz, and the
    /// baseline would then measure the generator.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Length of each measured phase, e.g. 10s.
    #[arg(long, short = 'd', default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured signed warm-up before the phases.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Unauthenticated baseline route.
    #[arg(long, default_value = "/healthz")]
    baseline_path: String,
    /// Signed route (GET).
    #[arg(long, default_value = "/v1/whoami")]
    signed_path: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: BenchArgs) -> Result<ExitCode, String> {
    let options = crate::load_generator::LoadOptions {
        base_url: args.url,
        key_id: args.key_id,
        secret: args.secret,
        connections: args.connections,
        threads: args.threads,
        duration: args.duration,
        warmup: args.warmup,
        baseline_path: args.baseline_path,
        signed_path: args.signed_path,
    };
    let report = crate::load_generator::run(&options)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serialisable")
        );
    } else {
        crate::load_generator::print_report(&report);
    }
    let failed = report.baseline.errors + report.signed.errors > 0;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

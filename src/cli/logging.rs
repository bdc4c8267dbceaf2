//! How `keygate serve` logs: to standard error, at the configured level
//! (`KEYGATE_LOG`, default info), as text for people or as one JSON object
//! a line (`--log-format json`: timestamp, level, target, message and the
//! event's fields) for a log pipeline. No secret, signature or admin token
//! is ever a field of any event (`tests/api/logs.rs` greps a whole run).

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::LogFormat;

pub fn init(format: LogFormat, level: &str) -> Result<(), String> {
    let level: tracing::Level = level
        .parse()
        .map_err(|_| format!("log level {level:?}: expected error, warn, info, debug or trace"))?;
    // actix logs every request it cannot parse (and answers with a bare
    // 400) as an ERROR "stream error": the peer's fault, not keygate's, and
    // a port scanner would fill the log with it. Shown in debug runs only.
    let dispatcher = if level >= tracing::Level::DEBUG {
        LevelFilter::from_level(level)
    } else {
        LevelFilter::OFF
    };
    let filter = Targets::new()
        .with_default(level)
        .with_target("actix_http::h1::dispatcher", dispatcher);
    let layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(filter)
        .try_init();
    Ok(())
}

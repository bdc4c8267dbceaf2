//! How `keygate serve` logs: to standard error, at `KEYGATE_LOG`'s level
//! (default info).

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub fn init() {
    let level = std::env::var("KEYGATE_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(tracing::Level::INFO);
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
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(filter)
        .try_init();
}

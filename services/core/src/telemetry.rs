//! Structured logs through `tracing`, configured once per process.

use tracing_subscriber::EnvFilter;

/// Installs the log subscriber: `RUST_LOG` filters (default `info`), and
/// `BOOKSTORE_LOG_FORMAT=json` switches to one JSON object per line (for
/// log collectors in Kubernetes). Calling it twice is harmless.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("BOOKSTORE_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _already_installed = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

//! Logging setup: text for people, JSON for log pipelines; `RUST_LOG` sets the level.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with span fields (plan, instance).
    Json,
}

/// Log targets of the AWS SDK kept quiet unless `RUST_LOG` asks for them: the default
/// credential chain logs every provider's failure at WARN, on every call, with the error's
/// `Debug` form (several hundred characters of Rust structs). pitstop says the outcome in
/// words instead (no credentials, and the usual fix), once per cause.
const QUIET_SDK_TARGETS: &str = "aws_config::meta::credentials::chain=error";

/// The filter when `RUST_LOG` is not set: `default_level`, with the SDK's noisy targets quiet.
pub fn default_filter(default_level: &str) -> String {
    format!("{default_level},{QUIET_SDK_TARGETS}")
}

/// Installs the global subscriber, writing to stderr, at `default_level` unless `RUST_LOG` says otherwise.
pub fn init(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter(default_level)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(true).init(),
    }
}

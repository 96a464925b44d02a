//! Logging set-up shared by every subcommand: JSON or text lines on stderr,
//! filtered with tracing's EnvFilter syntax.

use anyhow::Context as _;
use mapchaos_sidecar::config::LogFormat;
use tracing_subscriber::EnvFilter;

pub fn init(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter)
        .with_context(|| format!("invalid log filter {filter:?} (--log / MAPCHAOS_LOG)"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

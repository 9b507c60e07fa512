//! Logging: the filter (`--log`, `SESSIONAUTH_LOG`) and the format (`--log-format`,
//! `SESSIONAUTH_LOG_FORMAT`: text, or one JSON object per line), set up once, by the binary.

use std::fmt;
use std::str::FromStr;

use tracing_subscriber::EnvFilter;

/// The filter when none is given.
pub const DEFAULT_FILTER: &str = "info";

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (`2026-01-01T00:00:00Z  INFO target: message key=value`).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the event's
    /// fields at the top level.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("{s:?} is not a log format: use text or json")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// A log filter that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid log filter (--log, SESSIONAUTH_LOG) {directives:?}")]
pub struct FilterError {
    /// The filter as given.
    directives: String,
    /// What the parser said.
    #[source]
    source: tracing_subscriber::filter::ParseError,
}

/// The filter directives in force for `directives` (an `EnvFilter` such as `debug` or
/// `sessionauth::access=warn,info`): the given ones, or [`DEFAULT_FILTER`] when `None` or blank.
pub fn filter_directives(directives: Option<&str>) -> &str {
    directives
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .unwrap_or(DEFAULT_FILTER)
}

/// The filter for `directives`, as [`filter_directives`] completes them.
pub fn filter(directives: Option<&str>) -> Result<EnvFilter, FilterError> {
    EnvFilter::try_new(filter_directives(directives)).map_err(|source| FilterError {
        directives: directives.unwrap_or(DEFAULT_FILTER).to_owned(),
        source,
    })
}

/// Installs the process's log subscriber: `filter`, `format`, written to stderr (text in colour
/// only when stderr is a terminal). Also routes `log` records (those of the Redis and
/// PostgreSQL clients) into it. Call once, from `main`.
pub fn init(
    filter: EnvFilter,
    format: LogFormat,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_ansi(false)
            .try_init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a filter (or a blank one), `info`; a given filter as given.
    #[test]
    fn the_default_filter_is_info() {
        assert_eq!(filter_directives(None), "info");
        assert_eq!(filter_directives(Some("  ")), "info");
        assert_eq!(filter_directives(Some(" debug ")), "debug");
    }

    /// A filter that does not parse is an error naming it.
    #[test]
    fn bad_filter_is_refused() {
        assert!(filter(Some("info")).is_ok());
        let e = filter(Some("sessionauth=loud")).unwrap_err();
        assert!(e.to_string().contains("sessionauth=loud"), "{e}");
    }

    /// The format parses from its two names, in any case, and nothing else.
    #[test]
    fn formats_parse() {
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert_eq!("TEXT".parse(), Ok(LogFormat::Text));
        assert!("yaml".parse::<LogFormat>().is_err());
    }
}

//! Logging: the filter (`--log`, `SESSIONAUTH_LOG`) and the format (`--log-format`,
//! `SESSIONAUTH_LOG_FORMAT`: text, or one JSON object per line), set up once, by the binary.
//!
//! The embedded store's engine (fjall and its LSM tree) logs at INFO on every start; its targets
//! are held at WARN unless the filter names them (`fjall=info`), so that `info` or `debug`
//! shows sessionauth's own lines.

use std::fmt;
use std::str::FromStr;

use tracing_subscriber::EnvFilter;

/// The filter when none is given.
pub const DEFAULT_FILTER: &str = "info";

/// Targets held at WARN unless the filter names them: fjall logs through `log`, as `fjall::…`
/// and `lsm_tree::…`.
const QUIET_TARGETS: [&str; 2] = ["fjall", "lsm_tree"];

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
/// `sessionauth::access=warn,info`; [`DEFAULT_FILTER`] when `None` or blank): the given ones,
/// preceded by `fjall=warn` and `lsm_tree=warn` unless they name those targets themselves.
pub fn filter_directives(directives: Option<&str>) -> String {
    let given = directives
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .unwrap_or(DEFAULT_FILTER);
    let mut out = String::new();
    for target in QUIET_TARGETS {
        if !names_target(given, target) {
            out.push_str(target);
            out.push_str("=warn,");
        }
    }
    out.push_str(given);
    out
}

/// The filter for `directives`, as [`filter_directives`] completes them.
pub fn filter(directives: Option<&str>) -> Result<EnvFilter, FilterError> {
    let full = filter_directives(directives);
    EnvFilter::try_new(&full).map_err(|source| FilterError {
        directives: directives.unwrap_or(DEFAULT_FILTER).to_owned(),
        source,
    })
}

/// Installs the process's log subscriber: `filter`, `format`, written to stderr (text in colour
/// only when stderr is a terminal). Also routes `log` records (fjall's) into it. Call once,
/// from `main`.
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

/// Whether one of the comma-separated `directives` names `target` (or a module under it).
fn names_target(directives: &str, target: &str) -> bool {
    directives.split(',').any(|d| {
        d.trim()
            .strip_prefix(target)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['=', ':', '[']))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a filter, `info` with fjall and its LSM tree at warn; a given filter keeps them
    /// at warn unless it names them.
    #[test]
    fn fjall_is_quiet_unless_named() {
        assert_eq!(filter_directives(None), "fjall=warn,lsm_tree=warn,info");
        assert_eq!(
            filter_directives(Some("  ")),
            "fjall=warn,lsm_tree=warn,info"
        );
        assert_eq!(
            filter_directives(Some("debug")),
            "fjall=warn,lsm_tree=warn,debug"
        );
        assert_eq!(
            filter_directives(Some("info,fjall=info")),
            "lsm_tree=warn,info,fjall=info"
        );
        assert_eq!(
            filter_directives(Some("fjall::db=debug,lsm_tree=trace")),
            "fjall::db=debug,lsm_tree=trace"
        );
        // A target that merely starts with the same letters is not fjall.
        assert_eq!(
            filter_directives(Some("fjallish=debug")),
            "fjall=warn,lsm_tree=warn,fjallish=debug"
        );
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

//! The access log: one line per request on the `sessionauth::access` target, for the requests
//! the router answers and for those hyper refuses before routing. Every field a client chose
//! (path, CN, trace id) is escaped, so that no client can forge a log line.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// What one access-log line says.
#[derive(Debug)]
pub(crate) struct AccessLine<'a> {
    /// The request method (`-` when hyper refused the request before it was parsed).
    pub(crate) method: &'a str,
    /// The request path (`-` likewise).
    pub(crate) path: &'a str,
    /// The status answered.
    pub(crate) status: u16,
    /// The client certificate's CN, if one was presented.
    pub(crate) cn: Option<&'a str>,
    /// The client's `X-Trace-Id`, already reduced to a safe form, or `-`.
    pub(crate) trace_id: &'a str,
    /// The client's address.
    pub(crate) client: SocketAddr,
    /// How long the request took, when it reached the router.
    pub(crate) duration: Option<Duration>,
    /// Why hyper refused the request, when it did.
    pub(crate) error: Option<&'a hyper::Error>,
}

/// Writes the access-log line for one request.
pub(crate) fn access_log(line: &AccessLine<'_>) {
    let duration_us = line
        .duration
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    tracing::info!(
        target: "sessionauth::access",
        method = %Escaped(line.method),
        path = %Escaped(line.path),
        status = line.status,
        cn = %Escaped(line.cn.unwrap_or("-")),
        trace_id = %Escaped(line.trace_id),
        client = %line.client,
        duration_us,
        error = line.error.map(tracing::field::display),
    );
}

/// A client-chosen string for the log: control characters, backslashes, quotes and anything
/// outside printable ASCII are written as `\u{…}` escapes.
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_ascii_graphic() && c != '\\' && c != '"' || c == ' ' {
                fmt::Write::write_char(f, c)?;
            } else {
                write!(f, "\\u{{{:x}}}", u32::from(c))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A newline, a quote or a non-ASCII character cannot reach the log as itself.
    #[test]
    fn escapes_what_could_forge_a_line() {
        assert_eq!(Escaped("bot-1 ok").to_string(), "bot-1 ok");
        assert_eq!(
            Escaped("a\nstatus=200 \"x\"\\é").to_string(),
            "a\\u{a}status=200 \\u{22}x\\u{22}\\u{5c}\\u{e9}"
        );
    }
}

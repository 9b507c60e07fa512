//! The PostgreSQL server's URL: parsed once, and never printed with its password.

use std::fmt;
use std::str::FromStr as _;

use tokio_postgres::config::SslMode;

/// A text that is not a usable PostgreSQL URL; shown with its password hidden.
#[derive(Debug, thiserror::Error)]
pub enum InvalidPostgresUrl {
    /// The text does not parse as a `postgres://` or `postgresql://` URL.
    #[error(
        "{0} is not a valid PostgreSQL URL \
         (postgres://[user[:password]@]host[:port]/database[?options])"
    )]
    Malformed(PostgresUrl),
    /// The URL asks for TLS, which this build does not speak to PostgreSQL yet.
    #[error(
        "{0} asks for sslmode=require: TLS to PostgreSQL is not supported yet; \
         use a loopback or otherwise trusted network with sslmode=disable (or leave it out)"
    )]
    TlsRequired(PostgresUrl),
}

/// A `postgres://` or `postgresql://` URL. `Debug` and `Display` hide any password, so the
/// value can appear in logs and error messages; [`PostgresUrl::config`] is the only way to the
/// credentials. The connection is plain TCP (or a Unix socket): `sslmode=require` is refused
/// at parse time, and `sslmode=prefer` (the default) connects without TLS.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl(String);

impl PostgresUrl {
    /// Accepts a URL whose scheme is `postgres` or `postgresql`, which the PostgreSQL client
    /// can parse, and which does not require TLS.
    pub fn parse(text: &str) -> Result<Self, InvalidPostgresUrl> {
        let url = Self(text.to_owned());
        let scheme_ok = text.starts_with("postgres://") || text.starts_with("postgresql://");
        if !scheme_ok {
            return Err(InvalidPostgresUrl::Malformed(url));
        }
        match tokio_postgres::Config::from_str(text) {
            Err(_) => Err(InvalidPostgresUrl::Malformed(url)),
            Ok(config) if config.get_ssl_mode() == SslMode::Require => {
                Err(InvalidPostgresUrl::TlsRequired(url))
            }
            Ok(_) => Ok(url),
        }
    }

    /// The client configuration, password included: for the connection pool only.
    pub(crate) fn config(&self) -> tokio_postgres::Config {
        // `parse` accepted the same text, so this parses again; a default (local socket, no
        // password) would only ever fail to connect.
        tokio_postgres::Config::from_str(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // scheme://[user[:password]@]host... → scheme://[user:***@]host...; a password in the
        // query (`?password=…`) hides the whole query.
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return f.write_str("<redacted>");
        };
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let tail = match tail.split_once('?') {
            Some((path, query)) if query.to_ascii_lowercase().contains("password") => {
                format!("{path}?***")
            }
            _ => tail.to_owned(),
        };
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
                if userinfo.contains(':') {
                    write!(f, "{scheme}://{user}:***@{host}{tail}")
                } else {
                    write!(f, "{scheme}://{user}@{host}{tail}")
                }
            }
            None => write!(f, "{scheme}://{authority}{tail}"),
        }
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PostgreSQL URL's password never shows in Debug or Display, nor in a parse error.
    #[test]
    fn postgres_url_is_redacted() {
        let url = PostgresUrl::parse("postgres://u:hunter2@127.0.0.1:5432/test").unwrap();
        assert_eq!(url.to_string(), "postgres://u:***@127.0.0.1:5432/test");
        assert!(!format!("{url:?}").contains("hunter2"));
        let url = PostgresUrl::parse("postgresql://postgres@db/sa").unwrap();
        assert_eq!(url.to_string(), "postgresql://postgres@db/sa");
        let url = PostgresUrl::parse("postgres://db/sa?user=u&password=hunter2").unwrap();
        assert_eq!(url.to_string(), "postgres://db/sa?***");
        let err = PostgresUrl::parse("postgres://u:hunter2@h:notaport/x").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = PostgresUrl::parse("postgres://u:hunter2@h/x?sslmode=require").unwrap_err();
        assert!(matches!(err, InvalidPostgresUrl::TlsRequired(_)), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    /// Only the two PostgreSQL schemes are accepted; `sslmode=disable` and `prefer` are.
    #[test]
    fn schemes_and_ssl_modes() {
        assert!(PostgresUrl::parse("mysql://h/x").is_err());
        assert!(PostgresUrl::parse("postgres://h/x?sslmode=disable").is_ok());
        assert!(PostgresUrl::parse("postgres://h/x?sslmode=prefer").is_ok());
        let config = PostgresUrl::parse("postgres://u:pw@h:6543/db")
            .unwrap()
            .config();
        assert_eq!(config.get_dbname(), Some("db"));
        assert_eq!(config.get_ports(), &[6543]);
    }
}

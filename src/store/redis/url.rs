//! The Redis server's URL: parsed once, and never printed with its password.

use std::fmt;

/// A text that is not a usable Redis URL; shown with its password hidden.
#[derive(Debug, thiserror::Error)]
#[error("{0} is not a valid Redis URL (redis://[user:password@]host[:port][/db])")]
pub struct InvalidRedisUrl(RedisUrl);

/// A `redis://` or `rediss://` URL. `Debug` and `Display` hide any password, so the value can
/// appear in logs and error messages; [`RedisUrl::expose`] is the only way to the full text.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Accepts a URL whose scheme is `redis` or `rediss` and which the Redis client can parse.
    pub fn parse(text: &str) -> Result<Self, InvalidRedisUrl> {
        let url = Self(text.to_owned());
        let scheme_ok = text.starts_with("redis://") || text.starts_with("rediss://");
        if scheme_ok && ::redis::Client::open(text).is_ok() {
            Ok(url)
        } else {
            Err(InvalidRedisUrl(url))
        }
    }

    /// The full URL, password included: for the Redis client only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the connection uses TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        self.0.starts_with("rediss://")
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // scheme://[user[:password]@]host... → scheme://[user:***@]host...
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return f.write_str("<redacted>");
        };
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split_once(':').map_or("", |(u, _)| u);
                write!(f, "{scheme}://{user}:***@{host}{tail}")
            }
            None => write!(f, "{scheme}://{authority}{tail}"),
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Redis URL's password never shows in Debug or Display, nor in the parse error.
    #[test]
    fn redis_url_is_redacted() {
        let url = RedisUrl::parse("redis://user:hunter2@127.0.0.1:6379/15").unwrap();
        assert_eq!(url.to_string(), "redis://user:***@127.0.0.1:6379/15");
        assert!(!format!("{url:?}").contains("hunter2"));
        let url = RedisUrl::parse("rediss://:hunter2@h/0").unwrap();
        assert_eq!(url.to_string(), "rediss://:***@h/0");
        let url = RedisUrl::parse("redis://h:6379").unwrap();
        assert_eq!(url.to_string(), "redis://h:6379");
        let err = RedisUrl::parse("redis://u:hunter2@h:notaport").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}

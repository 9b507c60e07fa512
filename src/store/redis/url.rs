//! The Redis store's URL: parsed once, and never printed with a password.
//!
//! | form | what |
//! |---|---|
//! | `redis://[user:password@]host[:port][/db]`, `rediss://…` | one Redis server (standalone, or a primary whose failover someone else handles) |
//! | `redis+sentinel://[user:password@]host[:port][,host[:port]…]/service[/db][?sentinel_username=…&sentinel_password=…]`, `rediss+sentinel://…` | the primary that these Sentinels name for `service`; the user and password are the data nodes' (an ACL user is kept), the query's are the Sentinels' own |
//! | `redis+cluster://[user:password@]host[:port][,host[:port]…]`, `rediss+cluster://…` | a Redis Cluster, found from these seed nodes |

use std::fmt;

use ::redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

/// The port a Sentinel listens on when the URL names none.
const SENTINEL_PORT: u16 = 26379;
/// The port a Redis server listens on when the URL names none.
const REDIS_PORT: u16 = 6379;

/// A text that is not a usable Redis URL; shown with its password hidden.
#[derive(Debug, thiserror::Error)]
#[error(
    "{url} is not a valid Redis URL ({why}; expected redis://[user:password@]host[:port][/db] \
     , redis+sentinel://[user:password@]host:port[,host:port…]/service[/db] \
     or redis+cluster://[user:password@]host:port[,host:port…])"
)]
pub struct InvalidRedisUrl {
    url: Redacted,
    why: &'static str,
}

/// A Redis URL of one of the forms above. `Debug` and `Display` hide every password, so the
/// value can appear in logs and error messages; [`RedisUrl::expose`] is the only way to the full
/// text.
#[derive(Clone)]
pub struct RedisUrl {
    text: String,
    target: Target,
}

/// What a URL names, parsed.
#[derive(Clone)]
pub(crate) enum Target {
    /// One server: the URL as the Redis client reads it.
    Server,
    /// A primary found through Sentinel.
    Sentinel(SentinelTarget),
    /// A Redis Cluster: its seed nodes, each with the login (and TLS) to use.
    Cluster(Vec<ConnectionInfo>),
}

/// The parts of a `redis+sentinel://` URL.
#[derive(Clone)]
pub(crate) struct SentinelTarget {
    /// Each Sentinel's address, with the Sentinels' own credentials (from the query).
    pub(crate) sentinels: Vec<ConnectionInfo>,
    /// The name the Sentinels monitor the primary under.
    pub(crate) service: String,
    /// How to log in to the data nodes: database, ACL user, password.
    pub(crate) node: RedisConnectionInfo,
    /// Whether every connection (Sentinels and data nodes) uses TLS.
    pub(crate) tls: bool,
}

impl RedisUrl {
    /// Accepts `redis://`, `rediss://`, `redis+sentinel://` and `rediss+sentinel://` URLs that
    /// the Redis client can use.
    pub fn parse(text: &str) -> Result<Self, InvalidRedisUrl> {
        let invalid = |why| InvalidRedisUrl {
            url: Redacted(text.to_owned()),
            why,
        };
        let target = if let Some(rest) = text.strip_prefix("redis+sentinel://") {
            Target::Sentinel(parse_sentinel(rest, false).map_err(invalid)?)
        } else if let Some(rest) = text.strip_prefix("rediss+sentinel://") {
            Target::Sentinel(parse_sentinel(rest, true).map_err(invalid)?)
        } else if let Some(rest) = text.strip_prefix("redis+cluster://") {
            Target::Cluster(parse_cluster(rest, false).map_err(invalid)?)
        } else if let Some(rest) = text.strip_prefix("rediss+cluster://") {
            Target::Cluster(parse_cluster(rest, true).map_err(invalid)?)
        } else if text.starts_with("redis://") || text.starts_with("rediss://") {
            ::redis::Client::open(text).map_err(|_| invalid("the Redis client refuses it"))?;
            Target::Server
        } else {
            return Err(invalid("unknown scheme"));
        };
        Ok(Self {
            text: text.to_owned(),
            target,
        })
    }

    /// The full URL, passwords included: for the Redis client only.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// Whether the connections use TLS (`rediss://`, `rediss+sentinel://`).
    pub fn is_tls(&self) -> bool {
        self.text.starts_with("rediss")
    }

    /// Whether the primary is found through Sentinel.
    pub fn is_sentinel(&self) -> bool {
        matches!(self.target, Target::Sentinel(_))
    }

    /// Whether the URL names a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    pub(crate) fn target(&self) -> &Target {
        &self.target
    }
}

/// `[userinfo@]hosts[/]`, after the scheme: each host becomes `redis://[userinfo@]host`.
fn parse_cluster(rest: &str, tls: bool) -> Result<Vec<ConnectionInfo>, &'static str> {
    if rest.contains(['?', '#']) {
        return Err("a query or fragment is not allowed");
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('/') {
        return Err("a cluster has no database to select");
    }
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
        None => (String::new(), authority),
    };
    let scheme = if tls { "rediss" } else { "redis" };
    hosts
        .split(',')
        .map(|host| {
            let (name, port) = split_host_port(host, REDIS_PORT)?;
            let name = if name.contains(':') {
                format!("[{name}]")
            } else {
                name.to_owned()
            };
            format!("{scheme}://{userinfo}{name}:{port}")
                .into_connection_info()
                .map_err(|_| "bad node address, user or password")
        })
        .collect()
}

/// `hosts/service[/db][?query]`, after the scheme.
fn parse_sentinel(rest: &str, tls: bool) -> Result<SentinelTarget, &'static str> {
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    if rest.contains('#') || query.contains('#') {
        return Err("a fragment is not allowed");
    }
    let (authority, path) = rest.split_once('/').ok_or("the service name is missing")?;
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let (service, db) = match path.split_once('/') {
        Some((service, db)) => (service, db.parse::<i64>().map_err(|_| "bad database")?),
        None => (path, 0),
    };
    if service.is_empty() {
        return Err("the service name is missing");
    }
    if db < 0 {
        return Err("bad database");
    }
    // The data nodes' login, read by the Redis client itself (percent-decoding included).
    let node_url = match userinfo {
        Some(userinfo) => format!("redis://{userinfo}@127.0.0.1/{db}"),
        None => format!("redis://127.0.0.1/{db}"),
    };
    let node = node_url
        .as_str()
        .into_connection_info()
        .map_err(|_| "bad user or password")?
        .redis_settings()
        .clone();
    let mut sentinel_login = RedisConnectionInfo::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').ok_or("bad query parameter")?;
        let value = percent_decode(value).ok_or("bad percent-encoding in the query")?;
        sentinel_login = match name {
            "sentinel_username" => sentinel_login.set_username(value),
            "sentinel_password" => sentinel_login.set_password(value),
            _ => return Err("unknown query parameter (sentinel_username, sentinel_password)"),
        };
    }
    let mut sentinels = Vec::new();
    for host in hosts.split(',') {
        let (name, port) = split_host_port(host, SENTINEL_PORT)?;
        let addr = if tls {
            ConnectionAddr::TcpTls {
                host: name.to_owned(),
                port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(name.to_owned(), port)
        };
        let info = addr
            .into_connection_info()
            .map_err(|_| "bad Sentinel address")?
            .set_redis_settings(sentinel_login.clone());
        sentinels.push(info);
    }
    Ok(SentinelTarget {
        sentinels,
        service: service.to_owned(),
        node,
        tls,
    })
}

/// `host[:port]` or `[v6][:port]`.
fn split_host_port(text: &str, default_port: u16) -> Result<(&str, u16), &'static str> {
    let bad = "bad host address (host:port)";
    let (host, port) = if let Some(v6) = text.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or(bad)?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(bad),
        }
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return Err(bad);
    }
    let port = match port {
        Some(p) => p.parse().map_err(|_| bad)?,
        None => default_port,
    };
    Ok((host, port))
}

/// `%XX` escapes decoded; `None` when one is malformed or the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Two URLs are equal when their texts are: the parsed parts follow from the text.
impl PartialEq for RedisUrl {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for RedisUrl {}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&Redacted(self.text.clone()), f)
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

/// A URL text shown without its passwords: the user info's and the query's.
#[derive(Debug)]
struct Redacted(String);

impl fmt::Display for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // scheme://[user[:password]@]host...[?query] → scheme://[user:***@]host...[?query, values of *password hidden]
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return f.write_str("<redacted>");
        };
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split_once(':').map_or("", |(u, _)| u);
                write!(f, "{scheme}://{user}:***@{host}")?;
            }
            None => write!(f, "{scheme}://{authority}")?,
        }
        let (path, query) = match tail.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (tail, None),
        };
        f.write_str(path)?;
        if let Some(query) = query {
            f.write_str("?")?;
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    f.write_str("&")?;
                }
                match pair.split_once('=') {
                    Some((name, _)) if name.contains("password") => write!(f, "{name}=***")?,
                    _ => f.write_str(pair)?,
                }
            }
        }
        Ok(())
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

    /// A Sentinel URL keeps the data nodes' ACL user and password, the database, and the
    /// Sentinels' own login from the query; neither password shows.
    #[test]
    fn sentinel_url_parses_and_is_redacted() {
        let text = "redis+sentinel://app:hunter2@10.0.0.1:26379,10.0.0.2,[::1]:5000/mymaster/3\
                    ?sentinel_username=sen&sentinel_password=s%40cret";
        let url = RedisUrl::parse(text).unwrap();
        assert!(url.is_sentinel() && !url.is_tls());
        let Target::Sentinel(t) = url.target() else {
            panic!("not sentinel")
        };
        assert_eq!(t.service, "mymaster");
        assert_eq!(t.node.db(), 3);
        assert_eq!(t.node.username(), Some("app"));
        assert_eq!(t.node.password(), Some("hunter2"));
        let addrs: Vec<String> = t.sentinels.iter().map(|s| s.addr().to_string()).collect();
        assert_eq!(addrs, ["10.0.0.1:26379", "10.0.0.2:26379", "::1:5000"]);
        for s in &t.sentinels {
            assert_eq!(s.redis_settings().username(), Some("sen"));
            assert_eq!(s.redis_settings().password(), Some("s@cret"));
            assert_eq!(s.redis_settings().db(), 0);
        }
        let shown = format!("{url} {url:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("cret"),
            "{shown}"
        );
        assert!(shown.contains("app:***@10.0.0.1:26379"), "{shown}");

        let url = RedisUrl::parse("rediss+sentinel://h:1/svc").unwrap();
        assert!(url.is_tls() && url.is_sentinel());
    }

    /// A Cluster URL lists its seed nodes, each with the URL's login; no database, no query.
    #[test]
    fn cluster_url_parses_and_is_redacted() {
        let url = RedisUrl::parse("redis+cluster://app:hunter2@10.0.0.1:7000,10.0.0.2/").unwrap();
        assert!(url.is_cluster() && !url.is_sentinel() && !url.is_tls());
        let Target::Cluster(nodes) = url.target() else {
            panic!("not cluster")
        };
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr().to_string()).collect();
        assert_eq!(addrs, ["10.0.0.1:7000", "10.0.0.2:6379"]);
        for n in nodes {
            assert_eq!(n.redis_settings().username(), Some("app"));
            assert_eq!(n.redis_settings().password(), Some("hunter2"));
        }
        assert!(!format!("{url} {url:?}").contains("hunter2"));
        assert!(RedisUrl::parse("rediss+cluster://h:1").unwrap().is_tls());
        for text in [
            "redis+cluster://u:hunter2@h:1/0",
            "redis+cluster://u:hunter2@h:1?x=y",
            "redis+cluster://u:hunter2@h:x",
            "redis+cluster://u:hunter2@",
        ] {
            let err = RedisUrl::parse(text).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    /// A Sentinel URL without a service, with a bad port or database, or with an unknown query
    /// parameter is refused, its password hidden in the error.
    #[test]
    fn bad_sentinel_urls_are_refused() {
        for text in [
            "redis+sentinel://u:hunter2@h:26379",
            "redis+sentinel://u:hunter2@h:26379/",
            "redis+sentinel://u:hunter2@h:x/svc",
            "redis+sentinel://u:hunter2@h:1,/svc",
            "redis+sentinel://u:hunter2@h:1/svc/x",
            "redis+sentinel://u:hunter2@h:1/svc?password=x",
            "redis+sentinel://u:hunter2@h:1/svc?sentinel_password=%zz",
            "redis+cluster-ish://u:hunter2@h:1/svc",
        ] {
            let err = RedisUrl::parse(text).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{err}");
        }
    }
}

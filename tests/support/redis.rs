//! The Redis the tests may use: named by `SESSIONAUTH_TEST_REDIS_URL` (for example
//! `redis://127.0.0.1:6379/15`). Every test gets its own random key prefix, whose keys are
//! deleted when the test ends, failed or not.
//!
//! A test that asks for Redis and does not get it fails: the tests that need Redis are
//! `#[ignore]`d instead, so that a plain `cargo test` without Redis reports them as ignored (see
//! the `support` module documentation).

use std::time::Duration;

/// The environment variable that names the Redis server for tests.
pub const REDIS_ENV: &str = "SESSIONAUTH_TEST_REDIS_URL";

/// How long the reachability check may take.
const CONNECT_WAIT: Duration = Duration::from_secs(5);

/// The test Redis and this test's key prefix; dropping it deletes the prefix's keys.
pub struct TestRedis {
    /// The URL, from [`REDIS_ENV`].
    pub url: String,
    /// `sessionauth-test:<random>:`.
    pub prefix: String,
}

impl TestRedis {
    /// The Redis named by [`REDIS_ENV`] with a fresh key prefix. Panics when the variable is
    /// unset or Redis does not answer a `PING`: a Redis test never passes without Redis.
    pub fn new() -> Self {
        let url = std::env::var(REDIS_ENV).unwrap_or_else(|_| {
            let why = if std::env::var_os("CI").is_some() {
                "CI is set, and the Redis tests must run there"
            } else {
                "run without --include-ignored to skip the Redis tests"
            };
            panic!("{REDIS_ENV} is not set ({why}); set it, e.g. to redis://127.0.0.1:6379/15")
        });
        if let Err(e) = ping(&url) {
            panic!("the Redis that {REDIS_ENV} names does not answer: {e}");
        }
        Self {
            url,
            prefix: format!("sessionauth-test:{}:", random_hex(6)),
        }
    }

    /// The configuration lines that put a server on this Redis, under this prefix.
    pub fn store_lines(&self) -> String {
        format!(
            "store = {}\nredis_prefix = {}\n",
            toml_string(&self.url),
            toml_string(&self.prefix)
        )
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let Ok(client) = ::redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(CONNECT_WAIT) else {
            return;
        };
        let keys: Vec<String> = ::redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query(&mut conn)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: ::redis::RedisResult<()> = ::redis::cmd("DEL").arg(keys).query(&mut conn);
        }
    }
}

fn ping(url: &str) -> ::redis::RedisResult<()> {
    let client = ::redis::Client::open(url)?;
    let mut conn = client.get_connection_with_timeout(CONNECT_WAIT)?;
    ::redis::cmd("PING").query::<String>(&mut conn).map(drop)
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("random bytes");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `text` as a TOML basic string.
pub fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

//! The PostgreSQL the tests may use: named by `SESSIONAUTH_TEST_POSTGRES_URL` (for example
//! `postgres://postgres@127.0.0.1:5432/test`). Every test gets its own random table prefix,
//! whose tables are dropped when the test ends, failed or not.
//!
//! A test that asks for PostgreSQL and does not get it fails: the tests that need it are
//! `#[ignore]`d instead, so that a plain `cargo test` without PostgreSQL reports them as ignored
//! (see the `support` module documentation).

use std::time::Duration;

use super::redis::{random_hex, toml_string};

/// The environment variable that names the PostgreSQL database for tests.
pub const POSTGRES_ENV: &str = "SESSIONAUTH_TEST_POSTGRES_URL";

/// How long the reachability check and the clean-up may take.
const CONNECT_WAIT: Duration = Duration::from_secs(5);

/// The test database and this test's table prefix; dropping it drops the prefix's tables.
pub struct TestPostgres {
    /// The URL, from [`POSTGRES_ENV`].
    pub url: String,
    /// `sessionauth_test_<random>_`.
    pub prefix: String,
}

impl TestPostgres {
    /// The database named by [`POSTGRES_ENV`] with a fresh table prefix. Panics when the
    /// variable is unset or the database does not answer: a PostgreSQL test never passes
    /// without PostgreSQL.
    pub fn new() -> Self {
        let url = std::env::var(POSTGRES_ENV).unwrap_or_else(|_| {
            let why = if std::env::var_os("CI").is_some() {
                "CI is set, and the PostgreSQL tests must run there"
            } else {
                "run without --include-ignored to skip the PostgreSQL tests"
            };
            panic!(
                "{POSTGRES_ENV} is not set ({why}); set it, e.g. to \
                 postgres://postgres@127.0.0.1:5432/test"
            )
        });
        if let Err(e) = run_sql(&url, "SELECT 1".to_owned()) {
            panic!("the PostgreSQL that {POSTGRES_ENV} names does not answer: {e}");
        }
        Self {
            url,
            prefix: format!("sessionauth_test_{}_", random_hex(6)),
        }
    }

    /// The configuration lines that put a server on this database, under this prefix.
    pub fn store_lines(&self) -> String {
        format!(
            "store = {}\npostgres_table_prefix = {}\n",
            toml_string(&self.url),
            toml_string(&self.prefix)
        )
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let p = &self.prefix;
        let _ = run_sql(
            &self.url,
            format!("DROP TABLE IF EXISTS {p}sessions, {p}notes, {p}meta"),
        );
    }
}

/// Runs `sql` (a simple query) on its own connection, in a thread of its own: callers may be
/// inside a runtime, or dropping in one.
fn run_sql(url: &str, sql: String) -> Result<(), String> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async move {
            let connect = tokio_postgres::connect(&url, tokio_postgres::NoTls);
            let (client, connection) = tokio::time::timeout(CONNECT_WAIT, connect)
                .await
                .map_err(|_| "timed out".to_owned())?
                .map_err(|e| e.to_string())?;
            let driver = tokio::spawn(connection);
            let result = tokio::time::timeout(CONNECT_WAIT, client.batch_execute(&sql))
                .await
                .map_err(|_| "timed out".to_owned())?
                .map_err(|e| e.to_string());
            drop(client);
            let _ = driver.await;
            result
        })
    })
    .join()
    .unwrap_or_else(|_| Err("the clean-up thread panicked".into()))
}

//! The `sessionauth` binary: parse the command line, load and check configuration, run.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use sessionauth::config::{Config, Overrides};
use sessionauth::logging::LogFormat;
use sessionauth::server::{self, Prepared};

/// A Symphony-compatible, certificate-authenticated session authenticator.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    log: LogArgs,
}

/// Where logs go: stderr, filtered, as text or JSON lines.
#[derive(Args)]
#[command(next_help_heading = "Logging")]
struct LogArgs {
    /// The log filter (an EnvFilter: `debug`, `sessionauth::access=warn,info`). Default: info.
    #[arg(
        long = "log",
        env = "SESSIONAUTH_LOG",
        value_name = "FILTER",
        global = true
    )]
    filter: Option<String>,
    /// The log format: text, or one JSON object per line.
    #[arg(
        long,
        env = "SESSIONAUTH_LOG_FORMAT",
        value_name = "text|json",
        default_value_t = LogFormat::Text,
        global = true
    )]
    log_format: LogFormat,
}

/// The configuration: a file (or the embedded defaults) and what flags and environment
/// variables replace in it. Precedence: flag > environment > file > default.
#[derive(Args, Default)]
struct ConfigArgs {
    /// A TOML configuration file (see examples/sessionauth.toml). Without it: the embedded
    /// defaults, the dev PKI in certs/.
    #[arg(long, env = "SESSIONAUTH_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The listen address, e.g. 127.0.0.1:8443 or [::1]:8443 (replaces `listen`).
    #[arg(long, env = "SESSIONAUTH_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// The directory file of users and apps (replaces `directory`).
    #[arg(long, env = "SESSIONAUTH_DIRECTORY", value_name = "FILE")]
    directory: Option<PathBuf>,
    /// The embedded store's folder (replaces `data_dir`).
    #[arg(long, env = "SESSIONAUTH_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The folder of server.pem, server-key.pem and ca.pem: without --config, where the dev PKI
    /// is made; with it, replaces tls.cert, tls.key and tls.client_ca.
    #[arg(long, env = "SESSIONAUTH_CERTS", value_name = "DIR")]
    certs: Option<PathBuf>,
    /// The session store: embedded, memory, or a redis://, rediss://, redis+sentinel:// or
    /// postgres:// URL (replaces `store`).
    #[arg(
        long,
        env = "SESSIONAUTH_STORE",
        value_name = "URL",
        hide_env_values = true
    )]
    store: Option<String>,
}

impl ConfigArgs {
    /// The configuration these arguments name, validated.
    fn load(self) -> Result<Config, sessionauth::config::ConfigError> {
        let overrides = Overrides {
            listen: self.listen,
            directory: self.directory,
            data_dir: self.data_dir,
            certs: self.certs,
            store: self.store,
        };
        Config::load(self.config.as_deref(), &overrides)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTPS (the default). Without --config: embedded defaults, dev PKI in certs/.
    Serve(ConfigArgs),
    /// Validate a configuration without serving; warn about certificates that expire soon and
    /// directory entries without a certificate.
    Check(ConfigArgs),
    /// Manage the dev PKI.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Print a shell completion script to stdout, e.g.
    /// `sessionauth completions bash > /etc/bash_completion.d/sessionauth`.
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout, or with --dir write sessionauth.1 and one page per
    /// subcommand (sessionauth-serve.1, ...) into DIR.
    Man {
        /// The folder to write the pages into (made if missing).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// The password of the dev PKI's PKCS#12 keystores.
#[derive(Args)]
struct P12Args {
    /// The password of the PKCS#12 keystores written (<name>.p12, truststore.p12).
    /// Default: changeit.
    #[arg(
        long = "p12-password",
        env = "SESSIONAUTH_P12_PASSWORD",
        value_name = "PASS",
        hide_env_values = true
    )]
    password: Option<String>,
}

impl P12Args {
    /// The password given, or the default one.
    fn password(self) -> Result<sessionauth::pki::P12Password, BoxError> {
        match self.password {
            None => Ok(sessionauth::pki::P12Password::default()),
            Some(p) => sessionauth::pki::P12Password::new(p)
                .ok_or_else(|| "--p12-password must not be empty".into()),
        }
    }
}

/// Where `certs issue` finds the directory the server reads, as `serve` finds it.
#[derive(Args)]
struct DirectoryArgs {
    /// The server's TOML configuration file, whose `directory` is checked for the CN.
    #[arg(long, env = "SESSIONAUTH_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The directory file of users and apps (replaces the configuration's `directory`).
    #[arg(long, env = "SESSIONAUTH_DIRECTORY", value_name = "FILE")]
    directory: Option<PathBuf>,
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Make (or complete) the dev PKI: CA (and truststore.p12), server certificate, and a client
    /// certificate (PEM, bundle and PKCS#12 keystore) and an RSA key pair for every service user
    /// and app of the directory. Existing keys and keystores are kept.
    Init {
        /// Where to write the files.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// The directory file whose principals get certificates (default: the embedded sample).
        #[arg(long)]
        directory: Option<PathBuf>,
        #[command(flatten)]
        p12: P12Args,
    },
    /// Make a dev RSA key pair: <name>-rsa.pem (private, PKCS#8, 0600) and <name>-rsa.pub.pem.
    /// Refuses when the private key exists.
    Rsa {
        /// The service user's username or the app's id (the JWT's `sub`).
        #[arg(long)]
        name: String,
        /// Where to write the files.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Key size: 2048 or 4096.
        #[arg(long, default_value_t = sessionauth::pki::DEFAULT_DEV_BITS)]
        bits: usize,
    },
    /// Issue a client certificate from the dev CA (PEM, bundle and PKCS#12 keystore), say
    /// whether the directory knows the CN, and what to do next.
    Issue {
        /// The certificate's CN: a service user's username or an app's id.
        #[arg(long)]
        cn: String,
        /// Validity in days.
        #[arg(long, default_value_t = sessionauth::pki::DEFAULT_CLIENT_DAYS)]
        days: u32,
        /// Where the dev CA is, and where to write the files.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        #[command(flatten)]
        p12: P12Args,
        #[command(flatten)]
        directory: DirectoryArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = sessionauth::logging::filter(cli.log.filter.as_deref())
        .map_err(BoxError::from)
        .and_then(|filter| sessionauth::logging::init(filter, cli.log.log_format))
    {
        eprintln!("error: {}", sessionauth::chain::Chain(e.as_ref()));
        return ExitCode::FAILURE;
    }
    // Process-wide settings are made here, once: rustls's default provider is ours (src/crypto.rs).
    sessionauth::tls::install_process_default();
    // No subcommand is `serve`, with its flags' environment variables read as `serve` reads them.
    let command = cli.command.unwrap_or_else(|| {
        Cli::parse_from(["sessionauth", "serve"])
            .command
            .unwrap_or(Command::Serve(ConfigArgs::default()))
    });
    let result = match command {
        Command::Serve(args) => serve(args),
        Command::Check(args) => args
            .load()
            .map_err(BoxError::from)
            .and_then(sessionauth::check::run)
            .map(|report| print!("{report}")),
        Command::Certs { command } => certs(command),
        Command::Completions { shell } => {
            let mut cli = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cli, "sessionauth", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { dir } => man(dir.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", sessionauth::chain::Chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The man pages, generated from the command line's own definition.
fn man(dir: Option<&Path>) -> Result<(), BoxError> {
    let cli = <Cli as clap::CommandFactory>::command();
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            clap_mangen::generate_to(cli, dir)?;
            println!("man pages written to {}", absolute(dir).display());
        }
        None => clap_mangen::Man::new(cli).render(&mut std::io::stdout())?,
    }
    Ok(())
}

fn serve(args: ConfigArgs) -> Result<(), BoxError> {
    let prepared = Prepared::new(args.load()?)?;
    if let Some(report) = &prepared.pki_report {
        for path in &report.created {
            tracing::info!(file = %path.display(), "dev PKI: created");
        }
    }
    if let Some(path) = prepared.signing().created() {
        tracing::info!(file = %path.display(), "signing key: created");
    }
    for path in &prepared.adopted_keys {
        tracing::info!(file = %path.display(), "RSA public key taken from the key folder");
    }
    for warning in sessionauth::keyperms::warnings(prepared.config()) {
        tracing::warn!("{warning}");
    }
    let certs = absolute(&prepared.config().certs_dir());
    let store = prepared.config().store_name();
    let data = prepared.config().data_dir().map(absolute);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // Before the "listening" line: from then on, a signal is handled, never fatal.
        let shutdown = shutdown_signal();
        let reloads = reload_on_sighup(prepared.reload_handle());
        let mut prepared = prepared;
        let listener = prepared.bind().await?;
        let addr = listener.local_addr()?;
        if let Some(metrics) = prepared.bind_metrics().await? {
            tracing::info!(addr = %metrics, "metrics and health listening (plain http)");
        }
        tracing::info!(
            %addr,
            certs = %certs.display(),
            %store,
            data = data.as_ref().map(|d| tracing::field::display(d.display())),
            crypto = sessionauth::crypto::NAME,
            "sessionauth listening (https)"
        );
        if prepared.config().dev_pki.is_some() {
            let d = certs.display();
            println!(
                "Try it:\n  curl --cert {d}/bot.user.pem --key {d}/bot.user-key.pem --cacert {d}/ca.pem \
                 -X POST https://localhost:{port}/sessionauth/v1/authenticate",
                port = addr.port()
            );
        }
        tokio::select! {
            stopped = server::run(listener, prepared, shutdown) => match stopped {
                server::Stopped::Shutdown => Ok(()),
                server::Stopped::StoreFailed(reason) => Err(format!(
                    "the session store failed ({reason}); exiting so that a supervisor \
                     restarts the server: free disk space (or fix the I/O error) and start it again"
                )
                .into()),
            },
            () = reloads => Ok(()),
        }
    })
}

/// `path` made absolute (symbolic links resolved when it exists), for the start banner.
fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_owned())
}

fn certs(command: CertsCommand) -> Result<(), BoxError> {
    match command {
        CertsCommand::Init {
            dir,
            directory,
            p12,
        } => {
            let password = p12.password()?;
            let directory = match directory {
                Some(p) => sessionauth::directory::Directory::from_file(&p)?,
                None => sessionauth::directory::Directory::embedded_sample()?,
            };
            let principals = directory.certificate_principals();
            let mut report = sessionauth::pki::init(&dir, &principals, &password)?;
            sessionauth::pki::init_pairs(&dir, &principals, &mut report)?;
            print_report(&report);
            let keystores = report
                .created
                .iter()
                .any(|p| p.extension().is_some_and(|e| e == "p12"));
            if keystores {
                println!(
                    "password of the PKCS#12 keystores (.p12) just written: {}",
                    shown_password(&password)
                );
            }
        }
        CertsCommand::Rsa { name, dir, bits } => {
            print_report(&sessionauth::pki::make_pair(&dir, &name, bits)?);
        }
        CertsCommand::Issue {
            cn,
            days,
            dir,
            p12,
            directory,
        } => {
            let password = p12.password()?;
            let report = sessionauth::pki::issue(&dir, &cn, days, &password)?;
            print_report(&report);
            let overrides = Overrides {
                directory: directory.directory,
                ..Overrides::default()
            };
            let advice = match Config::load(directory.config.as_deref(), &overrides) {
                Ok(config) => {
                    let shown = password
                        .is_default()
                        .then_some(sessionauth::pki::DEFAULT_P12_PASSWORD);
                    sessionauth::onboarding::after_issue(&config, &cn, &dir, shown)
                }
                Err(e) => sessionauth::onboarding::Advice {
                    warning: Some(format!(
                        "cannot check {cn:?} against the directory: {}",
                        sessionauth::chain::Chain(&e)
                    )),
                    steps: String::new(),
                },
            };
            print!("{}", advice.steps);
            if let Some(warning) = advice.warning {
                eprintln!("warning: {warning}");
            }
        }
    }
    Ok(())
}

fn print_report(report: &sessionauth::pki::Report) {
    for path in &report.created {
        println!("created {}", path.display());
    }
    for path in &report.kept {
        println!("kept    {}", path.display());
    }
}

/// The keystore password as the output states it: the default is shown, a given one is not.
fn shown_password(password: &sessionauth::pki::P12Password) -> String {
    if password.is_default() {
        format!("{:?}", sessionauth::pki::DEFAULT_P12_PASSWORD)
    } else {
        "the one given (--p12-password or SESSIONAUTH_P12_PASSWORD; not shown)".to_owned()
    }
}

/// Reloads the directory, certificates and CRLs on every SIGHUP (what the reload did, or why it
/// changed nothing, is logged by the server). Never completes while SIGHUP can be received. The
/// handler is installed by this call, not when the future is first polled: a SIGHUP sent right
/// after the "listening" line reloads instead of ending the process.
fn reload_on_sighup(handle: sessionauth::trust::ReloadHandle) -> impl Future<Output = ()> {
    #[cfg(unix)]
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    async move {
        #[cfg(unix)]
        match hangups {
            Ok(mut hangups) => {
                while hangups.recv().await.is_some() {
                    tracing::info!("SIGHUP received: reloading");
                    // The outcome is logged where the reload runs.
                    let _ = handle.reload().await;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP: reload needs a restart");
            }
        }
        #[cfg(not(unix))]
        let _ = handle;
        std::future::pending().await
    }
}

/// Completes on SIGINT or SIGTERM. The handlers are installed by this call, not when the future
/// is first polled, so that a signal sent right after the "listening" line stops the server
/// gracefully instead of killing it.
fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        )
    };
    async move {
        #[cfg(unix)]
        {
            tokio::select! {
                () = received(interrupt, "SIGINT") => tracing::info!("SIGINT received"),
                () = received(terminate, "SIGTERM") => tracing::info!("SIGTERM received"),
            }
        }
        #[cfg(not(unix))]
        {
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::error!(error = %e, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
            tracing::info!("Ctrl-C received");
        }
    }
}

/// Completes when the signal `name`, whose handler is `handler`, arrives; never, when the
/// handler could not be installed (logged).
#[cfg(unix)]
async fn received(handler: std::io::Result<tokio::signal::unix::Signal>, name: &str) {
    match handler {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for {name}");
            std::future::pending::<()>().await;
        }
    }
}

//! A null server for `scripts/bench.sh`: the TLS and HTTP stack sessionauth runs on (hyper 1,
//! tokio-rustls, the same rustls and crypto provider, mutual TLS with the client certificate
//! optional), answering every request with a static `200 {"status":"UP"}`. What sessionauth
//! does above that stack is the difference between its rate and this server's.
//!
//! ```text
//! null-server --listen 127.0.0.1:8443 --cert server.pem --key server-key.pem \
//!             [--client-ca ca.pem] [--no-resumption]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::crypto::CryptoProvider;
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

type Error = Box<dyn std::error::Error + Send + Sync>;

const BODY: &[u8] = br#"{"status":"UP"}"#;
const USAGE: &str = "usage: null-server --listen ADDR --cert PEM --key PEM [--client-ca PEM] \
                     [--no-resumption]";

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("null-server: {e}");
        let mut source = e.source();
        while let Some(s) = source {
            eprintln!("  caused by: {s}");
            source = s.source();
        }
        std::process::exit(1);
    }
}

/// Parses the arguments, builds the TLS configuration, then accepts until killed.
async fn run() -> Result<(), Error> {
    let args = Args::parse(std::env::args().skip(1))?;
    let acceptor = TlsAcceptor::from(server_config(&args)?);
    let listener = TcpListener::bind(args.listen).await?;
    eprintln!(
        "null-server: listening on {}, provider {}",
        listener.local_addr()?,
        PROVIDER
    );
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                eprintln!("null-server: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service_fn(answer))
                .await;
        });
    }
}

/// Every request: `200 {"status":"UP"}`.
async fn answer(_request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// The command line.
struct Args {
    listen: SocketAddr,
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    resumption: bool,
}

impl Args {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, Error> {
        let (mut listen, mut cert, mut key, mut client_ca) = (None, None, None, None);
        let mut resumption = true;
        while let Some(arg) = args.next() {
            let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--listen" => listen = Some(value()?.parse()?),
                "--cert" => cert = Some(PathBuf::from(value()?)),
                "--key" => key = Some(PathBuf::from(value()?)),
                "--client-ca" => client_ca = Some(PathBuf::from(value()?)),
                "--no-resumption" => resumption = false,
                _ => return Err(format!("unknown argument {arg}\n{USAGE}").into()),
            }
        }
        Ok(Self {
            listen: listen.ok_or(USAGE)?,
            cert: cert.ok_or(USAGE)?,
            key: key.ok_or(USAGE)?,
            client_ca,
            resumption,
        })
    }
}

/// TLS 1.3 and 1.2, ALPN `http/1.1`, a client certificate requested but optional (and checked
/// against `--client-ca` when presented), resumption as rustls's defaults unless
/// `--no-resumption`: sessionauth's settings.
fn server_config(args: &Args) -> Result<Arc<ServerConfig>, Error> {
    let provider = provider();
    let chain = CertificateDer::pem_file_iter(&args.cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&args.key)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match &args.client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for ca in CertificateDer::pem_file_iter(path)? {
                roots.add(ca?)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !args.resumption {
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(Arc::new(config))
}

#[cfg(feature = "aws-lc-rs")]
const PROVIDER: &str = "aws-lc-rs";
#[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
const PROVIDER: &str = "ring";

/// The crypto provider, explicitly: aws-lc-rs with the `aws-lc-rs` feature (the default), else
/// *ring*.
#[cfg(feature = "aws-lc-rs")]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The crypto provider, explicitly: aws-lc-rs with the `aws-lc-rs` feature (the default), else
/// *ring*.
#[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

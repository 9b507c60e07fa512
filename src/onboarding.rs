//! What `sessionauth certs issue` tells the user once a certificate is made: whether the
//! directory the server reads knows the CN (a warning when it does not, or cannot use it), and
//! the next steps: the directory entry to add, the reload, the first authenticate with curl.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::config::{Config, DirectorySource};
use crate::directory::{AccountType, Directory, Principal};
use crate::pki::ClientFiles;

/// The advice for one issued certificate.
#[derive(Debug)]
pub struct Advice {
    /// One line for stderr when the server would refuse the CN (or the directory could not be
    /// read); `None` when the CN is an active service user or app.
    pub warning: Option<String>,
    /// The next steps, several lines, for stdout.
    pub steps: String,
}

/// What the directory says about a CN.
enum Standing {
    /// An active service user or app: its certificate works at once.
    Ready(&'static str),
    /// In the directory, but refused; the reason.
    Refused(String),
    /// Not in the directory.
    Unknown,
}

/// The advice after issuing a certificate for `cn` into the folder `certs`, for a server
/// running on `config`, whose directory is loaded here as `serve` loads it. `p12_password` is
/// the keystore password when it may be shown (the default one), else `None`.
pub fn after_issue(config: &Config, cn: &str, certs: &Path, p12_password: Option<&str>) -> Advice {
    let (file, origin) = match &config.directory {
        DirectorySource::File(path) => (Some(path.as_path()), format!("{}", path.display())),
        DirectorySource::Embedded => (None, "(embedded sample)".to_owned()),
    };
    let directory = match crate::trust::load_directory(config) {
        Ok((directory, _)) => directory,
        Err(e) => {
            let warning = format!(
                "cannot check {cn:?} against the directory {origin}: {}",
                crate::chain::Chain(&e)
            );
            return Advice {
                warning: Some(warning),
                steps: steps(config, cn, certs, p12_password, None, None, false),
            };
        }
    };
    let standing = standing(&directory, cn);
    let warning = match (&standing, file) {
        (Standing::Ready(_), _) => None,
        (Standing::Refused(why), _) => Some(format!(
            "{cn:?} is in the directory {origin} but {why}: authenticate will answer 403"
        )),
        (Standing::Unknown, Some(path)) => Some(format!(
            "{cn:?} is not a service user or app in the directory {}: authenticate will answer \
             403 until it is added (see the next steps)",
            path.display()
        )),
        (Standing::Unknown, None) => Some(format!(
            "{cn:?} is not in the directory: no directory is configured (--directory, \
             SESSIONAUTH_DIRECTORY or `directory` in --config), so the server uses the embedded \
             sample, which has no {cn:?}; authenticate will answer 403 until it is added (see \
             the next steps)"
        )),
    };
    Advice {
        warning,
        steps: steps(
            config,
            cn,
            certs,
            p12_password,
            Some(&directory),
            Some(&standing),
            file.is_some(),
        ),
    }
}

fn standing(directory: &Directory, cn: &str) -> Standing {
    match directory.principal(cn) {
        Some(Principal::User(user)) if !user.is_service_user() => Standing::Refused(format!(
            "is a {} account: only accountType = \"SYSTEM\" (a service user) authenticates by \
             certificate",
            match user.account_type {
                AccountType::Sdl => "SDL",
                AccountType::Normal | AccountType::System => "NORMAL",
            }
        )),
        Some(Principal::User(user)) if !user.active => {
            Standing::Refused("inactive (active = false)".to_owned())
        }
        Some(Principal::User(_)) => Standing::Ready("service user"),
        Some(Principal::App(app)) if !app.active => {
            Standing::Refused("inactive (active = false)".to_owned())
        }
        Some(Principal::App(_)) => Standing::Ready("app"),
        None => Standing::Unknown,
    }
}

/// The numbered next steps. `directory` and `standing` are `None` when the directory could not
/// be read; `has_file` says whether the directory is a file (else the embedded sample).
fn steps(
    config: &Config,
    cn: &str,
    certs: &Path,
    p12_password: Option<&str>,
    directory: Option<&Directory>,
    standing: Option<&Standing>,
    has_file: bool,
) -> String {
    let certs = absolute(certs);
    let files = ClientFiles::new(&certs, cn);
    let ca = certs.join(crate::pki::CA_CERT);
    let mut out = String::new();
    let password = p12_password.map_or_else(
        || "the one given (--p12-password or SESSIONAUTH_P12_PASSWORD)".to_owned(),
        |p| format!("{p:?}"),
    );
    let _ = writeln!(
        out,
        "PKCS#12 keystore {} (certificate, key and CA; password {password}), truststore {}",
        files.p12.display(),
        certs.join("truststore.p12").display()
    );
    let _ = writeln!(out, "Next steps:");
    let mut n = 0;
    let mut step = |out: &mut String, text: &str| {
        n += 1;
        let _ = writeln!(out, "  {n}. {text}");
    };
    let is_app = matches!(standing, Some(Standing::Ready("app")));
    match standing {
        Some(Standing::Ready(kind)) => step(
            &mut out,
            &format!("{cn:?} is an active {kind} in the directory: nothing to add or reload."),
        ),
        Some(Standing::Refused(_)) => {
            step(
                &mut out,
                &format!(
                    "Fix {cn:?}'s entry in the directory ({}): accountType = \"SYSTEM\" for a \
                     user, active = true.",
                    directory_name(config)
                ),
            );
            step(&mut out, &reload_text(has_file));
        }
        Some(Standing::Unknown) | None => {
            let id = directory.map_or(1, next_user_id);
            let snippet = format!(
                "       [[user]]\n       id = {id}\n       username = \"{cn}\"\n       \
                 accountType = \"SYSTEM\"\n       active = true\n\n     or, for an app:\n       \
                 [[app]]\n       appId = \"{cn}\"\n       name = \"{cn}\"\n       active = true"
            );
            let target = if has_file {
                format!("Add {cn:?} to the directory {}:", directory_name(config))
            } else {
                format!(
                    "Copy examples/directory.toml (the embedded sample) to a file of your own, \
                     for example directory.toml, and add {cn:?} to it:"
                )
            };
            step(&mut out, &format!("{target}\n{snippet}"));
            step(&mut out, &reload_text(has_file));
        }
    }
    let port = config.listen.port();
    let path = if is_app {
        "/sessionauth/v1/app/authenticate"
    } else {
        "/sessionauth/v1/authenticate"
    };
    let url = format!("https://localhost:{port}{path}");
    let which = match standing {
        Some(Standing::Ready(_)) => "",
        _ => " (an app: POST /sessionauth/v1/app/authenticate)",
    };
    let mut curl = format!(
        "Authenticate{which}:\n       curl --cacert {ca} --cert {cert} --key {key} -X POST \
         {url}",
        ca = ca.display(),
        cert = files.cert.display(),
        key = files.key.display(),
    );
    if let Some(p) = p12_password {
        let _ = write!(
            curl,
            "\n     or with the keystore:\n       curl --cacert {ca} --cert-type P12 --cert \
             {p12}:{p} -X POST {url}",
            ca = ca.display(),
            p12 = files.p12.display(),
        );
    }
    let _ = write!(
        curl,
        "\n     {{\"name\":\"sessionToken\",\"token\":\"…\"}} is the answer; 403 means the \
         directory (or the server's copy of it) does not have {cn:?} as an active {}",
        if is_app { "app" } else { "service user or app" }
    );
    step(&mut out, &curl);
    out
}

/// The step that makes a running server read the changed directory.
fn reload_text(has_file: bool) -> String {
    if has_file {
        "Reload the running server: kill -HUP <pid> (it re-reads the directory; or restart it)"
            .to_owned()
    } else {
        "Restart the server with --directory directory.toml (or `directory = \"directory.toml\"` \
         in its configuration): a new directory file takes a restart, later edits to it only \
         kill -HUP <pid>"
            .to_owned()
    }
}

fn directory_name(config: &Config) -> String {
    match &config.directory {
        DirectorySource::File(path) => path.display().to_string(),
        DirectorySource::Embedded => "the embedded sample".to_owned(),
    }
}

/// One more than the largest user id, for the snippet.
fn next_user_id(directory: &Directory) -> i64 {
    directory
        .users()
        .map(|u| u.id.0)
        .max()
        .map_or(1, |id| id.saturating_add(1))
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_owned())
}

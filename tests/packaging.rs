//! Packaging: shell completions and man pages generated from the command line, and the
//! examples (systemd unit, Containerfile) naming only flags and environment variables the binary
//! has.

// Test code: a failed unwrap is a test failure with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;

use support::node::{self, Run};

/// The subcommands every completion script and the man pages must know.
const SUBCOMMANDS: [&str; 6] = ["serve", "check", "certs", "completions", "man", "issue"];

async fn sessionauth(args: &[&str]) -> Run {
    let cwd = tempfile::tempdir().unwrap();
    node::run(args, cwd.path()).await
}

#[tokio::test]
async fn completions_name_every_subcommand_and_flag() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let run = sessionauth(&["completions", shell]).await;
        assert!(run.status.success(), "{shell}: {}", run.stderr);
        for word in SUBCOMMANDS
            .iter()
            .chain(&["listen", "data-dir", "log-format"])
        {
            assert!(run.stdout.contains(word), "{shell} completion lacks {word}");
        }
    }
    let run = sessionauth(&["completions", "tcsh"]).await;
    assert!(!run.status.success(), "an unknown shell is refused");
    assert!(run.stderr.contains("tcsh"), "{}", run.stderr);
}

#[tokio::test]
async fn man_page_on_stdout_and_one_page_per_subcommand() {
    let run = sessionauth(&["man"]).await;
    assert!(run.status.success(), "{}", run.stderr);
    assert!(run.stdout.starts_with(".ie") || run.stdout.contains(".TH sessionauth 1"));
    assert!(run.stdout.contains(".TH sessionauth 1"), "{}", run.stdout);

    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("man1");
    let run = sessionauth(&["man", "--dir", dir.to_str().unwrap()]).await;
    assert!(run.status.success(), "{}", run.stderr);
    for page in [
        "sessionauth.1",
        "sessionauth-serve.1",
        "sessionauth-check.1",
        "sessionauth-certs-issue.1",
    ] {
        let text = std::fs::read_to_string(dir.join(page))
            .unwrap_or_else(|e| panic!("{page} was not written: {e}"));
        assert!(text.contains(".TH"), "{page} is not a man page");
    }
    let serve = std::fs::read_to_string(dir.join("sessionauth-serve.1")).unwrap();
    assert!(serve.contains("listen") && serve.contains("SESSIONAUTH_LISTEN"));
}

/// The `--flags` and `SESSIONAUTH_*` variables a text names.
fn named(text: &str) -> (Vec<String>, Vec<String>) {
    let words = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .filter(|w| !w.is_empty());
    let mut flags = Vec::new();
    let mut vars = Vec::new();
    for w in words {
        if let Some(flag) = w.strip_prefix("--") {
            if !flag.is_empty() && !flag.starts_with('-') {
                flags.push(w.to_owned());
            }
        } else if w.starts_with("SESSIONAUTH_") {
            vars.push(w.to_owned());
        }
    }
    (flags, vars)
}

/// Every sessionauth flag and environment variable the systemd unit and the Containerfile use
/// is one `sessionauth serve` has (a renamed flag would otherwise leave them broken unseen).
#[tokio::test]
async fn examples_name_only_flags_and_variables_that_exist() {
    let help = sessionauth(&["serve", "--help"]).await;
    assert!(help.status.success());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in ["examples/sessionauth.service", "examples/Containerfile"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        // Only the sessionauth command lines: other tools' flags (cargo, useradd, podman) are
        // theirs.
        let lines: String = text
            .lines()
            .filter(|l| l.contains("sessionauth serve") || l.contains("sessionauth check"))
            .chain(text.lines().filter(|l| l.contains("SESSIONAUTH_")))
            .collect::<Vec<_>>()
            .join("\n");
        let (flags, vars) = named(&lines);
        assert!(
            !flags.is_empty() || !vars.is_empty(),
            "{file}: nothing checked"
        );
        for flag in flags {
            assert!(
                help.stdout.contains(&flag),
                "{file}: sessionauth serve has no {flag}"
            );
        }
        for var in vars {
            assert!(
                help.stdout.contains(&var),
                "{file}: sessionauth serve reads no {var}"
            );
        }
    }
    let unit = std::fs::read_to_string(root.join("examples/sessionauth.service")).unwrap();
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
}

//! An error with its sources, for log lines and the command line: `outer: inner: root`.
//!
//! Every error type in the crate shows its source either in its own `Display` or through
//! `source()`, never both, so walking the chain repeats nothing.

use std::error::Error;
use std::fmt;

/// Displays an error followed by each of its sources, joined by `: `.
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    /// Each source appears once, in order.
    #[test]
    fn walks_the_sources() {
        let e = Outer(std::io::Error::other("root cause"));
        assert_eq!(Chain(&e).to_string(), "outer: root cause");
    }
}

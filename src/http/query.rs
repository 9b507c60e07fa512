//! Query-string parameters: found by name, given at most once, `+` and `%XX` decoded.

use super::{percent_decode, ApiError};

/// The decoded value of parameter `name`, if given; 400 when it is given twice or its
/// percent-encoding is malformed.
pub(super) fn param(query: Option<&str>, name: &str) -> Result<Option<String>, ApiError> {
    let mut found = None;
    for pair in query.unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != name {
            continue;
        }
        if found.is_some() {
            return Err(ApiError::BadRequest(format!(
                "The query parameter {name} is given twice"
            )));
        }
        found = Some(percent_decode(&value.replace('+', " "))?);
    }
    Ok(found)
}

/// Parameter `name` as a whole number from 0 to `max`, or `default` when absent; 400 otherwise.
pub(super) fn number(
    query: Option<&str>,
    name: &str,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match param(query, name)? {
        None => Ok(default),
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| {
                ApiError::BadRequest(format!("{name} must be a whole number from 0 to {max}"))
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parameters are found by name and decoded; twice is refused; numbers are bounded.
    #[test]
    fn parameters() {
        assert_eq!(param(None, "a").unwrap(), None);
        assert_eq!(
            param(Some("a=x+y%21&b=2"), "a").unwrap().as_deref(),
            Some("x y!")
        );
        assert!(param(Some("a=1&a=2"), "a").is_err());
        assert!(param(Some("a=%zz"), "a").is_err());
        assert_eq!(number(Some("limit=5"), "limit", 100, 1000).unwrap(), 5);
        assert_eq!(number(None, "limit", 100, 1000).unwrap(), 100);
        assert!(number(Some("limit=1001"), "limit", 100, 1000).is_err());
        assert!(number(Some("limit=-1"), "limit", 100, 1000).is_err());
    }
}

//! Parsing of the public API's query parameters, shared by every service
//! that accepts them, so every service rejects bad input the same way.

use std::collections::HashMap;

use crate::api::{ItemNumber, validate_request_id};
use crate::error::ApiError;

/// The longest topic accepted; the original's topics are under 30 characters.
pub const MAX_TOPIC_LEN: usize = 128;

/// Query parameters as decoded by axum's `Query<HashMap<..>>` (which already
/// turns `+` and `%20` into spaces).
pub type QueryParams = HashMap<String, String>;

/// The `item_number` parameter: present, a non-negative integer.
pub fn item_number(params: &QueryParams) -> Result<ItemNumber, ApiError> {
    let raw = params
        .get("item_number")
        .ok_or_else(|| ApiError::bad_request("item_number is missing"))?;
    parse_item_number(raw)
}

/// Parses an item number given as text.
pub fn parse_item_number(raw: &str) -> Result<ItemNumber, ApiError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(ApiError::bad_request("item_number is empty"));
    }
    trimmed.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "item_number must be a non-negative integer, not {:?}",
            truncate(trimmed)
        ))
    })
}

/// The `topic` parameter: present, non-empty, short, and made only of
/// letters, digits, spaces and `-_.,'` (so `#`, `&` and control characters,
/// which no topic has, are refused instead of silently mangled).
pub fn topic(params: &QueryParams) -> Result<String, ApiError> {
    let raw = params
        .get("topic")
        .ok_or_else(|| ApiError::bad_request("topic is missing"))?;
    let topic = raw.trim();
    if topic.is_empty() {
        return Err(ApiError::bad_request("topic is empty"));
    }
    if topic.chars().count() > MAX_TOPIC_LEN {
        return Err(ApiError::bad_request(format!(
            "topic is longer than {MAX_TOPIC_LEN} characters"
        )));
    }
    let allowed = |c: char| c.is_alphanumeric() || " -_.,'".contains(c);
    if let Some(bad) = topic.chars().find(|&c| !allowed(c)) {
        return Err(ApiError::bad_request(format!(
            "topic may not contain {bad:?}"
        )));
    }
    Ok(topic.to_owned())
}

/// The optional `request_id` parameter of a buy.
pub fn request_id(params: &QueryParams) -> Result<Option<String>, ApiError> {
    match params.get("request_id") {
        None => Ok(None),
        Some(id) => {
            validate_request_id(id).map_err(ApiError::BadRequest)?;
            Ok(Some(id.clone()))
        }
    }
}

/// How fresh a read must be: the `consistency` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Served by the cache or any in-sync member: fast, and possibly a
    /// little behind the primary (never older than what the same reader
    /// saw through the cache's versions, never an unacknowledged write).
    Default,
    /// Served by the primary once it has confirmed it still leads: it
    /// reflects every write acknowledged before the read began.
    Linearizable,
}

/// The optional `consistency` parameter: absent, `default` or
/// `linearizable`; anything else is refused, not silently downgraded.
pub fn consistency(params: &QueryParams) -> Result<Consistency, ApiError> {
    match params.get("consistency").map(|raw| raw.trim()) {
        None | Some("default") => Ok(Consistency::Default),
        Some("linearizable") => Ok(Consistency::Linearizable),
        Some(other) => Err(ApiError::bad_request(format!(
            "consistency must be \"default\" or \"linearizable\", not {:?}",
            truncate(other)
        ))),
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> QueryParams {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn item_numbers_must_be_non_negative_integers() {
        assert_eq!(
            item_number(&params(&[("item_number", "2")])).expect("ok"),
            2
        );
        assert_eq!(
            item_number(&params(&[("item_number", " 10 ")])).expect("ok"),
            10
        );
        for bad in ["", "-1", "abc", "1.5", "99999999999999999999999"] {
            assert!(
                item_number(&params(&[("item_number", bad)])).is_err(),
                "{bad:?}"
            );
        }
        assert!(item_number(&params(&[])).is_err());
    }

    #[test]
    fn consistency_is_default_or_linearizable_and_nothing_else() {
        assert_eq!(consistency(&params(&[])).expect("ok"), Consistency::Default);
        assert_eq!(
            consistency(&params(&[("consistency", "default")])).expect("ok"),
            Consistency::Default
        );
        assert_eq!(
            consistency(&params(&[("consistency", "linearizable")])).expect("ok"),
            Consistency::Linearizable
        );
        for bad in ["", "strong", "LINEARIZABLE", "eventual"] {
            assert!(
                consistency(&params(&[("consistency", bad)])).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn topics_are_checked() {
        let ok = topic(&params(&[("topic", "distributed systems")])).expect("ok");
        assert_eq!(ok, "distributed systems");
        for bad in [
            "",
            "  ",
            "a#b",
            "a&b",
            "a\nb",
            &"x".repeat(MAX_TOPIC_LEN + 1),
        ] {
            assert!(topic(&params(&[("topic", bad)])).is_err(), "{bad:?}");
        }
        assert!(topic(&params(&[])).is_err());
    }

    #[test]
    fn request_ids_are_optional_but_checked() {
        assert_eq!(request_id(&params(&[])).expect("ok"), None);
        assert!(request_id(&params(&[("request_id", "a b")])).is_err());
    }
}

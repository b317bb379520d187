//! serde for a `u64` that may exceed 2^53: written as a decimal string, so that a JSON
//! parser that reads numbers as doubles (JavaScript's) keeps it exact. Read from a string,
//! or from a number for clients that send one.
//!
//! ```
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Tx { #[serde(with = "ordo_api::u64_string")] nonce: u64 }
//!
//! let json = serde_json::to_string(&Tx { nonce: u64::MAX }).unwrap();
//! assert_eq!(json, r#"{"nonce":"18446744073709551615"}"#);
//! assert_eq!(serde_json::from_str::<Tx>(r#"{"nonce": 7}"#).unwrap().nonce, 7);
//! ```

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

/// Writes `value` as a decimal string.
///
/// # Errors
/// As the serializer's.
pub fn serialize<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

/// Reads a decimal string (or a non-negative integer).
///
/// # Errors
/// When the value is neither, or out of range.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(U64Visitor)
}

struct U64Visitor;

impl Visitor<'_> for U64Visitor {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an unsigned 64-bit integer as a decimal string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        v.parse()
            .map_err(|_| E::custom(format!("'{v}' is not an unsigned 64-bit decimal integer")))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative")))
    }
}

#[cfg(test)]
mod tests {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct N(#[serde(with = "super")] u64);

    #[test]
    fn round_trips_every_magnitude_and_refuses_nonsense() {
        for v in [0, 9, 10, 2u64.pow(53) + 1, u64::MAX] {
            let text = serde_json::to_string(&N(v)).expect("encodes");
            assert_eq!(text, format!("\"{v}\""));
            assert_eq!(serde_json::from_str::<N>(&text).expect("decodes"), N(v));
        }
        assert_eq!(serde_json::from_str::<N>("42").expect("a number"), N(42));
        for bad in [
            "\"-1\"",
            "-1",
            "\"1e3\"",
            "\"\"",
            "1.5",
            "\"18446744073709551616\"",
        ] {
            assert!(serde_json::from_str::<N>(bad).is_err(), "{bad}");
        }
    }
}

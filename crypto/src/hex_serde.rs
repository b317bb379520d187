//! Hex text form shared by the fixed-size byte types (keys, hashes, signatures):
//! `Display`/`FromStr` and serde as lowercase hex strings, so TOML and JSON stay readable.

/// Implements `Display`, `Debug`, `FromStr` and serde (as hex) for a newtype over `[u8; N]`.
macro_rules! hex_bytes_type {
    ($ty:ident, $len:expr, $what:expr) => {
        impl $ty {
            /// Writes the lowercase hex form into `buf` (no allocation) and returns it.
            fn hex_in<'b>(&self, buf: &'b mut [u8; 2 * $len]) -> &'b str {
                hex::encode_to_slice(self.0, buf).expect("the buffer is twice the length");
                std::str::from_utf8(buf).expect("hex digits are ASCII")
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.hex_in(&mut [0; 2 * $len]))
            }
        }

        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({})", stringify!($ty), hex::encode(self.0))
            }
        }

        impl std::str::FromStr for $ty {
            type Err = $crate::keys::KeyError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let mut out = [0u8; $len];
                hex::decode_to_slice(s.trim(), &mut out).map_err(|e| {
                    $crate::keys::KeyError::BadHex {
                        what: $what,
                        expected_len: $len,
                        reason: e.to_string(),
                    }
                })?;
                Ok(Self(out))
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.hex_in(&mut [0; 2 * $len]))
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

pub(crate) use hex_bytes_type;

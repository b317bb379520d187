//! bincode 2 for internal values: what is never hashed or signed.

use crate::FRAME_BYTES_MAX;

/// Encodes an internal (never hashed) value with bincode.
///
/// # Errors
/// When `value`'s `Serialize` fails (ordo's types never do).
pub fn encode_internal<T: serde::Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(std::io::Error::other)
}

/// As [`encode_internal`], into a buffer allocated for about `capacity` bytes (so that
/// encoding a block does not copy it again each time the buffer grows).
///
/// # Errors
/// As [`encode_internal`].
pub fn encode_internal_sized<T: serde::Serialize>(
    value: &T,
    capacity: usize,
) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(capacity);
    bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard())
        .map_err(std::io::Error::other)?;
    Ok(out)
}

/// Decodes an internal value written by [`encode_internal`], rejecting trailing bytes and
/// anything claiming more than a frame's worth of memory.
///
/// # Errors
/// [`std::io::ErrorKind::InvalidData`] naming `what` and the fault.
pub fn decode_internal<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
) -> std::io::Result<T> {
    let config = bincode::config::standard().with_limit::<{ FRAME_BYTES_MAX }>();
    let (value, read) = bincode::serde::decode_from_slice(bytes, config).map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{what}: {e}"))
    })?;
    if read != bytes.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{what}: trailing bytes"),
        ));
    }
    Ok(value)
}

/// One transaction's canonical bytes in an internal message (forwards to the leader, its
/// announcements), as a byte string. serde carries a plain `Vec<u8>` one byte at a time;
/// this is copied in one piece. The encoding is the same bytes either way: a length, then
/// the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxBytes(pub Vec<u8>);

impl serde::Serialize for TxBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for TxBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TxBytes, D::Error> {
        d.deserialize_byte_buf(TxBytesVisitor)
    }
}

struct TxBytesVisitor;

impl serde::de::Visitor<'_> for TxBytesVisitor {
    type Value = TxBytes;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a transaction's bytes")
    }
    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<TxBytes, E> {
        Ok(TxBytes(v))
    }
    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<TxBytes, E> {
        Ok(TxBytes(v.to_vec()))
    }
}

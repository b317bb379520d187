//! The internal wire: how the validators' messages (Raft RPCs, forwarded and announced
//! transactions, block fetches) and the consensus state on disk are encoded.
//!
//! Internal values are never hashed or signed, so they use bincode 2 (standard
//! configuration: little-endian varints, enum variants as their position). What is hashed
//! or signed (transactions, blocks) travels inside them as its canonical borsh bytes. The
//! bytes of every message, variant by variant, are pinned by the tests in `wire/tests.rs`:
//! reordering an enum's variants or a struct's fields changes the wire, and those tests say
//! so. A change to any of them is a new [`PROTOCOL_VERSION`].

/// The version of the validators' protocol: part of the libp2p protocol id
/// ([`crate::network::PROTOCOL`]) and of `/v1/status`. Validators of different versions
/// refuse each other's streams.
pub const PROTOCOL_VERSION: u32 = 1;

/// Encodes an internal (never hashed) value with bincode.
pub(crate) fn encode_internal<T: serde::Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(std::io::Error::other)
}

/// As [`encode_internal`], into a buffer allocated for about `capacity` bytes (so that
/// encoding a block does not copy it again each time the buffer grows).
pub(crate) fn encode_internal_sized<T: serde::Serialize>(
    value: &T,
    capacity: usize,
) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(capacity);
    bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard())
        .map_err(std::io::Error::other)?;
    Ok(out)
}

/// Decodes an internal value written by [`encode_internal`], rejecting trailing bytes and
/// anything claiming more than a network frame's worth of memory.
pub(crate) fn decode_internal<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
) -> std::io::Result<T> {
    let config = bincode::config::standard().with_limit::<{ crate::network::FRAME_BYTES_MAX }>();
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
pub(crate) struct TxBytes(pub Vec<u8>);

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

#[cfg(test)]
mod tests;

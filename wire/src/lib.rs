//! ordo-wire: what validators send each other, and the Raft state they keep on disk.
//!
//! A message travels in a [`Frame`]: a one-byte [`Kind`], a `u32` little-endian length, and
//! that many bytes, at most [`FRAME_BYTES_MAX`]. A frame's body is an internal value
//! encoded with bincode 2 ([`encode_internal`], [`decode_internal`]: standard
//! configuration, little-endian varints, an enum variant as its position). Internal values
//! are never hashed or signed; what is (transactions, blocks) travels inside them as its
//! canonical borsh bytes and is decoded by `ordo_ledger`, which refuses anything
//! non-canonical.
//!
//! | kind           | request                    | answer                          |
//! |----------------|----------------------------|---------------------------------|
//! | `Raft`         | [`RaftRequest`]            | [`RaftResponse`]                |
//! | `Transactions` | `Vec<`[`TxBytes`]`>`       | `Vec<`[`Verdict`]`>`            |
//! | `Blocks`       | [`BlocksRequest`]          | `Vec<`[`BlockEntry`]`>`         |
//! | `Announce`     | `Vec<`[`TxBytes`]`>`       | an empty body                   |
//! | `Error`        | —                          | UTF-8 text: why                 |
//!
//! The bytes of every message and of the Raft state on disk are pinned by this crate's
//! tests: reordering an enum's variants or a struct's fields changes them, and the tests
//! say so. A change to what crosses the network is a new [`PROTOCOL_VERSION`]; a change to
//! what is on disk, a new ledger `FORMAT_VERSION`.
//!
//! Nothing here touches a socket or a disk: decoding is a pure function of bytes, which is
//! what the fuzz targets (`fuzz/`) drive.
//!
//! ```
//! use ordo_wire::{BlocksRequest, Frame, Kind, decode_internal, encode_internal};
//!
//! let body = encode_internal(&BlocksRequest { from: 10, max: 256 }).unwrap();
//! let frame = Frame { kind: Kind::Blocks, body };
//! let back = Frame::decode(&frame.encode()).unwrap();
//! let request: BlocksRequest = decode_internal(&back.body, "block request").unwrap();
//! assert_eq!((request.from, request.max), (10, 256));
//! ```

mod codec;
mod frame;
mod messages;
mod raft;
mod state;

pub use codec::{TxBytes, decode_internal, encode_internal, encode_internal_sized};
pub use frame::{FRAME_BYTES_MAX, FRAME_HEAD_BYTES, Frame, Kind};
pub use messages::{
    ATTESTATIONS_PER_FRAME_MAX, AttestReply, BlocksRequest, ClockReading, FORWARD_TXS_MAX, Verdict,
};
pub use raft::{ApplyOutcome, BlockEntry, RaftRequest, RaftResponse, TypeConfig, ValidatorNode};
pub use state::{Applied, StoredSnapshot, decode_snapshot_data, encode_snapshot_data};

/// The version of the validators' protocol: part of the libp2p protocol id and of
/// `/v1/status`. Validators of different versions refuse each other's streams.
pub const PROTOCOL_VERSION: u32 = 3;

#[cfg(test)]
mod tests;

//! Frames: a one-byte kind, a `u32` little-endian length, and that many bytes. A length
//! over the limit is refused before anything is allocated for it.

use std::io;

/// Largest frame body: a maximal block plus room for its envelope.
pub const FRAME_BYTES_MAX: usize = 40 << 20;
const _: () = assert!((ordo_ledger::BLOCK_BYTES_LIMIT as usize) + (1 << 20) < FRAME_BYTES_MAX);
const _: () = assert!(FRAME_BYTES_MAX <= u32::MAX as usize);

/// Bytes before a frame's body: its kind and its length.
pub const FRAME_HEAD_BYTES: usize = 5;

/// What a frame's body is; each kind has its own encoding (the crate's table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Raft RPCs.
    Raft = 1,
    /// Transactions forwarded to the leader.
    Transactions = 2,
    /// Block fetches by a node catching up.
    Blocks = 3,
    /// Transactions the leader admitted, sent to followers to check ahead of their block.
    Announce = 4,
    /// A validator's attestations of blocks it applied, sent to the leader.
    Attest = 5,
    /// A clock reading: the asker sends an empty body and times the round trip; the
    /// answer is a `ClockReading`.
    Clock = 6,
    /// A request the peer could not serve.
    Error = 255,
}

impl Kind {
    /// The kind a frame's first byte names.
    pub fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Raft),
            2 => Some(Kind::Transactions),
            3 => Some(Kind::Blocks),
            4 => Some(Kind::Announce),
            5 => Some(Kind::Attest),
            6 => Some(Kind::Clock),
            255 => Some(Kind::Error),
            _ => None,
        }
    }
}

/// One request or response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// What the body is.
    pub kind: Kind,
    /// The body, encoded as its kind says.
    pub body: Vec<u8>,
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

impl Frame {
    /// The kind and body length a frame's head announces.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidData`] for an unknown kind or a length over
    /// [`FRAME_BYTES_MAX`].
    pub fn parse_head(head: &[u8; FRAME_HEAD_BYTES]) -> io::Result<(Kind, usize)> {
        let kind = Kind::from_byte(head[0])
            .ok_or_else(|| invalid(format!("unknown frame kind {}", head[0])))?;
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > FRAME_BYTES_MAX {
            return Err(invalid(format!(
                "frame of {len} bytes exceeds the {FRAME_BYTES_MAX}-byte limit"
            )));
        }
        Ok((kind, len))
    }

    /// This frame's head.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] when the body is over [`FRAME_BYTES_MAX`].
    pub fn head(&self) -> io::Result<[u8; FRAME_HEAD_BYTES]> {
        if self.body.len() > FRAME_BYTES_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame exceeds the size limit",
            ));
        }
        let mut head = [0u8; FRAME_HEAD_BYTES];
        head[0] = self.kind as u8;
        head[1..].copy_from_slice(&(self.body.len() as u32).to_le_bytes());
        Ok(head)
    }

    /// The whole frame, head and body.
    ///
    /// # Panics
    /// When the body is over [`FRAME_BYTES_MAX`] (a frame built by the node never is).
    pub fn encode(&self) -> Vec<u8> {
        let head = self.head().expect("a frame within the size limit");
        [&head[..], &self.body].concat()
    }

    /// A whole frame from `bytes`, which must hold exactly one.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidData`] for a bad head, or a body shorter or longer than
    /// the head says.
    pub fn decode(bytes: &[u8]) -> io::Result<Frame> {
        let Some((head, body)) = bytes.split_first_chunk::<FRAME_HEAD_BYTES>() else {
            return Err(invalid(format!(
                "a frame of {} bytes has no head",
                bytes.len()
            )));
        };
        let (kind, len) = Frame::parse_head(head)?;
        if body.len() != len {
            return Err(invalid(format!(
                "the frame's head says {len} bytes, {} follow",
                body.len()
            )));
        }
        Ok(Frame {
            kind,
            body: body.to_vec(),
        })
    }
}

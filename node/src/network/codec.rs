//! Wire framing for ordo's request/response protocol: a one-byte kind, then a `u32`
//! little-endian length and that many bytes. Lengths over the limit are refused before any
//! allocation.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

use super::{FRAME_BYTES_MAX, Kind};

/// The protocol name negotiated on each stream.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/ordo/1");

/// One request or response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// What the body is.
    pub kind: Kind,
    /// The body, encoded by the layer that owns `kind`.
    pub body: Vec<u8>,
}

/// The codec: frames, bounded by [`FRAME_BYTES_MAX`].
#[derive(Clone, Default)]
pub struct FrameCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Frame> {
    let mut head = [0u8; 5];
    io.read_exact(&mut head).await?;
    let kind = Kind::from_byte(head[0]).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown frame kind {}", head[0]),
        )
    })?;
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > FRAME_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the {FRAME_BYTES_MAX}-byte limit"),
        ));
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    Ok(Frame { kind, body })
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, frame: Frame) -> io::Result<()> {
    if frame.body.len() > FRAME_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "frame exceeds the size limit",
        ));
    }
    let mut head = [0u8; 5];
    head[0] = frame.kind as u8;
    head[1..].copy_from_slice(&(frame.body.len() as u32).to_le_bytes());
    io.write_all(&head).await?;
    io.write_all(&frame.body).await?;
    io.close().await
}

impl libp2p::request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Frame;
    type Response = Frame;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Frame>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Frame>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Frame,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Frame,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, res).await
    }
}

//! ordo's request/response protocol on libp2p streams: one [`Frame`] each way
//! (`ordo_wire`'s framing; a length over the limit is refused before any allocation).

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

use ordo_wire::{FRAME_HEAD_BYTES, Frame};

/// The protocol name negotiated on each stream.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/ordo/3");

/// The codec: frames, bounded by [`ordo_wire::FRAME_BYTES_MAX`].
#[derive(Clone, Default)]
pub struct FrameCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Frame> {
    let mut head = [0u8; FRAME_HEAD_BYTES];
    io.read_exact(&mut head).await?;
    let (kind, len) = Frame::parse_head(&head)?;
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    Ok(Frame { kind, body })
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, frame: Frame) -> io::Result<()> {
    io.write_all(&frame.head()?).await?;
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

//! An accepted unix-socket connection whose incoming bytes pass through [`AuthorityNormalizer`].

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::UnixStream,
};
use tonic::transport::server::Connected;

use crate::authority::AuthorityNormalizer;

const READ_CHUNK: usize = 16 * 1024;

/// A server-side connection that hands tonic the client's bytes with every `:authority`
/// normalised (see [`crate::authority`]); writes go straight to the socket.
pub struct NormalizedStream<S = UnixStream> {
    inner: S,
    normalizer: AuthorityNormalizer,
    chunk: Box<[u8]>,
    eof: bool,
}

impl<S> NormalizedStream<S> {
    /// Wraps an accepted connection.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            normalizer: AuthorityNormalizer::new(),
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
            eof: false,
        }
    }
}

impl<S> Drop for NormalizedStream<S> {
    fn drop(&mut self) {
        let rewritten = self.normalizer.rewritten();
        if rewritten > 0 {
            tracing::debug!(
                rewritten,
                "kubelet connection closed; its unusable `:authority` values were replaced"
            );
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for NormalizedStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.normalizer.has_output() {
                let n = this.normalizer.read_output(buf.initialize_unfilled());
                buf.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = ReadBuf::new(&mut this.chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut chunk))?;
            if chunk.filled().is_empty() {
                this.eof = true;
                continue;
            }
            if let Err(e) = this.normalizer.push(chunk.filled()) {
                tracing::warn!(error = %e, "closing kubelet connection: its HTTP/2 stream could not be parsed");
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for NormalizedStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: Send + 'static> Connected for NormalizedStream<S> {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_normalised_bytes_and_writes_through() {
        let (client, server) = tokio::io::duplex(1024);
        let mut stream = NormalizedStream::new(server);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        client_write.write_all(b"not http2").await.unwrap();
        client_write.shutdown().await.unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"not http2");
        stream.write_all(b"reply").await.unwrap();
        let mut reply = [0u8; 5];
        client_read.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"reply");
    }
}

//! Frame transports shared by the client and the server: a [`FrameSource`] yields whole frame
//! payloads, a [`FrameSink`] writes batches of already-encoded frames. TCP (u32 length prefix)
//! lives here, WebSocket in [`crate::ws`]. [`write_loop`] drains a bounded queue into a sink,
//! several frames per syscall.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::io::IoSlice;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::queue::{Batch, QueueRx};
pub use crate::sniff::WrongProtocol;

/// Why reading the next frame failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer announced a frame larger than the limit; nothing was allocated for it.
    #[error("frame larger than {max} bytes")]
    FrameTooLarge {
        /// The limit in force.
        max: usize,
    },
    /// The connection failed.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    /// The peer sent something that is not a frame (for WebSocket: a non-data message we refuse).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The peer speaks HTTP where the first frame was expected: a client on the wrong port.
    #[error("{0}")]
    Http(#[from] WrongProtocol),
}

/// Reads whole frame payloads.
pub trait FrameSource: Send + 'static {
    /// The next frame, or `None` when the peer closed cleanly.
    ///
    /// # Cancel safety
    /// Cancel-safe: partial input stays buffered for the next call.
    fn next_frame(&mut self) -> impl Future<Output = Result<Option<Bytes>, TransportError>> + Send;
}

/// Why a connection is closed, as a transport can say it. WebSocket sends it as the close
/// frame's status code (RFC 6455 section 7.4.1); TCP has no way to and ignores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum CloseCode {
    /// The session ended normally (WebSocket 1000).
    #[default]
    Normal = 0,
    /// The server is stopping (WebSocket 1001).
    GoingAway = 1,
    /// The peer broke the protocol (WebSocket 1002).
    ProtocolError = 2,
    /// The peer is not allowed in, or was closed by policy: refused credentials, revoked, limits
    /// (WebSocket 1008).
    PolicyViolation = 3,
    /// The peer sent a frame above the size limit (WebSocket 1009).
    TooBig = 4,
    /// The server could not serve the peer (WebSocket 1011).
    InternalError = 5,
}

impl CloseCode {
    /// The WebSocket close status code.
    pub fn websocket(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::PolicyViolation => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::InternalError => 1011,
        }
    }

    pub(crate) fn from_u8(v: u8) -> CloseCode {
        match v {
            1 => CloseCode::GoingAway,
            2 => CloseCode::ProtocolError,
            3 => CloseCode::PolicyViolation,
            4 => CloseCode::TooBig,
            5 => CloseCode::InternalError,
            _ => CloseCode::Normal,
        }
    }
}

/// Writes batches of encoded frame payloads (without length prefixes).
pub trait FrameSink: Send + 'static {
    /// Writes every frame of `batch` in order, then flushes.
    ///
    /// # Cancel safety
    /// Not cancel-safe: a cancelled write may leave a partial frame; close the connection after.
    fn send_batch(&mut self, batch: &[Bytes]) -> impl Future<Output = io::Result<()>> + Send;
    /// Closes the write side, saying why where the transport can.
    fn close(&mut self, code: CloseCode) -> impl Future<Output = ()> + Send;
}

/// Splits a TCP stream into a length-prefixed frame source and sink, with `TCP_NODELAY` set
/// (we batch writes ourselves, so Nagle's algorithm would only add latency).
///
/// A peer whose first bytes are HTTP is reported as [`TransportError::Http`] instead of a
/// frame of a gigabyte; after an HTTP *request* the sink writes what it is given as it is, with
/// no length prefix, so the answer to that client can be plain HTTP
/// ([`crate::sniff::bad_request`]).
pub fn tcp(stream: TcpStream, max_frame: usize) -> io::Result<(TcpSource, TcpSink)> {
    stream.set_nodelay(true)?;
    let (r, w) = stream.into_split();
    let http = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let source = TcpSource { inner: r, framer: Framer::new(max_frame, Arc::clone(&http)) };
    Ok((source, TcpSink { inner: w, http }))
}

/// Read half of a TCP connection, yielding frame payloads. While the connection is quiet it
/// holds no read buffer at all: one is allocated when data arrives and released once every
/// complete frame has been taken, so idle connections cost no read memory.
pub struct TcpSource {
    inner: OwnedReadHalf,
    framer: Framer,
}

/// Most bytes reserved per read. A frame's buffer grows by at most this much per read as its
/// bytes actually arrive, so a peer announcing a large frame cannot make us allocate it up front.
const READ_CHUNK: usize = 4096;

/// The length-prefix framing of a byte stream, shared by plain TCP and TLS: the bytes read so
/// far and the frames taken from them.
struct Framer {
    buf: BytesMut,
    eof: bool,
    /// A frame header within the limit was read: the peer speaks orb frames, no HTTP check.
    framed: bool,
    /// Set when the peer's first bytes were an HTTP request (shared with the sink).
    http: Arc<std::sync::atomic::AtomicBool>,
    max_frame: usize,
}

impl Framer {
    fn new(max_frame: usize, http: Arc<std::sync::atomic::AtomicBool>) -> Framer {
        Framer { buf: BytesMut::new(), eof: false, framed: false, http, max_frame }
    }

    /// A complete frame at the front of the buffer, split off without copying.
    ///
    /// # Errors
    /// [`TransportError::FrameTooLarge`] as soon as a header announces more than the limit.
    fn take_frame(&mut self) -> Result<Option<Bytes>, TransportError> {
        let Some(header) = self.buf.get(..4) else { return Ok(None) };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len > self.max_frame {
            if !self.framed
                && let Some(http) = crate::sniff::recognise(&self.buf)
            {
                if http == WrongProtocol::Request {
                    self.http.store(true, Ordering::Release);
                }
                return Err(TransportError::Http(http));
            }
            return Err(TransportError::FrameTooLarge { max: self.max_frame });
        }
        self.framed = true;
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let _ = self.buf.split_to(4);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// The end of the input: `None` after a clean close, an error when it cut a frame short.
    fn at_eof(&self) -> Result<Option<Bytes>, TransportError> {
        if self.buf.is_empty() {
            Ok(None)
        } else {
            Err(TransportError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-frame")))
        }
    }

    /// Room for the next read: what the pending frame still needs, at most [`READ_CHUNK`].
    fn reserve_for_read(&mut self) {
        let needed = match self.buf.get(..4) {
            Some(h) => (4 + u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize).saturating_sub(self.buf.len()),
            None => READ_CHUNK,
        };
        let want = needed.clamp(1, READ_CHUNK);
        if self.buf.capacity() - self.buf.len() < want {
            self.buf.reserve(want);
        }
    }
}

impl FrameSource for TcpSource {
    async fn next_frame(&mut self) -> Result<Option<Bytes>, TransportError> {
        let f = &mut self.framer;
        loop {
            if let Some(frame) = f.take_frame()? {
                return Ok(Some(frame));
            }
            if f.eof {
                return f.at_eof();
            }
            f.reserve_for_read();
            match self.inner.try_read_buf(&mut f.buf) {
                Ok(0) => f.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Nothing to read: wait without holding a buffer if no partial frame is kept.
                    if f.buf.is_empty() {
                        f.buf = BytesMut::new();
                    }
                    self.inner.readable().await?;
                }
                Err(e) => return Err(TransportError::Io(e)),
            }
        }
    }
}

/// Write half of a TCP connection. Frames are written with vectored writes straight from their
/// shared `Bytes` (length prefixes beside them), so no copy is made and a quiet connection holds
/// no write buffer.
pub struct TcpSink {
    inner: OwnedWriteHalf,
    /// The peer sent an HTTP request: frames are written as they are (an HTTP answer).
    http: Arc<std::sync::atomic::AtomicBool>,
}

/// Frames per vectored write (two slices each: prefix and payload; Linux takes up to 1024).
const FRAMES_PER_WRITE: usize = 256;

impl FrameSink for TcpSink {
    async fn send_batch(&mut self, batch: &[Bytes]) -> io::Result<()> {
        if self.http.load(Ordering::Acquire) {
            for answer in batch {
                self.inner.write_all(answer).await?;
            }
            return Ok(());
        }
        write_frames(&mut self.inner, batch).await
    }

    async fn close(&mut self, _code: CloseCode) {
        let _ = self.inner.shutdown().await;
    }
}

/// Writes `batch` as length-prefixed frames with vectored writes, [`FRAMES_PER_WRITE`] at a time.
async fn write_frames<W: AsyncWrite + Unpin>(w: &mut W, batch: &[Bytes]) -> io::Result<()> {
    for chunk in batch.chunks(FRAMES_PER_WRITE) {
        let mut prefixes = Vec::with_capacity(chunk.len());
        for frame in chunk {
            let len = u32::try_from(frame.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame exceeds u32"))?;
            prefixes.push(len.to_be_bytes());
        }
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(chunk.len() * 2);
        for (prefix, frame) in prefixes.iter().zip(chunk) {
            slices.push(IoSlice::new(prefix));
            slices.push(IoSlice::new(frame));
        }
        let mut rest: &mut [IoSlice<'_>] = &mut slices;
        while !rest.is_empty() {
            let n = w.write_vectored(rest).await?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "connection accepts no more data"));
            }
            IoSlice::advance_slices(&mut rest, n);
        }
    }
    Ok(())
}

/// Splits any byte stream (a TLS stream, say) into a length-prefixed frame source and sink, with
/// the same framing, limits and HTTP recognition as [`tcp`].
///
/// Unlike [`TcpSource`], the source keeps a read buffer of up to 4 KiB while the
/// connection is idle (a generic stream cannot be waited on without one), and the two halves
/// share the stream through [`tokio::io::split`]'s lock: plain TCP stays on [`tcp`].
pub fn stream<S>(s: S, max_frame: usize) -> (StreamSource<ReadHalf<S>>, StreamSink<WriteHalf<S>>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (r, w) = tokio::io::split(s);
    let http = Arc::new(std::sync::atomic::AtomicBool::new(false));
    (StreamSource { inner: r, framer: Framer::new(max_frame, Arc::clone(&http)) }, StreamSink { inner: w, http })
}

/// Read half of a framed byte stream ([`stream`]).
pub struct StreamSource<R> {
    inner: R,
    framer: Framer,
}

impl<R: AsyncRead + Unpin + Send + 'static> FrameSource for StreamSource<R> {
    async fn next_frame(&mut self) -> Result<Option<Bytes>, TransportError> {
        let f = &mut self.framer;
        loop {
            if let Some(frame) = f.take_frame()? {
                return Ok(Some(frame));
            }
            if f.eof {
                return f.at_eof();
            }
            f.reserve_for_read();
            // Cancel-safe: a read that has not completed has taken nothing from the stream.
            if self.inner.read_buf(&mut f.buf).await? == 0 {
                f.eof = true;
            }
        }
    }
}

/// Write half of a framed byte stream ([`stream`]); flushed after every batch.
pub struct StreamSink<W> {
    inner: W,
    /// The peer sent an HTTP request: frames are written as they are (an HTTP answer).
    http: Arc<std::sync::atomic::AtomicBool>,
}

impl<W: AsyncWrite + Unpin + Send + 'static> FrameSink for StreamSink<W> {
    async fn send_batch(&mut self, batch: &[Bytes]) -> io::Result<()> {
        if self.http.load(Ordering::Acquire) {
            for answer in batch {
                self.inner.write_all(answer).await?;
            }
        } else {
            write_frames(&mut self.inner, batch).await?;
        }
        self.inner.flush().await
    }

    async fn close(&mut self, _code: CloseCode) {
        let _ = self.inner.shutdown().await;
    }
}

/// Most frames taken from the queue for one write.
const MAX_BATCH: usize = 128;
/// Most bytes taken from the queue for one write (a larger frame goes alone): what waits in a
/// write stays small beside the queue's own byte limit.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// How a writer stops: the code the connection closes with, and how long it may still take to
/// write what is queued and the goodbye (its linger).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    /// Why the connection closes.
    pub code: CloseCode,
    /// Time left to write what is queued, then the goodbye.
    pub linger: std::time::Duration,
}

/// Drains `rx` into `sink` until `stop` resolves, writing all frames that are ready in one batch
/// (one syscall for TCP) and flushing as soon as the queue is empty.
///
/// After `stop`, frames already queued are written too (bounded by the queue's capacity), then
/// the goodbye queued with [`crate::queue::QueueTx::send_last`], all within the stop's linger;
/// then the sink is closed with the stop's code.
/// A batch being written when `stop` comes is finished within the linger rather than abandoned,
/// because an abandoned write leaves a partial frame on the wire and anything written after it
/// would be garbage to the peer; if it cannot finish in time, nothing more is written.
/// Returns the write error that ended the loop, if any.
pub async fn write_loop<S: FrameSink>(
    sink: S,
    rx: QueueRx,
    stop: impl std::future::Future<Output = Stop> + Send,
) -> Option<io::Error> {
    write_loop_counted(sink, rx, stop, None).await
}

/// Frame and byte counts of one connection in both directions, with the time of the last frame
/// each way (unix milliseconds, 0 = none yet). The writer counts what it sends; the reader's
/// owner calls [`LinkStats::received`].
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Frames received.
    pub received_messages: AtomicU64,
    /// Payload bytes received.
    pub received_bytes: AtomicU64,
    /// Unix milliseconds of the last frame received.
    pub last_received_ms: AtomicU64,
    /// Frames written.
    pub sent_messages: AtomicU64,
    /// Payload bytes written.
    pub sent_bytes: AtomicU64,
    /// Unix milliseconds of the last write.
    pub last_sent_ms: AtomicU64,
}

impl LinkStats {
    /// Counts one received frame of `len` bytes.
    pub fn received(&self, len: usize) {
        self.received_messages.fetch_add(1, Ordering::Relaxed);
        self.received_bytes.fetch_add(len as u64, Ordering::Relaxed);
        self.last_received_ms.store(unix_ms(), Ordering::Relaxed);
    }

    fn sent(&self, frames: usize, bytes: usize) {
        self.sent_messages.fetch_add(frames as u64, Ordering::Relaxed);
        self.sent_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.last_sent_ms.store(unix_ms(), Ordering::Relaxed);
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// [`write_loop`], counting what it writes into `stats`.
pub async fn write_loop_counted<S: FrameSink>(
    mut sink: S,
    mut rx: QueueRx,
    stop: impl std::future::Future<Output = Stop> + Send,
    stats: Option<Arc<LinkStats>>,
) -> Option<io::Error> {
    // Frames count as delivered once their write completed (`Batch::written`); a batch dropped
    // before that (the write failed or was abandoned) tells its frames' notices.
    let mut batch = Batch::default();
    let mut failure = None;
    // When the goodbye must be written by; set when `stop` interrupts a write.
    let mut linger_until = None;
    // The code and linger the connection closes with, known once `stop` resolved.
    let mut how = Stop { code: CloseCode::Normal, linger: std::time::Duration::ZERO };
    // Polled in place across the loop: a fresh stop future per frame would register a waiter
    // each time.
    let stopped = stop;
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            h = &mut stopped => {
                how = h;
                break;
            }
            _ = rx.recv_into(&mut batch, MAX_BATCH, MAX_BATCH_BYTES) => {}
        }
        let res = {
            // Boxed per batch: kept inline, the write's state would enlarge every idle connection.
            let mut write = Box::pin(sink.send_batch(batch.frames()));
            tokio::select! {
                biased;
                r = &mut write => r,
                h = &mut stopped => {
                    how = h;
                    let until = tokio::time::Instant::now() + how.linger;
                    linger_until = Some(until);
                    // Boxed: this rare path's timer would otherwise enlarge every connection's task.
                    Box::pin(tokio::time::timeout_at(until, write)).await.unwrap_or_else(|_| {
                        Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the peer did not take a pending write within the linger time",
                        ))
                    })
                }
            }
        };
        if let Err(e) = res {
            failure = Some(e);
            break;
        }
        if let Some(stats) = &stats {
            stats.sent(batch.len(), batch.frames().iter().map(Bytes::len).sum());
        }
        batch.written();
        if linger_until.is_some() {
            break;
        }
    }
    if failure.is_none() {
        // Goodbye: what was already queued, then the last frame, within `linger`.
        let until = linger_until.unwrap_or_else(|| tokio::time::Instant::now() + how.linger);
        let _ = Box::pin(tokio::time::timeout_at(until, async {
            rx.drain_into(&mut batch, usize::MAX, usize::MAX);
            if !batch.is_empty() && sink.send_batch(batch.frames()).await.is_ok() {
                batch.written();
            }
        }))
        .await;
    }
    sink.close(how.code).await;
    failure
}

/// Logs one frame at TRACE (`--trace`): direction, kind, command, id and correlation. The
/// caller's span supplies the peer. Decodes the frame, with the connection's `codec`, only when
/// TRACE is enabled.
pub fn trace_frame(dir: &'static str, frame: &Bytes, codec: orb_proto::Codec) {
    if !tracing::enabled!(tracing::Level::TRACE) {
        return;
    }
    match codec.decode(frame) {
        Ok(env) => tracing::trace!(
            dir,
            kind = env.kind.as_str(),
            cmd = env.cmd.as_deref(),
            id = env.id.as_deref(),
            re = env.re.as_deref(),
            len = frame.len(),
            codec = codec.as_str(),
            "frame"
        ),
        Err(_) => tracing::trace!(dir, len = frame.len(), "undecodable frame"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn pair(max: usize) -> (TcpSource, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        (tcp(server, max).unwrap().0, client)
    }

    #[tokio::test]
    async fn frames_split_across_writes_and_batched_in_one_write_are_read_whole() {
        let (mut src, mut peer) = pair(1024).await;
        peer.write_all(&[0, 0, 0, 3, b'a']).await.unwrap();
        peer.write_all(&[b'b', b'c', 0, 0, 0, 1, b'd']).await.unwrap();
        assert_eq!(src.next_frame().await.unwrap().unwrap(), "abc");
        assert_eq!(src.next_frame().await.unwrap().unwrap(), "d");
        drop(peer);
        assert!(src.next_frame().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_http_request_first_is_reported_and_answered_in_plain_http() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        let (mut src, mut sink) = tcp(server, 1024).unwrap();
        client.write_all(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        assert!(matches!(src.next_frame().await, Err(TransportError::Http(WrongProtocol::Request))));
        sink.send_batch(&[crate::sniff::bad_request("use tcp://")]).await.unwrap();
        sink.close(CloseCode::ProtocolError).await;
        let mut answer = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut client, &mut answer).await.unwrap();
        let answer = String::from_utf8(answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nuse tcp://"), "{answer}");
    }

    #[tokio::test]
    async fn a_generic_stream_frames_like_tcp_and_flushes_each_batch() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (mut src, _) = stream(a, 1024);
        let (_, mut sink) = stream(b, 1024);
        let big = Bytes::from(vec![7u8; 300]);
        sink.send_batch(&[Bytes::from_static(b"abc"), big.clone()]).await.unwrap();
        assert_eq!(src.next_frame().await.unwrap().unwrap(), "abc");
        assert_eq!(src.next_frame().await.unwrap().unwrap(), big);
        sink.send_batch(&[Bytes::from(vec![0u8; 2000])]).await.unwrap();
        assert!(matches!(src.next_frame().await, Err(TransportError::FrameTooLarge { max: 1024 })));
        sink.close(CloseCode::Normal).await;
    }

    #[tokio::test]
    async fn an_http_answer_first_is_reported_with_its_status_line() {
        let (mut src, mut peer) = pair(1024).await;
        peer.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await.unwrap();
        match src.next_frame().await {
            Err(TransportError::Http(WrongProtocol::Response { status_line })) => {
                assert_eq!(status_line, "HTTP/1.1 400 Bad Request");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn after_a_first_frame_an_oversized_header_is_only_too_large() {
        let (mut src, mut peer) = pair(1024).await;
        peer.write_all(&[0, 0, 0, 1, b'a']).await.unwrap();
        assert_eq!(src.next_frame().await.unwrap().unwrap(), "a");
        peer.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert!(matches!(src.next_frame().await, Err(TransportError::FrameTooLarge { max: 1024 })));
    }

    #[tokio::test]
    async fn an_announced_oversized_frame_is_refused_before_its_bytes_arrive() {
        let (mut src, mut peer) = pair(1024).await;
        // Announce 16 MiB against a 1 KiB limit.
        peer.write_all(&[1, 0, 0, 0, b'x']).await.unwrap();
        assert!(matches!(src.next_frame().await, Err(TransportError::FrameTooLarge { max: 1024 })));
        assert!(src.framer.buf.capacity() <= 2 * READ_CHUNK, "capacity {}", src.framer.buf.capacity());
    }

    #[tokio::test]
    async fn a_lying_length_prefix_of_four_gibibytes_is_refused_without_allocating_it() {
        let (mut src, mut peer) = pair(orb_proto::DEFAULT_MAX_FRAME).await;
        // 0xFFFFFFFF announced against the 1 MiB default, and a few bytes of "payload".
        peer.write_all(&[0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3]).await.unwrap();
        match src.next_frame().await {
            Err(TransportError::FrameTooLarge { max }) => assert_eq!(max, orb_proto::DEFAULT_MAX_FRAME),
            other => panic!("expected frame_too_large, got {other:?}"),
        }
        assert!(src.framer.buf.capacity() <= 2 * READ_CHUNK, "capacity {}", src.framer.buf.capacity());

        // With no limit at all the same header is a frame to wait for, still read a chunk at a time.
        let (mut src, mut peer) = pair(usize::MAX).await;
        peer.write_all(&[0xFF, 0xFF, 0xFF, 0xFF]).await.unwrap();
        peer.write_all(&[7u8; 3 * READ_CHUNK]).await.unwrap();
        drop(peer);
        assert!(
            matches!(src.next_frame().await, Err(TransportError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof)
        );
        // What arrived and room for one more read, doubled at most as the buffer grows: tens of
        // KiB, never the 4 GiB announced.
        let arrived = 4 + 3 * READ_CHUNK;
        assert!(src.framer.buf.capacity() <= 2 * (arrived + READ_CHUNK), "capacity {}", src.framer.buf.capacity());
    }

    #[tokio::test]
    async fn a_large_frame_grows_its_buffer_only_as_bytes_arrive() {
        let (mut src, mut peer) = pair(1 << 20).await;
        // Announce 1 MiB, send 10 bytes, then close: the reader must not have reserved 1 MiB.
        peer.write_all(&[0, 16, 0, 0]).await.unwrap();
        peer.write_all(&[7u8; 10]).await.unwrap();
        drop(peer);
        assert!(
            matches!(src.next_frame().await, Err(TransportError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof)
        );
        assert!(src.framer.buf.capacity() <= 2 * READ_CHUNK, "capacity {}", src.framer.buf.capacity());
    }
}

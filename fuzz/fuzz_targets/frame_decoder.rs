//! The TCP frame reader (`orb_io::transport::tcp`) over arbitrary bytes, sent through a real
//! loopback connection: the frames it yields and the way it stops (clean end, `frame_too_large`,
//! HTTP on the wrong port, a frame cut short) must agree with a few lines of reference decoder,
//! whatever the limit and however the bytes arrive, and it may never allocate what a length
//! prefix announces (the heap budget is far below the largest limits tried, `u32::MAX` and
//! unlimited).
//!
//! Input: byte 0 picks the frame limit (low 3 bits) and how many leading bytes are written one
//! at a time (high 5 bits), so headers arrive split; the rest is the byte stream.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use orb_io::transport::{FrameSource, TransportError, WrongProtocol, tcp};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

/// Frame limits tried: none at all, tiny, usual, and ones no length prefix can exceed.
const LIMITS: [usize; 8] = [0, 1, 16, 1024, 65_536, 1 << 20, u32::MAX as usize, usize::MAX];

/// Heap one input may use: the stream itself is at most a few KiB (libFuzzer's `-max_len`).
const HEAP_BUDGET: usize = 8 << 20;

/// How a stream of frames ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The peer closed between frames.
    Clean,
    /// A header announced more than the limit.
    TooLarge,
    /// The first header was an HTTP request.
    HttpRequest,
    /// The first header was an HTTP answer.
    HttpResponse,
    /// The peer closed inside a header or a payload.
    MidFrame,
}

/// What an HTTP client's first four bytes are (`orb_io::sniff`'s list).
const REQUEST_STARTS: [&[u8; 4]; 10] =
    [b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC", b"PRI "];

/// The specification: u32 big-endian length, then that many bytes; a length over `max` ends
/// the stream, as HTTP when it is the first header and looks like HTTP.
fn reference(mut rest: &[u8], max: usize) -> (Vec<&[u8]>, End) {
    let mut frames = Vec::new();
    let mut first = true;
    loop {
        let Some(header) = rest.get(..4) else {
            return (frames, if rest.is_empty() { End::Clean } else { End::MidFrame });
        };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len > max {
            let end = match header {
                _ if !first => End::TooLarge,
                b"HTTP" => End::HttpResponse,
                h if REQUEST_STARTS.iter().any(|s| s.as_slice() == h) => End::HttpRequest,
                _ => End::TooLarge,
            };
            return (frames, end);
        }
        first = false;
        let Some(payload) = rest.get(4..4 + len) else { return (frames, End::MidFrame) };
        frames.push(payload);
        rest = &rest[4 + len..];
    }
}

struct Loopback {
    rt: Runtime,
    listener: TcpListener,
    addr: SocketAddr,
}

fn loopback() -> &'static Loopback {
    static LOOPBACK: OnceLock<Loopback> = OnceLock::new();
    LOOPBACK.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        Loopback { rt, listener, addr }
    })
}

/// Sends `stream` (its first `singly` bytes one write at a time) and reads it back as frames.
async fn decode(lo: &Loopback, stream: &[u8], max: usize, singly: usize) -> (Vec<Bytes>, End) {
    let (client, accepted) = tokio::join!(TcpStream::connect(lo.addr), lo.listener.accept());
    let mut client = client.expect("connect over loopback");
    let (server, _) = accepted.expect("accept over loopback");
    let (mut source, sink) = tcp(server, max).expect("frame the accepted stream");
    let write = async {
        let (head, tail) = stream.split_at(singly.min(stream.len()));
        for b in head {
            client.write_all(std::slice::from_ref(b)).await?;
            tokio::task::yield_now().await;
        }
        client.write_all(tail).await?;
        client.shutdown().await
    };
    let read = async move {
        let mut frames = Vec::new();
        let end = loop {
            match source.next_frame().await {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break End::Clean,
                Err(TransportError::FrameTooLarge { max: m }) => {
                    assert_eq!(m, max, "the error names the limit in force");
                    break End::TooLarge;
                }
                Err(TransportError::Http(WrongProtocol::Request)) => break End::HttpRequest,
                Err(TransportError::Http(WrongProtocol::Response { .. })) => break End::HttpResponse,
                Err(TransportError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break End::MidFrame,
                Err(e) => panic!("unexpected error from the frame reader: {e:?}"),
            }
        };
        // Closing both halves here lets a writer still blocked on a full socket fail and stop.
        drop((source, sink));
        (frames, end)
    };
    // The writer fails (the reader hung up after an oversized header) only when nothing more is read.
    let (_written, read) = tokio::join!(write, read);
    // Reset instead of a FIN: no TIME_WAIT entry per input on the loopback port range.
    let _ = client.set_zero_linger();
    read
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, stream)) = data.split_first() else { return };
    let max = LIMITS[usize::from(pick & 7)];
    let singly = usize::from(pick >> 3);
    let lo = loopback();
    let (frames, end) = orb_fuzz::with_heap_budget(HEAP_BUDGET, || lo.rt.block_on(decode(lo, stream, max, singly)));
    let (want_frames, want_end) = reference(stream, max);
    assert_eq!(end, want_end, "how the stream ended (limit {max})");
    assert_eq!(frames.len(), want_frames.len(), "frame count (limit {max})");
    for (got, want) in frames.iter().zip(&want_frames) {
        assert_eq!(got.as_ref(), *want);
    }
});

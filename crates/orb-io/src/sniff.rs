//! HTTP where orb frames were expected: the first bytes of a framed TCP connection recognised
//! as an HTTP request (a WebSocket or HTTP client on orb's TCP port) or an HTTP response (an orb
//! TCP client on an HTTP port), and the plain HTTP answer a TCP port gives such a client. Read
//! as a frame length, either would be a frame of a gigabyte or more: never a real frame.

use bytes::Bytes;

/// What the first bytes of a framed connection turned out to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WrongProtocol {
    /// The peer sent an HTTP request: it is an HTTP or WebSocket client, on a framed TCP port.
    #[error("the peer sent an HTTP request, not an orb frame")]
    Request,
    /// The peer answered in HTTP: this connection went to an HTTP port, not a framed TCP port.
    #[error("the server answered in HTTP ({status_line}), not with an orb frame")]
    Response {
        /// The answer's first line as received (cut short), e.g. `HTTP/1.1 400 Bad Request`.
        status_line: String,
    },
    /// A WebSocket handshake was answered with an HTTP status other than 101.
    #[error("the WebSocket handshake was refused: HTTP {status}{}", suffix(.body))]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The answer's body as far as it was received (cut short), as text.
        body: String,
    },
}

/// `": body"`, or nothing for an empty body.
fn suffix(body: &str) -> String {
    if body.is_empty() { String::new() } else { format!(": {body}") }
}

/// The body of the answer a framed TCP port gives an HTTP client. Clients recognise it by its
/// start ([`TCP_PORT_ANSWER_START`]) and replace the placeholders with the address they used.
pub const TCP_PORT_ANSWER: &str = "this is orb's TCP port; use tcp://HOST:PORT (WebSocket is on the HTTP port, /v1/ws)";

/// How [`TCP_PORT_ANSWER`] starts.
pub const TCP_PORT_ANSWER_START: &str = "this is orb's TCP port";

/// The body of the answer a TLS-only port gives a plain HTTP or WebSocket client.
pub const TLS_PORT_ANSWER: &str = "this port speaks TLS only; use https:// or wss:// (tls:// on the agent port)";

/// How [`TLS_PORT_ANSWER`] starts.
pub const TLS_PORT_ANSWER_START: &str = "this port speaks TLS only";

/// Whether the first bytes of a connection are an HTTP request (at least four are needed).
pub fn is_http_request(head: &[u8]) -> bool {
    recognise(head) == Some(WrongProtocol::Request)
}

/// Request methods an HTTP client starts with, each followed by a space; `PRI ` is the HTTP/2
/// preface. Four bytes are enough to tell each apart from a frame header.
const REQUEST_STARTS: [&[u8; 4]; 10] =
    [b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC", b"PRI "];

/// Longest text kept from what the peer sent.
const KEPT: usize = 200;

/// Recognises HTTP in the first bytes of a framed connection (`head` holds at least four).
pub(crate) fn recognise(head: &[u8]) -> Option<WrongProtocol> {
    let start: &[u8; 4] = head.get(..4)?.try_into().ok()?;
    if start == b"HTTP" {
        let line = head.split(|b| *b == b'\r' || *b == b'\n').next().unwrap_or_default();
        let status_line = String::from_utf8_lossy(&line[..line.len().min(KEPT)]).into_owned();
        return Some(WrongProtocol::Response { status_line });
    }
    REQUEST_STARTS.contains(&start).then_some(WrongProtocol::Request)
}

/// The text of an HTTP answer's body, cut short, for a message.
#[cfg_attr(not(feature = "ws-client"), allow(dead_code))]
pub(crate) fn body_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(KEPT)]);
    text.trim().to_owned()
}

/// A complete `HTTP/1.1 400 Bad Request` answer with `body` as plain text, closing the
/// connection: what a framed TCP port answers an HTTP client.
pub fn bad_request(body: &str) -> Bytes {
    Bytes::from(format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn http_requests_and_responses_are_recognised_and_frames_are_not() {
        assert_eq!(recognise(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n"), Some(WrongProtocol::Request));
        assert_eq!(recognise(b"POST"), Some(WrongProtocol::Request));
        assert_eq!(recognise(b"PRI * HTTP/2.0\r\n"), Some(WrongProtocol::Request));
        assert_eq!(
            recognise(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"),
            Some(WrongProtocol::Response { status_line: "HTTP/1.1 400 Bad Request".into() })
        );
        assert_eq!(recognise(b"\0\0\0\x1b{\"kind\":\"hello\"}"), None);
        assert_eq!(recognise(b"GETS"), None);
        assert_eq!(recognise(b"GE"), None, "too short to tell");
    }

    #[test]
    fn the_bad_request_answer_is_well_formed_http() {
        let r = bad_request("this is orb's TCP port");
        let text = std::str::from_utf8(&r).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        assert_eq!(body, "this is orb's TCP port");
    }

    #[test]
    fn a_refused_handshake_names_the_status_and_the_body() {
        let e = WrongProtocol::Refused { status: 400, body: body_text(b"  use tcp://\r\n") };
        assert_eq!(e.to_string(), "the WebSocket handshake was refused: HTTP 400: use tcp://");
        let e = WrongProtocol::Refused { status: 404, body: String::new() };
        assert_eq!(e.to_string(), "the WebSocket handshake was refused: HTTP 404");
    }
}

//! Server addresses: `tcp://host:port`, `ws://host:port/v1/ws`, or a bare `host:port` (TCP), and
//! their TLS forms `tls://host:port` and `wss://host:port/v1/ws`.

use std::fmt;

use orb_proto::{DEFAULT_HTTP_PORT, DEFAULT_TCP_PORT, WS_PATH};

/// Where a client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerUrl {
    /// Length-prefixed frames over TCP.
    Tcp {
        /// Host name or IP.
        host: String,
        /// Port.
        port: u16,
    },
    /// WebSocket (`ws://host:port/path`).
    Ws {
        /// The full URL.
        url: String,
        /// Host name or IP.
        host: String,
    },
    /// Length-prefixed frames over TLS over TCP (`tls://host:port`).
    Tls {
        /// Host name or IP: also the name the server's certificate must carry (SNI).
        host: String,
        /// Port.
        port: u16,
    },
    /// WebSocket over TLS (`wss://host:port/path`).
    Wss {
        /// The full URL.
        url: String,
        /// Host name or IP: also the name the server's certificate must carry (SNI).
        host: String,
    },
}

/// Why a server URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad server url '{url}': {reason}")]
pub struct UrlError {
    url: String,
    reason: String,
}

impl ServerUrl {
    /// Parses `tcp://HOST:PORT`, `tls://HOST:PORT`, `ws://HOST:PORT[/PATH]`,
    /// `wss://HOST:PORT[/PATH]` (default path `/v1/ws`, default ports orb's: 7700 for TCP, 7780
    /// for WebSocket) or `HOST:PORT` (TCP).
    ///
    /// # Errors
    /// [`UrlError`] for other schemes or a bad port.
    pub fn parse(s: &str) -> Result<ServerUrl, UrlError> {
        let err = |reason: &str| UrlError { url: s.to_owned(), reason: reason.to_owned() };
        for (scheme, default_port, secure) in [("ws://", ":80", false), ("wss://", ":443", true)] {
            let Some(after_scheme) = s.strip_prefix(scheme) else { continue };
            let u = url::Url::parse(s).map_err(|e| err(&e.to_string()))?;
            // IPv6 hosts come bracketed from the url crate; kept bare, like tcp:// ones.
            let host = u.host_str().ok_or_else(|| err("missing host"))?.trim_start_matches('[').trim_end_matches(']');
            let host = host.to_owned();
            // The url crate drops a port equal to the scheme's default (80, 443): tell `ws://h:80`
            // from `ws://h`, which means orb's HTTP port.
            let authority = after_scheme.split(['/', '?', '#']).next().unwrap_or("");
            let port = u.port().unwrap_or(if authority.ends_with(default_port) {
                u.port_or_known_default().unwrap_or(DEFAULT_HTTP_PORT)
            } else {
                DEFAULT_HTTP_PORT
            });
            let path = if u.path().is_empty() || u.path() == "/" { WS_PATH } else { u.path() };
            let url = format!("{scheme}{}:{port}{path}", bracket(&host));
            return Ok(if secure { ServerUrl::Wss { url, host } } else { ServerUrl::Ws { url, host } });
        }
        let (rest, tls) = match s.strip_prefix("tls://") {
            Some(rest) => (rest, true),
            None => (s.strip_prefix("tcp://").unwrap_or(s), false),
        };
        if rest.contains("://") {
            return Err(err("scheme must be tcp://, tls://, ws:// or wss://"));
        }
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && !h.ends_with(':') => {
                (h, p.parse::<u16>().map_err(|_| err("port must be a number from 1 to 65535"))?)
            }
            _ if !rest.is_empty() && !rest.contains(':') => (rest, DEFAULT_TCP_PORT),
            _ => return Err(err("expected HOST:PORT")),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        Ok(if tls { ServerUrl::Tls { host, port } } else { ServerUrl::Tcp { host, port } })
    }

    /// `HOST:PORT` as connected to (IPv6 hosts in brackets).
    pub fn authority(&self) -> String {
        format!("{}:{}", bracket(self.host()), self.port())
    }

    /// The port connected to.
    pub fn port(&self) -> u16 {
        match self {
            ServerUrl::Tcp { port, .. } | ServerUrl::Tls { port, .. } => *port,
            // The stored URL always names its port, but the url crate reports 80 and 443 as none.
            ServerUrl::Ws { url, .. } | ServerUrl::Wss { url, .. } => {
                url::Url::parse(url).ok().and_then(|u| u.port_or_known_default()).unwrap_or(DEFAULT_HTTP_PORT)
            }
        }
    }

    /// The host part.
    pub fn host(&self) -> &str {
        match self {
            ServerUrl::Tcp { host, .. }
            | ServerUrl::Ws { host, .. }
            | ServerUrl::Tls { host, .. }
            | ServerUrl::Wss { host, .. } => host,
        }
    }

    /// Whether the connection is secured with TLS (`tls://`, `wss://`).
    pub fn is_tls(&self) -> bool {
        matches!(self, ServerUrl::Tls { .. } | ServerUrl::Wss { .. })
    }

    /// Whether the host is a loopback address or `localhost` (local credentials may be used).
    pub fn is_loopback(&self) -> bool {
        let h = self.host();
        h.eq_ignore_ascii_case("localhost") || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_owned() }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerUrl::Tcp { host, port } => write!(f, "tcp://{}:{port}", bracket(host)),
            ServerUrl::Tls { host, port } => write!(f, "tls://{}:{port}", bracket(host)),
            ServerUrl::Ws { url, .. } | ServerUrl::Wss { url, .. } => f.write_str(url),
        }
    }
}

impl std::str::FromStr for ServerUrl {
    type Err = UrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ServerUrl::parse(s)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_accepted_forms() {
        assert_eq!(ServerUrl::parse("tcp://127.0.0.1:7700").unwrap().to_string(), "tcp://127.0.0.1:7700");
        assert_eq!(ServerUrl::parse("localhost:9").unwrap().to_string(), "tcp://localhost:9");
        assert_eq!(ServerUrl::parse("example.org").unwrap().to_string(), "tcp://example.org:7700");
        assert_eq!(ServerUrl::parse("ws://127.0.0.1:7780").unwrap().to_string(), "ws://127.0.0.1:7780/v1/ws");
        assert_eq!(ServerUrl::parse("ws://h:1/x").unwrap().to_string(), "ws://h:1/x");
        assert_eq!(ServerUrl::parse("tcp://[::1]:7700").unwrap().host(), "::1");
        // ws: IPv6 hosts bare, and port 80 kept (the url crate reports it as no port).
        let ws = ServerUrl::parse("ws://[::1]:7780/v1/ws").unwrap();
        assert_eq!(
            (ws.host(), ws.to_string().as_str(), ws.authority().as_str()),
            ("::1", "ws://[::1]:7780/v1/ws", "[::1]:7780")
        );
        let ws = ServerUrl::parse("ws://orb.example:80/v1/ws").unwrap();
        assert_eq!((ws.to_string().as_str(), ws.authority().as_str()), ("ws://orb.example:80/v1/ws", "orb.example:80"));
        assert_eq!(ServerUrl::parse("ws://orb.example").unwrap().authority(), "orb.example:7780");
    }

    #[test]
    fn parses_the_tls_forms() {
        let tls = ServerUrl::parse("tls://orb.example:7700").unwrap();
        assert_eq!(
            (tls.to_string().as_str(), tls.is_tls(), tls.host()),
            ("tls://orb.example:7700", true, "orb.example")
        );
        assert_eq!(ServerUrl::parse("tls://[::1]:7700").unwrap().authority(), "[::1]:7700");
        assert_eq!(ServerUrl::parse("tls://orb.example").unwrap().port(), 7700);
        let wss = ServerUrl::parse("wss://orb.example:7780/v1/ws").unwrap();
        assert_eq!((wss.to_string().as_str(), wss.is_tls()), ("wss://orb.example:7780/v1/ws", true));
        assert_eq!(ServerUrl::parse("wss://orb.example").unwrap().to_string(), "wss://orb.example:7780/v1/ws");
        let wss = ServerUrl::parse("wss://orb.example:443/v1/ws").unwrap();
        assert_eq!(
            (wss.to_string().as_str(), wss.authority().as_str()),
            ("wss://orb.example:443/v1/ws", "orb.example:443")
        );
        assert!(!ServerUrl::parse("tcp://h:1").unwrap().is_tls());
        assert!(ServerUrl::parse("wss://localhost:1").unwrap().is_loopback());
    }

    #[test]
    fn refuses_the_rest() {
        for bad in ["http://x:1", "https://x:1", "tls://x:port", "tcp://x:port", "tcp://:1", ""] {
            assert!(ServerUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn knows_loopback() {
        assert!(ServerUrl::parse("127.0.0.2:1").unwrap().is_loopback());
        assert!(ServerUrl::parse("ws://localhost:1").unwrap().is_loopback());
        assert!(ServerUrl::parse("tcp://[::1]:1").unwrap().is_loopback());
        assert!(ServerUrl::parse("ws://[::1]:1").unwrap().is_loopback());
        assert!(!ServerUrl::parse("example.org:1").unwrap().is_loopback());
    }
}

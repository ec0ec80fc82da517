//! Server addresses: `tcp://host:port`, `ws://host:port/v1/ws`, or a bare `host:port` (TCP).

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
}

/// Why a server URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad server url '{url}': {reason}")]
pub struct UrlError {
    url: String,
    reason: String,
}

impl ServerUrl {
    /// Parses `tcp://HOST:PORT`, `ws://HOST:PORT[/PATH]` (default path `/v1/ws`) or `HOST:PORT`.
    ///
    /// # Errors
    /// [`UrlError`] for other schemes (including `tls://`/`wss://`, not yet supported) or a bad port.
    pub fn parse(s: &str) -> Result<ServerUrl, UrlError> {
        let err = |reason: &str| UrlError { url: s.to_owned(), reason: reason.to_owned() };
        if let Some(after_scheme) = s.strip_prefix("ws://") {
            let u = url::Url::parse(s).map_err(|e| err(&e.to_string()))?;
            // IPv6 hosts come bracketed from the url crate; kept bare, like tcp:// ones.
            let host = u.host_str().ok_or_else(|| err("missing host"))?.trim_start_matches('[').trim_end_matches(']');
            let host = host.to_owned();
            // The url crate drops a port equal to the scheme's default (80): tell `ws://h:80`
            // from `ws://h`, which means orb's HTTP port.
            let authority = after_scheme.split(['/', '?', '#']).next().unwrap_or("");
            let port = u.port().unwrap_or(if authority.ends_with(":80") { 80 } else { DEFAULT_HTTP_PORT });
            let path = if u.path().is_empty() || u.path() == "/" { WS_PATH } else { u.path() };
            return Ok(ServerUrl::Ws { url: format!("ws://{}:{port}{path}", bracket(&host)), host });
        }
        if s.starts_with("tls://") || s.starts_with("wss://") {
            return Err(err("TLS transports are not available in this version"));
        }
        let rest = s.strip_prefix("tcp://").unwrap_or(s);
        if rest.contains("://") {
            return Err(err("scheme must be tcp:// or ws://"));
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
        Ok(ServerUrl::Tcp { host, port })
    }

    /// `HOST:PORT` as connected to (IPv6 hosts in brackets).
    pub fn authority(&self) -> String {
        match self {
            ServerUrl::Tcp { host, port } => format!("{}:{port}", bracket(host)),
            ServerUrl::Ws { url, host } => {
                // The stored URL always names its port, but the url crate reports 80 as none.
                let port =
                    url::Url::parse(url).ok().and_then(|u| u.port_or_known_default()).unwrap_or(DEFAULT_HTTP_PORT);
                format!("{}:{port}", bracket(host))
            }
        }
    }

    /// The host part.
    pub fn host(&self) -> &str {
        match self {
            ServerUrl::Tcp { host, .. } | ServerUrl::Ws { host, .. } => host,
        }
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
            ServerUrl::Ws { url, .. } => f.write_str(url),
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
    fn refuses_the_rest() {
        for bad in ["http://x:1", "tls://x:1", "tcp://x:port", "tcp://:1", ""] {
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

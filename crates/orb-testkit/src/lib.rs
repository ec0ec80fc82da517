//! Test helpers: [`TestServer`] runs a real server on `127.0.0.1:0` with a temporary data
//! folder, and hands out connected agents and operators over TCP or WebSocket.
#![forbid(unsafe_code)]

use std::time::Duration;

use orb_client::{Client, ClientConfig, Handlers, ServerUrl};
use orb_server::{Server, ServerBuilder, ServerConfig};

/// A server for one test; stopped when dropped (the runtime ends its tasks).
pub struct TestServer {
    /// The running server.
    pub server: Server,
    /// Its data folder (deleted on drop).
    pub data: tempfile::TempDir,
}

/// Which transport a test client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Length-prefixed TCP.
    Tcp,
    /// WebSocket at `/v1/ws`.
    Ws,
}

impl TestServer {
    /// Starts a server with [`ServerConfig::for_tests`].
    ///
    /// # Panics
    /// When the server cannot start (a test failure).
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}, |b| b).await
    }

    /// Starts a server after `tweak` adjusted the configuration and `build` the builder.
    ///
    /// # Panics
    /// When the server cannot start (a test failure).
    pub async fn start_with(
        tweak: impl FnOnce(&mut ServerConfig),
        build: impl FnOnce(ServerBuilder) -> ServerBuilder,
    ) -> TestServer {
        let data = tempfile::tempdir().expect("temp dir");
        let mut cfg = ServerConfig::for_tests(data.path().to_path_buf());
        tweak(&mut cfg);
        let server = build(ServerBuilder::new(cfg))
            .start()
            .await
            .expect("server starts");
        TestServer { server, data }
    }

    /// The server URL for `transport`.
    pub fn url(&self, transport: Transport) -> ServerUrl {
        let s = match transport {
            Transport::Tcp => format!("tcp://{}", self.server.tcp_addr()),
            Transport::Ws => format!("ws://{}/v1/ws", self.server.http_addr()),
        };
        ServerUrl::parse(&s).expect("valid url")
    }

    /// Connects an agent with `id`, `tags` (`k=v`) and `handlers`.
    ///
    /// # Panics
    /// When the connection is refused (a test failure).
    pub async fn agent(
        &self,
        transport: Transport,
        id: &str,
        tags: &[(&str, &str)],
        handlers: Handlers,
    ) -> Client {
        let mut cfg = ClientConfig::agent(
            self.url(transport),
            Some(self.server.agent_token().expose().to_owned()),
            id,
        );
        cfg.tags = tags
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Client::connect(cfg, handlers)
            .await
            .expect("agent connects")
    }

    /// Connects an operator (admin token).
    ///
    /// # Panics
    /// When the connection is refused (a test failure).
    pub async fn operator(&self, transport: Transport) -> Client {
        let cfg = ClientConfig::operator(
            self.url(transport),
            Some(self.server.admin_token().expose().to_owned()),
        );
        Client::connect(cfg, Handlers::new())
            .await
            .expect("operator connects")
    }

    /// Waits (bounded) until `n` agents are registered; registration completes before `welcome`
    /// is sent, so this normally returns at once.
    ///
    /// # Panics
    /// When the count is not reached within 5 s.
    pub async fn wait_for_agents(&self, n: u64) {
        for _ in 0..500 {
            if self.server.router().counts().0 == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "expected {n} agents, have {}",
            self.server.router().counts().0
        );
    }
}

/// Handlers like `orb agent`'s basics: `ping` and `echo`.
pub fn basic_handlers() -> Handlers {
    Handlers::new()
        .on("ping", |_c: orb_client::Context| async {
            Ok(serde_json::json!({"pong": true}))
        })
        .on("echo", |c: orb_client::Context| async move {
            serde_json::from_slice::<serde_json::Value>(&c.args).map_err(|e| {
                orb_proto::ErrorBody::new(orb_proto::ErrorCode::BadArgs, e.to_string())
            })
        })
}

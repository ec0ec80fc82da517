//! The orb client library, used by agents and by anything that submits work:
//!
//! - [`Client::connect`] opens a connection (`tcp://`, `ws://`, or with TLS `tls://`, `wss://`:
//!   [`ClientConfig::tls`]), sends `hello`, waits for `welcome`;
//! - [`Handlers`] answer commands sent to this client (what an agent does); a `cancel` frame from
//!   the server cancels the running command's [`Context::cancel`] token;
//! - [`Client::submit`] runs a [`JobRequest`] on every device a selector matches and streams
//!   [`JobUpdate`]s;
//! - [`Client::request`] is a plain request to one device; [`Client::call`] a command to the server;
//!   an agent may send both, and [`Client::submit`], to other devices where the server's
//!   `[[acl.peers]]` rules allow it (`examples/relay-agent`);
//! - [`Client::publish`] (and [`Client::publish_retained`]) put a JSON body on a topic;
//!   [`Client::subscribe`] returns a [`Subscription`], the inbox of what is published on matching
//!   topics: [`Subscription::next`], a `futures` `Stream`, or [`Subscription::take_pending`] for
//!   everything waiting now; each [`Message`] has its sequence number, sender, topic and body. A
//!   reader that falls behind loses messages, counted and told ([`Message::dropped_before`]);
//! - [`Inbox`] is one inbox for a program that prefers a loop to handlers: commands it names
//!   ([`Inbox::commands`], answered with [`Incoming::reply`]) and the messages of its
//!   subscriptions ([`Inbox::subscribe`]), each an [`Incoming`] with its sequence number, sender,
//!   topic or command, and body; [`Inbox::next`], a `Stream`, or [`Inbox::take_pending`];
//! - [`Persistent`] keeps an agent connected, and after enrollment (a welcome issuing a device
//!   secret, [`LinkEvent::Enrolled`]) connects with that id and secret instead of the token;
//! - [`durable::AgentStore`] gives an agent a journal (held commands never run twice) and an
//!   outbox ([`durable::Outbox::send`] returns once a message is on disk locally; its
//!   [`durable::Receipt`] tells when the server has stored it), attached with
//!   [`Persistent::durable`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), orb_client::ClientError> {
//! use orb_client::{Client, ClientConfig, Handlers, ServerUrl, handler::Context};
//! let url: ServerUrl = "tcp://127.0.0.1:7700".parse().expect("valid url");
//! let handlers = Handlers::new().on("ping", |_ctx: Context| async { Ok(serde_json::json!({"pong": true})) });
//! let agent = Client::connect(ClientConfig::agent(url, Some("agent-token".into()), "web-1"), handlers).await?;
//! agent.closed().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
pub mod durable;
mod error;
mod inbox;
mod job;
mod persistent;
mod request;
mod running;
mod subscription;
mod url;

pub use client::{Client, ClientConfig};
pub use error::ClientError;
pub use inbox::{Inbox, Incoming, What};
pub use job::{Job, JobUpdate};
pub use orb_io::clock::Clock;
pub use orb_io::handler::{self, Context, Handler, HandlerResult, Handlers};
pub use orb_io::schema::{self, ArgsSchema, SchemaError};
pub use orb_io::tls::ClientTls;
pub use orb_proto::Codec;
pub use orb_proto::message::Role;
pub use persistent::{Backoff, LinkEvent, Persistent};
pub use request::{JobRequest, Select};
pub use subscription::{INBOX, Message, Subscription};
pub use url::{ServerUrl, UrlError};

//! One inbox for everything that comes to a program, for those that prefer a loop to a handler per
//! command (cobblr's style): publications of any number of [`Subscription`]s and the commands
//! named when it was made, each an [`Incoming`] numbered in the order the inbox received it, with
//! its sender, its topic or command, and its body. A command is answered with
//! [`Incoming::reply`]; the answer goes back as the command's reply, through the same handler
//! machinery as [`Handlers::on`] (deadline, cancellation, journal). Read it like a subscription:
//! [`Inbox::next`], as a [`futures_util::Stream`], or [`Inbox::take_pending`] without waiting.
//!
//! Bounded: at most [`INBOX`] items wait. A publication beyond is dropped and counted, as a
//! subscription does ([`Inbox::dropped`]); a command beyond waits for room until its deadline,
//! then its requester gets `timeout` (a command is never dropped silently).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use orb_io::handler::{Context, HandlerResult, Handlers};
use orb_proto::{ErrorBody, ErrorCode};
use tokio::sync::{mpsc, oneshot};

use crate::subscription::{INBOX, Subscription};

/// What came in.
#[derive(Debug)]
pub struct Incoming {
    /// Its number in this inbox, from 1, in the order the inbox hands items out.
    pub seq: u64,
    /// Who sent it: a device id, an operator session or `$server`.
    pub from: String,
    /// The topic or the command.
    pub what: What,
    /// The body: the publication, or the command's arguments (raw JSON, `null` when absent).
    pub body: Bytes,
    /// Where a command's answer goes (`None` for a publication).
    reply: Option<oneshot::Sender<HandlerResult>>,
}

/// Whether an [`Incoming`] is a publication or a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// Published on `topic` (`retained`: kept by the server, sent when the subscription started).
    Topic {
        /// The topic.
        topic: String,
        /// A retained publication.
        retained: bool,
    },
    /// The command `name`, to answer within `deadline` with [`Incoming::reply`].
    Command {
        /// The command's name.
        name: String,
        /// Its job, if any.
        job: Option<String>,
        /// Time left to answer when it arrived.
        deadline: Duration,
    },
}

impl Incoming {
    /// Answers a command (a JSON result or an error with a stable code). A publication has no
    /// one to answer: false. False also when the requester stopped waiting (the deadline passed).
    pub fn reply(&mut self, answer: HandlerResult) -> bool {
        self.reply.take().is_some_and(|tx| tx.send(answer).is_ok())
    }

    /// The body decoded as `T`.
    ///
    /// # Errors
    /// `bad_args` with the decode error.
    pub fn body_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, ErrorBody> {
        serde_json::from_slice(&self.body)
            .map_err(|e| ErrorBody::new(ErrorCode::BadArgs, orb_proto::bounded(e.to_string())))
    }
}

/// The inbox.
pub struct Inbox {
    tx: mpsc::Sender<Incoming>,
    rx: mpsc::Receiver<Incoming>,
    /// Items handed out so far.
    handed: u64,
    dropped: Arc<AtomicU64>,
}

impl Default for Inbox {
    fn default() -> Inbox {
        Inbox::new()
    }
}

impl Inbox {
    /// An empty inbox: give it commands with [`Inbox::commands`] (before connecting) and
    /// subscriptions with [`Inbox::subscribe`].
    pub fn new() -> Inbox {
        let (tx, rx) = mpsc::channel(INBOX);
        Inbox { tx, rx, handed: 0, dropped: Arc::default() }
    }

    /// `handlers` with each of `names` sent to this inbox: pass the result to
    /// [`crate::Client::connect`], which declares them like any handler's command. A command that
    /// finds the inbox dropped, or whose [`Incoming`] is dropped unanswered, gets `handler_error`.
    pub fn commands<S: Into<String>>(&self, handlers: Handlers, names: impl IntoIterator<Item = S>) -> Handlers {
        names.into_iter().fold(handlers, |handlers, name| {
            let tx = self.tx.clone();
            handlers.on(name, move |c: Context| {
                let tx = tx.clone();
                async move { to_inbox(&tx, c).await }
            })
        })
    }

    /// Puts `sub`'s messages in this inbox, in the order they come, until the subscription ends
    /// (its connection closes) or the inbox is dropped. Call it within a Tokio runtime (a task
    /// moves the messages).
    pub fn subscribe(&self, mut sub: Subscription) {
        let (tx, dropped) = (self.tx.clone(), Arc::clone(&self.dropped));
        tokio::spawn(async move {
            while let Some(m) = tokio::select! {
                m = sub.next() => m,
                () = tx.closed() => None,
            } {
                dropped.fetch_add(m.dropped_before, Ordering::Relaxed);
                let incoming = Incoming {
                    seq: 0,
                    from: m.from,
                    what: What::Topic { topic: m.topic, retained: m.retained },
                    body: m.body,
                    reply: None,
                };
                match tx.try_send(incoming) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
        });
    }

    /// The next item, waiting for it (the inbox lives as long as the program's commands may
    /// come, so this does not end by itself; the `Option` is the [`futures_util::Stream`]'s).
    ///
    /// # Cancel safety
    /// Cancel-safe (a channel receive).
    pub async fn next(&mut self) -> Option<Incoming> {
        let item = self.rx.recv().await;
        item.map(|i| self.numbered(i))
    }

    /// Every item waiting now, without waiting for more (for simple polling loops).
    pub fn take_pending(&mut self) -> Vec<Incoming> {
        let mut out = Vec::new();
        while let Ok(m) = self.rx.try_recv() {
            out.push(self.numbered(m));
        }
        out
    }

    /// `incoming` with the inbox's next number.
    fn numbered(&mut self, mut incoming: Incoming) -> Incoming {
        self.handed += 1;
        incoming.seq = self.handed;
        incoming
    }

    /// Publications dropped so far because the inbox (or a subscription's own) was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The inbox as a [`futures_util::Stream`] of what comes in (the same as [`Inbox::next`]).
impl futures_util::Stream for Inbox {
    type Item = Incoming;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Incoming>> {
        let polled = self.rx.poll_recv(cx);
        polled.map(|item| item.map(|i| self.numbered(i)))
    }
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").field("dropped", &self.dropped()).finish_non_exhaustive()
    }
}

/// A command handed to the inbox; its answer is the handler's.
async fn to_inbox(tx: &mpsc::Sender<Incoming>, c: Context) -> HandlerResult {
    let gone = || ErrorBody::new(ErrorCode::HandlerError, "the program's inbox is closed");
    let permit = tx.reserve().await.map_err(|_| gone())?;
    let (reply, answer) = oneshot::channel();
    let what = What::Command { name: c.cmd, job: c.job, deadline: c.deadline };
    permit.send(Incoming { seq: 0, from: c.from, what, body: c.args, reply: Some(reply) });
    answer
        .await
        .unwrap_or_else(|_| Err(ErrorBody::new(ErrorCode::HandlerError, "the program dropped the command unanswered")))
}

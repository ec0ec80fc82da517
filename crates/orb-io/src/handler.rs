//! Command handlers by name, shared by agents (commands from the server and other clients) and by
//! the server library (commands to the server). [`run`] executes one with its deadline, turning
//! a panic into a `handler_panicked` error so the process survives; [`reply_envelope`] turns the
//! outcome into the `reply` a connection sends back.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use orb_proto::{Codec, Envelope, ErrorBody, ErrorCode};
use tokio_util::sync::CancellationToken;

pub use crate::progress::Progress;

/// One command to handle.
#[derive(Debug, Clone)]
pub struct Context {
    /// Command name.
    pub cmd: String,
    /// Who sent it: `$server`, an operator session (`op-3`) or a device id.
    pub from: String,
    /// Raw JSON arguments (`null` when absent).
    pub args: Bytes,
    /// The job this command belongs to, if any.
    pub job: Option<String>,
    /// Time left to answer.
    pub deadline: Duration,
    /// Cancelled when the command's job is cancelled (the server sent `cancel`): the handler
    /// should stop; [`run`] answers `cancelled` for it if it does not.
    pub cancel: CancellationToken,
    /// Where the handler's progress goes: off unless the requester asked for it (see
    /// [`Context::progress`]).
    pub progress: Progress,
}

impl Context {
    /// Reports `body` (any JSON) to the requester while the command runs, best effort: a no-op
    /// (false) unless the requester asked for progress; rate-limited and dropped, never
    /// waiting, when over [`crate::progress::PROGRESS_PER_SECOND`] or when the connection has
    /// no room (counted in [`Progress::dropped`]). Returns whether it was queued.
    pub fn progress(&self, body: &serde_json::Value) -> bool {
        self.progress.send(body)
    }

    /// Decodes the arguments as `T`.
    ///
    /// # Errors
    /// `bad_args` naming the command and the decode error.
    pub fn args<T: serde::de::DeserializeOwned>(&self) -> Result<T, ErrorBody> {
        serde_json::from_slice(&self.args).map_err(|e| {
            let msg = format!("{}: {e}", orb_proto::excerpt(&self.cmd));
            ErrorBody::new(ErrorCode::BadArgs, orb_proto::bounded(msg))
        })
    }
}

/// What a handler returns: a JSON result, or an error with a stable code.
pub type HandlerResult = Result<serde_json::Value, ErrorBody>;

/// A boxed handler future.
pub type HandlerFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send>>;

/// A command handler. Implemented for every `Fn(Context) -> impl Future<Output = HandlerResult>`.
pub trait Handler: Send + Sync + 'static {
    /// Runs the command.
    fn call(&self, ctx: Context) -> HandlerFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn call(&self, ctx: Context) -> HandlerFuture {
        Box::pin(self(ctx))
    }
}

/// Handlers by command name.
#[derive(Clone, Default)]
pub struct Handlers(HashMap<String, Arc<dyn Handler>>);

impl Handlers {
    /// No handlers.
    pub fn new() -> Handlers {
        Handlers::default()
    }

    /// Adds (or replaces) the handler for `name`.
    pub fn on(mut self, name: impl Into<String>, h: impl Handler) -> Handlers {
        self.0.insert(name.into(), Arc::new(h));
        self
    }

    /// The handler for `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Handler>> {
        self.0.get(name).cloned()
    }

    /// Registered command names, sorted (declared in `hello`).
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.0.keys().cloned().collect();
        v.sort();
        v
    }
}

/// Runs `handler` (or answers `unknown_command` when there is none) within `ctx.deadline`.
/// A panic becomes `handler_panicked`, an overrun `timeout`.
pub async fn run(handler: Option<Arc<dyn Handler>>, ctx: Context) -> HandlerResult {
    let Some(h) = handler else {
        let cmd = orb_proto::excerpt(&ctx.cmd);
        return Err(ErrorBody::new(ErrorCode::UnknownCommand, format!("no handler for command {cmd}")));
    };
    let cmd = ctx.cmd.clone();
    let deadline = ctx.deadline;
    let ctx_cancel = ctx.cancel.clone();
    // `call` runs inside the guarded future, so a handler that panics before returning its future
    // is caught too, not only one that panics while being polled.
    let guarded = AssertUnwindSafe(async move { h.call(ctx).await }).catch_unwind();
    let cancel = ctx_cancel;
    let outcome = tokio::select! {
        biased;
        () = cancel.cancelled() => return Err(ErrorBody::new(ErrorCode::Cancelled, format!("{cmd}: the job was cancelled"))),
        r = tokio::time::timeout(deadline, guarded) => r,
    };
    match outcome {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => {
            let detail = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_owned());
            tracing::error!(cmd, detail, "handler panicked");
            Err(ErrorBody::new(ErrorCode::HandlerPanicked, format!("handler for {cmd} panicked: {detail}")))
        }
        Err(_) => Err(ErrorBody::new(
            ErrorCode::Timeout,
            format!("handler for {cmd} did not finish within {} ms", deadline.as_millis()),
        )),
    }
}

/// A handler's outcome as the `reply` to command `re` (the result serialised as the JSON body).
pub fn reply_envelope(re: String, result: HandlerResult) -> Envelope {
    match result {
        Ok(v) => Envelope::reply_ok(re, Bytes::from(serde_json::to_vec(&v).unwrap_or_else(|_| b"null".to_vec()))),
        Err(e) => Envelope::reply_error(re, e),
    }
}

/// Encodes a handler's outcome as the `reply` to command `re`, with the connection's `codec`.
pub fn reply_frame(codec: Codec, re: String, result: HandlerResult) -> Bytes {
    codec.encode(&reply_envelope(re, result))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ctx(cmd: &str) -> Context {
        Context {
            cmd: cmd.into(),
            from: "$server".into(),
            args: Bytes::from_static(b"null"),
            job: None,
            deadline: Duration::from_secs(1),
            cancel: CancellationToken::new(),
            progress: Progress::off(),
        }
    }

    #[tokio::test]
    async fn missing_handler_is_unknown_command() {
        let e = run(None, ctx("reboot")).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownCommand);
    }

    #[tokio::test]
    async fn a_panic_becomes_an_error_result() {
        let h = Handlers::new().on("boom", |_c: Context| async move {
            if true {
                panic!("kaboom");
            }
            Ok(serde_json::Value::Null)
        });
        let e = run(h.get("boom"), ctx("boom")).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::HandlerPanicked);
        assert!(e.message.contains("kaboom"));
    }

    #[test]
    fn reply_frames_use_the_codec_asked_for() {
        for codec in Codec::ALL {
            let ok = codec.decode(&reply_frame(codec, "7".into(), Ok(serde_json::json!({"a": 1})))).unwrap();
            assert_eq!(ok.re.as_deref(), Some("7"));
            assert_eq!(ok.body.as_deref(), Some(&br#"{"a":1}"#[..]));
            let e = ErrorBody::new(ErrorCode::BadArgs, "no");
            let err = codec.decode(&reply_frame(codec, "8".into(), Err(e.clone()))).unwrap();
            assert_eq!(err.error, Some(e));
        }
    }

    #[tokio::test]
    async fn a_panic_before_the_future_exists_is_caught_too() {
        fn eager(c: Context) -> HandlerFuture {
            let n: u32 = serde_json::from_slice(&c.args).expect("a number");
            Box::pin(async move { Ok(serde_json::json!(n)) })
        }
        let h = Handlers::new().on("eager", eager);
        let e = run(h.get("eager"), ctx("eager")).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::HandlerPanicked);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_command_answers_cancelled() {
        let h = Handlers::new().on("slow", |_c: Context| async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(serde_json::Value::Null)
        });
        let c = ctx("slow");
        let cancel = c.cancel.clone();
        let running = tokio::spawn(run(h.get("slow"), c));
        cancel.cancel();
        let e = running.await.unwrap().unwrap_err();
        assert_eq!(e.code, ErrorCode::Cancelled);
    }

    #[tokio::test(start_paused = true)]
    async fn an_overrun_is_a_timeout() {
        let h = Handlers::new().on("slow", |_c: Context| async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(serde_json::Value::Null)
        });
        let e = run(h.get("slow"), ctx("slow")).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Timeout);
    }
}

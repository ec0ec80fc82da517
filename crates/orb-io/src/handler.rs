//! Command handlers by name, shared by agents (commands from the server and other clients) and by
//! the server library (commands to the server). [`run`] executes one with its deadline, turning
//! a panic into a `handler_panicked` error so the process survives; [`reply_envelope`] turns the
//! outcome into the `reply` a connection sends back. A handler registered with a JSON Schema
//! ([`Handlers::on_with_schema`]) has its arguments checked before it runs.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use orb_proto::message::RawJson;
use orb_proto::{Codec, Envelope, ErrorBody, ErrorCode};
use tokio_util::sync::CancellationToken;

pub use crate::progress::Progress;
use crate::schema::{ArgsSchema, SchemaError};

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

/// A handler whose arguments are checked against a JSON Schema first: arguments that do not
/// match are answered `invalid_args` and the handler is never called.
struct Validated {
    schema: ArgsSchema,
    inner: Arc<dyn Handler>,
}

impl Handler for Validated {
    fn call(&self, ctx: Context) -> HandlerFuture {
        match self.schema.check(&ctx.cmd, &ctx.args) {
            Ok(()) => self.inner.call(ctx),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}

/// One registered command: its handler (wrapped in [`Validated`] when it has a schema) and the
/// schema it declares.
#[derive(Clone)]
struct Entry {
    handler: Arc<dyn Handler>,
    schema: Option<ArgsSchema>,
}

/// Handlers by command name, some with a JSON Schema for their arguments.
#[derive(Clone, Default)]
pub struct Handlers(HashMap<String, Entry>);

impl Handlers {
    /// No handlers.
    pub fn new() -> Handlers {
        Handlers::default()
    }

    /// Adds (or replaces) the handler for `name`, without a schema: it gets any arguments.
    pub fn on(mut self, name: impl Into<String>, h: impl Handler) -> Handlers {
        self.0.insert(name.into(), Entry { handler: Arc::new(h), schema: None });
        self
    }

    /// Adds (or replaces) the handler for `name` with a JSON Schema for its arguments, compiled
    /// here, once. The schema is declared in `hello` (so `orb commands` shows it), and every
    /// command's arguments are checked against it before `h` runs: arguments that do not match
    /// are answered `invalid_args` naming the JSON Pointer path at fault, and `h` is not called.
    ///
    /// ```
    /// # use orb_io::handler::{Context, Handlers};
    /// let handlers = Handlers::new()
    ///     .on_with_schema(
    ///         "set",
    ///         serde_json::json!({"type": "object", "properties": {"threshold": {"type": "number"}}}),
    ///         |c: Context| async move { Ok(serde_json::json!({"set": c.args::<serde_json::Value>()?})) },
    ///     )
    ///     .expect("a valid schema");
    /// assert!(handlers.schema("set").is_some());
    /// ```
    ///
    /// # Errors
    /// [`SchemaError`] when `schema` is not a valid JSON Schema (it may not `$ref` anything
    /// outside itself), or when the schemas registered would be more than
    /// [`orb_proto::message::MAX_HELLO_SCHEMA_BYTES`] in all (the server would refuse the
    /// hello).
    pub fn on_with_schema(
        mut self,
        name: impl Into<String>,
        schema: serde_json::Value,
        h: impl Handler,
    ) -> Result<Handlers, SchemaError> {
        let name = name.into();
        let schema = ArgsSchema::compile(schema)?;
        let others: usize = self
            .0
            .iter()
            .filter(|(n, _)| **n != name)
            .filter_map(|(_, e)| e.schema.as_ref())
            .map(ArgsSchema::len)
            .sum();
        let max = orb_proto::message::MAX_HELLO_SCHEMA_BYTES;
        if others + schema.len() > max {
            return Err(SchemaError::TooLarge { len: others + schema.len(), max });
        }
        let handler = Arc::new(Validated { schema: schema.clone(), inner: Arc::new(h) });
        self.0.insert(name, Entry { handler, schema: Some(schema) });
        Ok(self)
    }

    /// The handler for `name` (checking its arguments first when it has a schema).
    pub fn get(&self, name: &str) -> Option<Arc<dyn Handler>> {
        self.0.get(name).map(|e| Arc::clone(&e.handler))
    }

    /// The schema of `name`'s arguments, when it was registered with one.
    pub fn schema(&self, name: &str) -> Option<&ArgsSchema> {
        self.0.get(name).and_then(|e| e.schema.as_ref())
    }

    /// Registered command names, sorted (declared in `hello`).
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.0.keys().cloned().collect();
        v.sort();
        v
    }

    /// The schemas of the commands registered with one, by name (declared in `hello`).
    pub fn schemas(&self) -> BTreeMap<String, RawJson> {
        self.0
            .iter()
            .filter_map(|(name, e)| {
                let raw = serde_json::value::to_raw_value(e.schema.as_ref()?.source()).ok()?;
                Some((name.clone(), RawJson(raw)))
            })
            .collect()
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

    #[tokio::test]
    async fn a_schema_is_checked_before_the_handler_runs() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        let schema = serde_json::json!({"type": "object", "properties": {"threshold": {"type": "number"}}, "required": ["threshold"]});
        let h = Handlers::new()
            .on_with_schema("set", schema.clone(), move |c: Context| {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move { Ok(serde_json::from_slice(&c.args).unwrap()) }
            })
            .unwrap()
            .on("ping", |_c: Context| async { Ok(serde_json::Value::Null) });
        let mut c = ctx("set");
        c.args = Bytes::from_static(br#"{"threshold":"hot"}"#);
        let e = run(h.get("set"), c).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgs);
        assert_eq!(e.message, r#"set: /threshold: "hot" is not of type "number""#);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0, "the handler never ran");
        let mut c = ctx("set");
        c.args = Bytes::from_static(br#"{"threshold":3}"#);
        assert_eq!(run(h.get("set"), c).await.unwrap(), serde_json::json!({"threshold": 3}));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(h.schemas().len(), 1);
        assert_eq!(h.schemas()["set"].0.get(), serde_json::to_string(&schema).unwrap());
        assert!(h.schema("ping").is_none());
        // Registering without a schema replaces the schema too.
        assert!(h.on("set", |_c: Context| async { Ok(serde_json::Value::Null) }).schemas().is_empty());
    }

    #[test]
    fn a_bad_schema_or_too_many_schema_bytes_are_refused_at_registration() {
        let noop = |_c: Context| async { Ok(serde_json::Value::Null) };
        let e = Handlers::new().on_with_schema("x", serde_json::json!({"type": 3}), noop).err().unwrap();
        assert!(matches!(e, SchemaError::Invalid(_)), "{e:?}");
        let half = serde_json::json!({"description": "d".repeat(orb_proto::message::MAX_HELLO_SCHEMA_BYTES / 2)});
        let h = Handlers::new().on_with_schema("a", half.clone(), noop).unwrap();
        let e = h.clone().on_with_schema("b", half.clone(), noop).err().unwrap();
        assert!(matches!(e, SchemaError::TooLarge { .. }), "{e:?}");
        // Replacing a command's own schema does not count the old one.
        h.on_with_schema("a", half, noop).unwrap();
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

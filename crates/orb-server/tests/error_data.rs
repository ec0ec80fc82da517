//! An error's `data` end to end: a device's handler answers an error carrying data; the job's
//! event, a request's reply and the stored job (`$orb.jobs.show`, after a restart too) all
//! carry it verbatim, over JSON and MessagePack, on SQLite and (when configured) PostgreSQL; data
//! too large to relay is replaced by `frame_too_large`.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use orb_client::{ClientError, Codec, Context, Handlers, JobRequest};
use orb_proto::history::JobDetail;
use orb_proto::{ErrorBody, ErrorCode, Status};
use orb_testkit::{TestServer, Transport, WAIT, finish_job};
use serde_json::json;
use serde_json::value::RawValue;

const NULL: Bytes = Bytes::from_static(b"null");
/// The servers' frame limit here.
const MAX_FRAME: usize = 64 * 1024;
/// The data the handler attaches, spelled with spaces and an escape the server must keep.
const DATA: &str = r#"{"exit_code": 3, "stdout": "", "stderr": "no\u00e9\n"}"#;

/// `fail` answers `exit_status` with [`DATA`]; `big` answers an error whose data is `n` bytes.
fn failing() -> Handlers {
    Handlers::new()
        .on("fail", |_c: Context| async {
            Err(ErrorBody::new(ErrorCode::ExitStatus, "exited with status 3")
                .with_data(RawValue::from_string(DATA.to_owned()).unwrap()))
        })
        .on("big", |c: Context| async move {
            let n: usize = c.args()?;
            let data = serde_json::value::to_raw_value(&"x".repeat(n)).unwrap();
            Err(ErrorBody::new(ErrorCode::HandlerError, "big").with_data(data))
        })
}

/// Waits (bounded) until the stored job has a result for every target.
async fn stored(op: &orb_client::Client, id: &str) -> JobDetail {
    orb_testkit::stored_until(op, id, |d| d.pending.is_empty() && !d.results.is_empty()).await
}

/// The test on a server whose store is at `store_url` (the embedded SQLite when `None`).
async fn data_reaches_the_requester_and_the_history(store_url: Option<String>) {
    let tweak = |c: &mut orb_server::ServerConfig| {
        c.limits.max_frame = MAX_FRAME;
        if let Some(url) = &store_url {
            c.store.url = Some(url.clone());
        }
    };
    let server = TestServer::start_with(tweak, |b| b).await;
    let mut agent_cfg = server.agent_config(Transport::Tcp, "dev-m");
    agent_cfg.codec = Codec::MsgPack;
    let _m = server.agent_with(agent_cfg, failing()).await;
    let _j = server.agent(Transport::Ws, "dev-j", &[], failing()).await;
    let op = server.operator(Transport::Tcp).await;
    let mut op_cfg = server.operator_config(Transport::Tcp);
    op_cfg.codec = Codec::MsgPack;
    let op_m = orb_client::Client::connect(op_cfg, Handlers::new()).await.unwrap();

    let job = op.submit(JobRequest::new("dev-m,dev-j", "fail").args(NULL).deadline(WAIT)).await.unwrap();
    let id = job.id().to_owned();
    let live = finish_job(job).await;
    for device in ["dev-m", "dev-j"] {
        let r = live.result(device);
        assert_eq!(r.status, Status::Error);
        let e = r.error.as_ref().unwrap();
        assert_eq!((e.code.clone(), e.message.as_str()), (ErrorCode::ExitStatus, "exited with status 3"));
        assert_eq!(e.data_json(), Some(DATA), "{device}: the event carries the data verbatim");
    }

    // A request's reply carries it too, to a JSON and a MessagePack requester.
    for requester in [&op, &op_m] {
        for device in ["dev-m", "dev-j"] {
            match requester.request(device, "fail", NULL, WAIT).await {
                Err(ClientError::Remote(e)) => assert_eq!(e.data_json(), Some(DATA), "{device}"),
                other => panic!("{device}: {other:?}"),
            }
        }
    }

    // The history keeps it, in the objects `orb send --json` prints.
    let d = stored(&op, &id).await;
    let shown = serde_json::to_value(&d.results).unwrap();
    let want = json!({"code": "exit_status", "message": "exited with status 3", "data": serde_json::from_str::<serde_json::Value>(DATA).unwrap()});
    assert_eq!(shown[0]["error"], want, "{shown}");
    assert_eq!(shown[1]["error"], want, "{shown}");
    assert_eq!(d.results[0].error.as_ref().and_then(ErrorBody::data_json), Some(DATA), "verbatim");

    // Data that fits the device's frame but cannot be relayed within the frame limit (less what
    // the server adds) is replaced, as an oversized result is.
    let n = MAX_FRAME - 600;
    let job = op.submit(JobRequest::new("dev-j", "big").args(Bytes::from(n.to_string())).deadline(WAIT));
    let live = finish_job(job.await.unwrap()).await;
    let e = live.result("dev-j").error.clone().unwrap();
    assert_eq!(e.code, ErrorCode::FrameTooLarge, "{e}");
    assert_eq!(e.data, None);
    let job = op.submit(JobRequest::new("dev-j", "big").args(Bytes::from_static(b"1000")).deadline(WAIT));
    let live = finish_job(job.await.unwrap()).await;
    let e = live.result("dev-j").error.clone().unwrap();
    assert_eq!(e.data_json().map(str::len), Some(1002), "{e}");

    let server = server.restart(tweak).await;
    let op = server.operator(Transport::Tcp).await;
    let d = stored(&op, &id).await;
    assert_eq!(d.results[0].error.as_ref().and_then(ErrorBody::data_json), Some(DATA), "after a restart");
}

#[tokio::test]
async fn error_data_reaches_the_requester_and_the_history_on_sqlite() {
    data_reaches_the_requester_and_the_history(None).await;
}

#[tokio::test]
async fn error_data_reaches_the_requester_and_the_history_on_postgres() {
    let Some(db) = orb_store::testkit::TempPostgres::create().await else {
        eprintln!("skipped: {} is not set", orb_store::testkit::POSTGRES_URL_VAR);
        return;
    };
    let orb_store::StoreUrl::Postgres(url) = db.url() else { panic!("a postgres url") };
    data_reaches_the_requester_and_the_history(Some(url)).await;
    db.drop_db().await;
}

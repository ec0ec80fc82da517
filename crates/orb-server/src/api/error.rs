//! A refusal as an HTTP response: the wire protocol's error codes with their HTTP statuses
//! (`ErrorCode::http_status`), the body `{"code": ..., "message": ...}`; and a JSON body that
//! does not parse or fit, told the same way (`bad_request`).

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use orb_proto::{ErrorBody, ErrorCode};

/// A refusal.
#[derive(Debug)]
pub(crate) struct ApiError(pub(crate) ErrorBody);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self.0)).into_response()
    }
}

impl From<ErrorBody> for ApiError {
    fn from(e: ErrorBody) -> Self {
        ApiError(e)
    }
}

/// `bad_request` saying what was wrong with `what`: at most `orb_proto::bounded` characters.
fn bad_request(what: &str, why: &str) -> ApiError {
    ApiError(ErrorBody::new(ErrorCode::BadRequest, orb_proto::bounded(format!("{what}: {why}"))))
}

/// serde's words in an axum rejection's text (`Failed to deserialize ...: limit: invalid
/// digit`): what comes after axum's own sentence, which names no field.
fn serde_words(text: &str) -> &str {
    text.split_once(": ").map_or(text, |(_, serde)| serde)
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            let msg = "the body is larger than the server's frame limit (limits.max_frame)";
            return ApiError(ErrorBody::new(ErrorCode::FrameTooLarge, msg));
        }
        match &r {
            JsonRejection::JsonDataError(e) => bad_request("the JSON body", serde_words(&e.body_text())),
            JsonRejection::JsonSyntaxError(e) => bad_request("the JSON body", serde_words(&e.body_text())),
            _ => bad_request("the JSON body", &r.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        match &r {
            QueryRejection::FailedToDeserializeQueryString(e) => {
                bad_request("the query string", serde_words(&e.body_text()))
            }
            _ => bad_request("the query string", &r.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        bad_request("the path", &orb_proto::excerpt(&r.body_text()))
    }
}

impl From<WebSocketUpgradeRejection> for ApiError {
    fn from(r: WebSocketUpgradeRejection) -> Self {
        let why = format!(
            "this endpoint is a WebSocket: send GET with Connection: upgrade, Upgrade: websocket, \
             Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key ({})",
            orb_proto::excerpt(&r.body_text())
        );
        ApiError(ErrorBody::new(ErrorCode::BadRequest, why))
    }
}

/// A path under `/v1/` that names nothing.
pub(crate) async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError(ErrorBody::new(ErrorCode::NotFound, format!("no such endpoint: {}", orb_proto::excerpt(uri.path()))))
}

//! The dashboard at `/` (issue 14): a page served from the binary that signs in with the admin
//! token (exchanged for a session cookie, `logins`), shows the devices, a live event feed, the
//! jobs with per-device results and a send form with a live preview of what the selector
//! matches. Pages and fragments are HTML rendered on the server (`views`, `fragments`) and
//! swapped in by the vendored htmx (`assets`); every call goes to the same typed broker services
//! as the API and the CLI, so the page can never disagree with them.

mod assets;
mod fragments;
pub(crate) mod logins;
mod views;

use std::sync::Arc;

use axum::extract::{Extension, Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

pub(crate) use logins::Logins;

use crate::identity::{Identity, Requester};
use crate::listener::http::Admitted;
use crate::session::Shared;

/// The dashboard's routes: `/`, `/login`, `/logout`, `/assets/{name}` and the `/ui/` fragments.
pub(crate) fn routes(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/", get(index))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/assets/{name}", get(assets::serve))
        .route("/ui/devices", get(fragments::devices))
        .route("/ui/preview", get(fragments::preview))
        .route("/ui/jobs", get(fragments::jobs))
        .route("/ui/jobs/{id}", get(fragments::job))
        .route("/ui/send", post(fragments::send))
        .with_state(shared)
}

/// `GET /`: the dashboard for a signed-in browser, else the sign-in page.
async fn index(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Html<String> {
    if shared.logins.signed_in(&headers).is_some() {
        Html(views::dashboard(&shared.broker.node().to_string()).into_string())
    } else {
        Html(views::login(None).into_string())
    }
}

/// The sign-in form.
#[derive(Deserialize)]
struct SignIn {
    token: String,
}

/// `POST /login`: the admin token for a session cookie, then back to `/`.
async fn login(
    State(shared): State<Arc<Shared>>,
    admitted: Option<Extension<Admitted>>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    let refuse = |status: StatusCode, why: &str| (status, Html(views::login(Some(why)).into_string())).into_response();
    if !logins::same_origin(&headers) {
        return refuse(StatusCode::FORBIDDEN, "sign in from this server's own page");
    }
    let ip = admitted.map(|Extension(a)| a.peer.ip());
    let dashboard = Requester::new(Identity::admin("dashboard"));
    match crate::api::auth::operator(&shared, form.token.trim(), ip, &dashboard).await {
        Ok(who) => {
            let id = shared.logins.start(who);
            let mut r = Redirect::to("/").into_response();
            // Served over TLS (`[tls]`): the browser sends the cookie back only over TLS.
            if let Ok(cookie) = logins::set_cookie(&id, shared.tls.is_some()).parse() {
                r.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            r
        }
        Err(e) => {
            let status = StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
            refuse(status, &e.message)
        }
    }
}

/// `POST /logout`: ends the sign-in and clears the cookie.
async fn logout(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(id) = logins::session_cookie(&headers)
        && logins::same_origin(&headers)
    {
        shared.logins.end(&id);
    }
    let mut r = Redirect::to("/").into_response();
    if let Ok(cookie) = logins::clear_cookie().parse() {
        r.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    r
}

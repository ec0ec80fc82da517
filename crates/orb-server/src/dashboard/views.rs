//! The dashboard's two whole pages, rendered with maud: the sign-in form and the dashboard shell
//! (devices, live events, jobs, the send form). The shell's panels fill themselves from the
//! `/ui/` fragments (`fragments.rs`) through htmx, and `app.js` feeds the event list from
//! `/v1/events` and refreshes the panels a publication concerns.

use maud::{DOCTYPE, Markup, html};

/// Everything both pages share: the viewport for phones, the stylesheet, the scripts.
fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                link rel="stylesheet" href="/assets/app.css";
                script src="/assets/htmx.min.js" defer {}
                script src="/assets/app.js" defer {}
            }
            body { (body) }
        }
    }
}

/// The sign-in page; `problem` is why the last attempt failed.
pub(crate) fn login(problem: Option<&str>) -> Markup {
    layout(
        "orb — sign in",
        html! {
            main.login {
                h1 { "orb" }
                form method="post" action="/login" {
                    label for="token" { "Token" }
                    input #token type="password" name="token" autocomplete="current-password" required autofocus;
                    @if let Some(problem) = problem {
                        p.error role="alert" { (problem) }
                    }
                    button type="submit" { "Sign in" }
                }
                p.hint {
                    "The token is in the server's data folder (" code { "admin.token" } "). It is exchanged for a "
                    "session cookie and never kept by the page."
                }
            }
        },
    )
}

/// The dashboard shell for a signed-in browser.
pub(crate) fn dashboard(node: &str) -> Markup {
    layout(
        "orb",
        html! {
            header {
                h1 { "orb" }
                span.node { "node " (node) }
                span #feed-state.state { "connecting…" }
                form method="post" action="/logout" { button.link type="submit" { "Sign out" } }
            }
            main.grid {
                section #devices-panel {
                    h2 { "Devices" }
                    div #devices hx-get="/ui/devices" hx-trigger="load, refresh, every 15s" { "Loading…" }
                }
                section #send-panel {
                    h2 { "Send a command" }
                    form #send hx-post="/ui/send" hx-target="#job-detail" {
                        label for="target" { "Target" }
                        input #target name="target" value="*" required
                            hx-get="/ui/preview" hx-trigger="load, input changed delay:250ms" hx-target="#preview";
                        div #preview.preview {}
                        label for="command" { "Command" }
                        input #command name="command" value="ping" required;
                        label for="args" { "Arguments (JSON, optional)" }
                        input #args name="args" placeholder="{\"n\": 1}";
                        label for="wait" { "Deadline" }
                        input #wait name="wait" value="10s";
                        button type="submit" { "Send" }
                    }
                    div #job-detail {}
                }
                section #jobs-panel {
                    h2 { "Jobs" }
                    div #jobs hx-get="/ui/jobs" hx-trigger="load, refresh, every 15s" { "Loading…" }
                }
                section #events-panel {
                    h2 { "Events" }
                    ol #feed.feed {}
                }
            }
        },
    )
}

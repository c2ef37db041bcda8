//! Who may use the console once auth is on.
//!
//! A browser signs in with a token at `/login`; the token is kept in an
//! HttpOnly, SameSite=Strict cookie (Secure when the console serves TLS).
//! Scripts send `authorization: Bearer <token>` instead. Over TLS, a client
//! certificate whose subject has a grant signs in too, with no token. Every
//! console page shows every callback, so it needs a grant for every
//! callback: reader to look, producer to cancel a task, operator for the
//! other actions. `/metrics` has its own check ([`crate::api::http`]);
//! `/healthz` and `/readyz` are open.

use axum::extract::{Form, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::pages;
use super::ConsoleState;
use crate::api::access::{self, Need, Principal};
use crate::api::http::ClientCert;
use crate::domain::auth::Role;
use crate::store::index;

const COOKIE: &str = "drover_token";

tokio::task_local! {
    /// The console user a page or action runs for: the pages' in-process
    /// calls carry it ([`request`]), so that a call forwarded to the leader
    /// is checked there as this user, not as the forwarding node.
    static CALLER: Principal;
}

/// A request to this node's services, as the console user.
pub(super) fn request<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Ok(p) = CALLER.try_with(Principal::clone) {
        r.extensions_mut().insert(p);
    }
    r
}

/// The token a request carries: the bearer header, else the cookie.
fn token_of(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        return Some(v.to_string());
    }
    let cookies = headers.get_all(header::COOKIE);
    cookies
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .map(|t| format!("Bearer {t}"))
        .next()
}

/// The role a console request needs.
fn need(method: &Method, path: &str) -> Role {
    match (method, path) {
        (&Method::POST, "/actions/cancel") => Role::Producer,
        (&Method::POST, _) => Role::Operator,
        _ => Role::Reader,
    }
}

impl ConsoleState {
    /// The principal a token (`Bearer ...`), else a client certificate's
    /// subject, names; `None` with auth off.
    fn principal(
        &self,
        authorization: Option<String>,
        subject: Option<String>,
    ) -> Result<Option<Principal>, crate::api::ApiError> {
        let now = self.scheduler.clock.stamp();
        let index = index::lock(&self.scheduler.index);
        access::http_principal(index.auth(), authorization, subject, now)
    }
}

/// In front of every console route but `/login` and the stylesheet.
pub async fn require(State(s): State<ConsoleState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path == "/login" || path == "/console.css" {
        return next.run(req).await;
    }
    let principal = match s.principal(token_of(req.headers()), ClientCert::of(&req)) {
        Ok(None) => return CALLER.scope(Principal::Anyone, next.run(req)).await,
        Ok(Some(p)) => p,
        Err(e) => {
            tracing::warn!(path, reason = %e, "refused a console request");
            if path.starts_with("/api/") {
                return (StatusCode::UNAUTHORIZED, e.to_string()).into_response();
            }
            return (StatusCode::UNAUTHORIZED, login_page(&e.to_string())).into_response();
        }
    };
    let role = need(req.method(), &path);
    let checked = access::authorize(&principal, Need::Role(role), &path)
        .and_then(|()| principal.check_unscoped("the console shows every callback"));
    if let Err(e) = checked {
        tracing::warn!(path, principal = %principal.name(), reason = %e, "refused a console request");
        return (StatusCode::FORBIDDEN, pages::error_page("PERMISSION_DENIED", &e.to_string())).into_response();
    }
    CALLER.scope(principal, next.run(req)).await
}

fn login_page(why: &str) -> maud::Markup {
    pages::layout(
        "Sign in",
        false,
        html! {
            p { "Auth is on: sign in with a token (" code { "drover auth token create --role reader" } ")." }
            @if !why.is_empty() { p .error { (why) } }
            form method="post" action="/login" {
                input type="password" name="token" placeholder="drover_..." autocomplete="off" required;
                button type="submit" { "Sign in" }
            }
        },
    )
}

pub async fn login_form() -> maud::Markup {
    login_page("")
}

#[derive(Deserialize)]
pub struct LoginForm {
    pub token: String,
}

/// Check the token, then keep it in a cookie.
pub async fn login(State(s): State<ConsoleState>, Form(f): Form<LoginForm>) -> Response {
    let token = f.token.trim();
    if let Err(e) = s.principal(Some(format!("Bearer {token}")), None) {
        return (StatusCode::UNAUTHORIZED, login_page(&e.to_string())).into_response();
    }
    let secure = if s.secure_cookies { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}");
    match cookie.parse::<axum::http::HeaderValue>() {
        Ok(v) => ([(header::SET_COOKIE, v)], Redirect::to("/")).into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, login_page("the token must be printable ASCII")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_from_the_header_or_the_cookie() {
        let mut h = HeaderMap::new();
        assert_eq!(token_of(&h), None);
        h.insert(header::COOKIE, "a=b; drover_token=drover_x; c=d".parse().unwrap());
        assert_eq!(token_of(&h).as_deref(), Some("Bearer drover_x"));
        h.insert(header::AUTHORIZATION, "Bearer drover_y".parse().unwrap());
        assert_eq!(token_of(&h).as_deref(), Some("Bearer drover_y"));
    }

    #[test]
    fn actions_need_more_than_pages() {
        assert_eq!(need(&Method::GET, "/tasks"), Role::Reader);
        assert_eq!(need(&Method::POST, "/actions/cancel"), Role::Producer);
        assert_eq!(need(&Method::POST, "/actions/dlq"), Role::Operator);
    }
}

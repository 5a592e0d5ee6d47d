//! The access check of the instance routes as a warp filter, and its 401 reply.
//!
//! The token comes from `Authorization: Bearer <token>` or the `access_token` query
//! parameter (EventSource and browsers' WebSocket cannot set headers). Neither is ever
//! logged or echoed: the 401 body names what was wrong, not what was sent.

use super::reply::error_reply;
use super::HttpState;
use crate::auth_tokens::Refusal;
use warp::http::{header, HeaderValue, StatusCode};
use warp::{Filter, Rejection};

/// A request the access check refused.
#[derive(Debug)]
struct Unauthorized(Refusal);

impl warp::reject::Reject for Unauthorized {}

/// Passes when authentication is off or the request carries an accepted token; put it
/// right after a protected route's path, so other routes are not affected.
pub(super) fn require(state: &HttpState) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    let auth = state.auth.clone();
    warp::header::optional::<String>("authorization")
        .and(super::raw_query())
        .and_then(move |header: Option<String>, query: String| {
            let auth = auth.clone();
            async move {
                if !auth.enabled() {
                    return Ok(());
                }
                let token = query_token(&query);
                auth.check(header.as_deref(), token.as_deref())
                    .map_err(|refusal| warp::reject::custom(Unauthorized(refusal)))
            }
        })
        .untuple_one()
}

/// The `access_token` query parameter.
fn query_token(query: &str) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v)
}

/// The 401 reply for a refused request, when `rejection` is one.
pub(super) fn refusal_reply(rejection: &Rejection) -> Option<warp::reply::Response> {
    let Unauthorized(refusal) = rejection.find::<Unauthorized>()?;
    let mut reply = error_reply(StatusCode::UNAUTHORIZED, refusal.message());
    let challenge = match refusal {
        Refusal::Missing => "Bearer realm=\"loco-discovery\"",
        Refusal::Invalid => "Bearer realm=\"loco-discovery\", error=\"invalid_token\"",
    };
    reply.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    Some(reply)
}

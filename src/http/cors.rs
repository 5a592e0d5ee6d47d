//! CORS for the API, off unless `--cors-allow-origin` lists origins.
//!
//! Not `warp::cors()`: it answers an actual request from an origin not on the list with
//! 403, which would refuse the dashboard's own WebSocket and POST requests (browsers send
//! `Origin` on those even same-origin), answers preflights with 200 and sets no
//! `Vary: Origin`. Here an allowed origin is echoed with `Vary: Origin`, any other gets
//! no CORS header (the browser refuses it; same-origin and non-browser clients are
//! unaffected), and a preflight is answered 204, or 403 for an origin not on the list.

use super::reply::error_reply;
use std::convert::Infallible;
use std::sync::Arc;
use warp::http::{header, HeaderValue, StatusCode};
use warp::{Filter, Rejection, Reply};

const ALLOW_METHODS: &str = "GET, POST, OPTIONS";
const ALLOW_HEADERS: &str = "Authorization, Last-Event-ID, Content-Type";
const MAX_AGE: &str = "600";

/// The Access-Control-Allow-Origin value for an allowed `origin`.
fn allow_origin_value(origins: &[String], origin: &str) -> Option<HeaderValue> {
    if origins.iter().any(|o| o == origin) {
        HeaderValue::from_str(origin).ok()
    } else if origins.iter().any(|o| o == "*") {
        Some(HeaderValue::from_static("*"))
    } else {
        None
    }
}

/// Answers CORS preflights (OPTIONS with Origin and Access-Control-Request-Method) when
/// CORS is on; rejects everything else so the routes after it are tried.
pub(super) fn preflight(
    origins: Arc<Vec<String>>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    warp::options()
        .and(warp::header::<String>("origin"))
        .and(warp::header::<String>("access-control-request-method"))
        .and_then(move |origin: String, _method: String| {
            let origins = origins.clone();
            async move {
                if origins.is_empty() {
                    return Err(warp::reject::not_found());
                }
                let Some(value) = allow_origin_value(&origins, &origin) else {
                    let mut reply = error_reply(StatusCode::FORBIDDEN, "origin not allowed");
                    reply
                        .headers_mut()
                        .insert(header::VARY, HeaderValue::from_static("Origin"));
                    return Ok(reply);
                };
                let mut reply = StatusCode::NO_CONTENT.into_response();
                let headers = reply.headers_mut();
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static(ALLOW_METHODS),
                );
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static(ALLOW_HEADERS),
                );
                headers.insert(
                    header::ACCESS_CONTROL_MAX_AGE,
                    HeaderValue::from_static(MAX_AGE),
                );
                headers.insert(header::VARY, HeaderValue::from_static("Origin"));
                Ok(reply)
            }
        })
}

/// Adds the CORS headers to `response` for a request from `origin`.
pub(super) fn decorate(
    origins: &[String],
    origin: Option<String>,
    mut response: warp::reply::Response,
) -> warp::reply::Response {
    if origins.is_empty() {
        return response;
    }
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(value) = origin.and_then(|o| allow_origin_value(origins, &o)) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    response
}

/// Wraps `routes` with CORS: preflights answered first, every reply decorated.
pub(super) fn wrap<F>(
    origins: Arc<Vec<String>>,
    routes: F,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone
where
    F: Filter<Extract = (warp::reply::Response,), Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
{
    let decorate_with = origins.clone();
    preflight(origins)
        .or(warp::header::headers_cloned().and(routes).map(
            move |headers: warp::http::HeaderMap, response| {
                let origin = headers
                    .get(header::ORIGIN)
                    .and_then(|o| o.to_str().ok())
                    .map(str::to_owned);
                decorate(&decorate_with, origin, response)
            },
        ))
        .unify()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_and_exact_origins() {
        let list = vec!["https://a.example".to_owned()];
        assert_eq!(
            allow_origin_value(&list, "https://a.example").unwrap(),
            "https://a.example"
        );
        assert!(allow_origin_value(&list, "https://a.example.evil").is_none());
        assert!(allow_origin_value(&list, "null").is_none());
        let star = vec!["*".to_owned()];
        assert_eq!(allow_origin_value(&star, "https://x").unwrap(), "*");
    }
}

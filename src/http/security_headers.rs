//! The dashboard's security headers: a Content-Security-Policy that allows only the
//! page's own files (no inline script or style), no framing, and no Referer.

use warp::http::header::{HeaderMap, HeaderValue};

/// The dashboard's Content-Security-Policy: its own scripts, styles and API (the
/// WebSocket included: CSP 3 `'self'` covers `ws:`/`wss:` to the same host), the
/// `data:` favicon, and no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Adds the security headers to a static file's response.
pub fn add(headers: &mut HeaderMap) {
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
}

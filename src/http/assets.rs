//! The dashboard and `discovery-client.js`, embedded from `static/` at build time, so the
//! single binary serves them with no files on disk and no Node.js at run time.

use include_dir::{include_dir, Dir};
use warp::http::{header, StatusCode};
use warp::path::FullPath;
use warp::Reply;

static ASSETS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/static");

/// The embedded file at `path` (`index.html` for `/`), with its content type.
pub fn lookup(path: &str) -> Option<(&'static [u8], String)> {
    let relative = path.trim_start_matches('/');
    let relative = if relative.is_empty() {
        "index.html"
    } else {
        relative
    };
    let file = ASSETS.get_file(relative)?;
    let mime = mime_guess::from_path(relative).first_or_octet_stream();
    let mime = if mime.type_() == "text" || mime.subtype() == "javascript" {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    };
    Some((file.contents(), mime))
}

/// Serves an embedded file, or passes to the next route.
pub fn serve(path: FullPath) -> Result<warp::reply::Response, warp::Rejection> {
    let (body, mime) = lookup(path.as_str()).ok_or_else(warp::reject::not_found)?;
    let mut response = warp::reply::Response::new(body.into());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        mime.parse().expect("mime is a header value"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        "no-cache".parse().expect("static header"),
    );
    headers.insert(
        "x-content-type-options",
        "nosniff".parse().expect("static header"),
    );
    super::security_headers::add(headers);
    *response.status_mut() = StatusCode::OK;
    Ok(response.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_the_dashboard_page() {
        let (body, mime) = lookup("/").unwrap();
        assert!(mime.starts_with("text/html"));
        assert!(String::from_utf8_lossy(body).contains("<html"));
    }

    #[test]
    fn unknown_files_and_escapes_are_not_found() {
        assert!(lookup("/nope.js").is_none());
        assert!(lookup("/../Cargo.toml").is_none());
    }
}

//! Response bodies made of shared pieces (a snapshot's shared bytes, frames encoded once
//! for every subscriber), sent as they are, without a copy per response.
//!
//! warp's body type cannot be built from a stream outside warp, so a route returns a
//! response whose extensions hold a [`SharedBody`], and the server's connection service
//! ([`super::server`]) sends it in place of warp's empty body.

use bytes::Bytes;
use futures::Stream;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// The pieces of a body, in order.
pub type Pieces = Pin<Box<dyn Stream<Item = Bytes> + Send>>;

/// A body to send in place of warp's, carried in the response's extensions (which must
/// be `Clone + Sync`; the body is taken out once).
#[derive(Clone)]
pub struct SharedBody {
    pieces: Arc<Mutex<Option<Pieces>>>,
    /// The total length when known (a `/live` answer): sent as `content-length`.
    len: Option<u64>,
}

impl SharedBody {
    /// A `200` response whose body is `pieces`; `len` is their total length, when known.
    pub fn response(
        pieces: impl Stream<Item = Bytes> + Send + 'static,
        len: Option<u64>,
    ) -> warp::reply::Response {
        let mut response = warp::reply::Response::new(Default::default());
        response.extensions_mut().insert(SharedBody {
            pieces: Arc::new(Mutex::new(Some(Box::pin(pieces)))),
            len,
        });
        response
    }

    /// A response whose body is these pieces, all known now.
    pub fn whole(pieces: Vec<Bytes>) -> warp::reply::Response {
        let len = pieces.iter().map(|p| p.len() as u64).sum();
        Self::response(futures::stream::iter(pieces), Some(len))
    }

    /// The body a route put in `extensions`, if any.
    pub fn take(extensions: &mut http::Extensions) -> Option<PiecesBody> {
        let shared = extensions.remove::<SharedBody>()?;
        let pieces = shared.pieces.lock().ok()?.take()?;
        Some(PiecesBody {
            pieces,
            len: shared.len,
        })
    }
}

/// A [`SharedBody`] as an HTTP body: one data frame per piece (hyper writes the pieces
/// that are ready together in one vectored write).
pub struct PiecesBody {
    pieces: Pieces,
    len: Option<u64>,
}

impl PiecesBody {
    /// The next piece, or `None` at the end of the body.
    pub async fn next_piece(&mut self) -> Option<Bytes> {
        futures::StreamExt::next(&mut self.pieces).await
    }
}

impl http_body::Body for PiecesBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.pieces
            .as_mut()
            .poll_next(cx)
            .map(|piece| piece.map(|bytes| Ok(http_body::Frame::data(bytes))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.len
            .map(http_body::SizeHint::with_exact)
            .unwrap_or_default()
    }
}

//! Following a file that may change: the metadata file and the static instances file.
//!
//! Polling by content rather than inotify: a mounted ConfigMap is updated by swapping a
//! symlink (`..data`), which file-change notifications on the old inode miss; reading the
//! path again always sees the current target. A read or parse error keeps the last good
//! state and is logged and counted once per distinct error.

use crate::metrics as m;
use loco_discovery_core::text::printable;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Parses the file's text with `parse` at start and whenever it changes, and sends the
/// result to `inputs` (the discovery loop, or the access check), until `shutdown`. `parse` returns an error message when
/// the text is refused.
pub async fn follow_file<T: Send + 'static>(
    path: PathBuf,
    what: &'static str,
    every: Duration,
    shutdown: CancellationToken,
    inputs: mpsc::Sender<T>,
    parse: impl Fn(&str) -> Result<T, String> + Send + Sync + 'static,
) {
    let parse = std::sync::Arc::new(parse);
    let mut last_text: Option<String> = None;
    let mut last_error: Option<String> = None;
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let result = match tokio::fs::read_to_string(&path).await {
            Err(error) => Err(format!("cannot read {}: {error}", path.display())),
            Ok(text) if last_text.as_ref() == Some(&text) => continue,
            // On the blocking pool: a parser may block (the static file's host names
            // are resolved), never a runtime thread.
            Ok(text) => match parsed(&parse, text).await {
                (text, Ok(input)) => {
                    if inputs.send(input).await.is_err() {
                        return;
                    }
                    info!(file = %path.display(), what, "loaded");
                    last_text = Some(text);
                    Ok(())
                }
                (text, Err(error)) => {
                    last_text = Some(text);
                    Err(format!("{}: {error}", path.display()))
                }
            },
        };
        match result {
            Ok(()) => last_error = None,
            Err(error) if last_error.as_ref() != Some(&error) => {
                warn!(file = %path.display(), what, error = %printable(&error),
                      "keeping the last good state");
                metrics::counter!(m::FILE_ERRORS, "file" => what).increment(1);
                // A file that comes back unchanged after an error is loaded again.
                if error.starts_with("cannot read") {
                    last_text = None;
                }
                last_error = Some(error);
            }
            Err(_) => {}
        }
    }
}

/// `parse(text)` on the blocking pool, with the text given back.
async fn parsed<T: Send + 'static>(
    parse: &std::sync::Arc<impl Fn(&str) -> Result<T, String> + Send + Sync + 'static>,
    text: String,
) -> (String, Result<T, String>) {
    let parse = parse.clone();
    tokio::task::spawn_blocking(move || {
        let result = parse(&text);
        (text, result)
    })
    .await
    .unwrap_or_else(|error| (String::new(), Err(format!("the parser failed: {error}"))))
}

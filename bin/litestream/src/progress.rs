//! The restore progress line: `restoring: 37% (120.0/320.0 MB)` on stderr, redrawn in place
//! with `\r`, at most [`INTERVAL`]-often, and only when stderr is a terminal
//! ([`std::io::IsTerminal`]) and the restore reads at least [`MIN_TOTAL`] bytes. Nothing is
//! printed otherwise (pipes, files, container logs, small databases).
//!
//! Sizes are the compressed bytes of the snapshot and WAL segments read so far against the
//! sizes listed for them, in decimal megabytes. The line is the logger's stderr status line
//! ([`crate::logging::draw_status_line`]): a log line erases it, the next tick redraws it.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use litestream_core::restore::{ProgressCallback, RestoreProgress};

use crate::logging::{draw_status_line, end_status_line};

/// Minimum time between two redraws.
pub(crate) const INTERVAL: Duration = Duration::from_millis(250);

/// Restores reading fewer bytes than this show no progress line.
pub(crate) const MIN_TOTAL: u64 = 8 << 20;

/// Format one progress line (without `\r` or newline).
pub(crate) fn format_progress(done: u64, total: u64) -> String {
    let done = done.min(total);
    let pct = if total == 0 {
        100
    } else {
        (u128::from(done) * 100 / u128::from(total)) as u64
    };
    let mb = |n: u64| n as f64 / 1_000_000.0;
    format!("restoring: {pct}% ({:.1}/{:.1} MB)", mb(done), mb(total))
}

#[derive(Debug)]
struct State {
    last: Option<Instant>,
    done: bool,
}

/// Draws the progress line; shared with the restore's blocking thread.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    state: Arc<Mutex<State>>,
}

impl Progress {
    /// A progress line for a restore, or `None` when stderr is not a terminal.
    pub(crate) fn for_stderr() -> Option<Progress> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        Some(Progress {
            state: Arc::new(Mutex::new(State {
                last: None,
                done: false,
            })),
        })
    }

    /// The callback to put in `RestoreOptions::progress`.
    pub(crate) fn callback(&self) -> ProgressCallback {
        let me = self.clone();
        ProgressCallback(Arc::new(move |p: RestoreProgress| me.update(p)))
    }

    fn update(&self, p: RestoreProgress) {
        if p.bytes_total < MIN_TOTAL {
            return;
        }
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if st.done {
            return;
        }
        let now = Instant::now();
        let due = st.last.is_none_or(|t| now.duration_since(t) >= INTERVAL);
        if !p.finished && !due {
            return;
        }
        st.last = Some(now);
        draw_status_line(&format_progress(p.bytes_done, p.bytes_total), p.finished);
        st.done = p.finished;
    }

    /// End the line (after a failed restore, the last state stays on screen).
    pub(crate) fn finish(&self) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if !st.done {
            end_status_line();
        }
        st.done = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_percent_and_megabytes() {
        assert_eq!(
            format_progress(120_000_000, 320_000_000),
            "restoring: 37% (120.0/320.0 MB)"
        );
        assert_eq!(format_progress(0, 0), "restoring: 100% (0.0/0.0 MB)");
        assert_eq!(
            format_progress(9_000_000, 8_000_000),
            "restoring: 100% (8.0/8.0 MB)"
        );
    }
}

//! Download progress bars for `plugin install`, `install --from-rush` and
//! `plugin update`: before the request, a second connection subscribes to
//! the daemon's events; `plugin_download` events carrying this request's
//! `progress_id` are drawn on stderr as one line redrawn with `\r`, and
//! the line is cleared when the request is answered. Only when stderr is a
//! terminal: scripts and tests see nothing.

use std::io::{IsTerminal as _, Write as _};
use std::sync::{Arc, Mutex};

use taskrush_protocol::events::DaemonEvent;
use taskrush_protocol::method;
use taskrush_protocol::paths::DaemonPaths;

use crate::client::{self, Incoming};

/// Width of the bar, in characters.
const WIDTH: usize = 24;

/// A live progress display; [`Bar::finish`] clears it.
pub struct Bar {
    /// `(finished, drawn)`: no drawing once finished; clear only if drawn.
    state: Arc<Mutex<(bool, bool)>>,
}

/// Subscribe to download progress when stderr is a terminal: the bar and
/// the `progress_id` to send with the request. `(None, None)` otherwise,
/// or when the subscription cannot be made (progress is optional).
pub fn start() -> (Option<Bar>, Option<String>) {
    if !std::io::stderr().is_terminal() {
        return (None, None);
    }
    let Ok(Some(mut c)) = client::connect_existing(&DaemonPaths::from_env()) else {
        return (None, None);
    };
    let Ok(sub) = c.send(method::EVENTS, serde_json::json!([])) else {
        return (None, None);
    };
    // Wait for the subscription to be live, so no event is missed.
    loop {
        match c.read() {
            Ok(Incoming::Response { id, result }) if id == sub => {
                if result.is_err() {
                    return (None, None);
                }
                break;
            }
            Ok(_) => continue,
            Err(_) => return (None, None),
        }
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let id = format!("{}-{nanos}", std::process::id());
    let state = Arc::new(Mutex::new((false, false)));
    let (want, shared) = (id.clone(), state.clone());
    // Detached: it ends with the connection or the process.
    std::thread::spawn(move || {
        while let Ok(msg) = c.read() {
            let Incoming::Notification { method: m, params } = msg else {
                continue;
            };
            if m != method::EVENT {
                continue;
            }
            let Some(Ok(DaemonEvent::PluginDownload {
                progress_id,
                plugin,
                version,
                done,
                total,
                ..
            })) = params
                .get("result")
                .map(|r| serde_json::from_value::<DaemonEvent>(r.clone()))
            else {
                continue;
            };
            if progress_id.as_deref() != Some(want.as_str()) {
                continue;
            }
            let Ok(mut st) = shared.lock() else { return };
            if st.0 {
                return;
            }
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{}\x1b[K", line(&plugin, &version, done, total));
            let _ = err.flush();
            st.1 = true;
        }
    });
    (Some(Bar { state }), Some(id))
}

impl Bar {
    /// Stop drawing and clear the line (if one was drawn).
    pub fn finish(self) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        st.0 = true;
        if st.1 {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
        }
    }
}

/// `downloading slack-notify 1.2.0  [#########---------------]  2.1/5.0 MB`.
fn line(plugin: &str, version: &str, done: u64, total: u64) -> String {
    let filled = if total == 0 {
        WIDTH
    } else {
        ((done.min(total) as u128 * WIDTH as u128) / total as u128) as usize
    };
    let mb = |b: u64| b as f64 / 1_000_000.0;
    format!(
        "downloading {plugin} {version}  [{}{}]  {:.1}/{:.1} MB",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled),
        mb(done),
        mb(total)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_in_proportion_to_the_bytes_done() {
        assert_eq!(
            line("slack-notify", "1.2.0", 2_100_000, 5_000_000),
            "downloading slack-notify 1.2.0  [##########--------------]  2.1/5.0 MB"
        );
        assert!(line("a", "1.0.0", 5, 5).contains(&"#".repeat(WIDTH)));
    }
}

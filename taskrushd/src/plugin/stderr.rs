//! A plugin's stderr: read at most [`STDERR_BYTES_RATE`] bytes a second
//! (bursts of [`STDERR_BYTES_BURST`]); above that the host stops reading
//! it for a while, so that a flooding plugin blocks on its writes as on a
//! full pipe and costs the daemon neither CPU nor log space (one counter
//! line says so). What is read is logged line by line at most
//! [`STDERR_RATE`] lines a second (the rest counted and dropped), and its
//! last [`STDERR_KEEP`] lines are kept for error messages.

use std::collections::VecDeque;
use std::future::Future as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, BufReader};
use tokio::time::Instant;

use super::process::{Line, read_line};

/// Longest stderr line kept; the rest of the line is cut.
const MAX_STDERR_LINE: usize = 4096;
/// stderr lines logged per second (on average); more are dropped and counted.
const STDERR_RATE: f64 = 50.0;
/// stderr lines logged in a burst before the rate applies.
const STDERR_BURST: f64 = 200.0;
/// stderr bytes read per second (on average) from one plugin process;
/// above that its stderr is not read for a while and the plugin blocks.
const STDERR_BYTES_RATE: usize = 8 * 1024;
/// stderr bytes read in a burst before the byte rate applies.
const STDERR_BYTES_BURST: usize = 64 * 1024;
/// How much of the byte budget a paused reader waits to regain before it
/// reads again (one second's worth: the plugin blocks for about a second
/// at a time).
const STDERR_RESUME: usize = STDERR_BYTES_RATE;
/// At most one "paused" counter line per plugin per this long.
const STDERR_PAUSE_LOG_EVERY: Duration = Duration::from_secs(60);
/// stderr lines kept for error messages and `plugin info`.
pub(super) const STDERR_KEEP: usize = 20;

/// The plugin's stderr: logged under its name, rate limited, the last
/// lines kept. Shared by the successive processes of one plugin.
pub(super) struct StderrLog {
    name: String,
    inner: Mutex<StderrInner>,
}

struct StderrInner {
    last: VecDeque<String>,
    tokens: f64,
    refilled: Instant,
    dropped: u64,
    /// Times reading was paused for the byte rate, since the last counter
    /// line, and when that line was logged.
    pauses: u64,
    pauses_logged: Option<Instant>,
}

impl StderrLog {
    pub(super) fn new(name: &str) -> Arc<StderrLog> {
        Arc::new(StderrLog {
            name: name.to_owned(),
            inner: Mutex::new(StderrInner {
                last: VecDeque::with_capacity(STDERR_KEEP),
                tokens: STDERR_BURST,
                refilled: Instant::now(),
                dropped: 0,
                pauses: 0,
                pauses_logged: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StderrInner> {
        // Plain data; a panic mid-update leaves it usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record one line; logs it unless over the rate.
    pub(super) fn line(&self, line: String) {
        let line = super::redact::scrub(&line);
        let mut g = self.lock();
        let now = Instant::now();
        let elapsed = now.duration_since(g.refilled).as_secs_f64();
        g.tokens = (g.tokens + elapsed * STDERR_RATE).min(STDERR_BURST);
        g.refilled = now;
        if g.last.len() == STDERR_KEEP {
            g.last.pop_front();
        }
        g.last.push_back(line.clone());
        if g.tokens < 1.0 {
            g.dropped += 1;
            return;
        }
        g.tokens -= 1.0;
        let dropped = std::mem::take(&mut g.dropped);
        drop(g);
        if dropped > 0 {
            tracing::warn!(target: "plugin", plugin = %self.name, "dropped {dropped} stderr lines (over {STDERR_RATE} lines/s)");
        }
        tracing::info!(target: "plugin", plugin = %self.name, "stderr: {line}");
    }

    /// Reading its stderr is paused for the byte rate: count it, and log
    /// the count at most once per [`STDERR_PAUSE_LOG_EVERY`].
    fn paused(&self, total_read: u64) {
        let mut g = self.lock();
        g.pauses += 1;
        let now = Instant::now();
        if g.pauses_logged
            .is_some_and(|at| now.duration_since(at) < STDERR_PAUSE_LOG_EVERY)
        {
            return;
        }
        g.pauses_logged = Some(now);
        let pauses = std::mem::take(&mut g.pauses);
        drop(g);
        tracing::warn!(target: "plugin", plugin = %self.name,
            "stderr over {} KiB/s (bursts of {} KiB): stopped reading it {pauses} time(s) in the last {}s, the plugin blocks on its writes meanwhile ({} KiB read from this process in all)",
            STDERR_BYTES_RATE / 1024, STDERR_BYTES_BURST / 1024, STDERR_PAUSE_LOG_EVERY.as_secs(), total_read / 1024);
    }

    /// The last `n` lines (oldest first).
    pub(super) fn last(&self, n: usize) -> Vec<String> {
        let g = self.lock();
        g.last
            .iter()
            .skip(g.last.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    /// Lines dropped since the last logged one.
    #[cfg(test)]
    fn dropped(&self) -> u64 {
        self.lock().dropped
    }
}

/// A reader that passes at most [`STDERR_BYTES_RATE`] bytes a second
/// (bursts of [`STDERR_BYTES_BURST`]); when the budget is spent it does not
/// read until [`STDERR_RESUME`] bytes of budget are back.
struct Throttled<R> {
    inner: R,
    log: Arc<StderrLog>,
    tokens: f64,
    refilled: Instant,
    pause: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    total: u64,
}

impl<R> Throttled<R> {
    fn new(inner: R, log: Arc<StderrLog>) -> Throttled<R> {
        Throttled {
            inner,
            log,
            tokens: STDERR_BYTES_BURST as f64,
            refilled: Instant::now(),
            pause: None,
            total: 0,
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens =
            (self.tokens + elapsed * STDERR_BYTES_RATE as f64).min(STDERR_BYTES_BURST as f64);
        self.refilled = now;
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Throttled<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let me = &mut *self;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if let Some(pause) = me.pause.as_mut() {
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            me.pause = None;
        }
        me.refill();
        if me.tokens < 1.0 {
            let wait = (STDERR_RESUME as f64 - me.tokens) / STDERR_BYTES_RATE as f64;
            me.log.paused(me.total);
            let mut sleep = Box::pin(tokio::time::sleep(Duration::from_secs_f64(wait)));
            // Registers the waker; a fresh sleep is never ready at once.
            if sleep.as_mut().poll(cx).is_pending() {
                me.pause = Some(sleep);
                return Poll::Pending;
            }
            me.refill();
        }
        let mut chunk = [0u8; 16 * 1024];
        let allowed = (me.tokens as usize).clamp(1, buf.remaining().min(chunk.len()));
        let mut limited = tokio::io::ReadBuf::new(&mut chunk[..allowed]);
        let polled = std::pin::Pin::new(&mut me.inner).poll_read(cx, &mut limited);
        if let Poll::Ready(Ok(())) = &polled {
            let n = limited.filled().len();
            buf.put_slice(limited.filled());
            me.tokens -= n as f64;
            me.total += n as u64;
        }
        polled
    }
}

pub(super) async fn read_stderr<R: AsyncRead + Unpin>(err: R, log: Arc<StderrLog>) {
    let mut r = BufReader::with_capacity(16 * 1024, Throttled::new(err, log.clone()));
    let mut buf = Vec::new();
    while let Ok(Line::Full(cut)) = read_line(&mut r, &mut buf, MAX_STDERR_LINE).await {
        let mut line = String::from_utf8_lossy(&buf).trim_end().to_owned();
        if cut {
            line.push('…');
        }
        log.line(line);
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn stderr_is_read_at_the_byte_rate_after_a_burst() {
        let data = vec![b'x'; 200 * 1024];
        let mut r = Throttled::new(&data[..], StderrLog::new("fast"));
        let t0 = Instant::now();
        let mut all = Vec::new();
        r.read_to_end(&mut all).await.unwrap();
        assert_eq!(all.len(), data.len());
        let at_rate = (data.len() - STDERR_BYTES_BURST) / STDERR_BYTES_RATE;
        let took = t0.elapsed().as_secs_f64();
        assert!(
            took >= at_rate as f64 - 0.01 && took < at_rate as f64 + 1.5,
            "{took}s for {at_rate}s of budget"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stderr_flood_is_dropped_and_counted_keeping_the_last_lines() {
        let log = StderrLog::new("flood");
        for i in 0..10_000 {
            log.line(format!("line {i}"));
        }
        assert_eq!(log.dropped(), 10_000 - STDERR_BURST as u64);
        assert_eq!(log.last(2), ["line 9998", "line 9999"]);
        assert_eq!(log.last(100).len(), STDERR_KEEP);
        tokio::time::advance(Duration::from_secs(1)).await;
        log.line("after".into());
        assert_eq!(
            log.dropped(),
            0,
            "the count is reported with the next logged line"
        );
    }
}

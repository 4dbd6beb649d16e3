//! Framing of JSON-RPC messages on a daemon connection.
//!
//! Two framings are accepted and detected from the first byte a client
//! sends: newline-delimited JSON (`{` or `[` first: `socat`, scripts, the
//! CLI) and the LSP base protocol's `Content-Length` headers (`C` first:
//! editors' stock JSON-RPC clients). Replies use the client's framing.
//!
//! Every frame is capped at [`MAX_FRAME`] bytes, and once a frame has begun
//! it must arrive within [`FRAME_DEADLINE`]: a 10 GB header, a 1 GB line or
//! a client sending one byte a second costs bounded memory and time.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest accepted message (requests are small; this leaves room for a
/// client environment of thousands of variables).
pub(crate) const MAX_FRAME: usize = 8 * 1024 * 1024;
/// Time allowed for the rest of a frame once its first byte arrived.
pub(crate) const FRAME_DEADLINE: Duration = Duration::from_secs(10);

/// [`FRAME_DEADLINE`], or `$TASKRUSH_FRAME_DEADLINE_MS` (for tests of slow
/// clients, which should not take 10 s).
pub(crate) fn frame_deadline() -> Duration {
    static DEADLINE: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *DEADLINE.get_or_init(|| {
        std::env::var("TASKRUSH_FRAME_DEADLINE_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(Duration::from_millis)
            .unwrap_or(FRAME_DEADLINE)
    })
}
/// Longest header line accepted in `Content-Length` framing.
const MAX_HEADER_LINE: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// One JSON text per line.
    Lines,
    /// `Content-Length: N\r\n\r\n` then N bytes.
    ContentLength,
}

impl Framing {
    /// Frame one outgoing message.
    pub(crate) fn encode(self, msg: &[u8]) -> Vec<u8> {
        match self {
            Framing::Lines => {
                let mut out = Vec::with_capacity(msg.len() + 1);
                out.extend_from_slice(msg);
                out.push(b'\n');
                out
            }
            Framing::ContentLength => {
                let header = format!("Content-Length: {}\r\n\r\n", msg.len());
                let mut out = Vec::with_capacity(header.len() + msg.len());
                out.extend_from_slice(header.as_bytes());
                out.extend_from_slice(msg);
                out
            }
        }
    }
}

/// The framing a client uses, told from its first bytes (blank space
/// skipped); `None` before it sent anything else.
pub fn framing_of(first: &[u8]) -> Option<Framing> {
    let b = first.iter().find(|b| !b.is_ascii_whitespace())?;
    Some(if *b == b'C' || *b == b'c' {
        Framing::ContentLength
    } else {
        Framing::Lines
    })
}

#[derive(Debug)]
pub(crate) enum FrameError {
    /// The peer closed the connection in the middle of a frame.
    Truncated,
    /// A frame above [`MAX_FRAME`] (or a header line above its limit).
    TooLarge,
    /// A `Content-Length` header block that cannot be understood.
    BadHeader(String),
    /// The frame did not complete within [`FRAME_DEADLINE`].
    TooSlow,
    Io(std::io::Error),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Truncated => write!(f, "connection closed in the middle of a message"),
            FrameError::TooLarge => write!(f, "message larger than {MAX_FRAME} bytes"),
            FrameError::BadHeader(h) => write!(f, "bad message header: {h}"),
            FrameError::TooSlow => {
                write!(f, "message not completed within {:?}", frame_deadline())
            }
            FrameError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Reads frames from one connection.
///
/// Its buffer grows only as a frame needs it and is given back between
/// frames: an idle connection holds a few hundred bytes, and one 8 MiB
/// message does not leave an 8 MiB buffer behind.
pub(crate) struct FrameReader<R> {
    inner: R,
    /// Bytes read and not yet consumed: `buf[pos..]`.
    buf: Vec<u8>,
    pos: usize,
    framing: Option<Framing>,
}

/// Read size while waiting for a message to begin (idle connections).
const IDLE_READ: usize = 512;
/// Largest single read while a message is arriving.
const MAX_READ: usize = 64 * 1024;
/// Buffer capacity kept between messages; more is given back.
const KEEP_CAPACITY: usize = 4 * 1024;

impl<R: AsyncRead + Unpin> FrameReader<R> {
    #[cfg(test)]
    pub(crate) fn new(inner: R) -> Self {
        Self::with_buffered(inner, Vec::new())
    }

    /// A reader whose first bytes were already read (with `recvmsg`).
    pub(crate) fn with_buffered(inner: R, first: Vec<u8>) -> Self {
        FrameReader {
            inner,
            buf: first,
            pos: 0,
            framing: None,
        }
    }

    /// The framing detected from the first frame, once there was one.
    pub(crate) fn framing(&self) -> Option<Framing> {
        self.framing
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.buf.len() {
            self.pos = 0;
            self.buf.clear();
            if self.buf.capacity() > KEEP_CAPACITY {
                self.buf = Vec::new();
            }
        }
    }

    /// Read more bytes; false at the end of the connection.
    async fn fill(&mut self) -> Result<bool, FrameError> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let pending = self.buf.len();
        let want = if pending == 0 {
            IDLE_READ
        } else {
            pending.clamp(IDLE_READ, MAX_READ)
        };
        self.buf.reserve(want);
        let n = (&mut self.inner)
            .take(want as u64)
            .read_buf(&mut self.buf)
            .await
            .map_err(FrameError::Io)?;
        Ok(n > 0)
    }

    /// The next message, `None` at a clean end of the connection. Waiting
    /// for a message to begin has no deadline (editors stay connected).
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        // Skip blank space between frames, and detect the framing.
        let first = loop {
            let blank = self
                .available()
                .iter()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
            self.consume(blank);
            if let Some(&b) = self.available().first() {
                break b;
            }
            if !self.fill().await? {
                return Ok(None);
            }
        };
        let framing = *self
            .framing
            .get_or_insert(framing_of(&[first]).unwrap_or(Framing::Lines));
        let read = async {
            match framing {
                Framing::Lines => self.read_line().await,
                Framing::ContentLength => self.read_content_length().await,
            }
        };
        let frame = match tokio::time::timeout(frame_deadline(), read).await {
            Ok(r) => r.map(Some),
            Err(_) => Err(FrameError::TooSlow),
        };
        if frame.is_err() {
            // The connection ends (or, past the size limit, is answered
            // and closed): keep nothing.
            self.buf = Vec::new();
            self.pos = 0;
        } else if self.buf.capacity() > MAX_READ {
            // Give back what a large message needed.
            self.buf.drain(..self.pos);
            self.pos = 0;
            self.buf.shrink_to(KEEP_CAPACITY);
        }
        frame
    }

    /// Take the next `n` available bytes as a frame, and consume them plus
    /// `skip` more. A frame that starts the buffer takes the buffer itself
    /// (no copy of a large message); the bytes after it move to a new one.
    fn take(&mut self, n: usize, skip: usize) -> Vec<u8> {
        if self.pos > 0 {
            let frame = self.available()[..n].to_vec();
            self.consume(n + skip);
            return frame;
        }
        let rest = self.buf.split_off(n + skip);
        let mut frame = std::mem::replace(&mut self.buf, rest);
        frame.truncate(n);
        frame
    }

    async fn read_line(&mut self) -> Result<Vec<u8>, FrameError> {
        let mut out = self.take_line(MAX_FRAME).await?;
        if out.last() == Some(&b'\r') {
            out.pop();
        }
        Ok(out)
    }

    /// The bytes up to the next newline (not included), at most `max`.
    async fn take_line(&mut self, max: usize) -> Result<Vec<u8>, FrameError> {
        let mut scanned = 0;
        loop {
            let avail = self.available();
            if let Some(i) = avail[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + i;
                if end > max {
                    return Err(FrameError::TooLarge);
                }
                return Ok(self.take(end, 1));
            }
            scanned = avail.len();
            if scanned > max {
                return Err(FrameError::TooLarge);
            }
            if !self.fill().await? {
                // The end of the connection ends the last line.
                if scanned == 0 {
                    return Err(FrameError::Truncated);
                }
                return Ok(self.take(scanned, 0));
            }
        }
    }

    async fn read_content_length(&mut self) -> Result<Vec<u8>, FrameError> {
        let mut length = None;
        loop {
            let line = self.take_line(MAX_HEADER_LINE).await?;
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(FrameError::BadHeader(line.to_owned()));
            };
            if name.trim().eq_ignore_ascii_case("content-length") {
                let n: u64 = value
                    .trim()
                    .parse()
                    .map_err(|_| FrameError::BadHeader(line.to_owned()))?;
                if n > MAX_FRAME as u64 {
                    return Err(FrameError::TooLarge);
                }
                length = Some(n as usize);
            }
        }
        let Some(n) = length else {
            return Err(FrameError::BadHeader("no Content-Length header".into()));
        };
        while self.available().len() < n {
            if !self.fill().await? {
                return Err(FrameError::Truncated);
            }
        }
        Ok(self.take(n, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frames(input: &[u8]) -> Vec<Result<String, String>> {
        let mut r = FrameReader::new(input);
        let mut out = Vec::new();
        loop {
            match r.next().await {
                Ok(Some(f)) => out.push(Ok(String::from_utf8_lossy(&f).into_owned())),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e.to_string()));
                    break;
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn newline_delimited_messages_are_split_on_newlines() {
        let got = frames(b"{\"a\":1}\n\n{\"b\":2}\r\n{\"c\":3}").await;
        assert_eq!(
            got,
            vec![
                Ok("{\"a\":1}".into()),
                Ok("{\"b\":2}".into()),
                Ok("{\"c\":3}".into())
            ]
        );
    }

    #[tokio::test]
    async fn content_length_messages_are_read_by_length() {
        let got = frames(
            b"Content-Length: 7\r\nContent-Type: x\r\n\r\n{\"a\":1}Content-Length: 2\r\n\r\n{}",
        )
        .await;
        assert_eq!(got, vec![Ok("{\"a\":1}".into()), Ok("{}".into())]);
    }

    #[tokio::test]
    async fn a_huge_declared_length_is_refused_before_reading() {
        let got = frames(b"Content-Length: 10000000000\r\n\r\n").await;
        assert_eq!(
            got,
            vec![Err(format!("message larger than {MAX_FRAME} bytes"))]
        );
    }

    #[tokio::test]
    async fn an_endless_line_is_refused_at_the_cap() {
        let big = vec![b'{'; MAX_FRAME + 10];
        let got = frames(&big).await;
        assert_eq!(
            got,
            vec![Err(format!("message larger than {MAX_FRAME} bytes"))]
        );
    }

    #[tokio::test]
    async fn a_truncated_body_is_an_error() {
        let got = frames(b"Content-Length: 10\r\n\r\n{}").await;
        assert_eq!(
            got,
            vec![Err("connection closed in the middle of a message".into())]
        );
    }

    #[test]
    fn replies_use_the_clients_framing() {
        assert_eq!(Framing::Lines.encode(b"{}"), b"{}\n");
        assert_eq!(
            Framing::ContentLength.encode(b"{}"),
            b"Content-Length: 2\r\n\r\n{}"
        );
    }
}

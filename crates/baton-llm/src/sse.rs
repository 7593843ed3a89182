//! A minimal server-sent-events reader over a reqwest response, with an
//! idle timeout between chunks.

use std::time::Duration;

/// One SSE event: its `event:` name (if any) and its joined `data:` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    pub(crate) event: Option<String>,
    pub(crate) data: String,
}

/// Why reading the stream stopped early.
#[derive(Debug)]
pub(crate) enum SseError {
    /// No chunk arrived within the idle timeout.
    Idle,
    /// The connection failed mid-stream.
    Transport(reqwest::Error),
}

/// Reads events one by one from a streaming response.
pub(crate) struct SseReader {
    response: reqwest::Response,
    buffer: Vec<u8>,
    idle: Duration,
    done: bool,
}

impl SseReader {
    pub(crate) fn new(response: reqwest::Response, idle: Duration) -> Self {
        Self {
            response,
            buffer: Vec::new(),
            idle,
            done: false,
        }
    }

    /// The next event, `Ok(None)` at a clean end of stream.
    pub(crate) async fn next(&mut self) -> Result<Option<SseEvent>, SseError> {
        loop {
            if let Some(event) = self.take_event() {
                return Ok(Some(event));
            }
            if self.done {
                return Ok(None);
            }
            match tokio::time::timeout(self.idle, self.response.chunk()).await {
                Err(_) => return Err(SseError::Idle),
                Ok(Err(e)) => return Err(SseError::Transport(e)),
                Ok(Ok(Some(chunk))) => self.buffer.extend_from_slice(&chunk),
                Ok(Ok(None)) => {
                    self.done = true;
                    // A last event without its blank line still counts.
                    if !self.buffer.is_empty() {
                        self.buffer.extend_from_slice(b"\n\n");
                    }
                }
            }
        }
    }

    fn take_event(&mut self) -> Option<SseEvent> {
        loop {
            let (end, sep) = find_blank_line(&self.buffer)?;
            let raw: Vec<u8> = self.buffer.drain(..end + sep).collect();
            if let Some(event) = parse_event(&String::from_utf8_lossy(&raw[..end])) {
                return Some(event);
            }
        }
    }
}

fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i..].starts_with(b"\r\n\r\n") {
            return Some((i, 4));
        }
        if buf[i..].starts_with(b"\n\n") {
            return Some((i, 2));
        }
        i += 1;
    }
    None
}

fn parse_event(block: &str) -> Option<SseEvent> {
    let mut event = None;
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix("data:") {
            data.push(rest.strip_prefix(' ').unwrap_or(rest));
        } else if let Some(rest) = line.strip_prefix("event:") {
            event = Some(rest.trim().to_string());
        }
    }
    if data.is_empty() && event.is_none() {
        return None;
    }
    Some(SseEvent {
        event,
        data: data.join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_with_names_and_multiline_data() {
        assert_eq!(
            parse_event("event: ping\ndata: a\ndata: b"),
            Some(SseEvent {
                event: Some("ping".into()),
                data: "a\nb".into()
            })
        );
        assert_eq!(parse_event(": comment"), None);
        assert_eq!(find_blank_line(b"data: x\r\n\r\nrest"), Some((7, 4)));
    }
}

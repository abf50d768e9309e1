//! Server-sent events: an encoder and an incremental decoder.
//!
//! The decoder follows the WHATWG event-stream rules that matter for LLM APIs: `\n`, `\r\n` and
//! `\r` line endings, comment lines, several `data:` lines joined with `\n`, an optional `event:`
//! name, and an event dispatched at the blank line. It never buffers more than `max_event_bytes`.

use bytes::{Bytes, BytesMut};

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

impl SseEvent {
    /// OpenAI's end-of-stream marker.
    pub fn is_done(&self) -> bool {
        self.data == "[DONE]"
    }
}

/// Encodes one `data:` event. The payload must not contain a newline (JSON from serde never does).
pub fn encode_data(data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    out.freeze()
}

/// Encodes an event with a name, as Anthropic sends them.
pub fn encode_named(event: &str, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(event.len() + data.len() + 16);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    out.freeze()
}

/// `data: [DONE]`, the last event of an OpenAI stream.
pub fn done() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

/// The stream sent more than the decoder is allowed to buffer for one event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("server-sent event larger than {limit} bytes")]
pub struct EventTooLarge {
    pub limit: usize,
}

/// Incremental decoder: push bytes as they arrive, pull complete events.
#[derive(Debug)]
pub struct SseDecoder {
    buf: Vec<u8>,
    pos: usize,
    event: Option<String>,
    data: String,
    has_data: bool,
    max_event_bytes: usize,
    skip_lf: bool,
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new(16 * 1024 * 1024)
    }
}

impl SseDecoder {
    pub fn new(max_event_bytes: usize) -> Self {
        SseDecoder {
            buf: Vec::new(),
            pos: 0,
            event: None,
            data: String::new(),
            has_data: false,
            max_event_bytes,
            skip_lf: false,
        }
    }

    /// Adds bytes received from the network.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), EventTooLarge> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
        if self.buf.len() + self.data.len() > self.max_event_bytes {
            return Err(EventTooLarge {
                limit: self.max_event_bytes,
            });
        }
        Ok(())
    }

    /// The next complete event, if the buffered bytes hold one.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            let line_end = self.next_line()?;
            let (start, end) = line_end;
            if start == end {
                // Blank line: dispatch.
                if self.has_data || self.event.is_some() {
                    let ev = SseEvent {
                        event: self.event.take(),
                        data: std::mem::take(&mut self.data),
                    };
                    let had_data = self.has_data;
                    self.has_data = false;
                    if had_data {
                        return Some(ev);
                    }
                }
                continue;
            }
            let line = String::from_utf8_lossy(&self.buf[start..end]).into_owned();
            self.field(&line);
        }
    }

    /// Returns the byte range of the next full line and advances past its terminator.
    fn next_line(&mut self) -> Option<(usize, usize)> {
        if self.skip_lf && self.pos < self.buf.len() {
            if self.buf[self.pos] == b'\n' {
                self.pos += 1;
            }
            self.skip_lf = false;
        }
        let rest = &self.buf[self.pos..];
        let i = rest.iter().position(|&b| b == b'\n' || b == b'\r')?;
        let start = self.pos;
        let end = start + i;
        if rest[i] == b'\r' {
            // A `\r` at the very end may be the first half of `\r\n`.
            self.skip_lf = true;
        }
        self.pos = end + 1;
        Some((start, end))
    }

    fn field(&mut self, line: &str) {
        if line.starts_with(':') {
            return;
        }
        let (name, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line, ""),
        };
        match name {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_owned()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut d = SseDecoder::default();
        let mut out = Vec::new();
        for c in chunks {
            d.push(c).unwrap();
            while let Some(e) = d.next_event() {
                out.push(e);
            }
        }
        out
    }

    #[test]
    fn events_split_anywhere_decode_the_same() {
        let stream = b"event: message_start\ndata: {\"a\":1}\n\n: keep-alive\n\ndata: x\r\ndata: y\r\n\r\ndata: [DONE]\n\n";
        let whole = decode_all(&[stream]);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].event.as_deref(), Some("message_start"));
        assert_eq!(whole[1].data, "x\ny");
        assert!(whole[2].is_done());
        for split in 1..stream.len() {
            let (a, b) = stream.split_at(split);
            assert_eq!(decode_all(&[a, b]), whole, "split at {split}");
        }
        let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(decode_all(&bytewise), whole);
    }

    #[test]
    fn bare_cr_line_endings_decode() {
        assert_eq!(decode_all(&[b"data: a\r\rdata: b\r\r"]).len(), 2);
    }

    #[test]
    fn oversized_event_is_an_error_not_unbounded_memory() {
        let mut d = SseDecoder::new(64);
        assert!(d.push(&[b'x'; 100]).is_err());
    }

    #[test]
    fn encoders_round_trip() {
        let mut d = SseDecoder::default();
        d.push(&encode_named("ping", b"{}")).unwrap();
        d.push(&encode_data(b"{\"b\":2}")).unwrap();
        d.push(&done()).unwrap();
        assert_eq!(d.next_event().unwrap().event.as_deref(), Some("ping"));
        assert_eq!(d.next_event().unwrap().data, "{\"b\":2}");
        assert!(d.next_event().unwrap().is_done());
        assert!(d.next_event().is_none());
    }
}

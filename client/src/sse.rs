//! Server-sent events, as the block stream sends them.

/// One event: its `event` name, `id` and `data` lines (joined).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field (`block` for the block stream).
    pub event: String,
    /// The `id:` field (the block's height).
    pub id: String,
    /// The `data:` lines, joined with newlines.
    pub data: String,
}

/// Most bytes of one event held while it arrives; a longer one ends the stream (the
/// largest block's JSON, with every transaction, is well below it).
pub const EVENT_BYTES_MAX: usize = 256 << 20;

/// Splits a server-sent-event byte stream into events as its bytes arrive.
#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: Vec<u8>,
    /// How far `buf` has been searched for the end of an event already.
    scanned: usize,
}

impl SseDecoder {
    /// Takes the next bytes; returns every event they complete (comments and events
    /// without data, such as keep-alives, are skipped). `None` once an event has grown past
    /// [`EVENT_BYTES_MAX`].
    pub fn feed(&mut self, chunk: &[u8]) -> Option<Vec<SseEvent>> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut start = 0;
        // Search on from where the last call stopped (one byte back: a "\n\n" may straddle
        // two chunks), so a long event costs one pass, not one per chunk.
        let mut from = self.scanned.saturating_sub(1);
        while let Some(end) = find_blank_line(&self.buf[from..]) {
            let end = from + end;
            let block = String::from_utf8_lossy(&self.buf[start..end]);
            if let Some(event) = parse_event(&block) {
                out.push(event);
            }
            start = end + 2;
            from = start;
        }
        self.buf.drain(..start);
        self.scanned = self.buf.len();
        (self.buf.len() <= EVENT_BYTES_MAX).then_some(out)
    }
}

/// Where the first "\n\n" starts.
fn find_blank_line(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\n\n")
}

fn parse_event(block: &str) -> Option<SseEvent> {
    let mut event = SseEvent::default();
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event.event = value.to_owned(),
            "id" => event.id = value.to_owned(),
            "data" => data.push(value),
            _ => {}
        }
    }
    if data.is_empty() {
        return None;
    }
    event.data = data.join("\n");
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_keep_alives_are_skipped() {
        let text = b": keep-alive\n\nevent: block\nid: 7\ndata: {\"height\":7}\n\nevent: block\nid: 8\ndata: a\ndata: b\n\n";
        let want = vec![
            SseEvent {
                event: "block".into(),
                id: "7".into(),
                data: "{\"height\":7}".into(),
            },
            SseEvent {
                event: "block".into(),
                id: "8".into(),
                data: "a\nb".into(),
            },
        ];
        for cut in 0..=text.len() {
            let mut d = SseDecoder::default();
            let mut seen = d.feed(&text[..cut]).expect("small");
            seen.extend(d.feed(&text[cut..]).expect("small"));
            assert_eq!(seen, want, "cut at {cut}");
        }
    }

    #[test]
    fn a_long_event_in_small_chunks_reads_whole() {
        let data = "x".repeat(100_000);
        let text = format!("event: block\nid: 1\ndata: {data}\n\n");
        let mut d = SseDecoder::default();
        let mut seen = Vec::new();
        for chunk in text.as_bytes().chunks(7) {
            seen.extend(d.feed(chunk).expect("small enough"));
        }
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].data, data);
    }
}

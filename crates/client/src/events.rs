//! The node's event stream (`GET /events`, Server-Sent Events) read as typed blocks: every
//! committed block once, in height order, from a chosen height on. When the node says the
//! reader lagged, or a stream ends, the reader reconnects from the first height it has not
//! delivered, so a caller never sees a gap or a repeat.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use pazar_api::events::{BlockEvents, Lagged, BLOCK_EVENT, LAGGED_EVENT};

use crate::{api_error, ClientError, MAX_RESPONSE};

/// Longest the node may take to answer a stream's request (the stream itself stays open).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest SSE line read (a block's event carries all its receipts on one `data:` line).
const MAX_LINE: u64 = MAX_RESPONSE;

/// A blocking reader of the node's committed blocks. Each [`EventStream::next_block`] (or
/// iterator step) answers the next block, or the error that stopped it; after an error the next
/// call reconnects, so a caller that wants to follow forever sleeps a little and calls again.
pub struct EventStream {
    base: String,
    agent: ureq::Agent,
    next: u64,
    reader: Option<BufReader<Box<dyn Read + Send + Sync>>>,
}

/// One dispatched SSE event: its name and its data lines joined.
struct SseEvent {
    name: String,
    data: String,
}

impl EventStream {
    pub(crate) fn new(base: &str, from: u64) -> EventStream {
        // No overall timeout: the stream lives as long as the reader. The node sends a comment
        // every 15 s, so a dead connection shows up as an error of the next read.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(None)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(CONNECT_TIMEOUT))
            .build()
            .into();
        EventStream {
            base: base.trim_end_matches('/').to_string(),
            agent,
            next: from.max(1),
            reader: None,
        }
    }

    /// The height of the next block this stream delivers.
    pub fn next_height(&self) -> u64 {
        self.next
    }

    fn connect(&mut self) -> Result<(), ClientError> {
        let url = format!("{}/events?from={}", self.base, self.next);
        let mut resp = self.agent.get(&url).call().map_err(|e| ClientError::Connect {
            url: self.base.clone(),
            reason: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        if status >= 400 {
            let body = resp
                .body_mut()
                .with_config()
                .limit(1 << 20)
                .read_to_vec()
                .unwrap_or_default();
            return Err(api_error(status, &body));
        }
        let body: Box<dyn Read + Send + Sync> = Box::new(resp.into_body().into_reader());
        self.reader = Some(BufReader::new(body));
        Ok(())
    }

    /// The next committed block. Reconnects after `lagged` (from the height the node names)
    /// and after a stream that ended having delivered something; a stream that ends at once,
    /// or breaks, is an error (the next call reconnects).
    pub fn next_block(&mut self) -> Result<BlockEvents, ClientError> {
        let mut delivered_since_connect = true;
        loop {
            if self.reader.is_none() {
                if !delivered_since_connect {
                    return Err(ClientError::Connect {
                        url: self.base.clone(),
                        reason: "the event stream ended without a block".into(),
                    });
                }
                self.connect()?;
                delivered_since_connect = false;
            }
            let Some(reader) = self.reader.as_mut() else {
                continue;
            };
            let event = match read_event(reader) {
                Ok(e) => e,
                Err(e) => {
                    self.reader = None;
                    return Err(e);
                }
            };
            match event {
                None => self.reader = None,
                Some(e) if e.name == BLOCK_EVENT => {
                    let block: BlockEvents = serde_json::from_str(&e.data).map_err(|err| {
                        self.reader = None;
                        ClientError::Decode(format!("a block event: {err}"))
                    })?;
                    // A replay may repeat what was delivered before a reconnection.
                    if block.height < self.next {
                        continue;
                    }
                    self.next = block.height + 1;
                    return Ok(block);
                }
                Some(e) if e.name == LAGGED_EVENT => {
                    let lagged: Lagged = serde_json::from_str(&e.data).map_err(|err| {
                        self.reader = None;
                        ClientError::Decode(format!("a lagged event: {err}"))
                    })?;
                    // Resume where the node says, never before what was delivered.
                    self.next = self.next.max(lagged.resume_from);
                    self.reader = None;
                    delivered_since_connect = true;
                }
                Some(_) => {}
            }
        }
    }
}

impl Iterator for EventStream {
    type Item = Result<BlockEvents, ClientError>;

    /// Never `None`: the stream follows the chain for as long as it is read.
    fn next(&mut self) -> Option<Self::Item> {
        Some(self.next_block())
    }
}

/// Reads one SSE event (`event:` and `data:` lines up to a blank line); `None` at the end of
/// the stream. Comments and ids are skipped; a line over [`MAX_LINE`] bytes is an error.
fn read_event(reader: &mut impl BufRead) -> Result<Option<SseEvent>, ClientError> {
    let mut name = String::from("message");
    let mut data: Option<String> = None;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .by_ref()
            .take(MAX_LINE + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| ClientError::Decode(format!("the event stream broke: {e}")))?;
        if n as u64 > MAX_LINE {
            return Err(ClientError::Decode(format!(
                "an event stream line is longer than {MAX_LINE} bytes"
            )));
        }
        if n == 0 {
            return Ok(None);
        }
        let text = std::str::from_utf8(&line)
            .map_err(|_| ClientError::Decode("an event stream line is not UTF-8".into()))?
            .trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            match data.take() {
                Some(data) => return Ok(Some(SseEvent { name, data })),
                None => {
                    name = String::from("message");
                    continue;
                }
            }
        }
        let (field, value) = match text.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (text, ""),
        };
        match field {
            "event" => name = value.to_string(),
            "data" => match data.as_mut() {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_string()),
            },
            // Comments (keep-alives), ids and retry hints carry nothing this reader needs: the
            // height is in the data.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_are_split_at_blank_lines_and_comments_are_skipped() {
        let text = ": keep-alive\n\nevent: block\nid: 3\ndata: {\"a\":\ndata: 1}\n\nevent: lagged\ndata: {}\n\n";
        let mut r = std::io::Cursor::new(text.as_bytes());
        let e = read_event(&mut r).expect("reads").expect("an event");
        assert_eq!((e.name.as_str(), e.data.as_str()), ("block", "{\"a\":\n1}"));
        let e = read_event(&mut r).expect("reads").expect("an event");
        assert_eq!(e.name, "lagged");
        assert!(read_event(&mut r).expect("reads").is_none());
    }
}

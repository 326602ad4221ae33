//! The event stream (`/events`, Server-Sent Events): committed blocks replayed from the store,
//! then followed live from the node's broadcast, subscribed to before the head is read so no
//! block falls between the two; a reader too slow for the live stream is told where to resume.

use std::convert::Infallible;

use axum::extract::{Query, State as AxState};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;

use pazar_api::events::{BlockEvents, Lagged, BLOCK_EVENT, LAGGED_EVENT};
use pazar_api::ErrorCode;

use super::errors::{ApiError, Q};
use super::Shared;
use crate::openapi::EventErrors;

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQ {
    /// First height to send; past blocks are replayed from the store. Without it (and without
    /// `Last-Event-ID`) the stream starts at the next block.
    from: Option<u64>,
}

fn sse_of(b: &BlockEvents) -> SseEvent {
    SseEvent::default()
        .event(BLOCK_EVENT)
        .id(b.height.to_string())
        .data(serde_json::to_string(b).unwrap_or_default())
}

/// Most past blocks one replay step reads before yielding.
const REPLAY_CHUNK: u64 = 64;

/// Committed blocks as Server-Sent Events. Each `block` event's data is a `BlockEvents` (its id
/// the height, so a reconnecting client resumes with `Last-Event-ID`); a reader too slow for the
/// live stream gets one `lagged` event (data: `Lagged`) and the stream ends.
#[utoipa::path(get, path = "/events", tag = "chain",
    params(EventsQ, ("Last-Event-ID" = Option<u64>, Header,
        description = "Resume after this height (sent by reconnecting EventSource clients).")),
    responses((status = 200, description = "An endless `text/event-stream`: `block` events (data: \
        `#/components/schemas/BlockEvents`) and at most one `lagged` (data: `#/components/schemas/Lagged`).",
        body = String, content_type = "text/event-stream"), EventErrors))]
pub(super) async fn events(
    AxState(node): AxState<Shared>,
    headers: HeaderMap,
    q: Q<EventsQ>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(q) = q?;
    // Each subscriber holds a slot for as long as its stream lives; past the bound, a new one
    // is told to come back later rather than degrade every other subscriber.
    let slot = node.subscriber_slot().ok_or_else(|| {
        ApiError::new(
            ErrorCode::TooManySubscribers,
            format!(
                "this node already serves {} event streams; retry later or use another node",
                node.config.max_event_subscribers
            ),
        )
    })?;
    // `Last-Event-ID` (sent by reconnecting EventSource clients) resumes after that height.
    // It is the client's string: a value that is not a height is refused, not guessed at.
    let last_id = headers
        .get("last-event-id")
        .map(|v| pazar_api::request::parse_last_event_id(v.as_bytes()))
        .transpose()?;
    let head = node.head().height;
    let from = q
        .from
        .or(last_id.map(|h| h.saturating_add(1)))
        .unwrap_or(head.saturating_add(1))
        .max(1);
    // Subscribe before reading the head so no block falls between replay and live delivery.
    let live = node.subscribe_blocks();
    let replay_to = node.head().height;
    let n = node.clone();
    let replay = stream::unfold(from, move |next| {
        let n = n.clone();
        async move {
            if next > replay_to {
                return None;
            }
            let end = (next + REPLAY_CHUNK - 1).min(replay_to);
            let n2 = n.clone();
            let chunk = tokio::task::spawn_blocking(move || {
                (next..=end)
                    .filter_map(|h| n2.store().block(h).ok().flatten())
                    .map(|b| BlockEvents {
                        height: b.block.header.height,
                        hash: b.block.header.hash(),
                        time_ms: b.block.header.time_ms,
                        receipts: b.outcome.receipts,
                        end_block_events: b.outcome.end_block_events,
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            let items: Vec<Result<SseEvent, Infallible>> = chunk.iter().map(|b| Ok(sse_of(b))).collect();
            Some((stream::iter(items), end + 1))
        }
    })
    .flatten();
    let live = stream::unfold(
        (live, replay_to.max(from - 1), slot),
        |(mut rx, last, slot)| async move {
            loop {
                match rx.recv().await {
                    Ok(b) if b.height <= last => continue,
                    Ok(b) => {
                        let h = b.height;
                        return Some((Ok(sse_of(&b)), (rx, h, slot)));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // Too slow a reader: tell it where to resume and end the stream.
                        let lagged = Lagged { resume_from: last + 1 };
                        let e = SseEvent::default()
                            .event(LAGGED_EVENT)
                            .data(serde_json::to_string(&lagged).unwrap_or_default());
                        let (_tx, closed) = tokio::sync::broadcast::channel(1);
                        drop(_tx);
                        return Some((Ok(e), (closed, u64::MAX, slot)));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    Ok(Sse::new(replay.chain(live)).keep_alive(KeepAlive::default()))
}

//! The typed node client against a small HTTP server in the test: pages followed by cursor,
//! cursors that do not advance refused, the node's error envelope decoded into its code, and the
//! event stream resumed after `lagged` without a gap or a repeat.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use pazar_api::events::BlockEvents;
use pazar_api::node::{BidEntry, BidPage, ListQuery};
use pazar_api::{ErrorCode, ErrorEnvelope};
use pazar_client::{ClientError, Rpc};
use pazar_types::market::BidState;
use pazar_types::records::Bid;
use pazar_types::{Address, BidId, Coin, Dec, Denom, Price};

/// An answer: status, content type, body.
type Answer = (u16, &'static str, String);

/// Serves HTTP/1.1 on a free port, one connection at a time, each answered by `route` from the
/// request target and closed. Returns the base URL and every target asked for.
fn serve(route: impl Fn(&str) -> Answer + Send + 'static) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            // Headers up to the blank line; the requests here carry no body worth reading.
            let mut content_length = 0usize;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    content_length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; content_length];
            let _ = std::io::Read::read_exact(&mut reader, &mut body);
            let target = request_line.split_whitespace().nth(1).unwrap_or("").to_string();
            log.lock().expect("log").push(target.clone());
            let (status, ctype, body) = route(&target);
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, seen)
}

fn bid(provider: u8, oseq: u32) -> BidEntry {
    let uusd = Denom::new("uusd").expect("denom");
    BidEntry {
        id: BidId {
            owner: Address::Native([1; 20]),
            dseq: 7,
            gseq: 1,
            oseq,
            provider: Address::Native([provider; 20]),
        },
        bid: Bid {
            state: BidState::Open,
            price: Price {
                denom: uusd.clone(),
                amount: Dec::from_int(5).expect("small"),
            },
            deposit: Coin::new(500_000, uusd),
            created_at: 3,
            expires_at: 30,
            expired: false,
        },
    }
}

fn page(items: &[BidEntry], next: Option<&str>) -> Answer {
    let p = BidPage {
        height: 9,
        bids: items.to_vec(),
        next: next.map(str::to_string),
    };
    (200, "application/json", serde_json::to_string(&p).expect("json"))
}

#[test]
fn list_all_follows_every_cursor_with_the_query_s_filters_and_the_largest_page() {
    let (a, b, c) = (bid(2, 1), bid(3, 1), bid(4, 2));
    let pages = [a.clone(), b.clone(), c.clone()];
    let (url, seen) = serve(move |target| {
        if target.ends_with("cursor=p2") {
            page(&pages[2..], None)
        } else if target.ends_with("cursor=p1") {
            page(&pages[1..2], Some("p2"))
        } else {
            page(&pages[..1], Some("p1"))
        }
    });
    let owner = Address::Native([1; 20]);
    let q = ListQuery {
        owner: Some(owner),
        dseq: Some(7),
        state: Some("open".into()),
        ..ListQuery::default()
    };
    let all = Rpc::new(&url).list_all::<BidPage>(&q).expect("every page");
    assert_eq!(all, vec![a, b, c]);
    let seen = seen.lock().expect("log").clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[0], format!("/bids?owner={owner}&dseq=7&state=open&limit=1000"));
    assert!(seen[2].ends_with("&limit=1000&cursor=p2"), "{seen:?}");
}

#[test]
fn a_cursor_that_does_not_advance_is_an_error_not_a_shorter_list() {
    let one = bid(2, 1);
    let (url, _) = serve(move |_| page(std::slice::from_ref(&one), Some("same")));
    let err = Rpc::new(&url)
        .list_all::<BidPage>(&ListQuery::default())
        .expect_err("refused");
    assert!(matches!(err, ClientError::List { .. }), "{err}");
    assert!(err.to_string().contains("does not advance"), "{err}");

    // An empty page that still names a next cursor would loop forever: refused as well.
    let (url, _) = serve(|_| page(&[], Some("more")));
    let err = Rpc::new(&url)
        .list_all::<BidPage>(&ListQuery::default())
        .expect_err("refused");
    assert!(matches!(err, ClientError::List { .. }), "{err}");
}

#[test]
fn the_node_s_error_envelope_becomes_its_code_and_anything_else_stays_readable() {
    let (url, _) = serve(|target| {
        if target.starts_with("/accounts") {
            let e = ErrorEnvelope::new(ErrorCode::NotFound, "no account pazar1…");
            (404, "application/json", serde_json::to_string(&e).expect("json"))
        } else if target.starts_with("/status") {
            (502, "text/html", "<html>bad gateway</html>".into())
        } else {
            (200, "application/json", "{\"chain_id\": 5}".into())
        }
    });
    let rpc = Rpc::new(&url);
    let err = rpc.account(&Address::Native([9; 20]), false).expect_err("not found");
    assert!(
        matches!(&err, ClientError::Api { status: 404, code: ErrorCode::NotFound, message } if message.contains("no account")),
        "{err:?}"
    );
    assert!(err.is_not_found());
    assert_eq!(err.code(), Some(ErrorCode::NotFound));

    let err = rpc.status().expect_err("a proxy's error");
    assert!(
        matches!(&err, ClientError::Api { status: 502, code: ErrorCode::Unknown, message } if message.contains("bad gateway")),
        "{err:?}"
    );

    // A 200 whose body is not the contract's shape is a decode error naming the endpoint.
    let err = rpc.params().expect_err("wrong shape");
    assert!(
        matches!(&err, ClientError::Decode(m) if m.contains("/params")),
        "{err:?}"
    );
}

#[test]
fn an_unreachable_node_is_a_connect_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let err = Rpc::new(&format!("http://127.0.0.1:{port}"))
        .status()
        .expect_err("nobody there");
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
}

fn block_event(height: u64) -> String {
    let b = BlockEvents {
        height,
        hash: [height as u8; 32],
        time_ms: height * 1000,
        receipts: vec![],
        end_block_events: vec![],
    };
    format!(
        "event: block\nid: {height}\ndata: {}\n\n",
        serde_json::to_string(&b).expect("json")
    )
}

#[test]
fn the_event_stream_resumes_after_lagged_without_a_gap_or_a_repeat() {
    let (url, seen) = serve(|target| {
        let body = if target == "/events?from=5" {
            // Two blocks, then the node says the reader fell behind and must resume at 8.
            format!(
                ": keep-alive\n\n{}{}event: lagged\ndata: {{\"resume_from\":8}}\n\n",
                block_event(5),
                block_event(6)
            )
        } else if target == "/events?from=8" {
            // A replay that starts early repeats a block already delivered: skipped.
            format!("{}{}{}", block_event(6), block_event(8), block_event(9))
        } else {
            String::new()
        };
        (200, "text/event-stream", body)
    });
    let mut stream = Rpc::new(&url).events(5);
    let heights: Vec<u64> = (0..4).map(|_| stream.next_block().expect("a block").height).collect();
    assert_eq!(heights, vec![5, 6, 8, 9]);
    assert_eq!(stream.next_height(), 10);
    // The stream from 10 ends at once: an error, and the caller decides when to come back.
    let err = stream.next_block().expect_err("ended");
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    let seen = seen.lock().expect("log").clone();
    assert_eq!(seen, vec!["/events?from=5", "/events?from=8", "/events?from=10"]);
}

#[test]
fn an_event_stream_refused_by_the_node_says_why() {
    let (url, _) = serve(|_| {
        let e = ErrorEnvelope::new(ErrorCode::TooManySubscribers, "retry later");
        (503, "application/json", serde_json::to_string(&e).expect("json"))
    });
    let err = Rpc::new(&url).events(1).next_block().expect_err("refused");
    assert_eq!(err.code(), Some(ErrorCode::TooManySubscribers), "{err:?}");
}

//! Resource exhaustion of the node's RPC from the network: a client cannot hold more than its
//! share of connections, cannot keep a connection by sending its headers slowly, cannot open
//! unbounded event streams, and cannot crash the node with an out-of-range `Last-Event-ID` or
//! an oversized request. Through all of it, a client from another address is served.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common;

/// Per-address connection bound of the node's RPC (`HttpLimits::default`).
const PER_IP: usize = 128;
/// Event streams a node serves at once (`NodeConfig::default`).
const SUBSCRIBERS: usize = 256;

fn addr_of(net: &common::Devnet) -> SocketAddr {
    net.url.trim_start_matches("http://").parse().expect("rpc address")
}

async fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().expect("socket");
    s.bind(format!("{source}:0").parse().expect("source"))
        .expect("bind source");
    s.connect(to).await.expect("connect")
}

/// Sends `request` and reads the whole answer (the request asks the server to close).
async fn exchange(mut s: TcpStream, request: &[u8]) -> String {
    s.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the server closed `s` (EOF or reset) within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let t0 = Instant::now();
    while t0.elapsed() < within {
        match tokio::time::timeout(within - t0.elapsed(), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
    false
}

fn status_request() -> &'static [u8] {
    b"GET /status HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_rpc_bounds_connections_header_time_streams_and_inputs_and_keeps_serving_others() {
    let net = common::devnet(200);
    let addr = addr_of(&net);

    // 1. One address holds its share of idle connections; the next one is closed at once,
    //    while another address is still served.
    let mut held = Vec::new();
    for _ in 0..PER_IP {
        held.push(connect_from("127.0.0.1", addr).await);
    }
    let mut over = connect_from("127.0.0.1", addr).await;
    assert!(
        closed_within(&mut over, Duration::from_secs(5)).await,
        "a connection over the per-address bound was kept"
    );
    let answer = exchange(connect_from("127.0.0.2", addr).await, status_request()).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "another address was not served: {answer}"
    );

    // 2. Slow headers: a connection that never finishes its request head is closed (the header
    //    timeout is 10 s); so are all the idle ones above.
    let mut slow = connect_from("127.0.0.3", addr).await;
    slow.write_all(b"GET /status HTTP/1.1\r\nHost: node\r\n")
        .await
        .expect("write");
    assert!(
        closed_within(&mut slow, Duration::from_secs(30)).await,
        "a connection sending its headers slowly was kept"
    );
    for s in held.iter_mut().take(4) {
        assert!(
            closed_within(s, Duration::from_secs(30)).await,
            "an idle connection was kept"
        );
    }
    drop(held);

    // 3. Oversized inputs get a clear answer, not a crash.
    let big_header = format!(
        "GET /status HTTP/1.1\r\nHost: node\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(200 << 10)
    );
    let answer = exchange(connect_from("127.0.0.2", addr).await, big_header.as_bytes()).await;
    assert!(
        !answer.starts_with("HTTP/1.1 200"),
        "a 200 KiB header was accepted: {answer:.80}"
    );
    let body = vec![b'x'; 33 << 20];
    let mut s = connect_from("127.0.0.2", addr).await;
    let head = format!(
        "POST /txs/batch HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write head");
    let _ = s.write_all(&body).await; // the server may answer and close before reading it all
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    let answer = String::from_utf8_lossy(&out);
    assert!(answer.starts_with("HTTP/1.1 413"), "an oversized body: {answer:.200}");

    // 4. `Last-Event-ID` at the top of u64 and one that is not a number.
    let req = "GET /events HTTP/1.1\r\nHost: node\r\nLast-Event-ID: 18446744073709551615\r\nConnection: close\r\n\r\n";
    let mut s = connect_from("127.0.0.2", addr).await;
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("an answer")
        .expect("read");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    drop(s);
    let req = "GET /events HTTP/1.1\r\nHost: node\r\nLast-Event-ID: abc\r\nConnection: close\r\n\r\n";
    let answer = exchange(connect_from("127.0.0.2", addr).await, req.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("bad_last_event_id"),
        "{answer}"
    );

    // 5. Event streams are bounded: the one after the last slot is told to retry later.
    let mut streams = Vec::new();
    for i in 0..SUBSCRIBERS {
        let source = format!("127.0.1.{}", 1 + i / 100);
        let mut s = connect_from(&source, addr).await;
        s.write_all(b"GET /events HTTP/1.1\r\nHost: node\r\n\r\n")
            .await
            .expect("write");
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("an answer")
            .expect("read");
        assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
            "stream {i}"
        );
        streams.push(s);
    }
    let req = "GET /events HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n";
    let answer = exchange(connect_from("127.0.2.1", addr).await, req.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 503") && answer.contains("too_many_subscribers"),
        "{answer:.300}"
    );
    drop(streams);
    // Slots come back when the streams go.
    let t0 = Instant::now();
    loop {
        let mut s = connect_from("127.0.2.1", addr).await;
        s.write_all(b"GET /events HTTP/1.1\r\nHost: node\r\n\r\n")
            .await
            .expect("write");
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("answer")
            .expect("read");
        if String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "subscriber slots were not freed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Still alive and committing blocks.
    let h = net.height();
    net.wait_height(h + 2);
}

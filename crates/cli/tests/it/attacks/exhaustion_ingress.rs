//! Attacks of class `exhaustion_ingress` (see mod.rs): exhausting the provider's ingress, which
//! anyone on the internet reaches. Against a real `pazar provider run` with its HTTP ingress on
//! (and, to reach its total bound with few sockets, few open files), a client opens
//! connections and sends its request head slowly or never: past its share it is answered 503 at
//! once, past the ingress's total every client is, the daemon runs no thread per connection, a
//! silent connection is answered 408 and closed when the head time runs out, and then clients
//! are served again.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use pazar_runtime::ingress::MAX_PER_CLIENT;

use crate::common::{self, free_port, Daemon};

/// Open files the daemon may have: its ingress then holds 3/8 of them (192) at once.
const OPEN_FILES: usize = 512;
const TOTAL: usize = OPEN_FILES * 3 / 4 / 2;

/// Starts the daemon with at most [`OPEN_FILES`] open files and its ingress on `ingress`, and
/// waits until the ingress serves.
fn start(net: &common::Devnet, dir: &Path, ingress: u16) -> Daemon {
    let config = dir.join("provider.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{}\"\n[ingress]\nlisten = \"127.0.0.1:{ingress}\"\ndomain = \"ingress.test\"\n",
            free_port()
        ),
    )
    .expect("config");
    let log = dir.join("provider.log");
    let daemon = Daemon(
        Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -n {OPEN_FILES} && exec \"$0\" \"$@\""))
            .arg(common::bin())
            .args(["provider", "run", "--from", "provider", "--config"])
            .arg(&config)
            .arg("--home")
            .arg(net.home.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawns the daemon"),
    );
    let t0 = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("ingress for")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the ingress did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon
}

async fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().expect("socket");
    s.bind(format!("{source}:0").parse().expect("source"))
        .expect("bind source");
    s.connect(to).await.expect("connect")
}

/// What the ingress answers a request for a host no lease serves (served: a 404 naming it).
async fn served(source: &str, to: SocketAddr) -> String {
    let mut s = connect_from(source, to).await;
    s.write_all(b"GET / HTTP/1.0\r\nHost: nobody.example\r\n\r\n")
        .await
        .expect("write");
    read_all(&mut s).await
}

async fn read_all(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn threads(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:")?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_get_their_share_of_the_ingress_and_no_more() {
    let net = common::devnet(250);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let daemon = start(&net, dir.path(), port);
    let to: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    assert!(
        served("127.0.0.9", to).await.contains("404 Not Found"),
        "the ingress serves"
    );
    let before = threads(daemon.0.id());

    // One client holds its share with request heads it never finishes.
    let mut held = Vec::new();
    for _ in 0..MAX_PER_CLIENT {
        let mut s = connect_from("127.0.0.2", to).await;
        s.write_all(b"GET / HTTP/1.1\r\nHost: a").await.expect("write");
        held.push(s);
    }
    let mut extra = connect_from("127.0.0.2", to).await;
    let answer = read_all(&mut extra).await;
    assert!(
        answer.contains("503") && answer.contains(&format!("holds {MAX_PER_CLIENT} connections")),
        "{answer}"
    );
    assert!(
        served("127.0.0.3", to).await.contains("404"),
        "another client is served"
    );

    // Other clients fill the rest of the ingress: then everyone is told it is full.
    for i in 0..TOTAL - MAX_PER_CLIENT {
        held.push(connect_from(&format!("127.0.1.{}", i % 200 + 1), to).await);
    }
    let answer = served("127.0.0.4", to).await;
    assert!(
        answer.contains("503") && answer.contains("as many connections as it may"),
        "{answer}"
    );
    let during = threads(daemon.0.id());
    eprintln!("ingress: {TOTAL} connections held, daemon threads {before} before and {during} during");
    assert!(
        during < before + 16,
        "{TOTAL} connections held with {before} threads before and {during} during"
    );

    // The head time runs out: each silent connection is answered and closed.
    for s in &mut held {
        let answer = read_all(s).await;
        assert!(answer.is_empty() || answer.contains("408"), "{answer}");
    }
    drop(held);
    let t0 = Instant::now();
    loop {
        let answer = served("127.0.0.2", to).await;
        if answer.contains("404") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "not served again: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(daemon);
}

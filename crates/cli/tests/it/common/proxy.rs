//! A TCP forwarder on loopback that a test can cut: every connection through it dropped and new
//! ones refused, until it heals. Put between validators (their peers lists name the proxy's
//! ports), it cuts a validator off the network while its process and its RPC keep running.
//!
//! Plain threads, not tokio: the workspace's tokio has no `io-util`, and a handful of
//! connections needs no runtime.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often an idle listener looks at whether the proxy is being dropped.
const POLL: Duration = Duration::from_millis(10);

/// Most connections open through one proxy at once; more are refused (a runaway dialer must
/// not exhaust the test's threads).
const MAX_CONNECTIONS: usize = 256;

#[derive(Default)]
struct Shared {
    cut: AtomicBool,
    stop: AtomicBool,
    /// Both ends of every connection, with whether it is still open, to shut them down on a
    /// cut.
    open: Mutex<Vec<(Arc<AtomicBool>, TcpStream)>>,
}

/// Forwards from loopback ports of its own to targets; see the module's documentation.
pub struct Proxy {
    shared: Arc<Shared>,
    listeners: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// A forwarder per target: the ports it listens on, in the order of `targets`.
    pub fn new(targets: &[SocketAddr]) -> (Proxy, Vec<u16>) {
        let shared = Arc::new(Shared::default());
        let mut ports = Vec::new();
        let mut listeners = Vec::new();
        for target in targets {
            let l = TcpListener::bind("127.0.0.1:0").expect("a loopback port for the proxy");
            l.set_nonblocking(true).expect("a non-blocking listener");
            ports.push(l.local_addr().expect("its address").port());
            let (shared, target) = (shared.clone(), *target);
            listeners.push(std::thread::spawn(move || accept_loop(&l, target, &shared)));
        }
        (Proxy { shared, listeners }, ports)
    }

    /// Drops every connection and refuses new ones until [`Proxy::heal`].
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        let mut open = self.shared.open.lock().expect("the proxy's lock");
        for (_, s) in open.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Forwards new connections again.
    pub fn heal(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.cut();
        for l in self.listeners.drain(..) {
            let _ = l.join();
        }
    }
}

fn accept_loop(l: &TcpListener, target: SocketAddr, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let client = match l.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(POLL);
                continue;
            }
            Err(_) => continue,
        };
        // Refused: the dialer sees the connection closed before its handshake.
        if shared.cut.load(Ordering::SeqCst) {
            continue;
        }
        let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(1)) else {
            continue;
        };
        if client.set_nonblocking(false).is_err() {
            continue;
        }
        let ends = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        );
        let (Ok(c_read), Ok(s_read), Ok(c_keep), Ok(s_keep)) = ends else {
            continue;
        };
        let alive = Arc::new(AtomicBool::new(true));
        {
            let mut open = shared.open.lock().expect("the proxy's lock");
            open.retain(|(a, _)| a.load(Ordering::SeqCst));
            // A cut between the check above and here must not let this connection through.
            if shared.cut.load(Ordering::SeqCst) || open.len() >= 2 * MAX_CONNECTIONS {
                continue;
            }
            open.push((alive.clone(), c_keep));
            open.push((alive.clone(), s_keep));
        }
        let other = alive.clone();
        std::thread::spawn(move || pipe(c_read, server, &alive));
        std::thread::spawn(move || pipe(s_read, client, &other));
    }
}

/// Copies `from` to `to` until either end closes, then closes both.
fn pipe(mut from: TcpStream, mut to: TcpStream, alive: &AtomicBool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    alive.store(false, Ordering::SeqCst);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

//! Attacks of class `exhaustion_provider` (see mod.rs): exhausting the provider's tenant
//! endpoint, which anyone can reach. Against a real `pazar provider run`: one address holding
//! connections open without a request gets its share ([`limits::MAX_CONNECTIONS_PER_IP`]) and no
//! more, while another address is served; the daemon runs no thread per connection; a connection
//! that sends no request head is closed when the head time runs out, and its address is served
//! again; a body over the manifest bound is refused before it is read whole; a lease gets
//! [`limits::MAX_LOG_STREAMS_PER_LEASE`] log streams at once, and a closed one frees its place.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};

use pazar_api::provider::LogsQuery;
use pazar_api::ErrorCode;
use pazar_client::tenant::TenantError;
use pazar_provider::server::limits;
use pazar_types::Address;

use super::manifest::{build_image, deploy, raw_channel, raw_refusal, start_daemon, tenant, web_sdl};
use crate::common;

/// Accepts the provider's certificate whatever it is: this test is about the endpoint's bounds,
/// not its pin (which `requests` and the manifest test check).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A TLS connection to `port` from the loopback address `source`, handshake done.
fn connect(source: &str, port: u16) -> Tls {
    let crypto = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(crypto.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(crypto)))
        .with_no_client_auth();
    let tcp = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let s = tokio::net::TcpSocket::new_v4().expect("socket");
            s.bind(format!("{source}:0").parse().expect("source")).expect("bind");
            s.connect(format!("127.0.0.1:{port}").parse().expect("addr"))
                .await
                .expect("connect")
                .into_std()
                .expect("std")
        })
    };
    tcp.set_nonblocking(false).expect("blocking");
    tcp.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let conn = ClientConnection::new(Arc::new(config), name).expect("client");
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).expect("handshake");
    }
    tls
}

/// Sends `GET /status` on `tls` and reads the answer until the server closes.
fn ask(mut tls: Tls) -> String {
    let mut out = Vec::new();
    if tls
        .write_all(b"GET /status HTTP/1.1\r\nHost: provider\r\nConnection: close\r\n\r\n")
        .is_ok()
    {
        let _ = tls.read_to_end(&mut out);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads until the server closes `tls`; whatever it sent.
fn wait_closed(tls: &mut Tls) -> String {
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn threads(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:")?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn slow_and_greedy_clients_get_their_share_of_the_tenant_endpoint_and_no_more() {
    build_image();
    let net = common::devnet(250);
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = start_daemon(&net, dir.path(), "docker", "", "");
    let provider: Address = net.address("provider").parse().expect("address");
    let lease = deploy(&net, &web_sdl(dir.path(), "web.yaml", 1), "alice", 80);
    let port = daemon.port;
    assert!(ask(connect("127.0.0.2", port)).starts_with("HTTP/1.1 200"));
    let threads_before = threads(daemon.pid());

    // One address holds its whole share open and sends nothing.
    let mut held: Vec<Tls> = (0..limits::MAX_CONNECTIONS_PER_IP)
        .map(|_| connect("127.0.0.2", port))
        .collect();
    // One more from it is closed unanswered; another address is served meanwhile.
    let extra = ask(connect("127.0.0.2", port));
    assert!(!extra.contains("HTTP/1.1"), "over its share: {extra:?}");
    assert!(ask(connect("127.0.0.3", port)).starts_with("HTTP/1.1 200"));
    // Connections are tasks: the share did not add a thread each.
    let during = threads(daemon.pid());
    assert!(
        during < threads_before + limits::MAX_CONNECTIONS_PER_IP / 4,
        "{threads_before} threads before, {during} with {} idle connections",
        limits::MAX_CONNECTIONS_PER_IP
    );
    // The head time runs out: every silent connection is closed, and the address is served.
    for c in &mut held {
        let got = wait_closed(c);
        assert!(!got.contains("200 OK"), "{got}");
    }
    assert!(ask(connect("127.0.0.2", port)).starts_with("HTTP/1.1 200"));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // A body over the bound is refused with its reason.
    let raw = raw_channel(&net, &provider);
    let path = format!("/lease/{}/80/1/1/manifest", lease.owner);
    let big = vec![b' '; pazar_provider::server::MAX_MANIFEST_BYTES + 1];
    let (status, code, message) = rt.block_on(async {
        let r = raw.send("PUT", &path, &[], big).await.expect("an answer");
        raw_refusal(r).await
    });
    assert_eq!((status, code), (413, ErrorCode::TooLarge), "{message}");

    // Log streams: a lease's share at once, then a clear refusal; closing one frees a place.
    let alice = tenant(&net, "alice", &provider);
    let follow = LogsQuery {
        service: None,
        tail: Some(1),
        follow: Some(true),
    };
    let mut streams: Vec<_> = (0..limits::MAX_LOG_STREAMS_PER_LEASE)
        .map(|_| rt.block_on(alice.logs(&lease, &follow)).expect("a stream"))
        .collect();
    match rt.block_on(alice.logs(&lease, &follow)) {
        Err(TenantError::Refused { status, code, message }) => {
            assert_eq!((status, code), (429, ErrorCode::TooManyStreams), "{message}");
        }
        Err(e) => panic!("a stream over the lease's share: {e}"),
        Ok(_) => panic!("a stream over the lease's share was opened"),
    }
    drop(streams.pop());
    let t0 = Instant::now();
    loop {
        match rt.block_on(alice.logs(&lease, &follow)) {
            Ok(s) => {
                streams.push(s);
                break;
            }
            Err(TenantError::Refused {
                code: ErrorCode::TooManyStreams,
                ..
            }) => {
                assert!(
                    t0.elapsed() < Duration::from_secs(20),
                    "a closed stream never freed its place"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("{e}"),
        }
    }
    drop(streams);
    daemon.close_and_wait_removed(&net, &lease, "alice");
}

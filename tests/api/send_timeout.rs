//! Issue 22, finding F2: a client that never reads its answers loses its
//! connection after `server.send_timeout_ms` without write progress, so
//! such clients cannot hold every connection slot; a client that reads
//! slowly but steadily is served to the end.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::helpers::*;

const SLOTS: usize = 16;
const SEND_TIMEOUT: Duration = Duration::from_millis(2000);

fn start() -> Served {
    let w = Workdir::new();
    let mut env = serve_env(&w.genome(&Genome::single().signed()));
    env.insert("SETTLEGATE_SERVER__WORKERS".into(), "1".into());
    env.insert("SETTLEGATE_SERVER__MAX_CONNECTIONS".into(), SLOTS.to_string());
    env.insert(
        "SETTLEGATE_SERVER__SEND_TIMEOUT_MS".into(),
        SEND_TIMEOUT.as_millis().to_string(),
    );
    Served::start(&env)
}

/// `n` pipelined `GET /openapi.json` (about 87 KiB each), the last one
/// asking to close the connection.
fn openapi_requests(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let close = if i + 1 == n { "Connection: close\r\n" } else { "" };
        out.extend_from_slice(format!("GET /openapi.json HTTP/1.1\r\nHost: x\r\n{close}\r\n").as_bytes());
    }
    out
}

/// How a connection ended once its client read it out.
#[derive(Debug, PartialEq)]
enum End {
    /// The service aborted it (a reset after what had arrived).
    Reset,
    /// The service closed it in order.
    Closed,
    /// Still open when the client gave up reading.
    Open,
}

/// Reads `s` to its end, each read waiting at most `patience`, all of it
/// at most `give_up`; the bytes read and how it ended.
fn read_out(s: &mut TcpStream, patience: Duration, give_up: Duration) -> (usize, End) {
    let started = Instant::now();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    s.set_read_timeout(Some(patience)).unwrap();
    while started.elapsed() < give_up {
        match s.read(&mut buf) {
            Ok(0) => return (total, End::Closed),
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (total, End::Reset),
            Err(_) => return (total, End::Open),
        }
    }
    (total, End::Open)
}

/// Answers each stalled client asks for, as the probe did: about 5.2 MB,
/// more than the service's socket (at most 4 MiB by default) and the
/// client's 16 KiB can hold, so the service's writes stall.
const STALLED_REQUESTS: usize = 60;

/// A fixed 16 KiB receive buffer: without it Linux grows a loopback
/// receive buffer to megabytes even for a client that never reads.
fn small_receive_buffer(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 16 * 1024;
    // SAFETY: a valid socket, a c_int and its length.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
}

/// Connects, pipelines many large answers' worth of requests and reads
/// nothing until `release`; then reads what is there to the end.
fn stall(addr: SocketAddr, release: Arc<AtomicBool>, give_up: Duration) -> JoinHandle<(usize, End)> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).unwrap();
        small_receive_buffer(&s);
        s.write_all(&openapi_requests(STALLED_REQUESTS)).unwrap();
        while !release.load(Ordering::SeqCst) && started.elapsed() < give_up {
            std::thread::sleep(Duration::from_millis(50));
        }
        read_out(&mut s, Duration::from_secs(2), Duration::from_secs(20))
    })
}

#[test]
fn clients_that_never_read_their_answers_are_cut_off_and_cannot_hold_every_slot() {
    let app = start();
    let release = Arc::new(AtomicBool::new(false));
    // Each stalled client gives up after this, so on a service without the
    // send timeout the test still ends.
    let give_up = Duration::from_secs(20);
    let stalled: Vec<_> = (0..SLOTS).map(|_| stall(app.addr, release.clone(), give_up)).collect();
    // Every slot is taken and every stalled answer has shut its window.
    std::thread::sleep(Duration::from_millis(500));

    let started = Instant::now();
    let mut s = TcpStream::connect(app.addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut health = Vec::new();
    s.set_read_timeout(Some(SEND_TIMEOUT + Duration::from_secs(8))).unwrap();
    let read = s.read_to_end(&mut health);
    let took = started.elapsed();
    // The service fills the stalled connections one after another (a
    // debug build takes a while per answer), so the last ones stall later:
    // hold them all past their timeout before reading.
    std::thread::sleep((3 * SEND_TIMEOUT).saturating_sub(took));
    release.store(true, Ordering::SeqCst);
    let health = String::from_utf8_lossy(&health);
    assert!(
        health.starts_with("HTTP/1.1 200"),
        "{read:?} after {took:?}: {health:?}"
    );
    // The slots free one send timeout after the windows shut, plus the
    // last zero-window probe.
    assert!(took < SEND_TIMEOUT + Duration::from_secs(3), "/healthz took {took:?}");

    // The service aborted every stalled connection part-way: what had
    // arrived, then a reset, far from the answers asked for.
    let stalled: Vec<_> = stalled.into_iter().map(|h| h.join().unwrap()).collect();
    let answer_len = openapi_len(&app);
    eprintln!("/healthz after {took:?}; stalled clients got {stalled:?} of {answer_len}-byte answers");
    for (got, end) in stalled {
        assert_eq!(end, End::Reset, "after {got} bytes");
        assert!(got < STALLED_REQUESTS * answer_len, "{got} bytes");
    }
}

#[test]
fn a_client_that_reads_slowly_but_steadily_is_served_to_the_end() {
    let app = start();
    let answer_len = openapi_len(&app);
    let n = 20;
    let mut s = TcpStream::connect(app.addr).unwrap();
    s.write_all(&openapi_requests(n)).unwrap();
    // About 320 KiB/s: the 20 answers take several send timeouts, and each
    // timeout sees many window updates (a read frees 32 KiB).
    let started = Instant::now();
    let mut buf = vec![0u8; 32 * 1024];
    let mut got = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let end = loop {
        std::thread::sleep(Duration::from_millis(100));
        match s.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) => break Err(e),
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{} bytes", got.len());
    };
    let took = started.elapsed();
    end.unwrap_or_else(|e| panic!("{e} after {} bytes and {took:?}", got.len()));
    // Every answer whole: the service closed in order after the last one.
    let heads = got.windows(12).filter(|w| *w == b"HTTP/1.1 200").count();
    assert_eq!(heads, n);
    assert!(got.len() > (n - 1) * answer_len, "{} bytes of {n} answers", got.len());
    assert!(took > 2 * SEND_TIMEOUT, "read out in {took:?}: not slow enough to test");
}

/// The length of one whole `/openapi.json` answer, head included.
fn openapi_len(app: &Served) -> usize {
    let mut s = TcpStream::connect(app.addr).unwrap();
    s.write_all(&openapi_requests(1)).unwrap();
    let mut out = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.read_to_end(&mut out).unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out[..out.len().min(200)])
    );
    assert!(out.len() > 64 * 1024, "{} bytes", out.len());
    out.len()
}

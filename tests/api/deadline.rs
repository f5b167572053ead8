//! Issue 22, finding 4: a request's body must arrive within
//! `server.request_body_timeout_ms` of its head. Tricklers and bodies that
//! never come get 408 and lose their connection, so they cannot hold every
//! connection slot; a body nobody reads never holds one either.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::helpers::*;

/// What a held connection saw: the answer's bytes and when the service
/// closed it (`None`: still open when the client gave up).
struct Held {
    answer: String,
    closed_after: Option<Duration>,
}

/// Opens a connection, sends `head` and then, every `every`, one piece of
/// `trickle` (nothing when empty) until the service answers or `give_up`
/// passes; reads the answer to the service's close.
fn hold(
    addr: SocketAddr,
    head: String,
    trickle: &'static [u8],
    every: Duration,
    give_up: Duration,
) -> JoinHandle<Held> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        let answered = Arc::new(AtomicBool::new(false));
        let mut writer = s.try_clone().unwrap();
        let stop = answered.clone();
        let trickler = std::thread::spawn(move || {
            while !trickle.is_empty() && !stop.load(Ordering::SeqCst) && started.elapsed() < give_up {
                std::thread::sleep(every);
                // Stop at the first byte of the answer: writing past the
                // service's close would reset the connection and lose it.
                if stop.load(Ordering::SeqCst) || writer.write_all(trickle).is_err() {
                    return;
                }
            }
        });
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        let closed_after = loop {
            let left = give_up.saturating_sub(started.elapsed());
            if left.is_zero() {
                break None;
            }
            s.set_read_timeout(Some(left)).unwrap();
            match s.read(&mut buf) {
                Ok(0) => break Some(started.elapsed()),
                Ok(n) => {
                    answered.store(true, Ordering::SeqCst);
                    answer.extend_from_slice(&buf[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break Some(started.elapsed()),
                Err(_) => break None,
            }
        };
        answered.store(true, Ordering::SeqCst);
        let _ = s.shutdown(Shutdown::Both);
        let _ = trickler.join();
        Held {
            answer: String::from_utf8_lossy(&answer).into_owned(),
            closed_after,
        }
    })
}

#[test]
fn bodies_that_trickle_or_never_come_are_cut_off_and_cannot_hold_every_slot() {
    let w = Workdir::new();
    let mut env = serve_env(&w.genome(&Genome::single().signed()));
    env.insert("SETTLEGATE_SERVER__WORKERS".into(), "1".into());
    env.insert("SETTLEGATE_SERVER__MAX_CONNECTIONS".into(), "32".into());
    env.insert("SETTLEGATE_SERVER__REQUEST_BODY_TIMEOUT_MS".into(), "1500".into());
    let app = Served::start(&env);
    let deadline = Duration::from_millis(1500);
    // Each slow client gives up after this, so on a service without the
    // deadline the test still ends.
    let give_up = Duration::from_secs(12);
    let every = Duration::from_millis(300);
    let verify = |len: usize| {
        format!(
            "POST /v1/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
        )
    };
    let authorize_chunked = "POST /v1/authorize HTTP/1.1\r\nHost: x\r\nX-Forwarded-Method: GET\r\n\
         X-Forwarded-Uri: /reports/1\r\nTransfer-Encoding: chunked\r\n\r\n"
        .to_owned();
    let authorize_sized = "POST /v1/authorize HTTP/1.1\r\nHost: x\r\nX-Forwarded-Method: GET\r\n\
         X-Forwarded-Uri: /reports/1\r\nContent-Length: 100\r\n\r\n"
        .to_owned();

    // 48 slow clients for 32 slots (36 that would hold one): a verify body
    // trickled a byte at a time,
    // a verify body announced and never sent, a chunked body trickled to an
    // endpoint that does not read it, and a sized one never sent to it.
    let mut verifies = Vec::new();
    let mut authorizes = Vec::new();
    for i in 0..48 {
        match i % 4 {
            0 => verifies.push(hold(app.addr, verify(100), b" ", every, give_up)),
            1 => verifies.push(hold(app.addr, verify(100), b"", every, give_up)),
            2 => authorizes.push(hold(app.addr, authorize_chunked.clone(), b"1\r\na\r\n", every, give_up)),
            _ => authorizes.push(hold(app.addr, authorize_sized.clone(), b"", every, give_up)),
        }
    }
    std::thread::sleep(Duration::from_millis(200));

    // Every slot is taken; the slow clients must lose theirs by the deadline
    // (plus actix's one-second linger on close), and /healthz is served.
    let started = Instant::now();
    let health = hold(
        app.addr,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into(),
        b"",
        every,
        give_up,
    )
    .join()
    .unwrap();
    let took = started.elapsed();
    assert!(
        health.answer.starts_with("HTTP/1.1 200"),
        "{:?} closed after {:?}; logs: {:?}",
        health.answer,
        health.closed_after,
        app.logs.lock().unwrap()
    );
    assert!(took < deadline + Duration::from_secs(3), "/healthz took {took:?}");

    for h in verifies.into_iter().map(|h| h.join().unwrap()) {
        assert!(
            h.answer.starts_with("HTTP/1.1 408"),
            "{:?} {:?}",
            h.answer,
            h.closed_after
        );
        assert!(h.answer.contains("\"code\":\"REQUEST_TIMEOUT\""), "{}", h.answer);
        assert!(h.answer.contains("application/problem+json"), "{}", h.answer);
        assert!(
            h.answer.to_ascii_lowercase().contains("connection: close"),
            "{}",
            h.answer
        );
        // the 40 queue for 32 slots: the last ones start one deadline later
        let closed = h.closed_after.expect("the connection was closed");
        assert!(
            closed < 2 * deadline + Duration::from_secs(3),
            "closed after {closed:?}"
        );
    }
    for h in authorizes.into_iter().map(|h| h.join().unwrap()) {
        assert!(h.answer.starts_with("HTTP/1.1 "), "{:?}", h.answer);
        assert!(
            h.answer.to_ascii_lowercase().contains("connection: close"),
            "{}",
            h.answer
        );
        let closed = h.closed_after.expect("the connection was closed");
        assert!(
            closed < 2 * deadline + Duration::from_secs(3),
            "closed after {closed:?}"
        );
    }

    // A body that arrives in time, even slowly, is decided as usual and the
    // connection stays open for the next request.
    let mut s = TcpStream::connect(app.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let body = b"{\"resource\": \"GET /reports/1\"}";
    s.write_all(verify(body.len()).as_bytes()).unwrap();
    for piece in body.chunks(10) {
        std::thread::sleep(Duration::from_millis(200));
        s.write_all(piece).unwrap();
    }
    let answer = read_response(&mut s);
    assert!(answer.starts_with("HTTP/1.1 402"), "{answer}");
    assert!(!answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(read_response(&mut s).starts_with("HTTP/1.1 200"));
}

/// One HTTP/1.1 answer with a `Content-Length`, read whole.
fn read_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        out.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&out).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    out.extend_from_slice(&body);
    String::from_utf8_lossy(&out).into_owned()
}

//! A connection whose answers make no write progress is closed.
//!
//! actix-http's HTTP/1 dispatcher has no write timeout: once a client stops
//! reading (its receive window shut), the dispatcher waits for write
//! readiness forever, and each such client holds one of
//! `server.max_connections`. The head, body and keep-alive timeouts do not
//! run while an answer is being written.
//!
//! The kernel bounds it instead: `TCP_USER_TIMEOUT` on the listening socket
//! (inherited by every accepted one, TLS or not) aborts a connection whose
//! sent bytes stay unacknowledged longer than `server.send_timeout_ms`,
//! zero-window probing included. The aborted socket wakes the dispatcher
//! with an error and the slot is freed. Progress is what the peer
//! acknowledges: a reader that frees a window update's worth (up to one MSS,
//! 64 KiB on loopback) within each timeout is never cut. Idle connections
//! have nothing unacknowledged and are left to the keep-alive timeout.

use std::net::TcpListener;
use std::time::Duration;

/// Sets the send timeout on `listener`, for every connection it accepts.
#[cfg(target_os = "linux")]
pub fn limit(listener: &TcpListener, timeout: Duration) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let ms = libc::c_uint::try_from(timeout.as_millis()).unwrap_or(libc::c_uint::MAX);
    // SAFETY: a valid socket descriptor, and a pointer to a c_uint of the
    // length given, as TCP_USER_TIMEOUT takes.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            (&raw const ms).cast(),
            std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Not Linux: no `TCP_USER_TIMEOUT`; the caller says so and goes on.
#[cfg(not(target_os = "linux"))]
pub fn limit(_listener: &TcpListener, _timeout: Duration) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::io::{ErrorKind, Write};
    use std::net::TcpStream;
    use std::os::fd::AsRawFd;
    use std::time::Instant;

    use super::*;

    fn user_timeout(s: &impl AsRawFd) -> u32 {
        let mut v: libc::c_uint = 0;
        let mut len = std::mem::size_of::<libc::c_uint>() as libc::socklen_t;
        // SAFETY: a valid socket, a c_uint and its length.
        let rc = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_USER_TIMEOUT,
                (&raw mut v).cast(),
                &raw mut len,
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        v
    }

    #[test]
    fn accepted_connections_inherit_it_and_a_peer_that_never_reads_is_aborted() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        limit(&listener, Duration::from_millis(1000)).unwrap();
        assert_eq!(user_timeout(&listener), 1000);
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut served, _) = listener.accept().unwrap();
        assert_eq!(user_timeout(&served), 1000);

        // The peer never reads: writes fill its window and the send buffer,
        // then block; the kernel aborts within the timeout (plus a probe).
        served.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        let started = Instant::now();
        let mut last_progress = Instant::now();
        let err = loop {
            assert!(started.elapsed() < Duration::from_secs(15), "never aborted");
            match served.write(&chunk) {
                Ok(_) => last_progress = Instant::now(),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => break e,
            }
        };
        // The abort's ETIMEDOUT, or EPIPE when a write's partial success
        // returned first and took it.
        assert!(
            matches!(err.raw_os_error(), Some(libc::ETIMEDOUT | libc::EPIPE)),
            "{err}"
        );
        let stalled = last_progress.elapsed();
        assert!(
            stalled < Duration::from_secs(4),
            "aborted {stalled:?} after the last write"
        );
        // The peer, reading at last, finds the connection reset after what
        // had arrived.
        let mut peer = peer;
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let end = loop {
            match std::io::Read::read(&mut peer, &mut buf) {
                Ok(0) => break None,
                Ok(_) => {}
                Err(e) => break Some(e.kind()),
            }
        };
        assert_eq!(end, Some(ErrorKind::ConnectionReset));
    }
}

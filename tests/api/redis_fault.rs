//! Fault injector for the replay store: a TCP proxy between the service and
//! a real Redis that loses a consume's reply, or the consume itself, on
//! demand. No real Redis can be made to cut a connection between a
//! command's write and its reply, which is where a store answer is lost in
//! production (a kill, a failover, a network cut).
//!
//! It parses just enough RESP to count frames both ways: the service's
//! commands (arrays of bulk strings, pipelined on one multiplexed
//! connection) and Redis's replies, which come back in command order. The
//! consume is the first command with an argument holding a replay record
//! (`"consumed_at":`) for the armed payment: not the lookup claim, its
//! publication or a read. Once the fault has fired the injector passes
//! everything through again; the service's next connection is clean.
//!
//! It runs on a thread and runtime of its own, so a test that blocks its
//! own thread (a `cast send`, waiting for a log line) never stalls the
//! service's store.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the injector does to the next consume of the armed payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward the consume, wait for Redis's reply (the write happened),
    /// drop that reply and cut the connection.
    DropConsumeReply,
    /// Do not forward the consume (nothing is written) and cut the
    /// connection.
    SwallowConsume,
}

struct Shared {
    /// The fault waiting for its consume, and the payment's hash.
    armed: Mutex<Option<(Fault, String)>>,
    /// Faults carried out to the end: a reply dropped, a consume swallowed.
    fired: AtomicUsize,
}

impl Shared {
    /// The armed fault and its payment, disarmed, if `frame` is the
    /// consume it waits for.
    fn take_if_consume(&self, frame: &[u8]) -> Option<(Fault, String)> {
        let mut armed = self.armed.lock().unwrap();
        let (_, hash) = armed.as_ref()?;
        let args = command_args(frame)?;
        let is_consume = args
            .iter()
            .any(|a| contains(a, b"\"consumed_at\":") && contains(&a.to_ascii_lowercase(), hash.as_bytes()));
        if !is_consume {
            return None;
        }
        armed.take()
    }
}

/// A running fault injector in front of one Redis.
pub struct RedisFaultInjector {
    /// The Redis it forwards to, as given.
    pub upstream_url: String,
    /// Where the service connects instead: the same URL (credentials,
    /// database) with the injector's address.
    pub url: String,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RedisFaultInjector {
    /// Starts passing everything through to the Redis at `upstream_url`.
    pub fn start(upstream_url: &str) -> RedisFaultInjector {
        let parsed = url::Url::parse(upstream_url).expect("a redis:// URL");
        let host = parsed.host_str().expect("a Redis host").to_owned();
        let port = parsed.port().unwrap_or(6379);
        let upstream = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
            .expect("the Redis host resolves")
            .next()
            .expect("an address for the Redis host");

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let mut url = parsed.clone();
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(listener.local_addr().unwrap().port())).unwrap();

        let shared = Arc::new(Shared {
            armed: Mutex::new(None),
            fired: AtomicUsize::new(0),
        });
        let (stop, stopped) = watch::channel(false);
        let thread = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(accept(listener, upstream, shared, stopped));
                // Dropping the runtime drops every connection's task: the
                // service sees its connections close.
            })
        };
        RedisFaultInjector {
            upstream_url: upstream_url.to_owned(),
            url: url.to_string(),
            shared,
            stop,
            thread: Some(thread),
        }
    }

    /// Arms `fault` for the next consume of the payment `hash`.
    pub fn arm(&self, fault: Fault, hash: &str) {
        *self.shared.armed.lock().unwrap() = Some((fault, hash.to_ascii_lowercase()));
    }

    /// Whether a fault is still waiting for its consume.
    pub fn armed(&self) -> bool {
        self.shared.armed.lock().unwrap().is_some()
    }

    /// How many faults were carried out.
    pub fn fired(&self) -> usize {
        self.shared.fired.load(Ordering::SeqCst)
    }

    /// Waits (a little) for the count of faults carried out to reach `n`:
    /// the cut is made on the injector's thread, maybe after the service
    /// has answered.
    pub fn wait_fired(&self, n: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.fired() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.fired()
    }
}

impl Drop for RedisFaultInjector {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept(
    listener: std::net::TcpListener,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let listener = TcpListener::from_std(listener).unwrap();
    loop {
        tokio::select! {
            conn = listener.accept() => {
                let Ok((client, _)) = conn else { continue };
                let shared = shared.clone();
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    let _ = relay(client, upstream, shared, stopped).await;
                });
            }
            _ = stopped.changed() => return,
        }
    }
}

/// One service connection and its own upstream connection. Returning
/// drops both: that is the cut.
async fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let (mut commands, mut replies) = (Vec::new(), Vec::new());
    let (mut a, mut b) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    // Commands forwarded, replies seen, and the index of the consume whose
    // reply is to be dropped.
    let (mut sent, mut answered) = (0u64, 0u64);
    let mut drop_reply_of: Option<(u64, Fault, String)> = None;
    loop {
        tokio::select! {
            n = from_client.read(&mut a) => {
                let n = n?;
                if n == 0 {
                    return Ok(());
                }
                commands.extend_from_slice(&a[..n]);
                let mut out = Vec::new();
                while let Some(len) = frame_len(&commands) {
                    let frame: Vec<u8> = commands.drain(..len).collect();
                    match shared.take_if_consume(&frame) {
                        None => {}
                        Some((Fault::SwallowConsume, _)) => {
                            // What came before it goes through; the consume
                            // and whatever follows it never reach Redis.
                            to_server.write_all(&out).await?;
                            shared.fired.fetch_add(1, Ordering::SeqCst);
                            return Ok(());
                        }
                        Some((fault @ Fault::DropConsumeReply, hash)) => {
                            drop_reply_of = Some((sent, fault, hash));
                        }
                    }
                    out.extend_from_slice(&frame);
                    sent += 1;
                }
                to_server.write_all(&out).await?;
            }
            n = from_server.read(&mut b) => {
                let n = n?;
                if n == 0 {
                    return Ok(());
                }
                replies.extend_from_slice(&b[..n]);
                let mut out = Vec::new();
                while let Some(len) = frame_len(&replies) {
                    let frame: Vec<u8> = replies.drain(..len).collect();
                    // RESP3 pushes answer no command.
                    if frame.first() == Some(&b'>') {
                        out.extend_from_slice(&frame);
                        continue;
                    }
                    if drop_reply_of.as_ref().is_some_and(|(index, _, _)| *index == answered) {
                        if frame.starts_with(b"-NOSCRIPT") {
                            // Nothing was written: the client loads the
                            // script and sends the consume again.
                            let (_, fault, hash) = drop_reply_of.take().unwrap();
                            *shared.armed.lock().unwrap() = Some((fault, hash));
                        } else {
                            // Redis has run the consume; its answer is lost.
                            to_client.write_all(&out).await?;
                            shared.fired.fetch_add(1, Ordering::SeqCst);
                            return Ok(());
                        }
                    }
                    answered += 1;
                    out.extend_from_slice(&frame);
                }
                to_client.write_all(&out).await?;
            }
            _ = stopped.changed() => return Ok(()),
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The position just past the next `\r\n` at or after `from`.
fn line_end(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| from + i + 2)
}

/// The integer on the header line starting at `at` (after its type byte),
/// and where the line ends.
fn header(buf: &[u8], at: usize) -> Option<(i64, usize)> {
    let end = line_end(buf, at)?;
    let n = std::str::from_utf8(&buf[at + 1..end - 2]).ok()?.parse().ok()?;
    Some((n, end))
}

/// The length of the complete RESP2/RESP3 frame at the start of `buf`, or
/// `None` while it is incomplete. A line without a type byte is an inline
/// command.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    frame_end(buf, 0)
}

fn frame_end(buf: &[u8], at: usize) -> Option<usize> {
    match *buf.get(at)? {
        b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => line_end(buf, at),
        b'$' | b'!' | b'=' => {
            let (n, end) = header(buf, at)?;
            if n < 0 {
                return Some(end);
            }
            let total = end + n as usize + 2;
            (buf.len() >= total).then_some(total)
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let (n, mut end) = header(buf, at)?;
            let items = match buf[at] {
                b'%' | b'|' => 2 * n.max(0),
                _ => n.max(0),
            };
            for _ in 0..items {
                end = frame_end(buf, end)?;
            }
            // An attribute map precedes the reply it describes.
            if buf[at] == b'|' {
                end = frame_end(buf, end)?;
            }
            Some(end)
        }
        _ => line_end(buf, at),
    }
}

/// The arguments of a command frame (an array of bulk strings).
pub fn command_args(frame: &[u8]) -> Option<Vec<&[u8]>> {
    if frame.first() != Some(&b'*') {
        return None;
    }
    let (n, mut at) = header(frame, 0)?;
    let mut args = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n.max(0) {
        if frame.get(at) != Some(&b'$') {
            return None;
        }
        let (len, start) = header(frame, at)?;
        let len = usize::try_from(len).ok()?;
        args.push(frame.get(start..start + len)?);
        at = start + len + 2;
    }
    Some(args)
}

#[test]
fn the_lost_reply_injector_cuts_frames_where_resp_says() {
    let cmd = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10\r\n{\"a\":\"\r\n\"}\r\n*1\r\n$4\r\nPING\r\n";
    let first = frame_len(cmd).unwrap();
    assert_eq!(
        command_args(&cmd[..first]).unwrap(),
        vec![&b"SET"[..], b"k", b"{\"a\":\"\r\n\"}"]
    );
    assert_eq!(frame_len(&cmd[first..]), Some(cmd.len() - first));
    assert_eq!(frame_len(&cmd[..first - 1]), None);
    let replies = b"*2\r\n$8\r\ninserted\r\n$-1\r\n:1\r\n-NOSCRIPT No matching script\r\n%1\r\n+a\r\n_\r\n";
    let a = frame_len(replies).unwrap();
    let b = a + frame_len(&replies[a..]).unwrap();
    let c = b + frame_len(&replies[b..]).unwrap();
    assert_eq!(&replies[a..b], b":1\r\n");
    assert!(replies[b..c].starts_with(b"-NOSCRIPT"));
    assert_eq!(c + frame_len(&replies[c..]).unwrap(), replies.len());
}

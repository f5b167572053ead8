//! The Redis store on the real Redis the tests use (`TEST_REDIS_URL`):
//! the backends' shared suite, both ways of `put_if_absent`, the server's
//! deadline, `redis.wait_replicas` (pending records, withdrawal) and
//! retries counted across instances.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use settlegate_actors::RedisTarget;
use settlegate_actors::store::redis::{RedisStore, pending};
use settlegate_actors::store::{Put, Store, StoreError, conformance, unix_ms};

use crate::helpers::redis_url;

fn prefix(what: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("sgstore-{}-{nanos:x}-{what}:", std::process::id())
}

fn store(prefix: &str, wait_replicas: u32, timeout: Duration) -> RedisStore {
    let target = RedisTarget {
        urls: vec![redis_url()],
        cluster: false,
        tls_ca_pem: None,
        wait_replicas,
    };
    RedisStore::open(&target, prefix, timeout).unwrap()
}

fn plain(prefix: &str) -> RedisStore {
    store(prefix, 0, Duration::from_secs(2))
}

fn cli(args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-u")
        .arg(redis_url())
        .args(args)
        .output()
        .expect("redis-cli is installed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

const LONG: Duration = Duration::from_secs(60);

#[tokio::test]
async fn the_redis_store_passes_the_suite_and_exchanges_lookups() {
    let p = prefix("suite");
    let s = plain(&p);
    conformance::run(&s, "").await;
    conformance::exchange(&s, "").await;
}

#[tokio::test]
async fn put_if_absent_inserts_once_by_command_by_script_and_with_a_deadline() {
    let later = unix_ms() + 60_000;
    for (by_command, deadlines) in [(true, false), (false, false), (true, true)] {
        let p = prefix(&format!("put-{by_command}-{deadlines}"));
        let s = plain(&p).with_ways(by_command, deadlines);
        let key = "replay:0xab";
        assert_eq!(s.put_if_absent(key, b"{\"a\":1}", LONG, later).await, Ok(Put::Inserted));
        assert_eq!(
            s.put_if_absent(key, b"{\"b\":2}", LONG, later).await,
            Ok(Put::Existing(b"{\"a\":1}".to_vec())),
            "the first record stays"
        );
        assert_eq!(s.get(key).await, Ok(Some(b"{\"a\":1}".to_vec())));
        let ttl: i64 = cli(&["PTTL", &format!("{p}{key}")]).parse().unwrap();
        assert!((1..=60_000).contains(&ttl), "{ttl}");
        cli(&["DEL", &format!("{p}{key}")]);
    }
}

/// A consume the server sees after its deadline (its request was answered
/// 503 already) writes nothing; the clock offset to the server is
/// measured, so the deadline is the server's.
#[tokio::test]
async fn a_consume_past_its_deadline_writes_nothing() {
    let s = plain(&prefix("late"));
    let key = "replay:0xcd";
    assert_eq!(
        s.put_if_absent(key, b"{}", LONG, unix_ms() - 1).await,
        Err(StoreError::Timeout)
    );
    assert_eq!(s.get(key).await, Ok(None), "nothing was written");
    assert!(s.clock_offset().unwrap().abs() < 5_000, "the same machine's clock");
    assert_eq!(
        s.put_if_absent(key, b"{}", LONG, unix_ms() + 1_000).await,
        Ok(Put::Inserted)
    );
}

/// `redis.wait_replicas` on a server without replicas (the machine's): the
/// consume is written, WAIT counts no replica in time, and the record is
/// withdrawn, so the 503 consumed nothing and a retry can still consume.
/// A withdrawal deletes only the record it wrote, and only while pending.
#[tokio::test]
async fn a_consume_no_replica_confirms_is_withdrawn() {
    let p = prefix("wait");
    // WAIT gets a third of the timeout: 50 ms.
    let s = store(&p, 1, Duration::from_millis(150));
    let key = "replay:0xce";
    let text = b"{\"r\":1}";
    let started = Instant::now();
    assert_eq!(
        s.put_if_absent(key, text, LONG, unix_ms() + 1_000).await,
        Err(StoreError::Unreplicated { wanted: 1, acked: 0 })
    );
    assert!(started.elapsed() >= Duration::from_millis(50), "WAIT waited its time");
    let other = plain(&p);
    assert_eq!(other.get(key).await, Ok(None), "withdrawn");
    assert_eq!(
        other.put_if_absent(key, text, LONG, unix_ms() + 1_000).await,
        Ok(Put::Inserted)
    );
    let full = format!("{p}{key}");
    let until = unix_ms() + 60_000;
    assert_eq!(s.withdraw(&full, b"another record", until).await, Ok(0));
    assert!(
        other.get(key).await.unwrap().is_some(),
        "only our own record is withdrawn"
    );
    assert_eq!(s.withdraw(&full, text, unix_ms() - 1).await, Ok(-1));
    assert!(
        other.get(key).await.unwrap().is_some(),
        "a record past its pending time is never withdrawn"
    );
    assert_eq!(s.withdraw(&full, text, until).await, Ok(1));
    assert_eq!(other.get(key).await, Ok(None));
}

/// While a consume waits for its replicas, its record is in Redis but may
/// yet be withdrawn: every reader answers 503 (`Unconfirmed`), by consume
/// and by read; once withdrawn the payment is free; a pending record past
/// its time is consumed.
#[tokio::test]
async fn a_record_waiting_for_its_replicas_is_no_answer_to_anyone_else() {
    let p = prefix("pending");
    // WAIT gets a third of the timeout: 600 ms.
    let waiting = Arc::new(store(&p, 1, Duration::from_millis(1_800)));
    let other = plain(&p);
    let key = "replay:0xcf";
    let text: &[u8] = b"{\"r\":2}";
    let consume = {
        let w = waiting.clone();
        tokio::spawn(async move { w.put_if_absent(key, text, LONG, unix_ms() + 1_000).await })
    };
    let full = format!("{p}{key}");
    let written = Instant::now();
    let raw = loop {
        let raw = cli(&["GET", &full]);
        if !raw.is_empty() {
            break raw;
        }
        assert!(
            written.elapsed() < Duration::from_millis(500),
            "the pending record was written"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(raw.starts_with('P') && raw.ends_with("{\"r\":2}"), "{raw}");
    assert_eq!(other.get(key).await, Err(StoreError::Unconfirmed));
    assert_eq!(
        other.put_if_absent(key, text, LONG, unix_ms() + 1_000).await,
        Err(StoreError::Unconfirmed)
    );
    assert_eq!(
        consume.await.unwrap(),
        Err(StoreError::Unreplicated { wanted: 1, acked: 0 })
    );
    assert_eq!(other.get(key).await, Ok(None), "withdrawn: the payment is free");

    // A pending record whose time is over (its writer died, or its
    // withdrawal failed) is a consumed payment, read and consume alike.
    let stale = pending(unix_ms() - 1_000, text);
    cli(&["SET", &full, std::str::from_utf8(&stale).unwrap(), "PX", "60000"]);
    assert_eq!(other.get(key).await, Ok(Some(text.to_vec())));
    assert_eq!(
        other.put_if_absent(key, text, LONG, unix_ms() + 1_000).await,
        Ok(Put::Existing(text.to_vec()))
    );
    assert_eq!(waiting.withdraw(&full, &stale, unix_ms() - 1_000).await, Ok(-1));
    assert!(other.get(key).await.unwrap().is_some(), "too late to withdraw");
}

/// A consume whose answer was lost under `wait_replicas`: reading it back
/// withdraws our own pending copy (nothing consumed), but never someone
/// else's.
#[tokio::test]
async fn reading_back_withdraws_our_own_pending_record_only() {
    let p = prefix("readback");
    let s = plain(&p);
    let key = "replay:0xd0";
    let full = format!("{p}{key}");
    let ours: &[u8] = b"{\"w\":\"ours\"}";
    let deadline = unix_ms() + 50;
    let mine = pending(unix_ms() + 60_000, ours);
    cli(&["SET", &full, std::str::from_utf8(&mine).unwrap(), "PX", "60000"]);
    assert_eq!(s.read_back(key, ours, deadline).await, Ok(None), "withdrawn");
    assert!(unix_ms() > deadline, "after the consume's deadline");
    assert_eq!(cli(&["EXISTS", &full]), "0");
    let theirs = pending(unix_ms() + 60_000, b"{\"w\":\"theirs\"}");
    cli(&["SET", &full, std::str::from_utf8(&theirs).unwrap(), "PX", "60000"]);
    assert_eq!(s.read_back(key, ours, unix_ms()).await, Err(StoreError::Unconfirmed));
    cli(&["SET", &full, "{\"w\":\"theirs\"}", "PX", "60000"]);
    assert_eq!(
        s.read_back(key, ours, unix_ms()).await,
        Ok(Some(b"{\"w\":\"theirs\"}".to_vec()))
    );
}

/// Retries are counted atomically across instances: concurrent counts from
/// two connections each get their own number, the count stops at its cap,
/// and it starts again only after its ttl.
#[tokio::test]
async fn retries_are_counted_once_each_across_instances_and_expire() {
    let p = prefix("retries");
    let (a, b) = (Arc::new(plain(&p)), Arc::new(plain(&p)));
    let ttl = Duration::from_millis(400);
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { s.count("retries:0xd1", ttl, 6).await.unwrap() })
        })
        .collect();
    let mut counts = Vec::new();
    for t in tasks {
        counts.push(t.await.unwrap());
    }
    let mut sorted = counts.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [1, 2, 3, 4, 5, 6, 6, 6, 6, 6], "{counts:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a.count("retries:0xd1", ttl, 6).await, Ok(1), "a new window");
}

/// The claim answers a consumed payment from its record, but a record
/// still waiting for its replicas (it may yet be withdrawn) is no answer:
/// the claim is taken and the node asked. Once its time is over, it is.
#[tokio::test]
async fn the_claim_answers_from_a_record_but_not_from_one_still_pending() {
    use settlegate_actors::store::Claim;
    let p = prefix("claim-pending");
    let s = plain(&p);
    let text: &[u8] = b"{\"r\":3}";
    let full = format!("{p}replay:0xc1");

    let live = pending(unix_ms() + 60_000, text);
    cli(&["SET", &full, std::str::from_utf8(&live).unwrap(), "PX", "60000"]);
    let keys = s.lookup_keys("replay:0xc1", "42431:0");
    assert_eq!(s.claim(&keys, "a", LONG, true).await, Ok(Claim::Claimed));
    assert_eq!(
        s.poll(&keys).await.unwrap().consumed,
        None,
        "a pending record is no answer to a poll"
    );

    let stale = pending(unix_ms() - 1_000, text);
    cli(&["SET", &full, std::str::from_utf8(&stale).unwrap(), "PX", "60000"]);
    let keys = s.lookup_keys("replay:0xc1", "42431:1");
    assert_eq!(
        s.claim(&keys, "b", LONG, true).await,
        Ok(Claim::Consumed(text.to_vec()))
    );

    cli(&["SET", &full, std::str::from_utf8(text).unwrap(), "PX", "60000"]);
    assert_eq!(
        s.claim(&keys, "c", LONG, true).await,
        Ok(Claim::Consumed(text.to_vec()))
    );
    assert!(
        cli(&["EXISTS", &keys.claim]) == "0",
        "a consumed payment takes no claim"
    );
}

/// A channel's state under `redis.wait_replicas` on a server without
/// replicas: the compare-and-set lands on the primary but is no answer
/// (a 503 for the request), and a compare-and-set that changes nothing
/// waits for no replica.
#[tokio::test]
async fn a_channel_write_no_replica_confirms_is_no_answer() {
    use settlegate_actors::store::Cas;
    let p = prefix("cas-wait");
    // WAIT gets a third of the store's timeout; the rest is the margin for
    // the connection and the script under a loaded machine (150 ms was
    // once not enough: a Timeout, also no answer, but not this one).
    let s = store(&p, 1, Duration::from_millis(1_500));
    assert_eq!(
        s.compare_and_set("channel:c", None, b"v1", LONG).await,
        Err(StoreError::Unreplicated { wanted: 1, acked: 0 })
    );
    assert_eq!(
        s.compare_and_set("channel:c", None, b"v2", LONG).await,
        Ok(Cas::Current(Some(b"v1".to_vec()))),
        "a lost race answers at once"
    );
    assert_eq!(
        plain(&p).compare_and_set("channel:c", Some(b"v1"), b"v2", LONG).await,
        Ok(Cas::Set)
    );
}

/// The ledger's outbox is a stream the consume's own script appends to.
#[tokio::test]
async fn the_redis_store_keeps_the_outbox_in_the_consumes_script() {
    let p = prefix("outbox");
    conformance::outbox(&plain(&p).with_outbox(3), "").await;
    assert_eq!(
        cli(&["EXISTS", &format!("{p}ledger:outbox")]),
        "1",
        "one stream per prefix"
    );
    // Without the deadline script (an old server) there is no stream to
    // write with the record: the consume is refused, nothing written.
    let old = plain(&p).with_ways(true, false).with_outbox(3);
    assert!(matches!(
        old.put_if_absent("replay:old", b"{}", LONG, unix_ms() + 10_000).await,
        Err(StoreError::Refused(_))
    ));
    assert_eq!(old.get("replay:old").await, Ok(None));
}

/// `redis.wait_replicas`: a consume no replica confirmed is withdrawn,
/// and its outbox entry with it, so the ledger never books it.
#[tokio::test]
async fn a_withdrawn_consume_takes_its_outbox_entry_with_it() {
    let p = prefix("outbox-wait");
    let s = store(&p, 1, Duration::from_millis(150)).with_outbox(10);
    assert_eq!(
        s.put_if_absent("replay:0xw", b"{}", LONG, unix_ms() + 1_000).await,
        Err(StoreError::Unreplicated { wanted: 1, acked: 0 })
    );
    assert_eq!(s.get("replay:0xw").await, Ok(None));
    assert_eq!(
        cli(&["XLEN", &format!("{p}ledger:outbox")]),
        "0",
        "the entry went with the record"
    );
}

/// An entry whose record is still pending (it may yet be withdrawn) holds
/// back the read, and those after it, until its time is past; then it is
/// read with its settled value.
#[tokio::test]
async fn a_pending_entry_is_read_only_once_it_is_final() {
    let p = prefix("outbox-pending");
    let s = plain(&p).with_outbox(10);
    let stream = format!("{p}ledger:outbox");
    let server_ms: i64 = {
        let t = cli(&["TIME"]);
        let mut parts = t.lines();
        let secs: i64 = parts.next().unwrap().trim().parse().unwrap();
        let micros: i64 = parts.next().unwrap().trim().parse().unwrap();
        secs * 1000 + micros / 1000
    };
    let until = server_ms + 1_500;
    let pending_value = String::from_utf8(pending(until, b"{\"p\":1}")).unwrap();
    cli(&[
        "XADD",
        &stream,
        "*",
        "k",
        &format!("{p}replay:0xp"),
        "v",
        &pending_value,
    ]);
    cli(&["XADD", &stream, "*", "k", &format!("{p}replay:0xq"), "v", "{\"q\":1}"]);
    assert_eq!(s.outbox_read(10).await, Ok(vec![]), "held back while pending");
    assert_eq!(s.outbox_depth().await.unwrap().entries, 2);
    tokio::time::sleep(Duration::from_millis(1_700)).await;
    let read = s.outbox_read(10).await.unwrap();
    let got: Vec<(&str, &[u8])> = read.iter().map(|e| (e.key.as_str(), e.value.as_slice())).collect();
    assert_eq!(
        got,
        [("replay:0xp", &b"{\"p\":1}"[..]), ("replay:0xq", &b"{\"q\":1}"[..])],
        "settled values, keys without the prefix, in order"
    );
}

/// A lost consume's pending copy, withdrawn by its read-back, takes its
/// outbox entry with it (and nobody else's).
#[tokio::test]
async fn reading_back_withdraws_the_pending_copys_outbox_entry_too() {
    let p = prefix("readback-outbox");
    let s = plain(&p).with_outbox(10);
    let stream = format!("{p}ledger:outbox");
    let key = "replay:0xd2";
    let full = format!("{p}{key}");
    let ours: &[u8] = b"{\"w\":\"ours\"}";
    let deadline = unix_ms() + 50;
    let mine = String::from_utf8(pending(unix_ms() + 60_000, ours)).unwrap();
    cli(&[
        "XADD",
        &stream,
        "*",
        "k",
        &format!("{p}replay:0xother"),
        "v",
        "{\"w\":\"other\"}",
    ]);
    cli(&["SET", &full, &mine, "PX", "60000"]);
    cli(&["XADD", &stream, "*", "k", &full, "v", &mine]);
    assert_eq!(s.read_back(key, ours, deadline).await, Ok(None), "withdrawn");
    assert_eq!(cli(&["EXISTS", &full]), "0");
    let left = s.outbox_read(10).await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].key, "replay:0xother");
}

/// A read-back's deadline is the consume's in a clock offset measured
/// again (after the failure that lost the answer): it may fall before the
/// entry's own time by more than the margin. The withdrawn copy's entry
/// still goes with it, or the ledger would book a consume that was not.
#[tokio::test]
async fn reading_back_finds_the_entry_whatever_the_offset_measured_again() {
    let p = prefix("readback-offset");
    let s = plain(&p).with_outbox(10);
    let stream = format!("{p}ledger:outbox");
    let key = "replay:0xd3";
    let full = format!("{p}{key}");
    let ours: &[u8] = b"{\"w\":\"ours\"}";
    // The consume's deadline as the read-back sees it: 2 s before the
    // entry was appended (its copy is pending for a minute after).
    let deadline = unix_ms() - 2_000;
    let mine = String::from_utf8(pending(unix_ms() + 60_000, ours)).unwrap();
    cli(&["SET", &full, &mine, "PX", "60000"]);
    cli(&["XADD", &stream, "*", "k", &full, "v", &mine]);
    assert_eq!(s.read_back(key, ours, deadline).await, Ok(None), "withdrawn");
    assert_eq!(cli(&["EXISTS", &full]), "0");
    assert_eq!(s.outbox_read(10).await, Ok(vec![]), "its entry went with it");
    assert_eq!(cli(&["XLEN", &stream]), "0");
}

//! The one test suite every backend passes (memory and file in this
//! crate's unit tests, Redis in the black-box suite). Each check panics
//! with what it expected; `prefix` keeps runs on a shared store apart.

use std::time::Duration;

use super::{Cas, Claim, Put, Store, StoreError, unix_ms};

const LONG: Duration = Duration::from_secs(60);

/// Every operation but the lookup exchange.
pub async fn run(store: &dyn Store, prefix: &str) {
    put_if_absent_keeps_the_first_value(store, prefix).await;
    a_put_past_its_deadline_writes_nothing(store, prefix).await;
    values_expire(store, prefix).await;
    reservations_exclude_until_released_or_expired(store, prefix).await;
    counts_stop_at_their_cap_and_expire(store, prefix).await;
    compare_and_set_sets_only_over_what_it_expected(store, prefix).await;
    read_back_reads_what_landed(store, prefix).await;
    sets_hold_members_until_removed(store, prefix).await;
    store.ping().await.expect("ping");
}

pub async fn put_if_absent_keeps_the_first_value(store: &dyn Store, prefix: &str) {
    let key = format!("{prefix}replay:put");
    let later = unix_ms() + 10_000;
    assert_eq!(store.get(&key).await, Ok(None));
    assert_eq!(
        store.put_if_absent(&key, b"{\"a\":1}", LONG, later).await,
        Ok(Put::Inserted)
    );
    assert_eq!(
        store.put_if_absent(&key, b"{\"b\":2}", LONG, later).await,
        Ok(Put::Existing(b"{\"a\":1}".to_vec())),
        "the first value stays"
    );
    assert_eq!(store.get(&key).await, Ok(Some(b"{\"a\":1}".to_vec())));
}

pub async fn a_put_past_its_deadline_writes_nothing(store: &dyn Store, prefix: &str) {
    let key = format!("{prefix}replay:late");
    assert_eq!(
        store.put_if_absent(&key, b"{}", LONG, unix_ms() - 1_000).await,
        Err(StoreError::Timeout)
    );
    assert_eq!(store.get(&key).await, Ok(None), "nothing was written");
}

pub async fn values_expire(store: &dyn Store, prefix: &str) {
    let key = format!("{prefix}replay:short");
    let later = unix_ms() + 10_000;
    let short = Duration::from_millis(150);
    assert_eq!(store.put_if_absent(&key, b"{}", short, later).await, Ok(Put::Inserted));
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(store.get(&key).await, Ok(None), "expired");
    assert_eq!(store.put_if_absent(&key, b"{}", short, later).await, Ok(Put::Inserted));
}

pub async fn reservations_exclude_until_released_or_expired(store: &dyn Store, prefix: &str) {
    let key = format!("{prefix}broadcast:r");
    assert_eq!(store.reserve(&key, LONG).await, Ok(true));
    assert_eq!(store.reserve(&key, LONG).await, Ok(false), "held");
    store.release(&key).await.expect("release");
    assert_eq!(store.reserve(&key, Duration::from_millis(150)).await, Ok(true));
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(store.reserve(&key, LONG).await, Ok(true), "expired");
}

pub async fn counts_stop_at_their_cap_and_expire(store: &dyn Store, prefix: &str) {
    let (a, b) = (format!("{prefix}retries:a"), format!("{prefix}retries:b"));
    let ttl = Duration::from_millis(300);
    assert_eq!(store.count(&a, ttl, 2).await, Ok(1));
    assert_eq!(store.count(&a, ttl, 2).await, Ok(2));
    assert_eq!(store.count(&a, ttl, 2).await, Ok(2), "capped");
    assert_eq!(store.count(&b, ttl, 2).await, Ok(1), "one count per key");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.count(&a, ttl, 2).await, Ok(1), "expired: a new window");
}

pub async fn compare_and_set_sets_only_over_what_it_expected(store: &dyn Store, prefix: &str) {
    let key = format!("{prefix}state:c");
    assert_eq!(store.compare_and_set(&key, None, b"v1", LONG).await, Ok(Cas::Set));
    assert_eq!(
        store.compare_and_set(&key, None, b"v2", LONG).await,
        Ok(Cas::Current(Some(b"v1".to_vec()))),
        "present, not absent"
    );
    assert_eq!(
        store.compare_and_set(&key, Some(b"v0"), b"v2", LONG).await,
        Ok(Cas::Current(Some(b"v1".to_vec())))
    );
    assert_eq!(
        store.compare_and_set(&key, Some(b"v1"), b"v2", LONG).await,
        Ok(Cas::Set)
    );
    assert_eq!(store.get(&key).await, Ok(Some(b"v2".to_vec())));
    let gone = format!("{prefix}state:gone");
    assert_eq!(
        store.compare_and_set(&gone, Some(b"v1"), b"v2", LONG).await,
        Ok(Cas::Current(None))
    );
}

pub async fn sets_hold_members_until_removed(store: &dyn Store, prefix: &str) {
    let key = format!("{prefix}index:a");
    let other = format!("{prefix}index:ab");
    assert_eq!(store.set_members(&key).await, Ok(vec![]), "absent is empty");
    store.set_add(&key, "x").await.expect("add");
    store.set_add(&key, "y").await.expect("add");
    store.set_add(&key, "x").await.expect("add twice");
    store
        .set_add(&other, "z")
        .await
        .expect("add to a set whose name extends the first");
    let mut members = store.set_members(&key).await.expect("members");
    members.sort();
    assert_eq!(members, vec!["x".to_owned(), "y".to_owned()]);
    store.set_remove(&key, "x").await.expect("remove");
    store.set_remove(&key, "never").await.expect("remove what is absent");
    assert_eq!(store.set_members(&key).await, Ok(vec!["y".to_owned()]));
    assert_eq!(store.set_members(&other).await, Ok(vec!["z".to_owned()]));
}

pub async fn read_back_reads_what_landed(store: &dyn Store, prefix: &str) {
    let key = format!("{prefix}replay:back");
    let deadline = unix_ms() + 50;
    assert_eq!(store.read_back(&key, b"{}", deadline).await, Ok(None));
    assert!(unix_ms() > deadline, "it waited for the deadline");
    let deadline = unix_ms() + 50;
    assert_eq!(
        store.put_if_absent(&key, b"{\"w\":1}", LONG, deadline).await,
        Ok(Put::Inserted)
    );
    assert_eq!(
        store.read_back(&key, b"{\"w\":1}", deadline).await,
        Ok(Some(b"{\"w\":1}".to_vec()))
    );
}

/// The lookup exchange, for stores shared by instances.
pub async fn exchange(store: &dyn Store, prefix: &str) {
    let record = format!("{prefix}replay:0xab");
    let k = store.lookup_keys(&record, "42431:0");
    let ttl = Duration::from_secs(5);
    assert_eq!(store.claim(&k, "a", ttl, true).await, Ok(Claim::Claimed));
    assert_eq!(store.claim(&k, "b", ttl, true).await, Ok(Claim::Wait("a".into())));
    let poll = store.poll(&k).await.unwrap();
    assert_eq!((poll.published, poll.claim.as_deref()), (None, Some("a")));
    // Only the holder publishes or renews.
    store.publish(&k, "b", b"x", Duration::ZERO, LONG).await.unwrap();
    assert_eq!(store.poll(&k).await.unwrap().claim.as_deref(), Some("a"));
    assert_eq!(store.renew(&k, "b", ttl).await, Ok(false));
    assert_eq!(store.renew(&k, "a", ttl).await, Ok(true));
    let hold = Duration::from_secs(2);
    store
        .publish(&k, "a", b"facts", hold, Duration::from_secs(3))
        .await
        .unwrap();
    let poll = store.poll(&k).await.unwrap();
    assert_eq!((poll.published.as_deref(), poll.claim), (Some(&b"facts"[..]), None));
    match store.claim(&k, "c", ttl, true).await {
        Ok(Claim::Held(body, left)) => {
            assert_eq!(body, b"facts");
            assert!(left > Duration::from_millis(1_000) && left <= hold, "{left:?}");
        }
        other => panic!("{other:?}"),
    }
    // Without want_held (a check about to settle) it claims instead.
    assert_eq!(store.claim(&k, "c", ttl, false).await, Ok(Claim::Claimed));
    // Published without a hold: for the claim's waiters only.
    store.publish(&k, "c", b"error", Duration::ZERO, LONG).await.unwrap();
    assert_eq!(
        store.claim(&k, "d", Duration::from_millis(100), true).await,
        Ok(Claim::Claimed)
    );
    // A claim expires by itself (a dead holder).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.claim(&k, "e", ttl, false).await, Ok(Claim::Claimed));
    // Once the payment is consumed, its record answers every claim and
    // poll of its lookups, held result or claim notwithstanding.
    let deadline = unix_ms() + 60_000;
    assert_eq!(
        store.put_if_absent(&record, b"{\"r\":1}", LONG, deadline).await,
        Ok(Put::Inserted)
    );
    for want_held in [true, false] {
        assert_eq!(
            store.claim(&k, "f", ttl, want_held).await,
            Ok(Claim::Consumed(b"{\"r\":1}".to_vec()))
        );
    }
    let poll = store.poll(&k).await.unwrap();
    assert_eq!(
        (poll.consumed.as_deref(), poll.claim.as_deref()),
        (Some(&b"{\"r\":1}"[..]), Some("e"))
    );
    // Another lookup of the same payment (another chain) too.
    let other = store.lookup_keys(&record, "1:1");
    assert_eq!(
        store.claim(&other, "g", ttl, true).await,
        Ok(Claim::Consumed(b"{\"r\":1}".to_vec()))
    );
}

/// The ledger's outbox, on a store opened with an outbox bound of 3 and
/// nothing in it yet: a record's consume and its entry are one write.
pub async fn outbox(store: &dyn Store, prefix: &str) {
    use super::OutboxDepth;
    let later = || unix_ms() + 10_000;
    let key = |n: &str| format!("replay:{prefix}{n}");
    assert!(store.outbox());
    assert_eq!(store.outbox_depth().await, Ok(OutboxDepth::default()));
    assert_eq!(store.outbox_read(10).await, Ok(vec![]));

    assert_eq!(
        store.put_if_absent(&key("a"), b"{\"a\":1}", LONG, later()).await,
        Ok(Put::Inserted)
    );
    let read = store.outbox_read(10).await.expect("read");
    assert_eq!(read.len(), 1, "{read:?}");
    assert_eq!(
        (read[0].key.as_str(), read[0].value.as_slice()),
        (key("a").as_str(), &b"{\"a\":1}"[..])
    );
    let depth = store.outbox_depth().await.expect("depth");
    assert_eq!(depth.entries, 1);
    assert!(
        depth.oldest_age.is_some_and(|a| a < Duration::from_secs(5)),
        "{depth:?}"
    );
    assert_eq!(
        store.outbox_read(10).await.expect("read"),
        read,
        "reading removes nothing"
    );

    // Writes that consume nothing log nothing.
    assert!(matches!(
        store.put_if_absent(&key("a"), b"{}", LONG, later()).await,
        Ok(Put::Existing(_))
    ));
    assert_eq!(
        store.put_if_absent(&key("late"), b"{}", LONG, unix_ms() - 1_000).await,
        Err(StoreError::Timeout)
    );
    assert_eq!(
        store
            .put_if_absent(&format!("{prefix}other:a"), b"{}", LONG, later())
            .await,
        Ok(Put::Inserted)
    );
    store
        .count(&format!("{prefix}retries:a"), LONG, 5)
        .await
        .expect("count");
    store
        .compare_and_set(&format!("{prefix}state:a"), None, b"1", LONG)
        .await
        .expect("cas");
    assert_eq!(
        store.outbox_depth().await.expect("depth").entries,
        1,
        "only consumed records are logged"
    );

    // At the bound a consume writes neither its record nor its entry.
    assert_eq!(
        store.put_if_absent(&key("b"), b"{\"b\":1}", LONG, later()).await,
        Ok(Put::Inserted)
    );
    assert_eq!(
        store.put_if_absent(&key("c"), b"{\"c\":1}", LONG, later()).await,
        Ok(Put::Inserted)
    );
    assert_eq!(
        store.put_if_absent(&key("d"), b"{\"d\":1}", LONG, later()).await,
        Err(StoreError::OutboxFull(3))
    );
    assert_eq!(store.get(&key("d")).await, Ok(None), "nothing consumed at the bound");
    let read = store.outbox_read(10).await.expect("read");
    let keys: Vec<&str> = read.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, [key("a"), key("b"), key("c")], "oldest first");
    assert_eq!(store.outbox_read(2).await.expect("read").len(), 2, "at most max");

    // Acknowledged entries leave; acknowledging twice is harmless.
    let first_two: Vec<String> = read[..2].iter().map(|e| e.id.clone()).collect();
    store.outbox_remove(&first_two).await.expect("remove");
    store.outbox_remove(&first_two).await.expect("remove again");
    let rest = store.outbox_read(10).await.expect("read");
    assert_eq!(rest, read[2..].to_vec());
    assert_eq!(
        store.put_if_absent(&key("d"), b"{\"d\":1}", LONG, later()).await,
        Ok(Put::Inserted)
    );
    assert_eq!(drain(store).await, 2);
    assert_eq!(store.outbox_depth().await, Ok(OutboxDepth::default()));

    // A channel's state: each change it is set to is logged, in order; a
    // compare-and-set that sets nothing logs nothing.
    let channel = format!("channel:{prefix}x");
    assert_eq!(store.compare_and_set(&channel, None, b"s1", LONG).await, Ok(Cas::Set));
    assert!(matches!(
        store.compare_and_set(&channel, Some(b"other"), b"s9", LONG).await,
        Ok(Cas::Current(_))
    ));
    assert_eq!(
        store.compare_and_set(&channel, Some(b"s1"), b"s2", LONG).await,
        Ok(Cas::Set)
    );
    let read = store.outbox_read(10).await.expect("read");
    let got: Vec<(&str, &[u8])> = read.iter().map(|e| (e.key.as_str(), e.value.as_slice())).collect();
    assert_eq!(got, [(channel.as_str(), &b"s1"[..]), (channel.as_str(), &b"s2"[..])]);
    assert_eq!(
        store.put_if_absent(&key("e"), b"{}", LONG, later()).await,
        Ok(Put::Inserted)
    );
    assert_eq!(
        store.compare_and_set(&channel, Some(b"s2"), b"s3", LONG).await,
        Err(StoreError::OutboxFull(3)),
        "a channel's change at the bound is refused like a consume"
    );
    assert_eq!(
        store.get(&channel).await,
        Ok(Some(b"s2".to_vec())),
        "unchanged at the bound"
    );
    assert_eq!(drain(store).await, 3);
}

/// Removes everything in the outbox; how many entries there were.
async fn drain(store: &dyn Store) -> usize {
    let ids: Vec<String> = store
        .outbox_read(100)
        .await
        .expect("read")
        .into_iter()
        .map(|e| e.id)
        .collect();
    store.outbox_remove(&ids).await.expect("remove");
    ids.len()
}

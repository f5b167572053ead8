//! The guard on the in-memory store: no Redis.
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use settlegate_rules::credential::TxHash;
use settlegate_rules::replay::{ReplayRecord, Scheme, Settlement};
use settlegate_rules::settlement::Payment;

use super::lost_reply::{self, Writer};
use super::*;
use crate::store::fault::{FaultInjector, PutFault};
use crate::store::memory::MemoryStore;
use crate::store::{Store, unix_now};

fn record(expires_at: u64) -> ReplayRecord {
    let hash: TxHash = format!("0x{}", "cd".repeat(32)).parse().unwrap();
    ReplayRecord {
        settlement: Settlement::new(
            hash,
            Scheme::Tempo,
            &Payment {
                payer: Default::default(),
                recipient: Default::default(),
                asset: Default::default(),
                amount: alloy_primitives::U256::from(5),
                memo: None,
                chain_id: 42431,
                block_number: 1,
                block_timestamp: 2,
            },
            "g",
        ),
        resource: None,
        request_digest: None,
        consumed_at: 1,
        expires_at,
        route: None,
        instance: None,
        proof: false,
    }
}

fn hash(byte: &str) -> TxHash {
    format!("0x{}", byte.repeat(32)).parse().unwrap()
}

fn guard(store: Arc<dyn Store>, timeout: Duration) -> Addr<ReplayGuard> {
    let bounded = Bounded::new(store, timeout, StoreOps::default());
    ReplayGuard::new(bounded, ConsumedCache::new(100, Counter::default())).start()
}

#[actix::test]
async fn one_of_many_concurrent_consumes_inserts_and_the_others_get_its_record() {
    let g = guard(Arc::new(MemoryStore::new(100)), Duration::from_secs(1));
    let h = hash("ab");
    let sends: Vec<_> = (0..8)
        .map(|i| {
            let mut r = record(unix_now() + 60);
            r.consumed_at = i;
            g.send(Consume { hash: h, record: r })
        })
        .collect();
    let mut inserted = 0;
    for s in sends {
        match s.await.unwrap().unwrap() {
            Consumed::Inserted => inserted += 1,
            Consumed::Existing(r) => assert_eq!(r.consumed_at, 0, "the winner's record"),
        }
    }
    assert_eq!(inserted, 1);
    let again = g
        .send(Consume {
            hash: h,
            record: record(unix_now() + 60),
        })
        .await
        .unwrap();
    assert!(matches!(again, Ok(Consumed::Existing(_))));
    assert!(g.send(Recall(h)).await.unwrap().unwrap().is_some());
    assert_eq!(g.send(Recall(hash("99"))).await.unwrap(), Ok(None));
}

#[actix::test]
async fn a_lost_reply_whose_record_landed_is_a_200() {
    let memory = Arc::new(MemoryStore::new(100));
    let faults = Arc::new(FaultInjector::new(memory.clone()));
    let g = guard(faults.clone(), Duration::from_millis(300));
    let h = hash("a1");
    faults.fault_next_put(PutFault::LoseReply);
    let r = record(unix_now() + 60);
    assert_eq!(
        g.send(Consume {
            hash: h,
            record: r.clone()
        })
        .await
        .unwrap(),
        Ok(Consumed::Inserted)
    );
    let raw = memory
        .get(&format!("replay:{h}"))
        .await
        .unwrap()
        .expect("the record is there");
    assert_eq!(lost_reply::decode(&raw).unwrap().0, r);
}

#[actix::test]
async fn a_swallowed_consume_is_a_503_that_consumed_nothing_and_a_retry_pays() {
    let memory = Arc::new(MemoryStore::new(100));
    let faults = Arc::new(FaultInjector::new(memory.clone()));
    let g = guard(faults.clone(), Duration::from_millis(300));
    let h = hash("a2");
    faults.fault_next_put(PutFault::Swallow);
    let answer = g
        .send(Consume {
            hash: h,
            record: record(unix_now() + 60),
        })
        .await
        .unwrap();
    assert!(matches!(answer, Err(StoreError::Connection(_))), "{answer:?}");
    assert_eq!(memory.get(&format!("replay:{h}")).await, Ok(None), "nothing consumed");
    let retry = g
        .send(Consume {
            hash: h,
            record: record(unix_now() + 60),
        })
        .await
        .unwrap();
    assert_eq!(retry, Ok(Consumed::Inserted));
}

#[actix::test]
async fn a_lost_reply_that_cannot_be_read_back_is_a_503() {
    let memory = Arc::new(MemoryStore::new(100));
    let faults = Arc::new(FaultInjector::new(memory.clone()));
    let g = guard(faults.clone(), Duration::from_millis(300));
    faults.fault_next_put(PutFault::LoseReply);
    faults.fail_reads(true);
    let answer = g
        .send(Consume {
            hash: hash("a3"),
            record: record(unix_now() + 60),
        })
        .await
        .unwrap();
    assert!(matches!(answer, Err(StoreError::Connection(_))), "{answer:?}");
}

#[tokio::test]
async fn a_lost_reply_over_someone_elses_record_is_that_record() {
    let memory: Arc<dyn Store> = Arc::new(MemoryStore::new(100));
    let bounded = Bounded::new(memory.clone(), Duration::from_millis(300), StoreOps::default());
    let theirs = record(unix_now() + 60);
    let raw = lost_reply::encode(&theirs, &Writer::fresh()).unwrap();
    let later = crate::store::unix_ms() + 10_000;
    memory
        .put_if_absent("replay:k", &raw, Duration::from_secs(60), later)
        .await
        .unwrap();
    let ours = Writer::fresh();
    let mine = lost_reply::encode(&record(unix_now() + 99), &ours).unwrap();
    let answer = lost_reply::resolve(&bounded, "replay:k".into(), mine, &ours, 0, StoreError::Timeout).await;
    assert_eq!(answer, Ok(Consumed::Existing(Arc::new(theirs))));
    let none = lost_reply::resolve(
        &bounded,
        "replay:none".into(),
        b"{}".to_vec(),
        &ours,
        0,
        StoreError::Timeout,
    )
    .await;
    assert_eq!(none, Err(StoreError::Timeout), "absent: nothing consumed");
}

#[test]
fn records_carry_their_writer_and_old_records_still_decode() {
    let r = record(unix_now() + 60);
    let w = Writer::fresh();
    let raw = lost_reply::encode(&r, &w).unwrap();
    let text = String::from_utf8(raw.clone()).unwrap();
    assert!(
        text.contains(&serde_json::to_string(&r.settlement).unwrap()),
        "the record's JSON is in the value"
    );
    assert_eq!(lost_reply::decode(&raw).unwrap(), (r.clone(), Some(w.clone())));
    assert_eq!(lost_reply::answer(&raw, &w), Ok(Consumed::Inserted));
    assert_eq!(
        lost_reply::answer(&raw, &Writer::fresh()),
        Ok(Consumed::Existing(Arc::new(r.clone())))
    );
    let old = serde_json::to_vec(&r).unwrap();
    assert_eq!(lost_reply::decode(&old).unwrap(), (r, None));
    assert!(matches!(lost_reply::decode(b"{not json"), Err(StoreError::Corrupt(_))));
}

#[actix::test]
async fn reservations_and_retry_counts_go_through_the_store() {
    let g = guard(Arc::new(MemoryStore::new(100)), Duration::from_secs(1));
    let h = hash("b1");
    let ttl = Duration::from_secs(5);
    assert_eq!(g.send(Reserve { hash: h, ttl }).await.unwrap(), Ok(true));
    assert_eq!(g.send(Reserve { hash: h, ttl }).await.unwrap(), Ok(false));
    g.send(Release(h)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(g.send(Reserve { hash: h, ttl }).await.unwrap(), Ok(true));
    let count = || CountRetry { hash: h, ttl, cap: 2 };
    assert_eq!(g.send(count()).await.unwrap(), Ok(1));
    assert_eq!(g.send(count()).await.unwrap(), Ok(2));
    assert_eq!(g.send(count()).await.unwrap(), Ok(2));
    assert_eq!(g.send(Ping).await.unwrap(), Ok(()));
}

#[actix::test]
async fn a_follow_waits_for_an_expected_consume() {
    let g = guard(Arc::new(MemoryStore::new(100)), Duration::from_secs(1));
    let h = hash("c1");
    assert_eq!(g.send(Follow(h)).await.unwrap(), Ok(None), "nothing known");
    g.do_send(Expect {
        hash: h,
        until: std::time::Instant::now() + Duration::from_secs(2),
    });
    let follow = g.send(Follow(h));
    let consume = g.send(Consume {
        hash: h,
        record: record(unix_now() + 60),
    });
    assert_eq!(consume.await.unwrap(), Ok(Consumed::Inserted));
    assert!(
        follow.await.unwrap().unwrap().is_some(),
        "the follow got the consume's record"
    );
}

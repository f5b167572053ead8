use super::exchange::{Outcome, Publication, publication, shareable};
use super::*;

#[test]
fn publications_are_one_typed_value_and_anything_else_is_no_result() {
    let facts = Arc::new(ChainFacts {
        head: Some(9),
        ..Default::default()
    });
    let window = Duration::from_millis(300);
    let (p, hold) = publication("abc".into(), &Ok(facts.clone()), window);
    assert_eq!(hold, window, "facts are held");
    let raw = serde_json::to_vec(&p).unwrap();
    let back: Publication = serde_json::from_slice(&raw).unwrap();
    assert_eq!(back.claim, "abc");
    assert!(matches!(back.outcome, Outcome::Facts(f) if f.head == Some(9)));

    let err = RpcError::Timeout(Duration::from_millis(1500));
    let (p, hold) = publication("x".into(), &Err(err.clone()), window);
    assert_eq!(
        (p.outcome, hold),
        (Outcome::Error(err), Duration::ZERO),
        "errors are never held"
    );
    let (p, _) = publication("y".into(), &Err(RpcError::AllCircuitsOpen), window);
    assert_eq!(p.outcome, Outcome::Abandoned, "an instance's own fault is not shared");
    for bad in [
        &b""[..],
        b"abc|F{}",
        b"{\"claim\":\"a\"}",
        b"{\"claim\":\"a\",\"outcome\":\"x\"}",
    ] {
        assert!(serde_json::from_slice::<Publication>(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn only_faults_of_the_chain_are_shared_and_claims_are_shorter_than_lookups() {
    assert!(shareable(&RpcError::Timeout(Duration::from_secs(1))));
    assert!(shareable(&RpcError::Transport("connection refused".into())));
    assert!(!shareable(&RpcError::AllCircuitsOpen));
    assert!(!shareable(&RpcError::Stopped(crate::rpc_pool::Stopped::Pool)));
    assert_eq!(claim_ttl(Duration::from_secs(5)), Duration::from_millis(1250));
    assert_eq!(claim_ttl(Duration::from_millis(400)), Duration::from_millis(250));
    assert_eq!(claim_ttl(Duration::from_secs(60)), Duration::from_secs(2));
}

/// The part of a key a Redis Cluster hashes to find its slot.
fn slot_part(key: &str) -> &str {
    if let Some(open) = key.find('{')
        && let Some(len) = key[open + 1..].find('}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

#[test]
fn lookups_are_keyed_on_their_payments_record_in_its_slot() {
    let hash: settlegate_rules::credential::TxHash = format!("0x{}", "AB".repeat(32)).parse().unwrap();
    let key = Lookup {
        hash,
        chain_id: 42431,
        need_head: true,
    };
    let hex = "ab".repeat(32);
    let target = crate::RedisTarget {
        urls: vec!["redis://127.0.0.1:1".into()],
        cluster: false,
        tls_ca_pem: None,
        wait_replicas: 0,
    };
    for prefix in ["settlegate:", "{tenant-7}sg:"] {
        let redis = crate::store::redis::RedisStore::open(&target, prefix, Duration::from_secs(1)).unwrap();
        let store = crate::store::Bounded::new(Arc::new(redis), Duration::from_secs(1), Default::default());
        let keys = Exchange::new(store).keys(&key);
        let record = format!("{prefix}replay:0x{hex}");
        assert_eq!(keys.record, record);
        assert_eq!(keys.claim, format!("{prefix}lookup:{{{record}}}:42431:1:claim"));
        assert_eq!(keys.result, format!("{prefix}lookup:{{{record}}}:42431:1:result"));
        for k in [&keys.claim, &keys.result] {
            assert_eq!(slot_part(k), slot_part(&record), "{prefix}: {k} in the record's slot");
        }
    }
    assert_eq!(
        slot_part(&format!("settlegate:replay:0x{hex}")),
        format!("settlegate:replay:0x{hex}")
    );
    assert_eq!(slot_part("{tenant-7}sg:replay:0x1"), "tenant-7");
}

/// A record in the store answers the claim: decoded as the guard writes it,
/// or corrupt (a 503), never "not consumed".
#[tokio::test]
async fn a_consumed_payment_is_answered_from_its_record_and_a_corrupt_one_is_an_error() {
    use crate::store::{Store, unix_ms};
    let hash: settlegate_rules::credential::TxHash = format!("0x{}", "cd".repeat(32)).parse().unwrap();
    let key = Lookup {
        hash,
        chain_id: 42431,
        need_head: false,
    };
    let memory = Arc::new(crate::store::memory::MemoryStore::new(1_000));
    let exchange = Exchange::new(crate::store::Bounded::new(
        memory.clone(),
        Duration::from_secs(1),
        Default::default(),
    ));
    let keys = exchange.keys(&key);
    let record = settlegate_rules::replay::ReplayRecord {
        settlement: settlegate_rules::replay::Settlement::new(
            hash,
            settlegate_rules::replay::Scheme::Tempo,
            &settlegate_rules::settlement::Payment {
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
        resource: Some("/a".into()),
        request_digest: None,
        consumed_at: 1,
        expires_at: 2,
        route: None,
        instance: None,
        proof: false,
    };
    let writer = crate::replay_guard::lost_reply::Writer::fresh();
    let raw = crate::replay_guard::lost_reply::encode(&record, &writer).unwrap();
    let long = Duration::from_secs(60);
    let ttl = Duration::from_secs(1);
    let id: Arc<str> = "me".into();
    assert_eq!(
        exchange.claim(&keys, &id, ttl, true).await,
        Ok(crate::store::Claim::Claimed)
    );
    memory
        .put_if_absent(&keys.record, &raw, long, unix_ms() + 60_000)
        .await
        .unwrap();
    let crate::store::Claim::Consumed(found) = exchange.claim(&keys, &id, ttl, true).await.unwrap() else {
        panic!("not answered from the record")
    };
    assert_eq!(exchange::record(&found).as_deref(), Ok(&record));
    let polled = exchange.poll(&keys).await.unwrap();
    assert_eq!(polled.consumed.unwrap().as_deref(), Ok(&record));
    assert!(matches!(
        exchange::record(b"{not a record"),
        Err(crate::store::StoreError::Corrupt(_))
    ));
}

/// The exchange protocol on the in-memory store (Redis runs the same in
/// the black-box suite).
#[tokio::test]
async fn the_memory_store_exchanges_lookups() {
    let store = crate::store::memory::MemoryStore::new(1_000);
    crate::store::conformance::exchange(&store, "t:").await;
}

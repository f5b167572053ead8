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

#[test]
fn shared_keys_name_what_the_lookup_reads() {
    let hash: settlegate_rules::credential::TxHash = format!("0x{}", "AB".repeat(32)).parse().unwrap();
    let key = Lookup {
        hash,
        chain_id: 42431,
        need_head: true,
    };
    assert_eq!(shared_key(&key), format!("42431:0x{}:1", "ab".repeat(32)));
}

/// The exchange protocol on the in-memory store (Redis runs the same in
/// the black-box suite).
#[tokio::test]
async fn the_memory_store_exchanges_lookups() {
    let store = crate::store::memory::MemoryStore::new(1_000);
    crate::store::conformance::exchange(&store, "t:").await;
}

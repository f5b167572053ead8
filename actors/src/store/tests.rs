//! The shared suite on the backends that need no server.
use super::conformance;
use super::file::FileStore;
use super::memory::MemoryStore;
use super::{Put, Store, StoreError, unix_ms};
use std::time::Duration;

#[tokio::test]
async fn the_memory_store_passes_the_suite() {
    conformance::run(&MemoryStore::new(1_000), "m:").await;
}

#[tokio::test]
async fn the_memory_store_keeps_the_outbox_with_its_records() {
    conformance::outbox(&MemoryStore::new(1_000).with_outbox(3), "m:").await;
    assert!(!MemoryStore::new(10).outbox());
}

#[tokio::test]
async fn the_file_store_keeps_the_outbox_in_the_records_transaction_across_a_restart() {
    let dir = tempdir();
    let path = dir.join("store.redb");
    let store = FileStore::open(&path).unwrap().with_outbox(3);
    conformance::outbox(&store, "f:").await;
    assert_eq!(
        store
            .put_if_absent("replay:kept", b"{}", Duration::from_secs(60), unix_ms() + 10_000)
            .await,
        Ok(Put::Inserted)
    );
    drop(store);
    let store = FileStore::open(&path).unwrap().with_outbox(3);
    let kept = store.outbox_read(10).await.unwrap();
    assert_eq!(kept.len(), 1, "durable: {kept:?}");
    assert_eq!(kept[0].key, "replay:kept");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_file_store_passes_the_suite_and_keeps_values_across_a_restart() {
    let dir = tempdir();
    let path = dir.join("store.redb");
    let store = FileStore::open(&path).unwrap();
    conformance::run(&store, "f:").await;
    drop(store);
    let store = FileStore::open(&path).unwrap();
    assert_eq!(
        store.get("f:replay:put").await,
        Ok(Some(b"{\"a\":1}".to_vec())),
        "durable"
    );
    assert_eq!(store.get("f:state:c").await, Ok(Some(b"v2".to_vec())));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_memory_store_is_bounded_and_fails_closed_when_full() {
    let store = MemoryStore::new(2);
    let later = unix_ms() + 10_000;
    let long = Duration::from_secs(60);
    assert_eq!(store.put_if_absent("a", b"1", long, later).await, Ok(Put::Inserted));
    assert_eq!(store.put_if_absent("b", b"1", long, later).await, Ok(Put::Inserted));
    assert_eq!(
        store.put_if_absent("c", b"1", long, later).await,
        Err(StoreError::Saturated(2))
    );
    assert_eq!(store.get("c").await, Ok(None));
    // Expired values make room.
    assert_eq!(
        store
            .compare_and_set("a", Some(b"1"), b"2", Duration::from_millis(10))
            .await,
        Ok(super::Cas::Set)
    );
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(store.put_if_absent("c", b"1", long, later).await, Ok(Put::Inserted));
}

/// Records written by the embedded store before the generic table are
/// still read (and still block a second consume).
#[tokio::test]
async fn the_file_store_reads_records_of_the_older_layout() {
    let dir = tempdir();
    let path = dir.join("old.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn
                .open_table(redb::TableDefinition::<&str, &[u8]>::new("replay_records_v2"))
                .unwrap();
            let live = format!("{{\"expires_at\":{}}}", super::unix_now() + 60);
            t.insert("0xold", live.as_bytes()).unwrap();
            t.insert("0xgone", &b"{\"expires_at\":1}"[..]).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = FileStore::open(&path).unwrap();
    let later = unix_ms() + 10_000;
    let got = store.get("replay:0xold").await.unwrap();
    assert!(got.is_some());
    assert_eq!(
        store
            .put_if_absent("replay:0xold", b"{}", Duration::from_secs(60), later)
            .await,
        Ok(Put::Existing(got.unwrap()))
    );
    assert_eq!(store.get("replay:0xgone").await, Ok(None), "expired");
    let _ = std::fs::remove_dir_all(dir);
}

fn tempdir() -> std::path::PathBuf {
    let mut nonce = [0u8; 6];
    getrandom::fill(&mut nonce).unwrap();
    let dir = std::env::temp_dir().join(format!("sgunit-store-{}-{}", std::process::id(), hex::encode(nonce)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

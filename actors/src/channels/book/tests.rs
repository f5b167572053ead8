//! The book under the conditions it exists for: several "instances" (books
//! on one store) and many tasks racing on one channel, and lost replies.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::*;
use crate::store::fault::{FaultInjector, PutFault};
use crate::store::memory::MemoryStore;
use crate::store::{Store, StoreOps};

fn book_on(store: Arc<dyn Store>) -> ChannelBook {
    let bounded = Bounded::new(store, Duration::from_secs(2), StoreOps::default());
    ChannelBook::new(bounded, Duration::from_secs(60), 100)
}

/// A toy channel: the state is "served/covered"; a request is served while
/// served < covered.
fn serve_one(state: Option<&[u8]>) -> Step<bool> {
    let (served, covered) = match state {
        None => (0u32, 10u32),
        Some(b) => {
            let s = std::str::from_utf8(b).unwrap();
            let (a, c) = s.split_once('/').unwrap();
            (a.parse().unwrap(), c.parse().unwrap())
        }
    };
    if served >= covered {
        return Step::Keep(false);
    }
    Step::Write(format!("{}/{covered}", served + 1).into_bytes(), true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_books_on_one_store_serve_exactly_what_is_covered() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(1_000));
    let books = [book_on(store.clone()), book_on(store.clone()), book_on(store.clone())];
    let served = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for i in 0..100 {
        let book = books[i % 3].clone();
        let served = served.clone();
        tasks.push(tokio::spawn(async move {
            if book.update("c1", serve_one).await.unwrap() {
                served.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(served.load(Ordering::SeqCst), 10, "exactly the covered requests");
    assert_eq!(store.get("channel:c1").await.unwrap(), Some(b"10/10".to_vec()));
    assert_eq!(
        books[0].channels().await.unwrap(),
        vec!["c1".to_owned()],
        "indexed once"
    );
}

#[tokio::test]
async fn a_refusal_on_a_stale_copy_is_decided_again_on_the_store() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(1_000));
    let a = book_on(store.clone());
    let b = book_on(store.clone());
    // `a` sees the channel exhausted...
    store
        .compare_and_set("channel:c", None, b"10/10", Duration::from_secs(60))
        .await
        .unwrap();
    assert!(!a.update("c", serve_one).await.unwrap());
    // ...then another instance records a larger cover.
    b.update("c", |_| Step::Write(b"10/12".to_vec(), ())).await.unwrap();
    assert!(
        a.update("c", serve_one).await.unwrap(),
        "not refused on its own stale copy"
    );
    assert_eq!(store.get("channel:c").await.unwrap(), Some(b"11/12".to_vec()));
}

#[tokio::test]
async fn a_write_on_a_stale_copy_loses_and_decides_again() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(1_000));
    let a = book_on(store.clone());
    let b = book_on(store.clone());
    assert!(a.update("c", serve_one).await.unwrap());
    assert!(b.update("c", serve_one).await.unwrap());
    let calls = AtomicU32::new(0);
    let served = a
        .update("c", |s| {
            calls.fetch_add(1, Ordering::SeqCst);
            serve_one(s)
        })
        .await
        .unwrap();
    assert!(served);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "decided on its copy, then on the store's"
    );
    assert_eq!(store.get("channel:c").await.unwrap(), Some(b"3/10".to_vec()));
}

#[tokio::test]
async fn a_lost_reply_is_a_503_and_the_next_update_reads_the_store() {
    let memory: Arc<dyn Store> = Arc::new(MemoryStore::new(1_000));
    let faulty = Arc::new(FaultInjector::new(memory.clone()));
    let book = book_on(faulty.clone());
    assert!(book.update("c", serve_one).await.unwrap());
    faulty.fault_next_cas(PutFault::LoseReply);
    let lost = book.update("c", serve_one).await;
    assert!(matches!(lost, Err(BookError::LostReply(_))), "{lost:?}");
    assert_eq!(lost.unwrap_err().cause(), "channel_write_lost");
    // It landed: the next request is decided on 2/10, not on the 1/10 copy.
    assert!(book.update("c", serve_one).await.unwrap());
    assert_eq!(memory.get("channel:c").await.unwrap(), Some(b"3/10".to_vec()));

    faulty.fault_next_cas(PutFault::Swallow);
    assert!(book.update("c", serve_one).await.is_err());
    assert!(book.update("c", serve_one).await.unwrap());
    assert_eq!(memory.get("channel:c").await.unwrap(), Some(b"4/10".to_vec()));
}

#[tokio::test]
async fn a_store_that_cannot_read_gives_no_decision() {
    let memory: Arc<dyn Store> = Arc::new(MemoryStore::new(1_000));
    let faulty = Arc::new(FaultInjector::new(memory.clone()));
    let book = book_on(faulty.clone());
    faulty.fail_reads(true);
    let r = book.update("c", serve_one).await;
    assert!(matches!(r, Err(BookError::Store(_))), "{r:?}");
    assert_eq!(memory.get("channel:c").await.unwrap(), None, "nothing written");
}

#[tokio::test]
async fn forget_takes_a_channel_out_of_the_index_only() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(1_000));
    let book = book_on(store.clone());
    book.update("a", serve_one).await.unwrap();
    book.update("b", serve_one).await.unwrap();
    let mut all = book.channels().await.unwrap();
    all.sort();
    assert_eq!(all, ["a", "b"]);
    book.forget("a").await.unwrap();
    assert_eq!(book.channels().await.unwrap(), ["b"]);
    assert_eq!(book.read("a").await.unwrap(), Some(b"1/10".to_vec()), "state kept");
}

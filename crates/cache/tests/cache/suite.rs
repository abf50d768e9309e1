//! The conformance suite: what every backend, and the tiered cache, must do. Each function is
//! stamped out once per backend by the `conformance!` macro in cache.rs.

use std::sync::Arc;
use std::time::Duration;

use cognitude_cache::{Cache, CacheKey};

use crate::support::{key, response, unique};

const MINUTE: Duration = Duration::from_secs(60);

pub async fn stored_entry_comes_back(cache: Arc<dyn Cache>) {
    let org = unique("org");
    let k = key(&org, "What is the capital of France?");
    let r = response("Paris.");
    cache.put(&k, r.clone(), MINUTE).await.unwrap();
    let e = cache.get(&k).await.unwrap().expect("a hit");
    assert_eq!(*e.response, *r);
    let left = e.ttl_left();
    assert!(left > Duration::from_secs(50) && left <= MINUTE, "{left:?}");
}

pub async fn absent_key_is_a_miss(cache: Arc<dyn Cache>) {
    let k = key(&unique("org"), "never stored");
    assert!(cache.get(&k).await.unwrap().is_none());
    assert!(!cache.delete(&k).await.unwrap());
}

/// Two organizations send the very same request: each gets only its own entry.
pub async fn orgs_never_see_each_others_entries(cache: Arc<dyn Cache>) {
    let (a, b) = (unique("org_a"), unique("org_b"));
    let prompt = "Summarise our Q3 revenue report.";
    let (ka, kb) = (key(&a, prompt), key(&b, prompt));
    assert_ne!(ka, kb);
    cache
        .put(&ka, response("A's secret numbers"), MINUTE)
        .await
        .unwrap();
    assert!(
        cache.get(&kb).await.unwrap().is_none(),
        "B was served A's entry"
    );

    // Even a key that claims A's digest under B's name misses: the owner is checked too.
    let forged = CacheKey::from_digest(&b, *ka.digest());
    assert!(
        cache.get(&forged).await.unwrap().is_none(),
        "owner not checked"
    );

    cache
        .put(&kb, response("B's own answer"), MINUTE)
        .await
        .unwrap();
    let got_a = cache.get(&ka).await.unwrap().unwrap();
    let got_b = cache.get(&kb).await.unwrap().unwrap();
    assert_eq!(
        got_a.response.completion().choices[0]
            .message
            .text_content(),
        "A's secret numbers"
    );
    assert_eq!(
        got_b.response.completion().choices[0]
            .message
            .text_content(),
        "B's own answer"
    );

    assert_eq!(cache.clear_org(&a).await.unwrap(), 1);
    assert!(cache.get(&ka).await.unwrap().is_none());
    assert!(
        cache.get(&kb).await.unwrap().is_some(),
        "clearing A removed B's entry"
    );
}

pub async fn put_replaces_the_entry(cache: Arc<dyn Cache>) {
    let k = key(&unique("org"), "replace me");
    cache.put(&k, response("first"), MINUTE).await.unwrap();
    cache.put(&k, response("second"), MINUTE).await.unwrap();
    let e = cache.get(&k).await.unwrap().unwrap();
    assert_eq!(
        e.response.completion().choices[0].message.text_content(),
        "second"
    );
}

pub async fn delete_removes_only_that_entry(cache: Arc<dyn Cache>) {
    let org = unique("org");
    let (k1, k2) = (key(&org, "one"), key(&org, "two"));
    cache.put(&k1, response("1"), MINUTE).await.unwrap();
    cache.put(&k2, response("2"), MINUTE).await.unwrap();
    assert!(cache.delete(&k1).await.unwrap());
    assert!(cache.get(&k1).await.unwrap().is_none());
    assert!(cache.get(&k2).await.unwrap().is_some());
    assert!(!cache.delete(&k1).await.unwrap());
}

pub async fn clear_org_removes_all_of_its_entries(cache: Arc<dyn Cache>) {
    let (x, y) = (unique("org_x"), unique("org_y"));
    for p in ["a", "b", "c"] {
        cache.put(&key(&x, p), response(p), MINUTE).await.unwrap();
    }
    cache
        .put(&key(&y, "a"), response("y"), MINUTE)
        .await
        .unwrap();
    assert_eq!(cache.clear_org(&x).await.unwrap(), 3);
    for p in ["a", "b", "c"] {
        assert!(cache.get(&key(&x, p)).await.unwrap().is_none());
    }
    assert!(cache.get(&key(&y, "a")).await.unwrap().is_some());
    assert_eq!(cache.clear_org(&x).await.unwrap(), 0);
}

pub async fn clear_all_empties_the_cache(cache: Arc<dyn Cache>) {
    let (x, y) = (unique("org_x"), unique("org_y"));
    cache
        .put(&key(&x, "a"), response("a"), MINUTE)
        .await
        .unwrap();
    cache
        .put(&key(&y, "b"), response("b"), MINUTE)
        .await
        .unwrap();
    assert!(cache.clear_all().await.unwrap() >= 2);
    assert!(cache.get(&key(&x, "a")).await.unwrap().is_none());
    assert!(cache.get(&key(&y, "b")).await.unwrap().is_none());
}

pub async fn entries_expire_after_their_ttl(cache: Arc<dyn Cache>) {
    let org = unique("org");
    let (short, long) = (key(&org, "short-lived"), key(&org, "long-lived"));
    cache
        .put(&short, response("s"), Duration::from_secs(1))
        .await
        .unwrap();
    cache.put(&long, response("l"), MINUTE).await.unwrap();
    assert!(cache.get(&short).await.unwrap().is_some());
    // Waits past the TTL; lateness only makes the expiry more certain.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(
        cache.get(&short).await.unwrap().is_none(),
        "served after its TTL"
    );
    assert!(cache.get(&long).await.unwrap().is_some());
    // Purging leaves live entries alone.
    cache.purge_expired().await.unwrap();
    assert!(cache.get(&long).await.unwrap().is_some());
}

pub async fn large_entries_round_trip(cache: Arc<dyn Cache>) {
    let k = key(&unique("org"), "write a long essay");
    let text: String = (0..20_000).map(|i| format!("word{} ", i % 97)).collect();
    let r = response(&text);
    cache.put(&k, r.clone(), MINUTE).await.unwrap();
    assert_eq!(*cache.get(&k).await.unwrap().unwrap().response, *r);
}

pub async fn concurrent_puts_and_gets_see_their_own_entries(cache: Arc<dyn Cache>) {
    let org = unique("org");
    let mut tasks = Vec::new();
    for i in 0..24 {
        let (cache, org) = (cache.clone(), org.clone());
        tasks.push(tokio::spawn(async move {
            let k = key(&org, &format!("prompt {i}"));
            cache
                .put(&k, response(&format!("answer {i}")), MINUTE)
                .await
                .unwrap();
            let e = cache.get(&k).await.unwrap().unwrap();
            assert_eq!(
                e.response.completion().choices[0].message.text_content(),
                format!("answer {i}")
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

pub async fn stats_count_hits_and_misses(cache: Arc<dyn Cache>) {
    let k = key(&unique("org"), "counted");
    let before = cache.stats().await.unwrap();
    cache.put(&k, response("c"), MINUTE).await.unwrap();
    cache.get(&k).await.unwrap().unwrap();
    assert!(
        cache
            .get(&key(&unique("org"), "absent"))
            .await
            .unwrap()
            .is_none()
    );
    let after = cache.stats().await.unwrap();
    assert!(after.hits > before.hits, "{before:?} → {after:?}");
    assert!(after.misses > before.misses, "{before:?} → {after:?}");
    if let Some(entries) = after.entries {
        assert!(entries >= 1, "{after:?}");
    }
    if let Some(bytes) = after.bytes {
        assert!(bytes > 0, "{after:?}");
    }
}

pub async fn health_is_ok(cache: Arc<dyn Cache>) {
    cache.health().await.unwrap();
}

pub async fn zero_ttl_stores_nothing(cache: Arc<dyn Cache>) {
    let k = key(&unique("org"), "do not keep");
    cache.put(&k, response("x"), Duration::ZERO).await.unwrap();
    assert!(cache.get(&k).await.unwrap().is_none());
}

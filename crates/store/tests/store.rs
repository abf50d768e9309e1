//! The store's conformance suite, written once and run against SQLite and the machine's
//! PostgreSQL (each run in its own database), plus the ledger's outage and crash tests.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly on anything unexpected"
)]

use std::path::PathBuf;
use std::time::Duration;

use cognitude_catalog::Money;
use cognitude_store::{
    AuthOutcome, Authenticator, BreakdownGroup, Error, GroupBy, Ledger, LedgerOptions, LimitValues,
    Store, UsageRecord, keys,
};
use cognitude_testkit::{Relay, TestDatabase, unique};

/// A database of the test's own, dropped at the end.
struct TestDb {
    store: Store,
    pg: Option<TestDatabase>,
    dir: PathBuf,
}

impl TestDb {
    async fn sqlite() -> TestDb {
        let dir = std::env::temp_dir().join(unique("cognitude_store"));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::connect(&format!("sqlite://{}/test.db", dir.display()))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        TestDb {
            store,
            pg: None,
            dir,
        }
    }

    async fn postgres() -> TestDb {
        let pg = TestDatabase::create().await.unwrap();
        let store = Store::connect(&pg.url).await.unwrap();
        store.migrate().await.unwrap();
        let dir = std::env::temp_dir().join(unique("cognitude_store"));
        std::fs::create_dir_all(&dir).unwrap();
        TestDb {
            store,
            pg: Some(pg),
            dir,
        }
    }

    async fn drop_db(self) {
        let TestDb { store, pg, dir } = self;
        drop(store);
        if let Some(pg) = pg {
            pg.drop_db().await;
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn record(org: &str, id: &str, cost_pico: i64, at: i64) -> UsageRecord {
    UsageRecord {
        id: id.to_owned(),
        request_id: format!("req-{id}"),
        org_id: org.to_owned(),
        created_at: at,
        endpoint: "chat_completions".into(),
        model_requested: "gpt-4o-mini".into(),
        model_used: Some("gpt-4o-mini".into()),
        provider: Some("openai".into()),
        status: 200,
        prompt_tokens: 10,
        completion_tokens: 5,
        cost_pico,
        latency_ms: 12,
        request_hash: "ab".repeat(32),
        prefix_hash: "cd".repeat(32),
        prompt_chars: 40,
        prompt_tokens_est: 10,
        temperature: Some(0.7),
        ..UsageRecord::default()
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    let db = super::TestDb::sqlite().await;
                    super::$name(&db).await;
                    db.drop_db().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    let db = super::TestDb::postgres().await;
                    super::$name(&db).await;
                    db.drop_db().await;
                }
            )*
        }
    };
}

conformance!(
    orgs_are_created_listed_and_deleted,
    names_with_quotes_sql_emoji_and_rtl_round_trip,
    keys_are_hashed_listed_and_revoked,
    authenticator_checks_and_caches_keys,
    usage_insert_is_idempotent_and_pages_by_cursor,
    usage_is_isolated_by_org,
    ledger_writes_batches_and_flushes,
    ledger_replays_a_spill_file_left_by_a_crash,
    migrations_are_idempotent,
    rate_limit_overrides_are_set_reset_and_polled,
    breakdown_groups_and_sums_exactly_in_sql,
    usage_scan_pages_oldest_first_across_equal_timestamps,
    realised_savings_split_routing_gains_from_losses,
    rollups_count_a_replayed_batch_once,
    rollup_breakdowns_equal_the_records_for_every_group_by_and_window,
    rollup_backfill_reproduces_the_incremental_rollups,
    rollup_migration_upgrades_and_downgrades_with_records_in_place,
);

async fn orgs_are_created_listed_and_deleted(db: &TestDb) {
    let s = &db.store;
    assert_eq!(s.count_orgs().await.unwrap(), 0);
    let a = s.create_org("alpha").await.unwrap();
    let b = s.create_org("beta").await.unwrap();
    assert_ne!(a.id, b.id);
    assert!(matches!(
        s.create_org("alpha").await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        s.create_org("  ").await,
        Err(Error::Invalid { .. })
    ));
    let names: Vec<String> = s
        .list_orgs()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    assert_eq!(s.org_by_name("beta").await.unwrap().unwrap().id, b.id);
    let key = s.create_key(&a.id, "k").await.unwrap();
    assert!(s.delete_org(&a.id).await.unwrap());
    assert!(!s.delete_org(&a.id).await.unwrap());
    assert!(s.org(&a.id).await.unwrap().is_none());
    // Its keys went with it.
    assert!(
        s.list_keys(None)
            .await
            .unwrap()
            .iter()
            .all(|k| k.prefix != key.key.prefix)
    );
    assert!(matches!(
        s.create_key("org_missing", "k").await,
        Err(Error::NotFound(_))
    ));
}

async fn names_with_quotes_sql_emoji_and_rtl_round_trip(db: &TestDb) {
    let s = &db.store;
    for name in [
        "O'Brien \"Ltd\"",
        "x'); DROP TABLE organizations; --",
        "Robert'); DELETE FROM api_keys WHERE ('1'='1",
        "🚀 rocket team 🧪",
        "שלום עולם",
        "مرحبا بالعالم",
        "混合 mixed 文字",
        "back\\slash % _ wildcard",
    ] {
        let org = s.create_org(name).await.unwrap();
        assert_eq!(
            s.org_by_name(name).await.unwrap().unwrap().id,
            org.id,
            "{name}"
        );
        let key = s.create_key(&org.id, name).await.unwrap();
        assert_eq!(key.key.name, name);
    }
    assert_eq!(s.count_orgs().await.unwrap(), 8);
    // The SQL-looking names did nothing but be names.
    assert_eq!(s.list_keys(None).await.unwrap().len(), 8);
}

async fn keys_are_hashed_listed_and_revoked(db: &TestDb) {
    let s = &db.store;
    let org = s.create_org("acme").await.unwrap();
    let k1 = s.create_key(&org.id, "one").await.unwrap();
    let k2 = s.create_key(&org.id, "two").await.unwrap();
    assert!(keys::parse(&k1.secret).is_some());
    assert!(k1.secret.starts_with(&k1.key.prefix));
    let listed = s.list_keys(Some(&org.id)).await.unwrap();
    assert_eq!(listed.len(), 2);
    // Listings never carry the secret.
    let json = serde_json::to_string(&listed).unwrap();
    assert!(!json.contains(&k1.secret) && !json.contains(&k2.secret));
    let revoked = s.revoke_key(&k1.key.prefix).await.unwrap().unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(s.revoke_key("cgk_000000000000").await.unwrap().is_none());
    let still = s.list_keys(Some(&org.id)).await.unwrap();
    assert!(
        still
            .iter()
            .any(|k| k.prefix == k2.key.prefix && k.revoked_at.is_none())
    );
}

async fn authenticator_checks_and_caches_keys(db: &TestDb) {
    let s = &db.store;
    let org = s.create_org("acme").await.unwrap();
    let k = s.create_key(&org.id, "app").await.unwrap();
    let auth = Authenticator::new(s.clone(), Duration::from_secs(60));
    match auth.authenticate(&k.secret).await.unwrap() {
        AuthOutcome::Valid(a) => {
            assert_eq!(a.org_id, org.id);
            assert_eq!(a.prefix, k.key.prefix);
        }
        other => panic!("{other:?}"),
    }
    // Malformed, truncated, oversized, wrong secret.
    let wrong_secret = format!("{}_{}", k.key.prefix, "0".repeat(48));
    for (presented, expected) in [
        ("", AuthOutcome::Malformed),
        ("Bearer", AuthOutcome::Malformed),
        (&k.secret[..k.secret.len() - 3], AuthOutcome::Malformed),
        (
            &format!("{}{}", k.secret, "0".repeat(10_000)),
            AuthOutcome::Malformed,
        ),
        ("cgk_' OR '1'='1", AuthOutcome::Malformed),
        (&wrong_secret, AuthOutcome::Unknown),
    ] {
        assert_eq!(auth.authenticate(presented).await.unwrap(), expected);
    }
    // Revoked elsewhere: still valid from this instance's cache until the TTL ...
    s.revoke_key(&k.key.prefix).await.unwrap();
    assert!(matches!(
        auth.authenticate(&k.secret).await.unwrap(),
        AuthOutcome::Valid(_)
    ));
    // ... and at once where it was revoked.
    auth.invalidate_prefix(&k.key.prefix);
    assert_eq!(
        auth.authenticate(&k.secret).await.unwrap(),
        AuthOutcome::Revoked
    );
    // A fresh authenticator with a short TTL sees the revocation.
    let short = Authenticator::new(s.clone(), Duration::from_millis(1));
    assert_eq!(
        short.authenticate(&k.secret).await.unwrap(),
        AuthOutcome::Revoked
    );
}

async fn usage_insert_is_idempotent_and_pages_by_cursor(db: &TestDb) {
    let s = &db.store;
    let recs: Vec<UsageRecord> = (0..25)
        .map(|i| {
            record(
                "org_a",
                &format!("rec_{i:03}"),
                1_000 + i,
                1_000_000 + i / 2,
            )
        })
        .collect();
    assert_eq!(s.insert_usage(&recs).await.unwrap(), 25);
    // Written again (a retried batch): nothing doubles.
    assert_eq!(s.insert_usage(&recs[..10]).await.unwrap(), 0);
    let (count, cost) = s.usage_totals("org_a").await.unwrap();
    assert_eq!(count, 25);
    assert_eq!(cost, (0..25).map(|i| 1_000 + i as i128).sum::<i128>());

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = s
            .list_usage("org_a", None, None, 7, cursor.as_deref())
            .await
            .unwrap();
        assert!(page.records.len() <= 7);
        seen.extend(page.records.iter().map(|r| r.id.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let mut expected: Vec<String> = recs.iter().map(|r| r.id.clone()).collect();
    expected.sort();
    expected.reverse();
    assert_eq!(
        seen, expected,
        "pages must cover every record once, newest first"
    );

    let window = s
        .list_usage("org_a", Some(1_000_004), Some(1_000_006), 100, None)
        .await
        .unwrap();
    assert_eq!(window.records.len(), 4);
    assert!(
        window
            .records
            .iter()
            .all(|r| (1_000_004..1_000_006).contains(&r.created_at))
    );
    let full = &window.records[0];
    assert_eq!(full.temperature, Some(0.7));
    assert_eq!(full.model_used.as_deref(), Some("gpt-4o-mini"));
    assert!(matches!(
        s.list_usage("org_a", None, None, 5, Some("garbage")).await,
        Err(Error::Invalid { .. })
    ));
}

async fn usage_is_isolated_by_org(db: &TestDb) {
    let s = &db.store;
    s.insert_usage(&[
        record("org_a", "rec_a", 5, 1),
        record("org_b", "rec_b", 7, 1),
    ])
    .await
    .unwrap();
    let a = s.list_usage("org_a", None, None, 100, None).await.unwrap();
    assert_eq!(a.records.len(), 1);
    assert_eq!(a.records[0].id, "rec_a");
    assert_eq!(s.usage_totals("org_b").await.unwrap(), (1, 7));
}

async fn ledger_writes_batches_and_flushes(db: &TestDb) {
    let (ledger, _task) = Ledger::start(
        db.store.clone(),
        LedgerOptions {
            batch_size: 50,
            spill_path: db.dir.join("spill"),
            ..LedgerOptions::default()
        },
    );
    for i in 0..1_234 {
        ledger.record(record("org_l", &format!("rec_{i:05}"), 3, i));
    }
    ledger.flush().await;
    assert_eq!(
        db.store.usage_totals("org_l").await.unwrap(),
        (1_234, 3 * 1_234)
    );
    assert_eq!(ledger.stats().written(), 1_234);
    assert_eq!(ledger.stats().spilled(), 0);
    assert!(!ledger.spill_pending());
}

async fn ledger_replays_a_spill_file_left_by_a_crash(db: &TestDb) {
    let spill = db.dir.join("crash.spill");
    let mut text = String::new();
    for i in 0..40 {
        text.push_str(
            &serde_json::to_string(&record("org_c", &format!("rec_{i}"), 11, i)).unwrap(),
        );
        text.push('\n');
    }
    // One record was already written before the crash: it must not double.
    db.store
        .insert_usage(&[record("org_c", "rec_0", 11, 0)])
        .await
        .unwrap();
    // A torn last line, as a crash mid-append leaves it.
    text.push_str("{\"id\":\"rec_torn\",\"org_");
    std::fs::write(&spill, text).unwrap();
    let (ledger, _task) = Ledger::start(
        db.store.clone(),
        LedgerOptions {
            spill_path: spill.clone(),
            ..LedgerOptions::default()
        },
    );
    ledger.flush().await;
    assert_eq!(db.store.usage_totals("org_c").await.unwrap(), (40, 440));
    assert!(!spill.exists());
    assert!(!ledger.spill_pending());
}

async fn migrations_are_idempotent(db: &TestDb) {
    db.store.migrate().await.unwrap();
    db.store.migrate().await.unwrap();
    db.store.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn ledger_loses_and_doubles_nothing_across_a_database_outage() {
    let db = TestDb::postgres().await;
    let relay = Relay::start(TestDatabase::server_addr()).await;
    let relayed_url = db.pg.as_ref().unwrap().url_via(&relay);
    let store = Store::connect_with(&relayed_url, 4, Duration::from_millis(500))
        .await
        .unwrap();
    let (ledger, _task) = Ledger::start(
        store,
        LedgerOptions {
            batch_size: 20,
            flush_interval: Duration::from_millis(20),
            retry_interval: Duration::from_millis(200),
            spill_path: db.dir.join("outage.spill"),
            ..LedgerOptions::default()
        },
    );
    let mut n = 0;
    for _ in 0..100 {
        ledger.record(record("org_o", &format!("rec_{n:05}"), 7, n));
        n += 1;
    }
    ledger.flush().await;
    relay.cut();
    for _ in 0..300 {
        ledger.record(record("org_o", &format!("rec_{n:05}"), 7, n));
        n += 1;
        if n % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    ledger.flush().await;
    assert!(
        ledger.stats().spilled() > 0,
        "nothing was spilled while the database was away"
    );
    relay.restore();
    for _ in 0..100 {
        ledger.record(record("org_o", &format!("rec_{n:05}"), 7, n));
        n += 1;
    }
    // Replays happen every retry interval; flush until the spill file is gone.
    for _ in 0..50 {
        ledger.flush().await;
        if !ledger.spill_pending() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!ledger.spill_pending(), "spill file never replayed");
    let (count, cost) = db.store.usage_totals("org_o").await.unwrap();
    assert_eq!(count, n, "records lost or doubled");
    assert_eq!(cost, 7 * i128::from(n));
    let mut ids = db.store.usage_ids("org_o").await.unwrap();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len() as i64, n);
    db.drop_db().await;
}

async fn rate_limit_overrides_are_set_reset_and_polled(db: &TestDb) {
    let store = &db.store;
    let org = store.create_org("limited").await.unwrap();
    let key = store.create_key(&org.id, "k").await.unwrap();
    assert_eq!(store.limits(&org.id).await.unwrap(), None);

    let before = cognitude_store::now_micros();
    let values = LimitValues {
        requests_per_minute: Some(500),
        tokens_per_minute: Some(0),
        max_concurrent: Some(4),
        ..LimitValues::default()
    };
    let set = store.set_limits(&org.id, None, &values).await.unwrap();
    assert_eq!(set.values(), values);
    assert_eq!(store.limits(&org.id).await.unwrap(), Some(set.clone()));
    let key_values = LimitValues {
        requests_per_minute: Some(10),
        ..LimitValues::default()
    };
    let key_row = store
        .set_limits(&org.id, Some(&key.key.id), &key_values)
        .await
        .unwrap();
    assert_eq!(key_row.key_id.as_deref(), Some(key.key.id.as_str()));
    assert_eq!(key_row.org_id, org.id);

    let changed = store.limits_changed_since(before).await.unwrap();
    let subjects: Vec<&str> = changed.iter().map(|r| r.subject.as_str()).collect();
    assert_eq!(subjects, [org.id.as_str(), key.key.id.as_str()]);
    assert!(
        store
            .limits_changed_since(key_row.updated_at + 1)
            .await
            .unwrap()
            .is_empty()
    );

    // A reset empties the row instead of deleting it, so pollers see it.
    let reset = store
        .set_limits(&org.id, None, &LimitValues::default())
        .await
        .unwrap();
    assert!(reset.values().is_empty());
    let polled = store.limits_changed_since(reset.updated_at).await.unwrap();
    assert!(
        polled
            .iter()
            .any(|r| r.subject == org.id && r.values().is_empty())
    );

    let bad = LimitValues {
        token_burst: Some(-1),
        ..LimitValues::default()
    };
    assert!(matches!(
        store.set_limits(&org.id, None, &bad).await,
        Err(cognitude_store::Error::Invalid { field, .. }) if field == "token_burst"
    ));

    // Deleting the organization takes its overrides with it.
    assert!(store.delete_org(&org.id).await.unwrap());
    assert_eq!(store.limits(&org.id).await.unwrap(), None);
    assert_eq!(store.limits(&key.key.id).await.unwrap(), None);
}

// ---- analytics ---------------------------------------------------------------------------

/// 2026-05-29T00:00Z in Unix microseconds.
const T0: i64 = 1_780_012_800_000_000;
const HOUR: i64 = 3_600_000_000;

/// Four records of `org_a` in `[T0, T0 + 2 days)`, one after the window, one of another org.
async fn plant_breakdown_records(s: &Store) {
    let mut r1 = record("org_a", "a1", 1_500_000_000_001, T0 + HOUR);
    r1.latency_ms = 9;
    r1.cache_status = Some("miss".into());
    r1.route_tier = Some("simple".into());
    r1.api_key_id = Some("key_1".into());
    let mut r2 = record("org_a", "a2", 2_000_000_999_999, T0 + HOUR + HOUR / 2);
    r2.latency_ms = 700;
    r2.cache_status = Some("hit-memory".into());
    r2.cache_saved_pico = 3_000_000_000_000;
    r2.api_key_id = Some("key_1".into());
    let mut r3 = record("org_a", "a3", 7, T0 + 25 * HOUR);
    r3.model_used = Some("claude-haiku-4-5".into());
    r3.provider = Some("anthropic".into());
    r3.latency_ms = 1_200;
    r3.routed = true;
    r3.route_saving_pico = Some(5_000_000);
    r3.route_tier = Some("complex".into());
    let mut r4 = record("org_a", "a4", 0, T0 + 25 * HOUR + 1);
    r4.model_used = None;
    r4.provider = None;
    r4.status = 502;
    r4.latency_ms = 30;
    r4.cache_status = Some("coalesced".into());
    r4.cache_saved_pico = 11;
    r4.routed = true;
    r4.route_saving_pico = Some(-4_000_000);
    r4.route_tier = Some("simple".into());
    r4.api_key_id = Some("key_2".into());
    let late = record("org_a", "a5", 999, T0 + 48 * HOUR);
    let other = record("org_b", "b1", 999, T0 + HOUR);
    s.insert_usage(&[r1, r2, r3, r4, late, other])
        .await
        .unwrap();
}

/// (group, requests, cost in picodollars, saved, cache hits, p50, p95, max).
type GroupSummary = (String, i64, i128, i128, i64, i64, i64, i64);

fn summary(groups: &[BreakdownGroup]) -> Vec<GroupSummary> {
    groups
        .iter()
        .map(|g| {
            (
                g.group.clone(),
                g.requests,
                g.cost.pico(),
                g.saved.pico(),
                g.cache_hits,
                g.latency_p50_ms,
                g.latency_p95_ms,
                g.latency_max_ms,
            )
        })
        .collect()
}

async fn breakdown_groups_and_sums_exactly_in_sql(db: &TestDb) {
    let s = &db.store;
    plant_breakdown_records(s).await;
    let to = T0 + 48 * HOUR;
    let by = |g| s.usage_breakdown("org_a", T0, to, g);
    let g = |name: &str, n, cost, saved, hits, p50, p95, max| {
        (name.to_owned(), n, cost, saved, hits, p50, p95, max)
    };

    // Latencies 9 and 700 ms: p50 is the (8, 10] bucket's bound; p95 the (640, 800] bucket's,
    // capped at the group's maximum.
    let models = by(GroupBy::Model).await.unwrap();
    assert_eq!(
        summary(&models),
        vec![
            g(
                "gpt-4o-mini",
                2,
                3_500_001_000_000,
                3_000_000_000_000,
                1,
                10,
                700,
                700
            ),
            g("claude-haiku-4-5", 1, 7, 5_000_000, 0, 1_200, 1_200, 1_200),
            // A loss on routing saves nothing; the cache's 11 picodollars still count.
            g("none", 1, 0, 11, 1, 30, 30, 30),
        ]
    );
    assert_eq!(models[0].prompt_tokens, 20);
    assert_eq!(models[0].completion_tokens, 10);
    assert_eq!(models[0].cache_hit_rate, 0.5);
    assert_eq!(models[2].cache_hit_rate, 1.0);
    assert_eq!(models[0].start, None);

    let providers = by(GroupBy::Provider).await.unwrap();
    let names: Vec<&str> = providers.iter().map(|p| p.group.as_str()).collect();
    assert_eq!(names, ["openai", "anthropic", "none"]);

    let days = by(GroupBy::Day).await.unwrap();
    assert_eq!(
        summary(&days),
        vec![
            g(
                "2026-05-29",
                2,
                3_500_001_000_000,
                3_000_000_000_000,
                1,
                10,
                700,
                700
            ),
            // 30 ms is in the (25, 32] bucket: p50 reads as 32.
            g("2026-05-30", 2, 7, 5_000_011, 1, 32, 1_200, 1_200),
        ]
    );
    assert_eq!(days[0].start, Some(T0 / 1_000_000));
    assert_eq!(days[1].start, Some(T0 / 1_000_000 + 86_400));

    let hours = by(GroupBy::Hour).await.unwrap();
    let names: Vec<(&str, i64)> = hours
        .iter()
        .map(|h| (h.group.as_str(), h.requests))
        .collect();
    assert_eq!(names, [("2026-05-29T01:00Z", 2), ("2026-05-30T01:00Z", 2)]);
    assert_eq!(hours[1].start, Some(T0 / 1_000_000 + 25 * 3_600));

    let keys = by(GroupBy::Key).await.unwrap();
    let names: Vec<(&str, i64, i128)> = keys
        .iter()
        .map(|k| (k.group.as_str(), k.requests, k.cost.pico()))
        .collect();
    assert_eq!(
        names,
        [
            ("key_1", 2, 3_500_001_000_000),
            ("none", 1, 7),
            ("key_2", 1, 0)
        ]
    );

    let statuses = by(GroupBy::CacheStatus).await.unwrap();
    let names: Vec<(&str, i64)> = statuses
        .iter()
        .map(|c| (c.group.as_str(), c.cache_hits))
        .collect();
    assert_eq!(
        names,
        [
            ("hit-memory", 1),
            ("miss", 0),
            ("none", 0),
            ("coalesced", 1)
        ]
    );

    let tiers = by(GroupBy::Tier).await.unwrap();
    let names: Vec<(&str, i64, i128)> = tiers
        .iter()
        .map(|t| (t.group.as_str(), t.requests, t.cost.pico()))
        .collect();
    assert_eq!(
        names,
        [
            ("unclassified", 1, 2_000_000_999_999),
            ("simple", 2, 1_500_000_000_001),
            ("complex", 1, 7)
        ]
    );

    // An empty window has no groups; the group names parse back.
    assert!(
        s.usage_breakdown("org_a", 0, T0, GroupBy::Model)
            .await
            .unwrap()
            .is_empty()
    );
    for g in GroupBy::ALL {
        assert_eq!(GroupBy::parse(g.as_str()), Some(g));
    }
    assert_eq!(GroupBy::parse("week"), None);
}

async fn usage_scan_pages_oldest_first_across_equal_timestamps(db: &TestDb) {
    let s = &db.store;
    // 25 records, four to a timestamp, inserted newest first and with ids out of time order.
    let mut records: Vec<UsageRecord> = (0..25)
        .rev()
        .map(|i| {
            record(
                "org_a",
                &format!("r{:02}", (i * 7) % 25),
                1,
                T0 + (i / 4) * 1_000,
            )
        })
        .collect();
    records.push(record("org_a", "early", 1, T0 - 1));
    records.push(record("org_a", "late", 1, T0 + 7_000));
    records.push(record("org_b", "other", 1, T0 + 1_000));
    s.insert_usage(&records).await.unwrap();

    let mut expected: Vec<(i64, String)> = records
        .iter()
        .filter(|r| r.org_id == "org_a" && r.created_at >= T0 && r.created_at < T0 + 7_000)
        .map(|r| (r.created_at, r.id.clone()))
        .collect();
    expected.sort();
    assert_eq!(expected.len(), 25);

    for page_size in [1, 4, 5, 25, 1000] {
        let mut scan = s.usage_scan("org_a", T0, T0 + 7_000, page_size);
        let mut seen = Vec::new();
        let mut pages = 0u64;
        while let Some(page) = scan.next_page().await.unwrap() {
            assert!(!page.is_empty() && page.len() as i64 <= page_size);
            pages += 1;
            seen.extend(page.into_iter().map(|r| (r.created_at, r.id)));
        }
        assert_eq!(seen, expected, "page size {page_size}");
        assert!(
            pages >= 25u64.div_ceil(page_size as u64),
            "page size {page_size}"
        );
        assert!(scan.next_page().await.unwrap().is_none());
    }
    let mut empty = s.usage_scan("org_c", T0, T0 + 7_000, 10);
    assert!(empty.next_page().await.unwrap().is_none());
}

async fn realised_savings_split_routing_gains_from_losses(db: &TestDb) {
    let s = &db.store;
    plant_breakdown_records(s).await;
    let r = s
        .realised_savings("org_a", T0, T0 + 48 * HOUR)
        .await
        .unwrap();
    assert_eq!(r.requests, 4);
    assert_eq!(r.cache_hits, 2);
    assert_eq!(r.cache_saved, Money::from_pico(3_000_000_000_011));
    assert_eq!(r.routed_requests, 2);
    assert_eq!(r.routing_saved, Money::from_pico(5_000_000));
    assert_eq!(r.routing_extra_cost, Money::from_pico(4_000_000));
    // The breakdown's `saved` adds up to the cache's and routing's gains.
    let total: Money = s
        .usage_breakdown("org_a", T0, T0 + 48 * HOUR, GroupBy::Day)
        .await
        .unwrap()
        .iter()
        .map(|g| g.saved)
        .sum();
    assert_eq!(total, r.cache_saved + r.routing_saved);
    let none = s.realised_savings("org_c", T0, T0 + HOUR).await.unwrap();
    assert_eq!(none, cognitude_store::RealisedSavings::default());
}

/// A varied ledger of two orgs over about three days: every dimension NULL or not, a hundred
/// latencies across the buckets (negative, 0, bounds, bound + 1, beyond 10 minutes), costs and
/// savings with picodollar remainders and negative routing savings, records on hour boundaries
/// and one microsecond either side, and a few before 1970.
fn varied_ledger(tag: &str) -> Vec<UsageRecord> {
    let latencies: Vec<i64> = [
        -3, 0, 1, 2, 9, 10, 11, 640, 641, 999, 640_000, 640_001, 5_000_000,
    ]
    .into_iter()
    .chain((0..87).map(|i| (i * i * 37) % 90_000))
    .collect();
    let models = [
        None,
        Some("gpt-4o-mini"),
        Some("claude-haiku-4-5"),
        Some("none"),
    ];
    let providers = [None, Some("openai"), Some("anthropic")];
    let keys = [None, Some("key_1"), Some("key_2")];
    let statuses = [
        None,
        Some("miss"),
        Some("hit-memory"),
        Some("hit-redis"),
        Some("coalesced"),
        Some("off"),
    ];
    let tiers = [None, Some("simple"), Some("medium"), Some("complex")];
    let mut out = Vec::new();
    for i in 0..600i64 {
        let org = if i % 7 == 0 { "org_y" } else { "org_x" };
        // Spread over 72 hours, with a cluster at and around hour boundaries.
        let at = match i % 5 {
            0 => T0 + (i % 72) * HOUR,
            1 => T0 + (i % 72) * HOUR - 1,
            2 => T0 + (i % 72) * HOUR + 1,
            _ => T0 + (i * 7_919_000_003) % (72 * HOUR),
        };
        let at = if i % 97 == 0 { -HOUR / 2 - i } else { at };
        let mut r = record(
            org,
            &format!("{tag}{i:04}"),
            (i * 1_234_567_891_011) % 9_000_000_000_000 - if i % 11 == 0 { 5_000_001 } else { 0 },
            at,
        );
        let pick = |n: usize, k: i64| (i as usize * k as usize + i as usize / 3) % n;
        r.model_used = models[pick(models.len(), 1)].map(str::to_owned);
        r.provider = providers[pick(providers.len(), 5)].map(str::to_owned);
        r.api_key_id = keys[pick(keys.len(), 7)].map(str::to_owned);
        r.cache_status = statuses[pick(statuses.len(), 11)].map(str::to_owned);
        r.route_tier = tiers[pick(tiers.len(), 13)].map(str::to_owned);
        r.latency_ms = latencies[i as usize % latencies.len()];
        r.prompt_tokens = i * 13 % 5_000;
        r.completion_tokens = i * 17 % 900;
        r.cache_saved_pico = if i % 3 == 0 { i * 1_000_003 } else { 0 };
        r.routed = i % 4 == 0;
        r.route_saving_pico = match i % 8 {
            0 => Some(i * 7_000_001),
            4 => Some(-i * 3_000_007),
            _ => None,
        };
        out.push(r);
    }
    out
}

/// Every group_by of both orgs over each window equals the breakdown from the records alone.
async fn assert_breakdowns_match_records(s: &Store, windows: &[(i64, i64)]) {
    for org in ["org_x", "org_y", "org_none"] {
        for &(from, to) in windows {
            for g in GroupBy::ALL {
                let fast = s.usage_breakdown(org, from, to, g).await.unwrap();
                let slow = s
                    .usage_breakdown_from_records(org, from, to, g)
                    .await
                    .unwrap();
                assert_eq!(fast, slow, "{org} {from}..{to} by {}", g.as_str());
            }
        }
    }
}

fn test_windows() -> Vec<(i64, i64)> {
    vec![
        // Aligned, the whole ledger, and unaligned at one or both ends.
        (T0, T0 + 72 * HOUR),
        (i64::MIN / 2, i64::MAX / 2),
        (-HOUR, T0 + 80 * HOUR),
        (T0 + 1, T0 + 48 * HOUR - 1),
        (T0 - 1, T0 + 5 * HOUR + 1),
        (T0 + HOUR / 3, T0 + 30 * HOUR),
        (T0 + 2 * HOUR, T0 + 40 * HOUR + HOUR / 2),
        // Less than an hour, inside one hour and across a boundary; exactly one hour; empty.
        (T0 + 5 * HOUR + 10, T0 + 5 * HOUR + 20),
        (T0 + 5 * HOUR - 10, T0 + 5 * HOUR + 20),
        (T0 + 5 * HOUR, T0 + 6 * HOUR),
        (T0 + 6 * HOUR, T0 + 5 * HOUR),
        (0, 1),
    ]
}

async fn rollups_count_a_replayed_batch_once(db: &TestDb) {
    let s = &db.store;
    let ledger = varied_ledger("r");
    let windows = test_windows();
    assert_eq!(s.insert_usage(&ledger[..400]).await.unwrap(), 400);
    let mut before = Vec::new();
    for &(from, to) in &windows {
        for g in GroupBy::ALL {
            before.push(s.usage_breakdown("org_x", from, to, g).await.unwrap());
        }
    }
    // The same batch again (a spill replay after a crash), and a batch of which half is new
    // and which holds one record twice: only the new records count, once.
    assert_eq!(s.insert_usage(&ledger[..400]).await.unwrap(), 0);
    let mut again = Vec::new();
    for &(from, to) in &windows {
        for g in GroupBy::ALL {
            again.push(s.usage_breakdown("org_x", from, to, g).await.unwrap());
        }
    }
    assert_eq!(before, again, "a replayed batch changed the breakdown");
    let mut mixed = ledger[300..].to_vec();
    mixed.push(ledger[450].clone());
    assert_eq!(s.insert_usage(&mixed).await.unwrap(), 200);
    assert_breakdowns_match_records(s, &windows).await;
    let all = s
        .usage_breakdown("org_x", i64::MIN / 2, i64::MAX / 2, GroupBy::Model)
        .await
        .unwrap();
    let expected = ledger.iter().filter(|r| r.org_id == "org_x").count() as i64;
    assert_eq!(all.iter().map(|g| g.requests).sum::<i64>(), expected);
}

async fn rollup_breakdowns_equal_the_records_for_every_group_by_and_window(db: &TestDb) {
    let s = &db.store;
    let ledger = varied_ledger("v");
    // In several batches, as the ledger writer would.
    for batch in ledger.chunks(170) {
        s.insert_usage(batch).await.unwrap();
    }
    assert_breakdowns_match_records(s, &test_windows()).await;
    // The planted records of the hand-checked test agree too.
    plant_breakdown_records(s).await;
    for g in GroupBy::ALL {
        let to = T0 + 48 * HOUR;
        assert_eq!(
            s.usage_breakdown("org_a", T0, to, g).await.unwrap(),
            s.usage_breakdown_from_records("org_a", T0, to, g)
                .await
                .unwrap()
        );
    }
}

async fn rollup_backfill_reproduces_the_incremental_rollups(db: &TestDb) {
    let s = &db.store;
    let ledger = varied_ledger("b");
    s.insert_usage(&ledger).await.unwrap();
    let windows = test_windows();
    let mut incremental = Vec::new();
    for &(from, to) in &windows {
        for g in GroupBy::ALL {
            incremental.push(s.usage_breakdown("org_x", from, to, g).await.unwrap());
        }
    }
    let rows_before = with_migration_conn(db, |conn| conn.texts(&rollup_rows_sql())).await;
    // The migration's backfill, over the same records.
    s.rebuild_usage_rollups().await.unwrap();
    // Row for row the same table: the backfill and the upserts agree on every key and counter.
    let rows_after = with_migration_conn(db, |conn| conn.texts(&rollup_rows_sql())).await;
    assert!(rows_before.len() > 100, "{} rollup rows", rows_before.len());
    assert_eq!(rows_before, rows_after);
    let mut rebuilt = Vec::new();
    for &(from, to) in &windows {
        for g in GroupBy::ALL {
            rebuilt.push(s.usage_breakdown("org_x", from, to, g).await.unwrap());
        }
    }
    assert_eq!(incremental, rebuilt);
    assert_breakdowns_match_records(s, &windows).await;
}

/// Runs `f` on a synchronous migration connection to the test's database.
async fn with_migration_conn<T: Send + 'static>(
    db: &TestDb,
    f: impl FnOnce(&mut dyn MigrationConn) -> T + Send + 'static,
) -> T {
    use diesel::Connection;
    let pg_url = db.pg.as_ref().map(|pg| pg.url.clone());
    let sqlite = db.dir.join("test.db");
    tokio::task::spawn_blocking(move || match pg_url {
        Some(url) => {
            let mut conn = diesel_async::async_connection_wrapper::AsyncConnectionWrapper::<
                diesel_async::AsyncPgConnection,
            >::establish(&url)
            .unwrap();
            f(&mut conn)
        }
        None => {
            let mut conn = diesel::SqliteConnection::establish(sqlite.to_str().unwrap()).unwrap();
            f(&mut conn)
        }
    })
    .await
    .unwrap()
}

/// What the upgrade test does with a raw connection, on either backend.
trait MigrationConn {
    /// Reverts the last migration that ran.
    fn revert_last(&mut self) -> String;
    /// One integer a query selects (as `n`).
    fn integer(&mut self, sql: &str) -> i64;
    /// The texts a query selects (as `t`).
    fn texts(&mut self, sql: &str) -> Vec<String>;
}

#[derive(diesel::QueryableByName)]
struct Text {
    #[diesel(sql_type = diesel::sql_types::Text)]
    t: String,
}

/// Every rollup row, all its columns in one text, in key order.
fn rollup_rows_sql() -> String {
    let mut cols = vec![
        "org_id".to_owned(),
        "dimension".to_owned(),
        "CAST(hour_start AS TEXT)".to_owned(),
        "value".to_owned(),
    ];
    for c in [
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "cost_micros",
        "cost_rest",
        "saved_micros",
        "saved_rest",
        "cache_hits",
        "latency_max",
    ] {
        cols.push(format!("CAST({c} AS TEXT)"));
    }
    cols.extend((0..57).map(|b| format!("CAST(b{b:02} AS TEXT)")));
    format!(
        "SELECT {} AS t FROM usage_dimension_rollups \
         ORDER BY org_id, dimension, hour_start, value",
        cols.join(" || '|' || ")
    )
}

#[derive(diesel::QueryableByName)]
struct Integer {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

const PG_MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("migrations/postgres");
const SQLITE_MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("migrations/sqlite");

/// The same three operations on either backend's synchronous connection, with its migrations.
macro_rules! migration_conn {
    ($conn:ty, $migrations:expr) => {
        impl MigrationConn for $conn {
            fn revert_last(&mut self) -> String {
                use diesel_migrations::MigrationHarness;
                self.revert_last_migration($migrations).unwrap().to_string()
            }
            fn integer(&mut self, sql: &str) -> i64 {
                use diesel::RunQueryDsl;
                diesel::sql_query(sql)
                    .get_result::<Integer>(self)
                    .unwrap()
                    .n
            }
            fn texts(&mut self, sql: &str) -> Vec<String> {
                use diesel::RunQueryDsl;
                let rows = diesel::sql_query(sql).load::<Text>(self).unwrap();
                rows.into_iter().map(|r| r.t).collect()
            }
        }
    };
}

migration_conn!(
    diesel_async::async_connection_wrapper::AsyncConnectionWrapper<
        diesel_async::AsyncPgConnection,
    >,
    PG_MIGRATIONS
);
migration_conn!(diesel::SqliteConnection, SQLITE_MIGRATIONS);

/// Breakdowns of every org, window and group_by.
async fn all_breakdowns(s: &Store) -> Vec<Vec<BreakdownGroup>> {
    let mut out = Vec::new();
    for org in ["org_x", "org_y", "org_none"] {
        for (from, to) in test_windows() {
            for g in GroupBy::ALL {
                out.push(s.usage_breakdown(org, from, to, g).await.unwrap());
            }
        }
    }
    out
}

async fn rollup_migration_upgrades_and_downgrades_with_records_in_place(db: &TestDb) {
    let s = &db.store;
    let ledger = varied_ledger("u");
    let (first, rest) = ledger.split_at(400);
    for batch in first.chunks(170) {
        s.insert_usage(batch).await.unwrap();
    }
    let incremental = all_breakdowns(s).await;
    let incremental_rows = with_migration_conn(db, |conn| conn.texts(&rollup_rows_sql())).await;
    // Down past the write-path indexes (000007) and the scan index (000006) to the rollups
    // per dimension combination: its backfill counts every record once.
    let (reverted, old_requests, old_rows) = with_migration_conn(db, |conn| {
        let indexes = conn.revert_last();
        assert!(indexes.contains("000007"), "reverted {indexes}");
        let index = conn.revert_last();
        assert!(index.contains("000006"), "reverted {index}");
        let v = conn.revert_last();
        let requests = conn
            .integer("SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT) AS n FROM usage_rollups");
        let rows = conn.integer("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM usage_rollups");
        (v, requests, rows)
    })
    .await;
    assert!(reverted.contains("000005"), "reverted {reverted}");
    assert_eq!(old_requests, 400);
    assert!(old_rows > 0);
    // And up again, as a database upgraded with records in place: the migration's backfill
    // gives the same breakdowns as the incremental upserts did.
    s.migrate().await.unwrap();
    let (per_dimension, left) = with_migration_conn(db, |conn| {
        let per_dimension = conn.integer(
            "SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT) AS n \
             FROM usage_dimension_rollups",
        );
        let left = conn.integer(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM (SELECT DISTINCT dimension \
             FROM usage_dimension_rollups) AS d",
        );
        (per_dimension, left)
    })
    .await;
    assert_eq!((per_dimension, left), (5 * 400, 5));
    assert_eq!(all_breakdowns(s).await, incremental);
    let backfilled_rows = with_migration_conn(db, |conn| conn.texts(&rollup_rows_sql())).await;
    assert_eq!(backfilled_rows, incremental_rows);
    // Records written after the upgrade add to the backfilled rows.
    for batch in rest.chunks(170) {
        s.insert_usage(batch).await.unwrap();
    }
    assert_breakdowns_match_records(s, &test_windows()).await;
}

//! `/analytics/*` through the whole proxy: breakdowns of requests that really went through it,
//! recommendations and savings from records planted in the ledger, and who may read what.

use super::*;

use cognitude_catalog::Money;
use cognitude_store::UsageRecord;

impl Harness {
    async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self.request("GET", path, &[], Bytes::new()).await;
        let status = resp.status().as_u16();
        (status, body_json(resp).await)
    }

    async fn admin_get(&self, path: &str) -> (u16, Value) {
        let auth = format!("Bearer {ADMIN_KEY}");
        let resp = self
            .request("GET", path, &[("authorization", &auth)], Bytes::new())
            .await;
        let status = resp.status().as_u16();
        (status, body_json(resp).await)
    }
}

/// A successful gpt-4o-mini record of the harness's org, `micros_ago` microseconds before now.
fn planted(h: &Harness, id: &str, micros_ago: i64, cost_pico: i64, hash: &str) -> UsageRecord {
    UsageRecord {
        id: format!("rec_planted_{id}"),
        request_id: format!("req_{id}"),
        org_id: h.org_id.clone(),
        created_at: cognitude_store::now_micros() - micros_ago,
        endpoint: "chat_completions".into(),
        model_requested: "gpt-4o-mini".into(),
        model_used: Some("gpt-4o-mini".into()),
        provider: Some("up".into()),
        status: 200,
        prompt_tokens: 40,
        completion_tokens: 10,
        cost_pico,
        latency_ms: 200,
        cache_status: Some("off".into()),
        request_hash: hash.into(),
        prefix_hash: "ab".repeat(32),
        prompt_chars: 160,
        prompt_tokens_est: 40,
        ..UsageRecord::default()
    }
}

/// 200 identical requests a quarter of a second apart, an hour ago, each paid $0.01 with the
/// cache off: 199 repeats any TTL would have caught.
async fn plant_repeats(h: &Harness) {
    let hash = "cd".repeat(32);
    let records: Vec<UsageRecord> = (0..200)
        .map(|i| {
            planted(
                h,
                &format!("repeat{i:03}"),
                3_600_000_000 - i * 250_000,
                10_000_000_000,
                &hash,
            )
        })
        .collect();
    assert_eq!(h.state.store().insert_usage(&records).await.unwrap(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sliced_scan_returns_every_record_once_in_keyset_order() {
    // On SQLite (the harness's default) and on PostgreSQL.
    let h = Harness::start().await;
    sliced_scan_matches_one_keyset_scan(&h).await;
    h.stop().await;
    let db = cognitude_testkit::TestDatabase::create().await.unwrap();
    let h = Harness::build(
        MockConfig::default(),
        DEFAULT_UPSTREAM,
        DEFAULT_EXTRA,
        Some(&db.url),
    )
    .await;
    sliced_scan_matches_one_keyset_scan(&h).await;
    h.stop().await;
    db.drop_db().await;
}

async fn sliced_scan_matches_one_keyset_scan(h: &Harness) {
    let store = h.state.store();
    const HOUR: i64 = 3_600_000_000;
    // 1,500 records over 50 hours, uneven (none in some hours), many sharing a timestamp
    // (seven per hour), so ties straddle page and slice boundaries; the first of each hour
    // is on the hour, where slices are cut.
    let base = cognitude_store::now_micros() / HOUR * HOUR;
    let records: Vec<UsageRecord> = (0..1_500i64)
        .map(|i| {
            let hour = (i * i) % 50;
            let mut r = planted(h, &format!("slice{i:05}"), 0, 1_000, &format!("{i:064x}"));
            r.created_at = base - 60 * HOUR + hour * HOUR + (i % 7) * 1_000;
            r
        })
        .collect();
    for batch in records.chunks(500) {
        assert_eq!(store.insert_usage(batch).await.unwrap(), 500);
    }
    let to = cognitude_store::now_micros();
    let from = to - 58 * HOUR;
    // The reference: one keyset scan, page by page.
    let mut reference = Vec::new();
    let mut one = store.usage_scan(&h.org_id, from, to, 64);
    while let Some(page) = one.next_page().await.unwrap() {
        reference.extend(page.into_iter().map(|r| r.id));
    }
    let expected = records
        .iter()
        .filter(|r| (from..to).contains(&r.created_at))
        .count();
    assert!(expected > 1_000, "{expected} records in the window");
    assert_eq!(reference.len(), expected);
    for slice_records in [1, 90, 400, 1_000_000] {
        let (mut pages, _reader) =
            cognitude_server::analytics::scan_in_slices(store, &h.org_id, from, to, slice_records)
                .await
                .unwrap();
        let mut ids = Vec::new();
        while let Some(page) = pages.recv().await {
            ids.extend(page.unwrap().into_iter().map(|r| r.id));
        }
        assert_eq!(ids, reference, "slices of about {slice_records} records");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn breakdown_by_model_and_day_matches_the_ledger_exactly() {
    let h = Harness::start().await;
    for (model, text) in [
        ("gpt-4o-mini", "one"),
        ("gpt-4o-mini", "two words"),
        ("claude-haiku-4-5", "three little words"),
        ("gpt-4o-mini", "four"),
        ("claude-haiku-4-5", "five five five five five"),
    ] {
        let resp = h.post_json(&chat(model, text)).await;
        assert_eq!(resp.status(), 200);
    }
    let ledger = h.ledger().await;
    assert_eq!(ledger.len(), 5);
    let mut by_model: HashMap<String, (i64, i128, i64)> = HashMap::new();
    let mut by_day: HashMap<i64, (i64, i128)> = HashMap::new();
    for r in &ledger {
        let m = by_model.entry(r.model_used.clone().unwrap()).or_default();
        m.0 += 1;
        m.1 += i128::from(r.cost_pico);
        m.2 += r.prompt_tokens;
        let d = by_day
            .entry(r.created_at / 86_400_000_000 * 86_400)
            .or_default();
        d.0 += 1;
        d.1 += i128::from(r.cost_pico);
    }

    let (status, v) = h.get("/analytics/breakdown?group_by=model").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["org"], h.org_id.as_str());
    assert_eq!(v["group_by"], "model");
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{v}");
    for g in groups {
        let (n, cost, prompt) = by_model[g["group"].as_str().unwrap()];
        assert_eq!(g["requests"], n);
        assert_eq!(g["cost"], Money::from_pico(cost).to_string());
        assert_eq!(g["prompt_tokens"], prompt);
        assert_eq!(g["cache_hits"], 0);
        assert!(g["latency_p50_ms"].as_i64().unwrap() <= g["latency_p95_ms"].as_i64().unwrap());
    }
    // Costliest first.
    let costs: Vec<Money> = groups
        .iter()
        .map(|g| g["cost"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(costs[0] >= costs[1]);
    let total: i128 = ledger.iter().map(|r| i128::from(r.cost_pico)).sum();
    assert_eq!(v["totals"]["cost"], Money::from_pico(total).to_string());
    assert_eq!(v["totals"]["requests"], 5);

    let (status, v) = h.get("/analytics/breakdown?group_by=day").await;
    assert_eq!(status, 200, "{v}");
    let groups = v["groups"].as_array().unwrap();
    assert_eq!(groups.len(), by_day.len());
    for g in groups {
        let (n, cost) = by_day[&g["start"].as_i64().unwrap()];
        assert_eq!(g["requests"], n);
        assert_eq!(g["cost"], Money::from_pico(cost).to_string());
        assert_eq!(g["group"].as_str().unwrap().len(), "2026-11-26".len());
    }

    // A window that ends before the requests has nothing in it.
    let (status, v) = h.get("/analytics/breakdown?from=1000&to=2000").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["groups"], json!([]));
    assert_eq!(v["totals"]["cost"], "0");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn planted_uncached_repeats_give_a_cache_recommendation() {
    let h = Harness::start().await;
    let (status, v) = h.get("/analytics/recommendations").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["recommendations"], json!([]));
    assert_eq!(v["stats"]["records"], 0);

    plant_repeats(&h).await;
    let (status, v) = h.get("/analytics/recommendations?window=30d").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["org"], h.org_id.as_str());
    assert_eq!(v["window_seconds"], 30 * 86_400);
    assert_eq!(v["stats"]["records"], 200);
    assert_eq!(v["stats"]["out_of_order"], 0);
    let recs = v["recommendations"].as_array().unwrap();
    assert_eq!(recs.len(), 1, "{v}");
    let r = &recs[0];
    assert_eq!(r["kind"], "cache");
    assert_eq!(r["org_id"], h.org_id.as_str());
    // 199 repeats × $0.01, observed over a 30-day window: $1.99 a month.
    assert_eq!(r["monthly_saving"], "1.99");
    assert_eq!(r["basis"]["requests"], 199);
    assert_eq!(r["details"]["cache"]["suggested_ttl_secs"], 60);
    assert_eq!(r["details"]["cache"]["repeats_cache_off"], 199);
    assert!(
        r["action"]["config"]
            .as_str()
            .unwrap()
            .contains("enabled = true")
    );

    // Over a week the same repeats are worth 30/7 as much a month.
    let (_, week) = h.get("/analytics/recommendations?window=7d").await;
    let expected = Money::from_pico(199 * 10_000_000_000 * 30 / 7);
    assert_eq!(
        week["recommendations"][0]["monthly_saving"],
        expected.to_string()
    );

    // Another organization's records are not this one's evidence.
    let other = h.state.store().create_org("other-org").await.unwrap();
    let (status, v) = h
        .admin_get(&format!("/analytics/recommendations?org={}", other.id))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["recommendations"], json!([]));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn savings_add_up_realised_and_potential() {
    let h = Harness::start().await;
    plant_repeats(&h).await;
    let mut extra = Vec::new();
    for i in 0..3 {
        let mut r = planted(
            &h,
            &format!("hit{i}"),
            7_200_000_000,
            0,
            &format!("{i:064x}"),
        );
        r.cache_status = Some("hit-memory".into());
        r.cache_saved_pico = 2_000_000_000;
        extra.push(r);
    }
    let mut gain = planted(&h, "routed-gain", 60_000_000, 1_000, &"e1".repeat(32));
    gain.routed = true;
    gain.route_saving_pico = Some(500_000_000_000);
    let mut loss = planted(&h, "routed-loss", 60_000_000, 1_000, &"e2".repeat(32));
    loss.routed = true;
    loss.route_saving_pico = Some(-100_000_000_000);
    // Older than the window: not counted.
    let mut old = planted(&h, "old", 40 * 86_400_000_000, 0, &"e3".repeat(32));
    old.cache_status = Some("hit-redis".into());
    old.cache_saved_pico = 9_000_000_000_000;
    extra.extend([gain, loss, old]);
    h.state.store().insert_usage(&extra).await.unwrap();

    let (status, v) = h.get("/analytics/savings").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["window_seconds"], 30 * 86_400);
    let realised = &v["realised"];
    assert_eq!(realised["requests"], 205);
    assert_eq!(realised["cache_hits"], 3);
    assert_eq!(realised["cache_usd"], "0.006");
    assert_eq!(realised["routed_requests"], 2);
    assert_eq!(realised["routing_usd"], "0.5");
    assert_eq!(realised["routing_extra_cost_usd"], "0.1");
    assert_eq!(realised["net_usd"], "0.406");
    assert_eq!(v["potential"]["monthly_usd"], "1.99");
    assert_eq!(v["potential"]["recommendations"], 1);
    assert_eq!(v["potential"]["by_kind"], json!({"cache": "1.99"}));

    // The breakdown's savings agree with the realised gains.
    let (_, b) = h.get("/analytics/breakdown?group_by=cache_status").await;
    assert_eq!(b["totals"]["saved"], "0.506");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn analytics_authenticate_and_name_the_bad_parameter() {
    let h = Harness::start().await;
    let other = h.state.store().create_org("someone-else").await.unwrap();

    // No key, a wrong key.
    let resp = h
        .request(
            "GET",
            "/analytics/breakdown",
            &[("authorization", "Bearer cgk_wrong")],
            Bytes::new(),
        )
        .await;
    assert_eq!(resp.status(), 401);
    // An org key reads its own org, named or not, and never another's.
    let (status, _) = h.get(&format!("/analytics/savings?org={}", h.org_id)).await;
    assert_eq!(status, 200);
    for path in ["breakdown", "recommendations", "savings"] {
        let (status, v) = h.get(&format!("/analytics/{path}?org={}", other.id)).await;
        assert_eq!(status, 403, "{path}: {v}");
        assert_openai_error(&v, "permission_error");
    }
    // The admin key must name the org, and then may read any.
    let (status, v) = h.admin_get("/analytics/breakdown").await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["param"], "org");
    let (status, v) = h
        .admin_get(&format!(
            "/analytics/breakdown?org={}&group_by=tier",
            other.id
        ))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["org"], other.id.as_str());

    for (path, param) in [
        ("/analytics/recommendations?window=0d", "window"),
        ("/analytics/recommendations?window=400d", "window"),
        ("/analytics/savings?window=30", "window"),
        ("/analytics/breakdown?group_by=week", "group_by"),
        ("/analytics/breakdown?from=2000&to=1000", "from"),
        ("/analytics/breakdown?from=abc", "from"),
        ("/analytics/breakdown?to=-5", "to"),
        ("/analytics/breakdown?from=0&to=40000000", "from"),
        ("/analytics/breakdown?window=7d", "window"),
        ("/analytics/savings?group_by=model", "group_by"),
    ] {
        let (status, v) = h.get(path).await;
        assert_eq!(status, 400, "{path}: {v}");
        assert_openai_error(&v, "invalid_request_error");
        assert_eq!(v["error"]["param"], param, "{path}: {v}");
    }
    let (status, _) = h.get("/analytics/nothing").await;
    assert_eq!(status, 404);
    let resp = h
        .request("POST", "/analytics/breakdown", &[], Bytes::new())
        .await;
    assert_eq!(resp.status(), 405);
    h.stop().await;
}

//! The PostgreSQL ledger insert: one statement whose text never changes, with one array per
//! column (`INSERT … SELECT … FROM unnest($1, …, $38)`).
//!
//! A multi-row `VALUES` list binds 38 parameters per record, so a 500-record batch is a
//! 19,000-parameter statement that PostgreSQL parses, analyses and plans afresh each time (its
//! text changes with the batch size): under load that was a third of the database's CPU per
//! record. Here the statement is the same 38 parameters whatever the batch size, and the rows
//! come out of `unnest`, which walks the arrays in step.

use diesel::pg::Pg;
use diesel::sql_types::{Array, BigInt, Bool, Double, Integer, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::UsageRecord;

/// The columns in the order of the arrays. The statement's text is built from this list and
/// the binds are pushed in the same order; `every_column_is_inserted` checks the list against
/// the schema.
const COLUMNS: [(&str, &str); 38] = [
    ("id", "text"),
    ("request_id", "text"),
    ("org_id", "text"),
    ("api_key_id", "text"),
    ("created_at", "int8"),
    ("endpoint", "text"),
    ("model_requested", "text"),
    ("model_used", "text"),
    ("provider", "text"),
    ("status", "int4"),
    ("error_type", "text"),
    ("prompt_tokens", "int8"),
    ("cached_prompt_tokens", "int8"),
    ("completion_tokens", "int8"),
    ("reasoning_tokens", "int8"),
    ("tokens_estimated", "bool"),
    ("cost_pico", "int8"),
    ("latency_ms", "int8"),
    ("ttft_ms", "int8"),
    ("stream", "bool"),
    ("max_tokens", "int8"),
    ("temperature", "float8"),
    ("cache_status", "text"),
    ("cache_saved_pico", "int8"),
    ("routed", "bool"),
    ("route_score", "float8"),
    ("route_tier", "text"),
    ("route_mode", "text"),
    ("baseline_model", "text"),
    ("route_saving_pico", "int8"),
    ("request_hash", "text"),
    ("system_hash", "text"),
    ("system_len", "int8"),
    ("prefix_hash", "text"),
    ("prompt_chars", "int8"),
    ("prompt_tokens_est", "int8"),
    ("prompt_text", "text"),
    ("completion_text", "text"),
];

/// The statement; with `skip_existing`, records whose `id` is already there are skipped and
/// the ids inserted returned.
fn statement(skip_existing: bool) -> &'static str {
    static SQL: std::sync::OnceLock<[String; 2]> = std::sync::OnceLock::new();
    let [plain, skipping] = SQL.get_or_init(|| {
        let names: Vec<&str> = COLUMNS.iter().map(|(n, _)| *n).collect();
        let arrays: Vec<String> = COLUMNS
            .iter()
            .enumerate()
            .map(|(i, (_, t))| format!("${}::{t}[]", i + 1))
            .collect();
        let plain = format!(
            "INSERT INTO usage_records ({}) SELECT * FROM unnest({})",
            names.join(", "),
            arrays.join(", ")
        );
        let skipping = format!("{plain} ON CONFLICT (id) DO NOTHING RETURNING id");
        [plain, skipping]
    });
    if skip_existing { skipping } else { plain }
}

#[derive(diesel::QueryableByName)]
struct Inserted {
    #[diesel(sql_type = Text)]
    id: String,
}

/// Inserts the records; returns the ids inserted.
///
/// Without `skip_existing` a record already there fails the statement with a unique
/// violation; that is the ledger's fast path, since fresh records never collide and the
/// per-row conflict probe of `ON CONFLICT` is a sixth of the database's work per record. With
/// it, such records are skipped.
pub(crate) async fn insert(
    conn: &mut AsyncPgConnection,
    records: &[UsageRecord],
    skip_existing: bool,
) -> diesel::QueryResult<Vec<String>> {
    fn col<'a, T>(records: &'a [UsageRecord], f: impl Fn(&'a UsageRecord) -> T) -> Vec<T> {
        records.iter().map(f).collect()
    }
    let r = records;
    let q = diesel::sql_query(statement(skip_existing))
        .into_boxed::<Pg>()
        .bind::<Array<Text>, _>(col(r, |x| x.id.as_str()))
        .bind::<Array<Text>, _>(col(r, |x| x.request_id.as_str()))
        .bind::<Array<Text>, _>(col(r, |x| x.org_id.as_str()))
        .bind::<Array<Nullable<Text>>, _>(col(r, |x| x.api_key_id.as_deref()))
        .bind::<Array<BigInt>, _>(col(r, |x| x.created_at))
        .bind::<Array<Text>, _>(col(r, |x| x.endpoint.as_str()))
        .bind::<Array<Text>, _>(col(r, |x| x.model_requested.as_str()))
        .bind::<Array<Nullable<Text>>, _>(col(r, |x| x.model_used.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(col(r, |x| x.provider.as_deref()))
        .bind::<Array<Integer>, _>(col(r, |x| x.status))
        .bind::<Array<Nullable<Text>>, _>(col(r, |x| x.error_type.as_deref()))
        .bind::<Array<BigInt>, _>(col(r, |x| x.prompt_tokens))
        .bind::<Array<BigInt>, _>(col(r, |x| x.cached_prompt_tokens))
        .bind::<Array<BigInt>, _>(col(r, |x| x.completion_tokens))
        .bind::<Array<BigInt>, _>(col(r, |x| x.reasoning_tokens))
        .bind::<Array<Bool>, _>(col(r, |x| x.tokens_estimated))
        .bind::<Array<BigInt>, _>(col(r, |x| x.cost_pico))
        .bind::<Array<BigInt>, _>(col(r, |x| x.latency_ms))
        .bind::<Array<Nullable<BigInt>>, _>(col(r, |x| x.ttft_ms))
        .bind::<Array<Bool>, _>(col(r, |x| x.stream))
        .bind::<Array<Nullable<BigInt>>, _>(col(r, |x| x.max_tokens))
        .bind::<Array<Nullable<Double>>, _>(col(r, |x| x.temperature))
        .bind::<Array<Nullable<Text>>, _>(col(r, |x| x.cache_status.as_deref()))
        .bind::<Array<BigInt>, _>(col(r, |x| x.cache_saved_pico))
        .bind::<Array<Bool>, _>(col(r, |x| x.routed))
        .bind::<Array<Nullable<Double>>, _>(col(r, |x| x.route_score))
        .bind::<Array<Nullable<Text>>, _>(col(r, |x| x.route_tier.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(col(r, |x| x.route_mode.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(col(r, |x| x.baseline_model.as_deref()))
        .bind::<Array<Nullable<BigInt>>, _>(col(r, |x| x.route_saving_pico))
        .bind::<Array<Text>, _>(col(r, |x| x.request_hash.as_str()))
        .bind::<Array<Nullable<Text>>, _>(col(r, |x| x.system_hash.as_deref()))
        .bind::<Array<BigInt>, _>(col(r, |x| x.system_len))
        .bind::<Array<Text>, _>(col(r, |x| x.prefix_hash.as_str()))
        .bind::<Array<BigInt>, _>(col(r, |x| x.prompt_chars))
        .bind::<Array<BigInt>, _>(col(r, |x| x.prompt_tokens_est))
        .bind::<Array<Nullable<Text>>, _>(col(r, |x| x.prompt_text.as_deref()))
        .bind::<Array<Nullable<Text>>, _>(col(r, |x| x.completion_text.as_deref()));
    if skip_existing {
        let ids: Vec<Inserted> = q.load(conn).await?;
        Ok(ids.into_iter().map(|i| i.id).collect())
    } else {
        q.execute(conn).await?;
        Ok(records.iter().map(|r| r.id.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statement names every column diesel's `Insertable` for `UsageRecord` does, in the
    /// same order.
    #[test]
    fn every_column_is_inserted() {
        let record = UsageRecord::default();
        let insert = diesel::insert_into(crate::schema::usage_records::table).values(&record);
        let sql = diesel::debug_query::<Pg, _>(&insert).to_string();
        let list = &sql[sql.find('(').unwrap() + 1..sql.find(')').unwrap()];
        let schema: Vec<&str> = list.split(", ").map(|c| c.trim_matches('"')).collect();
        let ours: Vec<&str> = COLUMNS.iter().map(|(n, _)| *n).collect();
        assert_eq!(ours, schema);
        assert!(statement(false).contains("unnest($1::text[], $2::text[]"));
        assert!(statement(false).ends_with("$38::text[])"));
        assert!(statement(true).ends_with("$38::text[]) ON CONFLICT (id) DO NOTHING RETURNING id"));
    }
}

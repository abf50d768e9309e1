//! Table definitions shared by both backends (the migrations create identical columns).

diesel::table! {
    organizations (id) {
        id -> Text,
        name -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        org_id -> Text,
        name -> Text,
        prefix -> Text,
        secret_hash -> Text,
        created_at -> BigInt,
        last_used_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    usage_records (id) {
        id -> Text,
        request_id -> Text,
        org_id -> Text,
        api_key_id -> Nullable<Text>,
        created_at -> BigInt,
        endpoint -> Text,
        model_requested -> Text,
        model_used -> Nullable<Text>,
        provider -> Nullable<Text>,
        status -> Integer,
        error_type -> Nullable<Text>,
        prompt_tokens -> BigInt,
        cached_prompt_tokens -> BigInt,
        completion_tokens -> BigInt,
        reasoning_tokens -> BigInt,
        tokens_estimated -> Bool,
        cost_pico -> BigInt,
        latency_ms -> BigInt,
        ttft_ms -> Nullable<BigInt>,
        stream -> Bool,
        max_tokens -> Nullable<BigInt>,
        temperature -> Nullable<Double>,
        cache_status -> Nullable<Text>,
        cache_saved_pico -> BigInt,
        routed -> Bool,
        route_score -> Nullable<Double>,
        route_tier -> Nullable<Text>,
        route_mode -> Nullable<Text>,
        baseline_model -> Nullable<Text>,
        route_saving_pico -> Nullable<BigInt>,
        request_hash -> Text,
        system_hash -> Nullable<Text>,
        system_len -> BigInt,
        prefix_hash -> Text,
        prompt_chars -> BigInt,
        prompt_tokens_est -> BigInt,
        prompt_text -> Nullable<Text>,
        completion_text -> Nullable<Text>,
    }
}

diesel::joinable!(api_keys -> organizations (org_id));
diesel::allow_tables_to_appear_in_same_query!(organizations, api_keys, usage_records);

//! Per-organization rate limits.

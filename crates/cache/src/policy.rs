//! What may be cached and for how long: response checks, TTL selection, per-request directives.

use std::collections::HashMap;
use std::time::Duration;

use cognitude_protocol::ChatCompletion;

use crate::CachedResponse;

/// The request header that sets an entry's TTL in seconds.
pub const TTL_HEADER: &str = "x-cognitude-cache-ttl";

/// The cache's rules, from configuration.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CachePolicy {
    /// TTL of an entry when neither the model nor the request sets one. Default 1 h.
    pub default_ttl: Duration,
    /// TTL per requested model, overriding the default.
    pub model_ttls: HashMap<String, Duration>,
    /// Ceiling for a TTL asked for by a request header. Default 7 days.
    pub max_request_ttl: Duration,
    /// Largest entry stored, counted as its JSON size. Default 1 MiB.
    pub max_entry_bytes: usize,
    /// Whether a response cut by the token limit (`finish_reason: "length"`) may be stored.
    /// Default false: the same request would usually be retried with a larger limit.
    pub cache_truncated: bool,
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            default_ttl: Duration::from_secs(3600),
            model_ttls: HashMap::new(),
            max_request_ttl: Duration::from_secs(7 * 24 * 3600),
            max_entry_bytes: 1 << 20,
            cache_truncated: false,
        }
    }
}

/// Why a response is not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Uncacheable {
    #[error("the response has no choices")]
    NoChoices,
    /// The stream ended before this choice finished.
    #[error("choice {index} has no finish reason")]
    Unfinished { index: u32 },
    #[error("choice {index} stopped at the token limit")]
    Truncated { index: u32 },
    /// A content filter decision depends on the provider's policy at the time; not replayed.
    #[error("choice {index} was cut by a content filter")]
    Filtered { index: u32 },
    #[error("the entry is {bytes} bytes, over the {limit}-byte limit")]
    TooLarge { bytes: usize, limit: usize },
}

impl CachePolicy {
    /// How long to keep the response of a request for `model`; `None` when it must not be
    /// stored (`no-store`, or a TTL of zero).
    pub fn ttl(&self, model: &str, directives: &Directives) -> Option<Duration> {
        if directives.no_store {
            return None;
        }
        let ttl = match directives.ttl {
            Some(asked) => asked.min(self.max_request_ttl),
            None => self
                .model_ttls
                .get(model)
                .copied()
                .unwrap_or(self.default_ttl),
        };
        (!ttl.is_zero()).then_some(ttl)
    }

    /// Whether `completion` is complete and successful: every choice finished, and not at the
    /// token limit (unless configured) nor by a content filter.
    pub fn check_completion(&self, completion: &ChatCompletion) -> Result<(), Uncacheable> {
        if completion.choices.is_empty() {
            return Err(Uncacheable::NoChoices);
        }
        for c in &completion.choices {
            let index = c.index;
            match c.finish_reason.as_deref() {
                None | Some("") => return Err(Uncacheable::Unfinished { index }),
                Some("length") if !self.cache_truncated => {
                    return Err(Uncacheable::Truncated { index });
                }
                Some("content_filter") => return Err(Uncacheable::Filtered { index }),
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// [`CachePolicy::check_completion`] and the entry size limit.
    pub fn check(&self, response: &CachedResponse) -> Result<(), Uncacheable> {
        self.check_completion(response.completion())?;
        let bytes = response.encoded_len();
        if bytes > self.max_entry_bytes {
            return Err(Uncacheable::TooLarge {
                bytes,
                limit: self.max_entry_bytes,
            });
        }
        Ok(())
    }
}

/// What one request asks of the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Directives {
    /// `Cache-Control: no-cache`: do not look up, still store the fresh response.
    pub no_cache: bool,
    /// `Cache-Control: no-store`: neither look up nor store.
    pub no_store: bool,
    /// `x-cognitude-cache-ttl: SECONDS`.
    pub ttl: Option<Duration>,
}

/// A cache header that could not be read; `header` names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("header `{header}`: {message}")]
pub struct InvalidDirective {
    pub header: &'static str,
    pub message: String,
}

impl Directives {
    /// Reads every `Cache-Control` header value and the TTL header. Unknown `Cache-Control`
    /// directives are ignored; a TTL that is not a whole number of seconds is an error.
    pub fn parse<'a>(
        cache_control: impl IntoIterator<Item = &'a str>,
        ttl: Option<&str>,
    ) -> Result<Directives, InvalidDirective> {
        let mut d = Directives::default();
        for value in cache_control {
            for directive in value.split(',') {
                let name = directive.split('=').next().unwrap_or("").trim();
                if name.eq_ignore_ascii_case("no-cache") {
                    d.no_cache = true;
                } else if name.eq_ignore_ascii_case("no-store") {
                    d.no_store = true;
                }
            }
        }
        if let Some(raw) = ttl {
            let secs = raw.trim().parse::<u64>().map_err(|_| InvalidDirective {
                header: TTL_HEADER,
                message: format!("{raw:?} is not a whole number of seconds"),
            })?;
            d.ttl = Some(Duration::from_secs(secs));
        }
        Ok(d)
    }

    /// Whether to look the request up.
    pub fn lookup(&self) -> bool {
        !self.no_cache && !self.no_store
    }

    /// Whether to store the response (the TTL may still forbid it: see [`CachePolicy::ttl`]).
    pub fn store(&self) -> bool {
        !self.no_store
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::tests::completion;

    fn with_finish(reasons: &[Option<&str>]) -> ChatCompletion {
        let mut c = completion("x");
        let choice = c.choices[0].clone();
        c.choices = reasons
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut ch = choice.clone();
                ch.index = i as u32;
                ch.finish_reason = r.map(str::to_owned);
                ch
            })
            .collect();
        c
    }

    #[test]
    fn only_finished_complete_responses_are_cacheable() {
        let p = CachePolicy::default();
        let check = |r: &[Option<&str>]| p.check_completion(&with_finish(r));
        assert_eq!(check(&[Some("stop")]), Ok(()));
        assert_eq!(check(&[Some("tool_calls"), Some("stop")]), Ok(()));
        assert_eq!(check(&[]), Err(Uncacheable::NoChoices));
        assert_eq!(
            check(&[Some("stop"), None]),
            Err(Uncacheable::Unfinished { index: 1 })
        );
        assert_eq!(
            check(&[Some("length")]),
            Err(Uncacheable::Truncated { index: 0 })
        );
        assert_eq!(
            check(&[Some("content_filter")]),
            Err(Uncacheable::Filtered { index: 0 })
        );
        let lenient = CachePolicy {
            cache_truncated: true,
            ..CachePolicy::default()
        };
        assert_eq!(
            lenient.check_completion(&with_finish(&[Some("length")])),
            Ok(())
        );
    }

    #[test]
    fn entries_over_the_size_limit_are_refused() {
        let p = CachePolicy {
            max_entry_bytes: 500,
            ..CachePolicy::default()
        };
        let small = CachedResponse::new(completion("short"), "m", "p", 0);
        assert_eq!(p.check(&small), Ok(()));
        let big = CachedResponse::new(completion(&"x".repeat(600)), "m", "p", 0);
        assert!(matches!(
            p.check(&big),
            Err(Uncacheable::TooLarge { limit: 500, .. })
        ));
    }

    #[test]
    fn ttl_comes_from_the_request_then_the_model_then_the_default() {
        let mut p = CachePolicy::default();
        p.model_ttls
            .insert("gpt-4o".into(), Duration::from_secs(60));
        let none = Directives::default();
        assert_eq!(p.ttl("gpt-4o-mini", &none), Some(Duration::from_secs(3600)));
        assert_eq!(p.ttl("gpt-4o", &none), Some(Duration::from_secs(60)));
        let asked = Directives {
            ttl: Some(Duration::from_secs(5)),
            ..Directives::default()
        };
        assert_eq!(p.ttl("gpt-4o", &asked), Some(Duration::from_secs(5)));
        let huge = Directives {
            ttl: Some(Duration::from_secs(u64::MAX / 2)),
            ..Directives::default()
        };
        assert_eq!(p.ttl("gpt-4o", &huge), Some(p.max_request_ttl));
        let zero = Directives {
            ttl: Some(Duration::ZERO),
            ..Directives::default()
        };
        assert_eq!(p.ttl("gpt-4o", &zero), None);
        let no_store = Directives {
            no_store: true,
            ..Directives::default()
        };
        assert_eq!(p.ttl("gpt-4o", &no_store), None);
    }

    #[test]
    fn cache_control_directives_parse() {
        let d = Directives::parse(["No-Cache"], None).unwrap();
        assert!(d.no_cache && !d.no_store);
        assert!(!d.lookup() && d.store());

        let d = Directives::parse(["max-age=0, no-store"], None).unwrap();
        assert!(d.no_store && !d.lookup() && !d.store());

        let d = Directives::parse(["private", "no-cache=\"set-cookie\""], Some(" 120 ")).unwrap();
        assert!(d.no_cache);
        assert_eq!(d.ttl, Some(Duration::from_secs(120)));

        let d = Directives::parse([], None).unwrap();
        assert!(d.lookup() && d.store());
        assert_eq!(d, Directives::default());

        for bad in ["-1", "1.5", "soon", ""] {
            let err = Directives::parse([], Some(bad)).unwrap_err();
            assert_eq!(err.header, TTL_HEADER, "{bad}");
        }
    }
}

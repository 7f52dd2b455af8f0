//! Bearer tokens for SASL/OAUTHBEARER: where a token comes from ([`TokenSource`]: an OIDC
//! client-credentials endpoint, or an AWS MSK IAM signer) and what one is ([`BearerToken`]).
//!
//! A source only fetches. Caching, refreshing at 80% of a token's lifetime and re-authenticating
//! connections are the client's job, so every source gets them the same way.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// One token, as a source returned it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken {
    /// The token itself, sent as `auth=Bearer <value>`.
    pub value: String,
    /// When the token stops being valid (from `expires_in`, or the signer's expiry).
    pub expires_at: SystemTime,
    /// When the source issued it (the start of its lifetime, for the 80% refresh point).
    pub issued_at: SystemTime,
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("BearerToken")
            .field("value", &format_args!("<{} bytes>", self.value.len()))
            .field("expires_at", &self.expires_at)
            .field("issued_at", &self.issued_at)
            .finish()
    }
}

/// The future a [`TokenSource`] returns.
pub type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<BearerToken, String>> + Send + 'a>>;

/// Where OAUTHBEARER tokens come from. The error is a sentence that names the setting and what
/// the endpoint (or signer) said, ready for an operator.
pub trait TokenSource: Send + Sync + std::fmt::Debug {
    /// Fetches a new token.
    fn fetch(&self) -> TokenFuture<'_>;
    /// What this source is, for logs and errors (`oidc https://idp/token`, `aws_msk_iam eu-west-1`).
    fn describe(&self) -> String;
}

/// Reads the wall clock; tests inject their own.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The share of a token's lifetime after which the cache fetches a new one.
pub const REFRESH_AT: f64 = 0.8;

/// The tokens of one client, shared by all its connections: fetched once and reused, refreshed
/// at [`REFRESH_AT`] of the token's lifetime. Concurrent callers wait on one fetch
/// (single-flight). A failed refresh keeps the old token in use until it actually expires;
/// after that the endpoint's error is returned.
#[derive(Clone)]
pub struct TokenCache {
    source: Arc<dyn TokenSource>,
    current: Arc<tokio::sync::Mutex<Option<BearerToken>>>,
    clock: Clock,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("source", &self.source.describe())
            .finish()
    }
}

impl TokenCache {
    /// A cache over `source`, on the system clock.
    pub fn new(source: Arc<dyn TokenSource>) -> Self {
        Self::with_clock(source, Arc::new(SystemTime::now))
    }

    /// A cache over `source` that reads the time from `clock`.
    pub fn with_clock(source: Arc<dyn TokenSource>, clock: Clock) -> Self {
        TokenCache {
            source,
            current: Arc::new(tokio::sync::Mutex::new(None)),
            clock,
        }
    }

    /// What the source is, for logs and errors.
    pub fn describe(&self) -> String {
        self.source.describe()
    }

    /// A token that is valid now: the cached one until its refresh point, else a new one.
    pub async fn get(&self) -> Result<BearerToken, String> {
        // Holding the lock across the fetch is the single flight: the others wait here and
        // then find the fresh token.
        let mut current = self.current.lock().await;
        let now = (self.clock)();
        if let Some(token) = current.as_ref() {
            if now < refresh_point(token) {
                return Ok(token.clone());
            }
        }
        match self.source.fetch().await {
            Ok(token) => {
                tracing::debug!(
                    source = %self.source.describe(),
                    lifetime_seconds = lifetime(&token).as_secs(),
                    "fetched a new OAUTHBEARER token"
                );
                *current = Some(token.clone());
                Ok(token)
            }
            Err(e) => match current.as_ref() {
                Some(old) if now < old.expires_at => {
                    tracing::warn!(
                        source = %self.source.describe(),
                        error = %e,
                        "token refresh failed; the current token stays in use until it expires"
                    );
                    Ok(old.clone())
                }
                _ => Err(e),
            },
        }
    }
}

fn lifetime(token: &BearerToken) -> Duration {
    token
        .expires_at
        .duration_since(token.issued_at)
        .unwrap_or(Duration::ZERO)
}

/// When a token should be replaced: [`REFRESH_AT`] of the way from issue to expiry.
pub fn refresh_point(token: &BearerToken) -> SystemTime {
    token.issued_at + lifetime(token).mul_f64(REFRESH_AT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    /// Hands out `t1`, `t2`, ... issued at the clock's time and valid for `lifetime`; fails
    /// while `fail` is set; each fetch waits for `delay` (so concurrent callers overlap).
    #[derive(Debug)]
    struct Counting {
        fetches: AtomicU32,
        now: Arc<Mutex<SystemTime>>,
        lifetime: Duration,
        fail: Mutex<Option<String>>,
        delay: Duration,
    }

    impl TokenSource for Counting {
        fn fetch(&self) -> TokenFuture<'_> {
            Box::pin(async move {
                tokio::time::sleep(self.delay).await;
                let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
                if let Some(e) = self.fail.lock().unwrap().clone() {
                    return Err(e);
                }
                let now = *self.now.lock().unwrap();
                Ok(BearerToken {
                    value: format!("t{n}"),
                    issued_at: now,
                    expires_at: now + self.lifetime,
                })
            })
        }
        fn describe(&self) -> String {
            "counting".into()
        }
    }

    fn setup(delay: Duration) -> (Arc<Counting>, Arc<Mutex<SystemTime>>, TokenCache) {
        let now = Arc::new(Mutex::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000),
        ));
        let source = Arc::new(Counting {
            fetches: AtomicU32::new(0),
            now: now.clone(),
            lifetime: Duration::from_secs(100),
            fail: Mutex::new(None),
            delay,
        });
        let clock_now = now.clone();
        let cache =
            TokenCache::with_clock(source.clone(), Arc::new(move || *clock_now.lock().unwrap()));
        (source, now, cache)
    }

    fn advance(now: &Mutex<SystemTime>, by: Duration) {
        *now.lock().unwrap() += by;
    }

    #[tokio::test]
    async fn reuses_the_token_until_80_percent_of_its_lifetime() {
        let (source, now, cache) = setup(Duration::ZERO);
        assert_eq!(cache.get().await.unwrap().value, "t1");
        advance(&now, Duration::from_secs(79));
        assert_eq!(cache.get().await.unwrap().value, "t1", "79% of 100 s");
        assert_eq!(source.fetches.load(Ordering::SeqCst), 1);
        advance(&now, Duration::from_secs(1));
        let t2 = cache.get().await.unwrap();
        assert_eq!(t2.value, "t2", "80% of 100 s");
        assert_eq!(
            t2.issued_at,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_080)
        );
        assert_eq!(source.fetches.load(Ordering::SeqCst), 2);
        assert_eq!(
            refresh_point(&t2),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_160)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_fetch() {
        let (source, _now, cache) = setup(Duration::from_millis(500));
        let gets: Vec<_> = (0..8)
            .map(|_| {
                let c = cache.clone();
                tokio::spawn(async move { c.get().await })
            })
            .collect();
        for g in gets {
            assert_eq!(g.await.unwrap().unwrap().value, "t1");
        }
        assert_eq!(source.fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_old_token_until_it_expires() {
        let (source, now, cache) = setup(Duration::ZERO);
        assert_eq!(cache.get().await.unwrap().value, "t1");
        *source.fail.lock().unwrap() =
            Some("sasl_oauthbearer_token_endpoint_url: HTTP 503".to_string());
        advance(&now, Duration::from_secs(85));
        assert_eq!(
            cache.get().await.unwrap().value,
            "t1",
            "refresh failed at 85%"
        );
        advance(&now, Duration::from_secs(14));
        assert_eq!(cache.get().await.unwrap().value, "t1", "still valid at 99%");
        assert_eq!(source.fetches.load(Ordering::SeqCst), 3, "each get retried");
        advance(&now, Duration::from_secs(1));
        let err = cache.get().await.unwrap_err();
        assert_eq!(err, "sasl_oauthbearer_token_endpoint_url: HTTP 503");
        // The endpoint recovers: a new token, and no trace of the error.
        *source.fail.lock().unwrap() = None;
        assert_eq!(cache.get().await.unwrap().value, "t5");
    }
}

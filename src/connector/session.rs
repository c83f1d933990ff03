//! What the engine keeps per account between requests: the token of a
//! connector with `auth.token`, and the lists of `lookups:` fetched with an
//! operation. Both live in memory only; each is fetched by one request at a
//! time, the others waiting for its answer rather than asking again.
//!
//! ```yaml
//! auth:
//!   token: { header: Authorization, value: "Bearer {{ token }}", lifetime: 1h, refresh_before: 1m }
//! lookups:
//!   cities: { operation: cities, ttl: 24h }
//! ```

use crate::redact::Secrets;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A token and when to fetch the next one.
#[derive(Clone)]
pub(crate) struct Token {
    pub value: String,
    pub refresh_at: Instant,
    /// The account's secrets and this token, compiled once.
    pub secrets: Secrets,
}

impl Token {
    /// `lifetime` from now, refreshed `refresh_before` early (at least half
    /// of the lifetime is used, however short it is).
    pub fn new(
        value: String,
        lifetime: Duration,
        refresh_before: Duration,
        account: &Secrets,
    ) -> Token {
        let used = lifetime.saturating_sub(refresh_before).max(lifetime / 2);
        Token {
            secrets: account.with([value.clone()]),
            value,
            refresh_at: Instant::now() + used,
        }
    }

    fn fresh(&self) -> bool {
        Instant::now() < self.refresh_at
    }
}

type Slot<T> = Arc<tokio::sync::Mutex<Option<T>>>;

/// One single-flight slot per key.
struct Slots<T> {
    slots: Mutex<HashMap<String, Slot<T>>>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> Slots<T> {
    fn get(&self, key: &str) -> Slot<T> {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.to_string())
            .or_default()
            .clone()
    }
}

/// Tokens by connector and account.
#[derive(Default)]
pub(crate) struct Tokens {
    slots: Slots<Token>,
}

impl Tokens {
    /// The account's token: the cached one while it is fresh and not
    /// `rejected`, else one from `fetch`, which runs once however many
    /// requests wait for it.
    pub async fn get<E>(
        &self,
        key: &str,
        rejected: Option<&str>,
        fetch: impl AsyncFnOnce() -> Result<Token, E>,
    ) -> Result<Token, E> {
        let slot = self.slots.get(key);
        let mut held = slot.lock().await;
        if let Some(token) = held.as_ref()
            && token.fresh()
            && Some(token.value.as_str()) != rejected
        {
            return Ok(token.clone());
        }
        let token = fetch().await?;
        *held = Some(token.clone());
        Ok(token)
    }
}

/// A fetched list: normalised name → id.
#[derive(Clone)]
struct List {
    ids: Arc<Map<String, Value>>,
    expires: Instant,
}

/// Lookup lists by connector, account and lookup name.
#[derive(Default)]
pub(crate) struct Lists {
    flights: Slots<()>,
    lists: Mutex<HashMap<String, List>>,
}

impl Lists {
    /// The list under `key`, if fetched and not expired.
    pub fn cached(&self, key: &str) -> Option<Arc<Map<String, Value>>> {
        self.lists
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .filter(|list| Instant::now() < list.expires)
            .map(|list| list.ids.clone())
    }

    /// Fetches the list under `key` unless a fresh one is held; one fetch
    /// at a time per key.
    pub async fn ensure<E>(
        &self,
        key: &str,
        ttl: Duration,
        fetch: impl AsyncFnOnce() -> Result<Map<String, Value>, E>,
    ) -> Result<(), E> {
        let flight = self.flights.get(key);
        let _held = flight.lock().await;
        if self.cached(key).is_some() {
            return Ok(());
        }
        let ids = fetch().await?;
        self.lists
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                key.to_string(),
                List {
                    ids: Arc::new(ids),
                    expires: Instant::now() + ttl,
                },
            );
        Ok(())
    }
}

/// An account's secrets with one more value (its Basic header), compiled
/// once per value rather than for every request.
#[derive(Default)]
pub(crate) struct Extended {
    compiled: Mutex<HashMap<String, (String, Secrets)>>,
}

impl Extended {
    pub fn with(&self, key: &str, base: &Secrets, extra: &str) -> Secrets {
        let mut compiled = self.compiled.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((value, secrets)) = compiled.get(key)
            && value == extra
        {
            return secrets.clone();
        }
        let secrets = base.with([extra.to_string()]);
        compiled.insert(key.to_string(), (extra.to_string(), secrets.clone()));
        secrets
    }
}

/// The per-account state of one engine.
#[derive(Default)]
pub(crate) struct Session {
    pub tokens: Tokens,
    pub lists: Lists,
    pub basic: Extended,
}

/// Never the tokens.
impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session(..)")
    }
}

/// The key of an account's state: connector and account.
pub(crate) fn key(connector: &str, account: &str, what: &str) -> String {
    format!("{connector}\u{0}{account}\u{0}{what}")
}

//! The device registry: every device the server knows (connected or not), held in memory for
//! selectors and authentication (id, credential state, tags, first connection) and backed by the
//! [`Store`], which keeps the full inventory. Changes an operator or an enrollment makes are
//! committed to the store first, then applied here; connection statistics go to the store's
//! batched recorder.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use orb_proto::{DeviceId, ErrorBody, ErrorCode, Subject};
use orb_store::{Connection, Device, NewDevice, Record, Recorder, Store, StoreError};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A known device as the registry holds it: what authentication and selectors need, no more
/// (every device costs memory here; the full inventory stays in the store).
#[derive(Debug)]
pub struct Known {
    /// Device id.
    pub id: String,
    /// SHA-256 of its own secret, when it has one.
    pub secret_hash: Option<[u8; 32]>,
    /// An operator revoked its credential.
    pub revoked: bool,
    /// Its first connection.
    pub first_seen: Option<DateTime<Utc>>,
    /// Tags it reported in its last hello.
    pub reported_tags: BTreeMap<String, String>,
    /// Tags set by operators (they win).
    pub operator_tags: BTreeMap<String, String>,
    /// Commands it declared in its last hello; empty when it declared none (or never
    /// connected). Shared between devices that declare the same list.
    pub commands: Arc<[String]>,
}

impl Known {
    fn new(d: Device, commands: &Interner) -> Arc<Known> {
        Arc::new(Known {
            commands: commands.intern(&d.commands),
            id: d.id,
            secret_hash: d.secret_hash,
            revoked: d.revoked,
            first_seen: d.first_seen,
            reported_tags: d.reported_tags,
            operator_tags: d.operator_tags,
        })
    }

    fn with(&self, change: impl FnOnce(&mut Known)) -> Arc<Known> {
        let mut k = Known {
            id: self.id.clone(),
            secret_hash: self.secret_hash,
            revoked: self.revoked,
            first_seen: self.first_seen,
            reported_tags: self.reported_tags.clone(),
            operator_tags: self.operator_tags.clone(),
            commands: Arc::clone(&self.commands),
        };
        change(&mut k);
        Arc::new(k)
    }
}

impl Subject for Known {
    fn id(&self) -> &str {
        &self.id
    }
    fn tag(&self, key: &str) -> Option<&str> {
        self.operator_tags.get(key).or_else(|| self.reported_tags.get(key)).map(String::as_str)
    }
}

/// A freshly issued device secret and its digest.
pub struct IssuedSecret {
    /// Shown once to whoever gets it (the enrolling agent, the operator adding the device).
    pub secret: String,
    /// What the store keeps.
    pub hash: [u8; 32],
}

impl IssuedSecret {
    /// 32 random bytes, hex.
    pub fn generate() -> IssuedSecret {
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let secret = hex::encode(raw);
        let hash = digest(&secret);
        IssuedSecret { secret, hash }
    }
}

/// SHA-256 of a secret.
pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Maps a store failure to the error body a client sees.
pub fn store_error(e: StoreError) -> ErrorBody {
    match e {
        StoreError::NotFound(what) => ErrorBody::new(ErrorCode::DeviceNotFound, format!("{what} not found")),
        StoreError::Conflict(what) => ErrorBody::new(ErrorCode::DeviceExists, format!("{what} already exists")),
        e @ StoreError::Ambiguous { .. } => ErrorBody::new(ErrorCode::AmbiguousId, e.to_string()),
        e => {
            tracing::error!(error = %e, "store failure");
            ErrorBody::new(ErrorCode::StoreUnavailable, e.to_string())
        }
    }
}

/// One shared copy of each declared command list: a fleet declares a handful of different
/// lists, so each device holds a pointer, not its own copy. Bounded: past [`Interner::MAX`]
/// lists it forgets those no device holds, or else starts over (lists already handed out stay
/// valid, only sharing is lost).
#[derive(Default)]
struct Interner(std::sync::Mutex<std::collections::HashSet<Arc<[String]>>>);

impl Interner {
    /// Distinct lists kept for sharing.
    const MAX: usize = 1024;

    fn intern(&self, list: &[String]) -> Arc<[String]> {
        let mut set = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(shared) = set.get(list) {
            return Arc::clone(shared);
        }
        if set.len() >= Interner::MAX {
            // Lists no device holds any more go first; if all are in use, sharing starts over.
            set.retain(|l| Arc::strong_count(l) > 1);
            if set.len() >= Interner::MAX {
                set.clear();
            }
        }
        let shared: Arc<[String]> = list.into();
        set.insert(Arc::clone(&shared));
        shared
    }
}

/// Every known device, in memory, in front of the store.
pub struct Registry {
    devices: DashMap<String, Arc<Known>>,
    commands: Interner,
    store: Arc<dyn Store>,
    recorder: Recorder,
    /// Striped per-device locks for registry changes.
    locks: Vec<tokio::sync::Mutex<()>>,
    /// Statistics records dropped because the store's queue was full.
    dropped: AtomicU64,
    /// The devices connected when the previous server process stopped, as the store recorded
    /// it; taken once by the scheduler ([`Registry::take_connected_at_stop`]).
    connected_at_stop: std::sync::Mutex<Vec<String>>,
}

/// Disconnections recorded this close to the previous server's last record count as part of
/// its stop: a graceful stop closes every session within moments.
const STOP_WINDOW_MS: i64 = 5_000;

/// The devices whose connection was open when the previous server process stopped, by their
/// stored inventory (sorted by id): a connection the store saw begin (or heard from) but never
/// end (the process crashed: `last_seen` after `last_disconnect`, or no disconnection ever), or
/// one that ended within [`STOP_WINDOW_MS`] of the latest time recorded for any device (a
/// graceful stop ends every session, each recorded as a disconnection then). Revoked devices
/// are left out: they cannot come back.
fn connected_at_stop(devices: &[Device]) -> Vec<String> {
    let open = |d: &Device| match (d.last_seen, d.last_disconnect) {
        (Some(seen), Some(gone)) => seen > gone,
        (Some(_), None) => true,
        (None, _) => false,
    };
    let last = devices.iter().filter_map(|d| d.last_seen.max(d.last_disconnect)).max();
    let at_stop = |d: &Device| {
        last.zip(d.last_disconnect).is_some_and(|(last, gone)| (last - gone).num_milliseconds() <= STOP_WINDOW_MS)
    };
    devices.iter().filter(|d| !d.revoked && (open(d) || at_stop(d))).map(|d| d.id.clone()).collect()
}

/// Lock stripes for registry changes.
const LOCK_STRIPES: usize = 64;

impl Registry {
    /// Loads every stored device.
    ///
    /// # Errors
    /// The store's, when it cannot be read.
    pub async fn load(store: Arc<dyn Store>) -> Result<Registry, StoreError> {
        let devices = DashMap::new();
        let commands = Interner::default();
        let stored = store.devices().await?;
        let connected_at_stop = std::sync::Mutex::new(connected_at_stop(&stored));
        for d in stored {
            devices.insert(d.id.clone(), Known::new(d, &commands));
        }
        let recorder = store.recorder();
        let locks = (0..LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect();
        Ok(Registry { devices, commands, store, recorder, locks, dropped: AtomicU64::new(0), connected_at_stop })
    }

    /// The devices that were connected when the previous server process stopped (sorted by
    /// id), as the store recorded it at this start; empty after the first call.
    pub(crate) fn take_connected_at_stop(&self) -> Vec<String> {
        std::mem::take(&mut *self.connected_at_stop.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// The store behind the registry.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The store's batched recorder.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// A known device.
    pub fn get(&self, id: &str) -> Option<Arc<Known>> {
        self.devices.get(id).map(|e| Arc::clone(e.value()))
    }

    /// Known devices and, of them, revoked ones.
    pub fn counts(&self) -> (u64, u64) {
        let revoked = self.devices.iter().filter(|e| e.value().revoked).count();
        (self.devices.len() as u64, revoked as u64)
    }

    /// Every known device matching `matches`, sorted by id.
    pub fn matching(&self, matches: impl Fn(&Known) -> bool) -> Vec<Arc<Known>> {
        let mut v: Vec<Arc<Known>> =
            self.devices.iter().filter(|e| matches(e.value())).map(|e| Arc::clone(e.value())).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Checks a device secret in constant time. `None`: the id is unknown or has no secret.
    pub fn check_secret(&self, id: &str, secret: &str) -> Option<Result<Arc<Known>, ErrorBody>> {
        let known = self.get(id)?;
        if known.revoked {
            return Some(Err(revoked(id)));
        }
        let stored = known.secret_hash?;
        if bool::from(digest(secret).ct_eq(&stored)) {
            Some(Ok(known))
        } else {
            Some(Err(ErrorBody::new(ErrorCode::AuthFailed, format!("wrong secret for device {id}"))))
        }
    }

    /// Registers a new device (committed before it returns), optionally with a secret.
    ///
    /// # Errors
    /// `device_exists` when the id is taken (also by a concurrent registration), `store_unavailable`.
    pub async fn add(
        &self,
        id: &DeviceId,
        secret_hash: Option<[u8; 32]>,
        operator_tags: BTreeMap<String, String>,
    ) -> Result<Arc<Known>, ErrorBody> {
        let new = NewDevice { id: id.to_string(), secret_hash, operator_tags, registered_at: Utc::now() };
        let _order = self.lock(id.as_str()).await;
        let device = self.store.add_device(new).await.map_err(store_error)?;
        let known = Known::new(device, &self.commands);
        self.devices.insert(id.to_string(), Arc::clone(&known));
        Ok(known)
    }

    /// Gives a device registered without a secret (a v1 agent) its own secret now.
    ///
    /// # Errors
    /// `device_not_found`, `store_unavailable`.
    pub async fn set_secret(&self, id: &str, hash: [u8; 32]) -> Result<(), ErrorBody> {
        let _order = self.lock(id).await;
        self.store.set_secret(id, hash).await.map_err(store_error)?;
        self.update(id, |k| k.secret_hash = Some(hash));
        Ok(())
    }

    /// Revokes a device's credential for good.
    ///
    /// # Errors
    /// `device_not_found`, `store_unavailable`.
    pub async fn revoke(&self, id: &str) -> Result<Device, ErrorBody> {
        let _order = self.lock(id).await;
        let device = self.store.revoke_device(id).await.map_err(not_found(id))?;
        self.update(id, |k| {
            k.revoked = true;
            k.secret_hash = None;
        });
        Ok(device)
    }

    /// Forgets a device.
    ///
    /// # Errors
    /// `device_not_found`, `store_unavailable`.
    pub async fn remove(&self, id: &str) -> Result<(), ErrorBody> {
        let _order = self.lock(id).await;
        self.store.remove_device(id).await.map_err(not_found(id))?;
        self.devices.remove(id);
        Ok(())
    }

    /// Sets and removes operator tags.
    ///
    /// # Errors
    /// `device_not_found`, `store_unavailable`.
    pub async fn set_operator_tags(
        &self,
        id: &str,
        set: &BTreeMap<String, String>,
        remove: &[String],
    ) -> Result<Device, ErrorBody> {
        let _order = self.lock(id).await;
        let device = self.store.set_operator_tags(id, set, remove).await.map_err(not_found(id))?;
        // Only the operator tags: the cache may be ahead of the store on what the agent reported.
        self.update(id, |k| k.operator_tags.clone_from(&device.operator_tags));
        Ok(device)
    }

    /// A device connected: its reported tags (for selectors) and declared commands (for the
    /// check of a job's command) change here at once, its inventory in the store with the next
    /// batch.
    pub fn connected(&self, conn: Connection) {
        let changed = self.get(&conn.id).is_some_and(|k| {
            k.first_seen.is_none() || k.reported_tags != conn.reported_tags || *k.commands != *conn.commands
        });
        if changed {
            let commands = self.commands.intern(&conn.commands);
            self.update(&conn.id, |k| {
                k.first_seen.get_or_insert(conn.at);
                k.reported_tags.clone_from(&conn.reported_tags);
                k.commands = commands;
            });
        }
        self.statistic(Record::Connected(conn));
    }

    /// A device's session ended.
    pub fn disconnected(&self, id: &str, at: DateTime<Utc>) {
        self.statistic(Record::Disconnected { id: id.to_owned(), at });
    }

    /// A connected device was heard from at `at` (periodic, coarse).
    pub fn seen(&self, id: &str, at: DateTime<Utc>) {
        self.statistic(Record::Seen { id: id.to_owned(), at });
    }

    /// Hands a statistics record to the store without waiting: a store that is far behind (or
    /// down) must not hold up connections. Dropped records are counted and logged.
    fn statistic(&self, record: Record) {
        if !self.recorder.try_record(record) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_multiple_of(1000) {
                tracing::warn!(dropped = n + 1, "the store is behind; connection statistics were dropped");
            }
        }
    }

    /// Serialises registry changes to one device, so the cache is updated in the order the store
    /// committed them (different devices proceed in parallel).
    async fn lock(&self, id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let mut h = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(id, &mut h);
        let stripe = (std::hash::Hasher::finish(&h) % self.locks.len() as u64) as usize;
        self.locks[stripe].lock().await
    }

    /// Replaces the cached copy of a device with a changed one (nothing when it was removed).
    fn update(&self, id: &str, change: impl FnOnce(&mut Known)) {
        if let Some(mut entry) = self.devices.get_mut(id) {
            let known = entry.value().with(change);
            *entry.value_mut() = known;
        }
    }
}

/// The refusal for a revoked device.
pub fn revoked(id: &str) -> ErrorBody {
    ErrorBody::new(ErrorCode::Revoked, format!("device {id}'s credential was revoked by an operator"))
}

fn not_found(id: &str) -> impl FnOnce(StoreError) -> ErrorBody + '_ {
    move |e| match e {
        StoreError::NotFound(_) => ErrorBody::new(ErrorCode::DeviceNotFound, format!("no device {id} is registered")),
        e => store_error(e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A device last seen at `seen` and last disconnected at `gone` (seconds after an epoch).
    fn device(id: &str, seen: Option<i64>, gone: Option<i64>) -> Device {
        let t = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        Device {
            id: id.to_owned(),
            secret_hash: None,
            revoked: false,
            reported_tags: BTreeMap::new(),
            operator_tags: BTreeMap::new(),
            agent_version: None,
            commands: Vec::new(),
            schemas: BTreeMap::new(),
            registered_at: t(0),
            first_seen: seen.map(t),
            last_seen: seen.map(t),
            last_disconnect: gone.map(t),
            last_remote_addr: None,
            user_agent: None,
            transport: None,
            connections: 0,
            flaps: 0,
            delivered: 0,
            acknowledged: 0,
        }
    }

    #[test]
    fn the_devices_connected_at_the_stop_are_those_whose_connection_never_ended_or_ended_with_it() {
        // A crash: connections the store saw open (seen after their last disconnection, or never
        // disconnected) were open at the stop; ones that ended long before were not.
        let crashed = [
            device("a-open", Some(900), Some(100)),
            device("b-never-disconnected", Some(500), None),
            device("c-gone-earlier", Some(300), Some(300)),
            device("d-never-connected", None, None),
        ];
        assert_eq!(connected_at_stop(&crashed), ["a-open", "b-never-disconnected"]);

        // A graceful stop at 1000 closed every session then (each recorded as a disconnection);
        // a device that left ten minutes before was not connected.
        let mut stopped = [
            device("a", Some(1000), Some(1000)),
            device("b", Some(999), Some(999)),
            device("c", Some(400), Some(400)),
            device("revoked", Some(1000), Some(1000)),
        ];
        stopped[3].revoked = true;
        assert_eq!(connected_at_stop(&stopped), ["a", "b"]);
        assert!(connected_at_stop(&[]).is_empty());
    }
}

//! The device registry: every device the server knows (connected or not), held in memory for
//! selectors and authentication and backed by the [`Store`]. Changes an operator or an
//! enrollment makes are committed to the store first, then applied here; connection statistics
//! go to the store's batched recorder.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use orb_proto::{DeviceId, ErrorBody, ErrorCode, Subject};
use orb_store::{Connection, Device, NewDevice, Record, Recorder, Store, StoreError};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A known device as the registry holds it: the stored record and its effective tags.
#[derive(Debug)]
pub struct Known {
    /// The stored record (inventory as of the last change the registry saw).
    pub device: Device,
    /// Reported tags overridden by operator tags.
    pub tags: BTreeMap<String, String>,
}

impl Known {
    fn new(device: Device) -> Arc<Known> {
        Arc::new(Known { tags: device.tags(), device })
    }
}

impl Subject for Known {
    fn id(&self) -> &str {
        &self.device.id
    }
    fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
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

/// Every known device, in memory, in front of the store.
pub struct Registry {
    devices: DashMap<String, Arc<Known>>,
    store: Arc<dyn Store>,
    recorder: Recorder,
}

impl Registry {
    /// Loads every stored device.
    ///
    /// # Errors
    /// The store's, when it cannot be read.
    pub async fn load(store: Arc<dyn Store>) -> Result<Registry, StoreError> {
        let devices = DashMap::new();
        for d in store.devices().await? {
            devices.insert(d.id.clone(), Known::new(d));
        }
        let recorder = store.recorder();
        Ok(Registry { devices, store, recorder })
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
        let revoked = self.devices.iter().filter(|e| e.value().device.revoked).count();
        (self.devices.len() as u64, revoked as u64)
    }

    /// Every known device matching `matches`, sorted by id.
    pub fn matching(&self, matches: impl Fn(&Known) -> bool) -> Vec<Arc<Known>> {
        let mut v: Vec<Arc<Known>> =
            self.devices.iter().filter(|e| matches(e.value())).map(|e| Arc::clone(e.value())).collect();
        v.sort_by(|a, b| a.device.id.cmp(&b.device.id));
        v
    }

    /// Checks a device secret in constant time. `None`: the id is unknown or has no secret.
    pub fn check_secret(&self, id: &str, secret: &str) -> Option<Result<Arc<Known>, ErrorBody>> {
        let known = self.get(id)?;
        if known.device.revoked {
            return Some(Err(revoked(id)));
        }
        let stored = known.device.secret_hash?;
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
        let device = self.store.add_device(new).await.map_err(store_error)?;
        let known = Known::new(device);
        self.devices.insert(id.to_string(), Arc::clone(&known));
        Ok(known)
    }

    /// Gives a device registered without a secret (a v1 agent) its own secret now.
    ///
    /// # Errors
    /// `device_not_found`, `store_unavailable`.
    pub async fn set_secret(&self, id: &str, hash: [u8; 32]) -> Result<Arc<Known>, ErrorBody> {
        self.store.set_secret(id, hash).await.map_err(store_error)?;
        Ok(self.update(id, |d| d.secret_hash = Some(hash)))
    }

    /// Revokes a device's credential for good.
    ///
    /// # Errors
    /// `device_not_found`, `store_unavailable`.
    pub async fn revoke(&self, id: &str) -> Result<Arc<Known>, ErrorBody> {
        let device = self.store.revoke_device(id).await.map_err(not_found(id))?;
        let known = Known::new(device);
        self.devices.insert(id.to_owned(), Arc::clone(&known));
        Ok(known)
    }

    /// Forgets a device.
    ///
    /// # Errors
    /// `device_not_found`, `store_unavailable`.
    pub async fn remove(&self, id: &str) -> Result<(), ErrorBody> {
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
    ) -> Result<Arc<Known>, ErrorBody> {
        let device = self.store.set_operator_tags(id, set, remove).await.map_err(not_found(id))?;
        let known = Known::new(device);
        self.devices.insert(id.to_owned(), Arc::clone(&known));
        Ok(known)
    }

    /// A device connected: its inventory changes here at once and in the store in the next batch.
    pub async fn connected(&self, conn: Connection) {
        self.update(&conn.id, |d| {
            if d.last_disconnect.is_some_and(|t| (conn.at - t).num_milliseconds() < orb_store::model::FLAP_WINDOW_MS) {
                d.flaps += 1;
            }
            d.connections += 1;
            d.first_seen.get_or_insert(conn.at);
            d.last_seen = Some(conn.at);
            d.last_remote_addr = Some(conn.remote_addr.clone());
            d.user_agent.clone_from(&conn.user_agent);
            d.agent_version.clone_from(&conn.agent_version);
            d.commands.clone_from(&conn.commands);
            d.reported_tags.clone_from(&conn.reported_tags);
            d.transport = Some(conn.transport.clone());
        });
        self.recorder.record(Record::Connected(conn)).await;
    }

    /// A device's session ended.
    pub async fn disconnected(&self, id: &str, at: DateTime<Utc>) {
        self.update(id, |d| {
            d.last_seen = Some(at);
            d.last_disconnect = Some(at);
        });
        self.recorder.record(Record::Disconnected { id: id.to_owned(), at }).await;
    }

    /// A connected device was heard from at `at` (periodic, coarse).
    pub async fn seen(&self, id: &str, at: DateTime<Utc>) {
        self.update(id, |d| d.last_seen = d.last_seen.max(Some(at)));
        self.recorder.record(Record::Seen { id: id.to_owned(), at }).await;
    }

    /// Applies `change` to the cached copy of a device (copy on write); returns the new copy.
    fn update(&self, id: &str, change: impl FnOnce(&mut Device)) -> Arc<Known> {
        match self.devices.get_mut(id) {
            Some(mut entry) => {
                let mut device = entry.value().device.clone();
                change(&mut device);
                let known = Known::new(device);
                *entry.value_mut() = Arc::clone(&known);
                known
            }
            None => {
                // Removed meanwhile: nothing to update; hand back a detached copy.
                let mut device = blank(id);
                change(&mut device);
                Known::new(device)
            }
        }
    }
}

fn blank(id: &str) -> Device {
    Device {
        id: id.to_owned(),
        secret_hash: None,
        revoked: false,
        reported_tags: BTreeMap::new(),
        operator_tags: BTreeMap::new(),
        agent_version: None,
        commands: Vec::new(),
        registered_at: Utc::now(),
        first_seen: None,
        last_seen: None,
        last_disconnect: None,
        last_remote_addr: None,
        user_agent: None,
        transport: None,
        connections: 0,
        flaps: 0,
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

//! The connected sessions: every device session by id (a concurrent map, no global lock on
//! fan-out), with what the broker knows about it ([`DeviceRecord`]) and how to reach it
//! ([`Outbox`]); and a count of operator sessions. A [`Registration`] keeps a device listed
//! while its session lives; a newer session for the same id replaces (and closes) the older.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use orb_io::transport::LinkStats;
use orb_proto::DeviceId;

use crate::close::CloseReason;
use crate::router::delivery::Outbox;

/// What the broker knows about a connected device (immutable for the session's life but for the
/// measured round trip).
#[derive(Debug)]
pub struct DeviceRecord {
    /// Device id.
    pub id: DeviceId,
    /// Connection id.
    pub conn: u64,
    /// Peer address.
    pub remote_addr: SocketAddr,
    /// When the session was established.
    pub connected_since: DateTime<Utc>,
    /// `tcp` or `ws`.
    pub transport: &'static str,
    /// Last measured round-trip time in microseconds (0: not measured yet).
    pub rtt_us: AtomicU64,
    /// Frames and bytes in both directions, and when the last ones passed.
    pub stats: Arc<LinkStats>,
    /// The agent keeps a journal (hello `durable`): a held command whose answer was lost may be
    /// delivered to it again.
    pub durable: bool,
    /// A digest of the agent settings this session was last told (`welcome.config`, then
    /// `config` frames); locked while a push computes and sends, so pushes keep their order.
    pub settings_told: std::sync::Mutex<u64>,
}

impl DeviceRecord {
    /// Last measured round-trip time in milliseconds.
    pub fn rtt_ms(&self) -> Option<f64> {
        match self.rtt_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(us as f64 / 1000.0),
        }
    }
}

/// A connected device session.
#[derive(Clone)]
pub struct DeviceSession {
    /// How to reach it.
    pub outbox: Outbox,
    /// What it is.
    pub record: Arc<DeviceRecord>,
}

/// A device a selector matched: known to the registry, connected or not.
#[derive(Clone)]
pub struct Target {
    /// Device id.
    pub id: DeviceId,
    /// Its live session, when connected.
    pub session: Option<DeviceSession>,
}

/// The connected sessions.
#[derive(Default)]
pub struct Sessions {
    devices: DashMap<DeviceId, DeviceSession>,
    operators: AtomicU64,
    next_conn: AtomicU64,
    /// Told whenever a device session registers (the scheduler waits on it after a start).
    registered: tokio::sync::Notify,
}

impl Sessions {
    /// A fresh connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Registers a device session. An older session with the same id is closed with `replaced`:
    /// never two sessions for one id.
    pub fn register(self: &Arc<Self>, session: DeviceSession) -> Registration {
        let id = session.record.id.clone();
        let conn = session.outbox.conn;
        if let Some(old) = self.devices.insert(id.clone(), session) {
            old.outbox.closer.close(CloseReason::Replaced);
        }
        self.registered.notify_waiters();
        Registration { sessions: Arc::clone(self), id, conn }
    }

    /// Resolves at the next device session registered after it was created (or
    /// [`enabled`](tokio::sync::futures::Notified::enable)).
    pub fn registered(&self) -> tokio::sync::futures::Notified<'_> {
        self.registered.notified()
    }

    /// Counts an operator session until the guard drops.
    pub fn register_operator(self: &Arc<Self>) -> OperatorGuard {
        self.operators.fetch_add(1, Ordering::Relaxed);
        OperatorGuard(Arc::clone(self))
    }

    /// Connected agents and operators.
    pub fn counts(&self) -> (u64, u64) {
        (self.devices.len() as u64, self.operators.load(Ordering::Relaxed))
    }

    /// The session of a connected device.
    pub fn get(&self, id: &str) -> Option<DeviceSession> {
        self.devices.get(id).map(|s| s.clone())
    }

    /// Whether a device is connected.
    pub fn is_connected(&self, id: &str) -> bool {
        self.devices.contains_key(id)
    }

    /// Frames and bytes queued for every connected device, summed (one lock of each queue in
    /// turn; for metrics).
    pub fn queued(&self) -> (u64, u64) {
        self.devices.iter().fold((0, 0), |(frames, bytes), s| {
            let (f, b) = s.value().outbox.tx.depth();
            (frames + f as u64, bytes + b as u64)
        })
    }

    /// Every connected device session.
    pub fn all(&self) -> Vec<DeviceSession> {
        self.devices.iter().map(|e| e.value().clone()).collect()
    }

    /// Closes the session of device `id`, if connected, for `reason`.
    pub fn close(&self, id: &str, reason: CloseReason) {
        if let Some(s) = self.get(id) {
            s.outbox.closer.close(reason);
        }
    }
}

/// Unregisters a device session when dropped, unless a newer session replaced it.
pub struct Registration {
    sessions: Arc<Sessions>,
    id: DeviceId,
    conn: u64,
}

impl Registration {
    /// The registered device.
    pub fn id(&self) -> &DeviceId {
        &self.id
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.sessions.devices.remove_if(&self.id, |_, s| s.outbox.conn == self.conn);
    }
}

/// Counts an operator session while alive.
pub struct OperatorGuard(Arc<Sessions>);

impl Drop for OperatorGuard {
    fn drop(&mut self) {
        self.0.operators.fetch_sub(1, Ordering::Relaxed);
    }
}

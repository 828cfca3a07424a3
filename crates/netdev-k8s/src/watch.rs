//! Keeping the published devices current: a rescan on netlink link, address and route
//!
//! The rest of this documentation is on the public item it governs, below, where users read it.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use k8s_openapi::api::resource::v1::Device;
use netdev::{Changes, NetlinkError};
use parking_lot::Mutex;
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};

use crate::inventory::{Inventory, Scan};

/// How the watcher paces its scans.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct WatchOptions {
    /// Quiet time gathered after a notification before scanning, so a burst costs one scan.
    pub settle: Duration,
    /// Least time between the starts of two scans.
    pub min_interval: Duration,
    /// A full rescan happens at least this often, notifications or not.
    pub resync: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            settle: Duration::from_millis(50),
            min_interval: Duration::from_millis(200),
            resync: Duration::from_secs(60),
        }
    }
}

/// Devices kept published while they are allocated, even when the scan no longer sees them
/// (they were moved into a pod's namespace). Cheap to clone; all clones share the holds.
#[derive(Clone, Default)]
pub struct DeviceHolds {
    inner: Arc<Mutex<HoldState>>,
    changed: Arc<Notify>,
}

#[derive(Default)]
struct HoldState {
    /// Held device names, with the last published form of each (if one is known).
    held: BTreeMap<String, Option<Device>>,
    /// The last scan's published devices, to take a held device's form from.
    last_scan: BTreeMap<String, Device>,
}

impl std::fmt::Debug for DeviceHolds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held: Vec<String> = self.lock().held.keys().cloned().collect();
        f.debug_struct("DeviceHolds").field("held", &held).finish()
    }
}

impl DeviceHolds {
    fn lock(&self) -> parking_lot::MutexGuard<'_, HoldState> {
        self.inner.lock()
    }

    /// Keeps device `name` published as it was last published, until [`Self::release`].
    pub fn hold(&self, name: &str) {
        let mut state = self.lock();
        let form = state.last_scan.get(name).cloned();
        state.held.insert(name.to_owned(), form);
        drop(state);
        self.changed.notify_one();
    }

    /// Keeps `device` published in this form while the scan does not see it (for a driver
    /// restarting with devices already in pods: the form comes from its checkpoint).
    pub fn hold_as(&self, device: Device) {
        self.lock().held.insert(device.name.clone(), Some(device));
        self.changed.notify_one();
    }

    /// Stops holding device `name`: from now on it is published only when the scan sees it.
    pub fn release(&self, name: &str) {
        self.lock().held.remove(name);
        self.changed.notify_one();
    }

    /// Whether device `name` is held.
    pub fn is_held(&self, name: &str) -> bool {
        self.lock().held.contains_key(name)
    }

    /// The published set: the scan's devices, plus held devices it does not see. A held
    /// device the scan sees is refreshed from it.
    fn merge(&self, scan: &Scan) -> Vec<Device> {
        let mut state = self.lock();
        state.last_scan = scan.published.iter().map(|d| (d.name.clone(), d.clone())).collect();
        let HoldState { held, last_scan } = &mut *state;
        let mut out = last_scan.clone();
        for (name, form) in held.iter_mut() {
            match last_scan.get(name) {
                Some(current) => *form = Some(current.clone()),
                None => {
                    if let Some(form) = form {
                        out.insert(name.clone(), form.clone());
                    }
                }
            }
        }
        out.into_values().collect()
    }
}

/// Watches the namespace and keeps a `watch` channel of the devices to publish current.
///
/// Keeping the published devices current: a rescan on netlink link, address and route
/// notifications ([`netdev::Changes`], coalesced and rate-limited), a periodic full resync,
/// and holds that keep an allocated device published while it sits in a pod's namespace.
///
/// Why a full rescan per burst instead of applying each notification: a scan of 1,000
/// interfaces costs about 20 milliseconds, a burst of notifications (a pod start moves a
/// link, adds addresses and routes) becomes one scan, and the result cannot drift from the
/// kernel the way an incrementally patched cache can after a lost notification (a multicast
/// socket drops messages when it overflows).
pub struct InventoryWatcher {
    devices: watch::Receiver<Vec<Device>>,
    holds: DeviceHolds,
    scans: Arc<AtomicU64>,
    rescan: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for InventoryWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Netlink change notifications, reduced to "something changed" (a scan reads it all): a
/// forwarding task, owned here and stopped on drop, wakes `changed`.
struct Subscription {
    changed: Arc<Notify>,
    /// Set when the notification stream ended (the socket failed): subscribe again.
    ended: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Subscribes to link, address and route notifications (see [`netdev::Changes`]).
fn subscribe() -> Result<Subscription, NetlinkError> {
    let mut changes = Changes::subscribe()?;
    let changed = Arc::new(Notify::new());
    let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (notify, end) = (changed.clone(), ended.clone());
    let task = tokio::spawn(async move {
        let error = loop {
            match changes.next().await {
                Ok(()) => notify.notify_one(),
                Err(e) => break e,
            }
        };
        tracing::debug!(%error, "netlink notification socket failed");
        end.store(true, Ordering::Relaxed);
        notify.notify_one();
    });
    Ok(Subscription { changed, ended, task })
}

/// When the scan for a trigger at `triggered` starts: after the settle time (so a burst of
/// notifications costs one scan), and no sooner than the minimum interval after the last
/// scan's start.
fn scan_start(triggered: Instant, last_start: Instant, options: &WatchOptions) -> Instant {
    (triggered + options.settle).max(last_start + options.min_interval)
}

impl InventoryWatcher {
    /// Subscribes to notifications, runs the first scan (its failure is returned), and keeps
    /// scanning in the background.
    pub async fn start(inventory: Inventory, options: WatchOptions) -> Result<Self, NetlinkError> {
        // Subscribed before the first scan, so no change falls between the two.
        let subscription = subscribe()?;
        let first = inventory.scan().await?;
        log_scan(&first, None);
        let holds = DeviceHolds::default();
        let (tx, devices) = watch::channel(holds.merge(&first));
        let scans = Arc::new(AtomicU64::new(1));
        let rescan = Arc::new(Notify::new());
        let task = tokio::spawn(run(
            inventory,
            options,
            first,
            subscription,
            tx,
            holds.clone(),
            scans.clone(),
            rescan.clone(),
        ));
        Ok(Self {
            devices,
            holds,
            scans,
            rescan,
            task,
        })
    }

    /// The devices to publish, updated after every scan or hold change.
    pub fn devices(&self) -> watch::Receiver<Vec<Device>> {
        self.devices.clone()
    }

    /// The holds on allocated devices.
    pub fn holds(&self) -> DeviceHolds {
        self.holds.clone()
    }

    /// How many scans completed.
    pub fn scans(&self) -> u64 {
        self.scans.load(Ordering::Relaxed)
    }

    /// Asks for a scan now (still paced by the minimum interval).
    pub fn rescan(&self) {
        self.rescan.notify_one();
    }
}

/// Logs a scan; what the limits changed is a warning the first time it appears, not on every
/// rescan of the same device.
fn log_scan(scan: &Scan, previous: Option<&Scan>) {
    for (device, action) in &scan.limited {
        if !previous.is_some_and(|p| p.limited.iter().any(|(d, a)| d == device && a == action)) {
            tracing::warn!(%device, "{action}");
        }
    }
    tracing::debug!(
        interfaces = scan.devices.len(),
        published = scan.published.len(),
        left_out = ?scan.left_out,
        "inventory scanned"
    );
}

#[allow(clippy::too_many_arguments)] // one private loop, its state passed once
async fn run(
    inventory: Inventory,
    options: WatchOptions,
    mut last: Scan,
    subscription: Subscription,
    tx: watch::Sender<Vec<Device>>,
    holds: DeviceHolds,
    scans: Arc<AtomicU64>,
    rescan: Arc<Notify>,
) {
    let mut subscription = Some(subscription);
    let mut last_start = Instant::now();
    let mut next_resync = Instant::now() + options.resync;
    loop {
        if subscription.is_none() {
            subscription = subscribe()
                .inspect_err(
                    |e| tracing::error!(error = %e, "cannot subscribe to netlink notifications; relying on resyncs"),
                )
                .ok();
        }
        let mut scan_wanted = false;
        tokio::select! {
            () = next_notification(subscription.as_ref()) => {
                if subscription.as_ref().is_some_and(|s| s.ended.load(Ordering::Relaxed)) {
                    tracing::warn!("netlink notifications stopped; subscribing again and rescanning");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    subscription = None;
                }
                scan_wanted = true;
            }
            () = rescan.notified() => scan_wanted = true,
            () = tokio::time::sleep_until(next_resync) => scan_wanted = true,
            () = holds.changed.notified() => {}
        }
        if scan_wanted {
            // Coalesce: wait for the burst to settle and keep the pace; the scan then covers
            // every notification that came meanwhile, so their wake-up is taken.
            tokio::time::sleep_until(scan_start(Instant::now(), last_start, &options)).await;
            if let Some(s) = subscription.as_ref() {
                let _ = futures::FutureExt::now_or_never(s.changed.notified());
            }
            last_start = Instant::now();
            next_resync = last_start + options.resync;
            match inventory.scan().await {
                Ok(scan) => {
                    log_scan(&scan, Some(&last));
                    if !scan.consistent {
                        // A storm of changes outlasted the dump retries: look again shortly.
                        rescan.notify_one();
                    }
                    last = scan;
                    scans.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => tracing::warn!(error = %e, "inventory scan failed; keeping the last result"),
            }
        }
        let published = holds.merge(&last);
        tx.send_if_modified(|current| {
            let changed = *current != published;
            if changed {
                *current = published;
            }
            changed
        });
    }
}

async fn next_notification(subscription: Option<&Subscription>) {
    match subscription {
        Some(s) => s.changed.notified().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The pacing rule on instants built by hand: no clock is waited on and nothing sleeps.
    #[test]
    fn a_scan_waits_for_the_settle_time_and_the_minimum_interval() {
        let options = WatchOptions::default();
        let t0 = Instant::now();
        // Long after the last scan: only the settle time.
        assert_eq!(scan_start(t0 + ms(1000), t0, &options), t0 + ms(1050));
        // Right after a scan: the minimum interval decides.
        assert_eq!(scan_start(t0 + ms(10), t0, &options), t0 + ms(200));
        // Where the two meet.
        assert_eq!(scan_start(t0 + ms(150), t0, &options), t0 + ms(200));
        assert_eq!(scan_start(t0 + ms(151), t0, &options), t0 + ms(201));
    }
}

//! Device health for the kubelet (KEP-4680): a driver pushes the state of its devices into a
//! [`HealthReporter`]; every kubelet stream on the plugin socket gets it.
//!
//! The protocol, as the kubelets of 1.36 and 1.37 speak it (`pkg/kubelet/cm/dra`):
//! - The kubelet opens `NodeWatchResources`, a server stream, on the plugin's socket. 1.36 opens
//!   `v1alpha1.DRAResourceHealth` on every plugin; 1.37 opens the newest version the plugin
//!   announces at registration (`v1.DRAResourceHealth`, else `v1alpha1`) and none if it announces
//!   neither. Both versions are served, over one feed. A stream that fails is reopened every 5 s;
//!   `Unimplemented` stops a 1.37 kubelet from reopening.
//! - Each message is a list of devices with a state (Healthy, Unhealthy, Unknown) and a message.
//!   The kubelet stamps each entry with the time it *received* it: an entry not received again
//!   within its `health_check_timeout_seconds` (0: the kubelet's 30 s) reads as Unknown.
//! - When a stream ends, the kubelet forgets every state of the driver: its devices read as
//!   Unknown until the next stream delivers them.
//! - A change of state or message (not a re-send) updates the status of the pods using the
//!   device: `status.containerStatuses[].allocatedResourcesStatus`.
//!
//! What this module does with that:
//! - A stream sends the current report at once, then every new report whose devices differ
//!   from the last one sent, and re-sends the last report every [`HealthOptions::resend`] (a
//!   third of the timeout by default) so that it never goes stale at the kubelet.
//! - It re-sends only a report the driver published within the timeout: a monitor that hangs
//!   stops vouching for its devices, and they decay to Unknown at the kubelet rather than being
//!   kept Healthy by this module. A driver publishes at least once per timeout, changed or not.
//! - When the driver drops its [`HealthReporter`] (its monitor ended), every stream ends with
//!   `Unavailable`: the kubelet reads the devices as Unknown at once, and retries.
//! - Without a feed ([`PluginOptions::health`](crate::PluginOptions::health) `None`) the health
//!   services are not announced, and a kubelet that opens one anyway (1.36) gets
//!   `Unimplemented`.

use std::{
    pin::Pin,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::{Stream, StreamExt, stream};
use tokio::{
    sync::watch,
    time::{Instant, sleep_until},
};
use tonic::{Request, Response, Status};

use crate::proto::health;

/// The health services a plugin with a feed announces at registration, newest first.
pub const HEALTH_SERVICES: [&str; 2] = ["v1.DRAResourceHealth", "v1alpha1.DRAResourceHealth"];

/// A device's state, as the kubelet shows it in the pod's status.
///
/// Exhaustive on purpose: every caller must handle each status, so a new one should
/// fail their build rather than fall into a wildcard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthStatus {
    /// The driver cannot tell (also what the kubelet shows for a stale or unreported device).
    Unknown,
    /// The device works.
    Healthy,
    /// The device has a problem the message names.
    Unhealthy,
}

/// The state of one published device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceHealth {
    /// The ResourceSlice pool the device is published in.
    pub pool: String,
    /// The device's name in that pool.
    pub device: String,
    /// Its state.
    pub status: HealthStatus,
    /// Why, in words a user can act on (the kubelet cuts it at 1,024 characters).
    pub message: String,
}

/// How the feed's streams pace themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthOptions {
    /// Sent with every device as `health_check_timeout_seconds` (whole seconds, at least 1): how
    /// long the kubelet trusts a state it received. Also how old a report may be and still be
    /// re-sent.
    pub timeout: Duration,
    /// How often a stream re-sends the current report; well under `timeout`.
    pub resend: Duration,
}

impl Default for HealthOptions {
    /// The kubelet's default window (30 s), re-sent every 10 s.
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            resend: Duration::from_secs(10),
        }
    }
}

/// One publication: every device the driver vouches for, and when.
#[derive(Debug)]
struct Report {
    devices: Vec<DeviceHealth>,
    published: Instant,
    published_at: SystemTime,
}

/// The driver's end: publishes the state of all its devices. Dropping it ends every kubelet
/// stream (the kubelet then reads the devices as Unknown).
#[derive(Debug)]
pub struct HealthReporter {
    tx: watch::Sender<Option<Arc<Report>>>,
}

/// The plugin's end, given in [`PluginOptions::health`](crate::PluginOptions::health); cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct HealthFeed {
    rx: watch::Receiver<Option<Arc<Report>>>,
    options: HealthOptions,
}

/// A feed and its reporter. Until the first [`HealthReporter::publish`], a kubelet stream
/// waits and sends nothing.
///
/// `options.timeout` is at least 1 s (the wire's unit), and `options.resend` is kept between
/// 100 ms (no flood) and half the timeout (a report re-sent before the kubelet drops it).
pub fn health_channel(mut options: HealthOptions) -> (HealthReporter, HealthFeed) {
    options.timeout = options.timeout.max(Duration::from_secs(1));
    options.resend = options.resend.clamp(Duration::from_millis(100), options.timeout / 2);
    let (tx, rx) = watch::channel(None);
    (HealthReporter { tx }, HealthFeed { rx, options })
}

impl HealthReporter {
    /// Replaces the report with `devices`: every device the driver vouches for now. A device left
    /// out keeps its last state at the kubelet until that is stale, then reads as Unknown.
    pub fn publish(&self, devices: Vec<DeviceHealth>) {
        self.tx.send_replace(Some(Arc::new(Report {
            devices,
            published: Instant::now(),
            published_at: SystemTime::now(),
        })));
    }

    /// How many streams are open (every feed clone counts: exact only where the test holds
    /// none but its streams').
    #[cfg(test)]
    fn streams(&self) -> usize {
        self.tx.receiver_count().saturating_sub(1)
    }
}

/// What a stream sends: the devices and the time the driver published them.
#[derive(Debug)]
struct Sent {
    report: Arc<Report>,
}

/// A stream's state between two messages.
struct Watching {
    rx: watch::Receiver<Option<Arc<Report>>>,
    options: HealthOptions,
    last: Option<Arc<Report>>,
    next_resend: Instant,
    stale_warned: bool,
    version: &'static str,
}

impl Drop for Watching {
    fn drop(&mut self) {
        tracing::info!(version = self.version, "the kubelet's device health stream closed");
    }
}

/// Whether `report` says something `last` did not (a re-send does not count).
fn differs(last: Option<&Arc<Report>>, report: &Arc<Report>) -> bool {
    last.is_none_or(|last| last.devices != report.devices)
}

impl HealthFeed {
    /// The devices of the last publication (what a kubelet stream sends now); `None` before
    /// the first.
    pub fn current(&self) -> Option<Vec<DeviceHealth>> {
        self.rx.borrow().as_ref().map(|r| r.devices.clone())
    }

    /// The stream of one kubelet connection, version-neutral.
    fn stream(&self, version: &'static str) -> impl Stream<Item = Result<Sent, Status>> + Send + 'static {
        tracing::info!(version, "the kubelet opened the device health stream");
        let mut rx = self.rx.clone();
        // The first report goes out at once, whatever this receiver saw before.
        rx.mark_changed();
        let state = Watching {
            rx,
            options: self.options,
            last: None,
            next_resend: Instant::now() + self.options.resend,
            stale_warned: false,
            version,
        };
        stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            loop {
                tokio::select! {
                    changed = state.rx.changed() => {
                        if changed.is_err() {
                            tracing::warn!(version = state.version, "the driver's health monitor ended; the health stream ends (the kubelet reads the devices as Unknown)");
                            return Some((Err(Status::unavailable("the driver's device health monitor is not running")), None));
                        }
                        let Some(report) = state.rx.borrow_and_update().clone() else { continue };
                        if differs(state.last.as_ref(), &report) {
                            state.last = Some(report.clone());
                            state.next_resend = Instant::now() + state.options.resend;
                            state.stale_warned = false;
                            return Some((Ok(Sent { report }), Some(state)));
                        }
                    }
                    () = sleep_until(state.next_resend) => {
                        state.next_resend = Instant::now() + state.options.resend;
                        let Some(report) = state.rx.borrow().clone() else { continue };
                        if report.published.elapsed() < state.options.timeout {
                            state.last = Some(report.clone());
                            return Some((Ok(Sent { report }), Some(state)));
                        }
                        // The kubelet stops trusting it: the next publication is news, even unchanged.
                        state.last = None;
                        if !state.stale_warned {
                            state.stale_warned = true;
                            tracing::warn!(
                                version = state.version,
                                age_s = report.published.elapsed().as_secs(),
                                "the driver has not published device health within the timeout; not re-sending it (the kubelet will read the devices as Unknown)"
                            );
                        }
                    }
                }
            }
        })
    }
}

/// The wire's seconds: whole, at least 1 (0 would mean the kubelet's default instead).
fn timeout_seconds(timeout: Duration) -> i64 {
    i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX).max(1)
}

/// Seconds since the epoch; 0 (the protocol's "unknown") for a clock before it.
fn unix_seconds(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The DRA health service of every version, over one feed.
#[derive(Clone)]
pub(crate) struct HealthService {
    pub(crate) feed: HealthFeed,
}

/// Implements one version's service; the versions differ only in their package.
macro_rules! health_service {
    ($version:ident) => {
        #[tonic::async_trait]
        impl health::$version::dra_resource_health_server::DraResourceHealth for HealthService {
            type NodeWatchResourcesStream =
                Pin<Box<dyn Stream<Item = Result<health::$version::NodeWatchResourcesResponse, Status>> + Send>>;

            async fn node_watch_resources(
                &self,
                _: Request<health::$version::NodeWatchResourcesRequest>,
            ) -> Result<Response<Self::NodeWatchResourcesStream>, Status> {
                use health::$version as v;
                if self.feed.rx.has_changed().is_err() {
                    return Err(Status::unavailable(
                        "the driver's device health monitor is not running",
                    ));
                }
                let timeout = timeout_seconds(self.feed.options.timeout);
                let stream = self.feed.stream(stringify!($version)).map(move |sent| {
                    sent.map(|Sent { report }| {
                        let at = unix_seconds(report.published_at);
                        v::NodeWatchResourcesResponse {
                            devices: report
                                .devices
                                .iter()
                                .map(|d| v::DeviceHealth {
                                    device: Some(v::DeviceIdentifier {
                                        pool_name: d.pool.clone(),
                                        device_name: d.device.clone(),
                                    }),
                                    health: match d.status {
                                        HealthStatus::Unknown => v::HealthStatus::Unknown,
                                        HealthStatus::Healthy => v::HealthStatus::Healthy,
                                        HealthStatus::Unhealthy => v::HealthStatus::Unhealthy,
                                    } as i32,
                                    last_updated_time: at,
                                    health_check_timeout_seconds: timeout,
                                    message: d.message.clone(),
                                })
                                .collect(),
                        }
                    })
                });
                Ok(Response::new(Box::pin(stream)))
            }
        }
    };
}

health_service!(v1);
health_service!(v1alpha1);

#[cfg(test)]
mod tests {
    use super::*;

    fn device(name: &str, status: HealthStatus) -> DeviceHealth {
        DeviceHealth {
            pool: "node-a".into(),
            device: name.into(),
            status,
            message: format!("{name} says so"),
        }
    }

    fn statuses(sent: &Sent) -> Vec<(String, HealthStatus)> {
        sent.report
            .devices
            .iter()
            .map(|d| (d.device.clone(), d.status))
            .collect()
    }

    /// The next message, or `None` when none comes within `within` (paused time advances).
    async fn next_within(
        stream: &mut (impl Stream<Item = Result<Sent, Status>> + Unpin),
        within: Duration,
    ) -> Option<Result<Sent, Status>> {
        tokio::time::timeout(within, stream.next()).await.ok().flatten()
    }

    /// The next message, which must come within `within` and be a report.
    async fn sent_within(stream: &mut (impl Stream<Item = Result<Sent, Status>> + Unpin), within: Duration) -> Sent {
        next_within(stream, within)
            .await
            .unwrap_or_else(|| panic!("nothing sent within {within:?}"))
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_sends_the_current_report_then_each_change() {
        let (reporter, feed) = health_channel(HealthOptions::default());
        reporter.publish(vec![device("eth1", HealthStatus::Healthy)]);
        let mut stream = Box::pin(feed.stream("v1"));
        let first = sent_within(&mut stream, Duration::from_millis(1)).await;
        assert_eq!(statuses(&first), [("eth1".into(), HealthStatus::Healthy)]);
        reporter.publish(vec![device("eth1", HealthStatus::Unhealthy)]);
        let second = sent_within(&mut stream, Duration::from_millis(1)).await;
        assert_eq!(statuses(&second), [("eth1".into(), HealthStatus::Unhealthy)]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unchanged_report_waits_for_the_resend() {
        let options = HealthOptions::default();
        let (reporter, feed) = health_channel(options);
        reporter.publish(vec![device("eth1", HealthStatus::Healthy)]);
        let mut stream = Box::pin(feed.stream("v1"));
        sent_within(&mut stream, Duration::from_millis(1)).await;
        // The monitor publishes the same states every second: nothing new to send.
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(1)).await;
            reporter.publish(vec![device("eth1", HealthStatus::Healthy)]);
            assert!(next_within(&mut stream, Duration::from_millis(1)).await.is_none());
        }
        // The re-send comes 10 s after the last message, inside the kubelet's 30 s window.
        let start = Instant::now();
        let resent = sent_within(&mut stream, Duration::from_secs(10)).await;
        assert_eq!(statuses(&resent), [("eth1".into(), HealthStatus::Healthy)]);
        assert!(start.elapsed() <= Duration::from_secs(5), "{:?}", start.elapsed());
        // And every 10 s after that, while the monitor keeps publishing.
        for _ in 0..3 {
            let before = Instant::now();
            tokio::time::advance(Duration::from_secs(4)).await;
            reporter.publish(vec![device("eth1", HealthStatus::Healthy)]);
            let again = sent_within(&mut stream, Duration::from_secs(10)).await;
            assert_eq!(before.elapsed(), options.resend);
            assert_eq!(statuses(&again), [("eth1".into(), HealthStatus::Healthy)]);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_report_older_than_the_timeout_is_not_resent() {
        let options = HealthOptions::default();
        let (reporter, feed) = health_channel(options);
        reporter.publish(vec![device("eth1", HealthStatus::Healthy)]);
        let mut stream = Box::pin(feed.stream("v1"));
        sent_within(&mut stream, Duration::from_millis(1)).await;
        // A monitor that hangs: re-sent while fresh (at 10 s and 20 s), then silence.
        assert!(next_within(&mut stream, Duration::from_secs(11)).await.is_some());
        assert!(next_within(&mut stream, Duration::from_secs(11)).await.is_some());
        assert!(next_within(&mut stream, Duration::from_secs(120)).await.is_none());
        // It recovers: its next publication is sent at once.
        reporter.publish(vec![device("eth1", HealthStatus::Healthy)]);
        let back = sent_within(&mut stream, Duration::from_secs(10)).await;
        assert_eq!(statuses(&back), [("eth1".into(), HealthStatus::Healthy)]);
    }

    #[tokio::test(start_paused = true)]
    async fn several_streams_each_get_every_change() {
        let (reporter, feed) = health_channel(HealthOptions::default());
        let mut a = Box::pin(feed.stream("v1"));
        let mut b = Box::pin(feed.stream("v1alpha1"));
        // Nothing before the first publication.
        assert!(next_within(&mut a, Duration::from_millis(1)).await.is_none());
        assert_eq!(reporter.streams(), 2);
        reporter.publish(vec![
            device("eth1", HealthStatus::Healthy),
            device("eth2", HealthStatus::Unknown),
        ]);
        for s in [&mut a, &mut b] {
            let sent = next_within(s, Duration::from_millis(1)).await.unwrap().unwrap();
            assert_eq!(sent.report.devices.len(), 2);
        }
        reporter.publish(vec![
            device("eth1", HealthStatus::Unhealthy),
            device("eth2", HealthStatus::Unknown),
        ]);
        for s in [&mut a, &mut b] {
            let sent = next_within(s, Duration::from_millis(1)).await.unwrap().unwrap();
            assert_eq!(sent.report.devices[0].status, HealthStatus::Unhealthy);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_reopened_stream_starts_from_the_current_report() {
        let (reporter, feed) = health_channel(HealthOptions::default());
        reporter.publish(vec![device("eth1", HealthStatus::Healthy)]);
        let mut first = Box::pin(feed.stream("v1"));
        sent_within(&mut first, Duration::from_millis(1)).await;
        drop(first);
        assert_eq!(reporter.streams(), 0);
        reporter.publish(vec![device("eth1", HealthStatus::Unhealthy)]);
        let mut again = Box::pin(feed.stream("v1"));
        let sent = sent_within(&mut again, Duration::from_millis(1)).await;
        assert_eq!(statuses(&sent), [("eth1".into(), HealthStatus::Unhealthy)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_reporter_ends_every_stream_with_unavailable() {
        let (reporter, feed) = health_channel(HealthOptions::default());
        reporter.publish(vec![device("eth1", HealthStatus::Healthy)]);
        let mut stream = Box::pin(feed.stream("v1"));
        sent_within(&mut stream, Duration::from_millis(1)).await;
        drop(reporter);
        let error = next_within(&mut stream, Duration::from_millis(1))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(error.code(), tonic::Code::Unavailable);
        assert!(stream.next().await.is_none(), "the stream ended");
    }

    #[test]
    fn pacing_is_kept_inside_the_window() {
        let paced = |timeout, resend| health_channel(HealthOptions { timeout, resend }).1.options;
        let zero = paced(Duration::ZERO, Duration::ZERO);
        assert_eq!(
            (zero.timeout, zero.resend),
            (Duration::from_secs(1), Duration::from_millis(100))
        );
        let late = paced(Duration::from_secs(30), Duration::from_secs(60));
        assert_eq!(late.resend, Duration::from_secs(15));
        assert_eq!(
            paced(Duration::from_secs(30), Duration::from_secs(10)),
            HealthOptions::default()
        );
    }

    #[test]
    fn wire_numbers() {
        assert_eq!(timeout_seconds(Duration::from_millis(300)), 1);
        assert_eq!(timeout_seconds(Duration::from_secs(30)), 30);
        assert_eq!(unix_seconds(UNIX_EPOCH + Duration::from_secs(7)), 7);
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(7)), 0);
    }
}

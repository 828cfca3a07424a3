//! The agent's Prometheus metrics (`prometheus-client`): what a node operator watches.
//!
//! The rest of this documentation is on the public item it governs, below, where users read it.

use std::time::Duration;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// `result="ok"` or `result="error"`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// A hook's name and outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookOutcome {
    /// `RunPodSandbox`, `CreateContainer`, …
    pub hook: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// A hook's name.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Hook {
    /// `RunPodSandbox`, `CreateContainer`, …
    pub hook: &'static str,
}

fn latency() -> Histogram {
    // 0.5 ms to ~4 s: a warm Prepare is a few ms, a hook carries a ~20 ms namespace move.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0005, 2.0, 14,
    ))
}

/// Every metric of the agent. Cheap to clone: clones share the values.
///
/// The agent's Prometheus metrics (`prometheus-client`): what a node operator watches.
///
/// Counters and latency histograms for Prepare, Unprepare and each NRI hook (by result), attach
/// and detach failures, devices published, slice writes, claim status writes (by result) and
/// NRI reconnects. [`Metrics::register`] adds them to the binary's registry; an agent started
/// without one counts into metrics nobody scrapes.
#[derive(Debug, Clone)]
pub struct Metrics {
    prepares: Family<Outcome, Counter>,
    prepare_seconds: Histogram,
    unprepares: Family<Outcome, Counter>,
    unprepare_seconds: Histogram,
    hooks: Family<HookOutcome, Counter>,
    hook_seconds: Family<Hook, Histogram>,
    attach_failures: Counter,
    detach_failures: Counter,
    devices_published: Gauge,
    slice_writes: Counter,
    status_writes: Family<Outcome, Counter>,
    nri_reconnects: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            prepares: Family::default(),
            prepare_seconds: latency(),
            unprepares: Family::default(),
            unprepare_seconds: latency(),
            hooks: Family::default(),
            hook_seconds: Family::new_with_constructor(latency),
            attach_failures: Counter::default(),
            detach_failures: Counter::default(),
            devices_published: Gauge::default(),
            slice_writes: Counter::default(),
            status_writes: Family::default(),
            nri_reconnects: Counter::default(),
        }
    }
}

fn result(ok: bool) -> &'static str {
    if ok { "ok" } else { "error" }
}

impl Metrics {
    /// New metrics, registered in `registry` (under a `netdra_` prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("netdra");
        r.register(
            "prepare",
            "NodePrepareResources calls per claim, by result",
            m.prepares.clone(),
        );
        r.register(
            "prepare_duration_seconds",
            "Time to prepare one claim",
            m.prepare_seconds.clone(),
        );
        r.register(
            "unprepare",
            "NodeUnprepareResources calls per claim, by result",
            m.unprepares.clone(),
        );
        r.register(
            "unprepare_duration_seconds",
            "Time to unprepare one claim",
            m.unprepare_seconds.clone(),
        );
        r.register("nri_hook", "NRI hook calls, by hook and result", m.hooks.clone());
        r.register(
            "nri_hook_duration_seconds",
            "Time spent in each NRI hook",
            m.hook_seconds.clone(),
        );
        r.register(
            "attach_failures",
            "Pods whose interfaces could not be attached",
            m.attach_failures.clone(),
        );
        r.register(
            "detach_failures",
            "Interfaces that could not be returned to the host",
            m.detach_failures.clone(),
        );
        r.register(
            "devices_published",
            "Devices in this node's ResourceSlices",
            m.devices_published.clone(),
        );
        r.register(
            "slice_writes",
            "ResourceSlice creates, updates and deletes",
            m.slice_writes.clone(),
        );
        r.register(
            "claim_status_writes",
            "Claim status writes, by result",
            m.status_writes.clone(),
        );
        r.register(
            "nri_reconnects",
            "Reconnections to the container runtime",
            m.nri_reconnects.clone(),
        );
        m
    }

    pub(crate) fn prepared(&self, ok: bool, took: Duration) {
        self.prepares.get_or_create(&Outcome { result: result(ok) }).inc();
        self.prepare_seconds.observe(took.as_secs_f64());
    }

    pub(crate) fn unprepared(&self, ok: bool, took: Duration) {
        self.unprepares.get_or_create(&Outcome { result: result(ok) }).inc();
        self.unprepare_seconds.observe(took.as_secs_f64());
    }

    pub(crate) fn hook(&self, hook: &'static str, ok: bool, took: Duration) {
        self.hooks
            .get_or_create(&HookOutcome {
                hook,
                result: result(ok),
            })
            .inc();
        self.hook_seconds
            .get_or_create(&Hook { hook })
            .observe(took.as_secs_f64());
    }

    pub(crate) fn attach_failed(&self) {
        self.attach_failures.inc();
    }

    pub(crate) fn detach_failed(&self) {
        self.detach_failures.inc();
    }

    pub(crate) fn published(&self, devices: usize, writes_so_far: u64) {
        self.devices_published.set(i64::try_from(devices).unwrap_or(i64::MAX));
        let counted = self.slice_writes.get();
        if writes_so_far > counted {
            self.slice_writes.inc_by(writes_so_far - counted);
        }
    }

    pub(crate) fn status_written(&self, ok: bool) {
        self.status_writes.get_or_create(&Outcome { result: result(ok) }).inc();
    }

    pub(crate) fn reconnected(&self) {
        self.nri_reconnects.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_exposed_with_its_prefix() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.prepared(true, Duration::from_millis(2));
        m.hook("RunPodSandbox", false, Duration::from_millis(30));
        m.published(4, 2);
        m.published(4, 5);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "netdra_prepare_total{result=\"ok\"} 1",
            "netdra_prepare_duration_seconds_count 1",
            "netdra_nri_hook_total{hook=\"RunPodSandbox\",result=\"error\"} 1",
            "netdra_nri_hook_duration_seconds_count{hook=\"RunPodSandbox\"} 1",
            "netdra_devices_published 4",
            "netdra_slice_writes_total 5",
            "netdra_attach_failures_total 0",
            "netdra_nri_reconnects_total 0",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}

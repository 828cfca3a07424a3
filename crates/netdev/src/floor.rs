//! The attach benchmark's floor, not an API (behind the `bench-floor` feature, which only the
//! benchmarks' dev-dependencies turn on): the netlink messages of an attach or a detach
//! sent back to back, with no validation, namespace check, recording, lookup or rollback. The
//! interface indexes are given, as a bare implementation that knew them would use them. What
//! the real calls cost above this is netdra's own overhead.
//!
//! The kernel's time for a namespace move varies by milliseconds from one move to the next
//! (RCU grace periods, other work under the rtnl lock), more than netdra's whole overhead, so
//! the real attach and detach also add the time of their own moves to a per-thread total that
//! [`take_move_time`] reads: total minus moves is their own work, measured in the same call.
//! A process-wide total ([`total_move_time`]) serves callers whose attach runs on another
//! thread (an agent's blocking pool).

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};

use crate::attach::{LinkChange, add_address, add_route, restoring, set_link, single};
use crate::config::ValidConfig;
use crate::record::HostInterface;
use crate::rtnl::{Rtnl, RtnlError};
use crate::rules::route_in_table;

thread_local! {
    static MOVE_TIME: std::cell::Cell<Duration> = const { std::cell::Cell::new(Duration::ZERO) };
}

/// Nanoseconds of every namespace move of this process so far.
static TOTAL_MOVE_NANOS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Adds the duration of one namespace move made on this thread.
pub(crate) fn record_move(took: Duration) {
    MOVE_TIME.with(|total| total.set(total.get() + took));
    let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
    TOTAL_MOVE_NANOS.fetch_add(nanos, std::sync::atomic::Ordering::Relaxed);
}

/// The time every namespace move of this process took so far, on any thread.
pub fn total_move_time() -> Duration {
    Duration::from_nanos(TOTAL_MOVE_NANOS.load(std::sync::atomic::Ordering::Relaxed))
}

/// The time this thread's attaches and detaches spent in namespace moves since the last call.
pub fn take_move_time() -> Duration {
    MOVE_TIME.with(|total| total.replace(Duration::ZERO))
}

/// One interface for [`attach`]: its index on the host and its configuration.
pub type FloorRequest<'a> = (u32, &'a ValidConfig);

fn fail(e: RtnlError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Moves and configures each interface into the namespace at `netns`; returns the time the
/// namespace moves alone took.
pub fn attach(netns: &Path, requests: &[FloorRequest<'_>]) -> std::io::Result<Duration> {
    let fd: OwnedFd = File::open(netns)?.into();
    let mut pod = Rtnl::from_socket(crate::netns::socket_inside(&fd)?);
    let mut host = Rtnl::new().map_err(fail)?;
    let mut moving = Duration::ZERO;
    let mut batch = Vec::new();
    for (index, config) in requests {
        let start = Instant::now();
        single(host.execute(vec![(
            set_link(&LinkChange {
                index: *index,
                netns_fd: Some(fd.as_raw_fd()),
                name: config.name.as_deref(),
                mtu: config.mtu,
                mac: config.hardware_address,
                up: config.up.then_some(true),
            }),
            0,
        )]))
        .map_err(fail)?;
        moving += start.elapsed();
        for address in &config.addresses {
            batch.push((add_address(*index, *address, None, 0), NLM_F_CREATE | NLM_F_EXCL));
        }
        for route in &config.routes {
            batch.push((add_route(*index, &route_in_table(route)), NLM_F_CREATE | NLM_F_EXCL));
        }
    }
    for answer in pod.execute(batch).map_err(fail)? {
        answer.map_err(|e| fail(e.into()))?;
    }
    Ok(moving)
}

/// Moves the interface at `pod_index` in `netns` back to the calling thread's namespace with
/// its recorded name, MTU, MAC and state, and adds its addresses and routes back; returns the
/// time the namespace move alone took.
pub fn detach(netns: &Path, pod_index: u32, original: &HostInterface) -> std::io::Result<Duration> {
    let fd: OwnedFd = File::open(netns)?.into();
    let host_fd = File::open("/proc/thread-self/ns/net")?;
    let mut pod = Rtnl::from_socket(crate::netns::socket_inside(&fd)?);
    let mut host = Rtnl::new().map_err(fail)?;
    let start = Instant::now();
    single(pod.execute(vec![(
        set_link(&restoring(pod_index, Some(host_fd.as_raw_fd()), original)),
        0,
    )]))
    .map_err(fail)?;
    let moving = start.elapsed();
    let mut batch = Vec::new();
    for address in &original.addresses {
        batch.push((
            add_address(original.index, address.address, address.broadcast, address.scope),
            NLM_F_CREATE | NLM_F_EXCL,
        ));
    }
    for route in &original.routes {
        batch.push((add_route(original.index, route), NLM_F_CREATE | NLM_F_EXCL));
    }
    for answer in host.execute(batch).map_err(fail)? {
        answer.map_err(|e| fail(e.into()))?;
    }
    Ok(moving)
}

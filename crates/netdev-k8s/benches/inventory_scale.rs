//! Inventory at scale: 1,000 veth interfaces on this host (their peers in a private namespace).
//!
//! Prints: the inventory scan time (netlink dumps + sysfs + rendering + CEL filter; target
//! median under 200 ms) beside `ip -details address show` listing the same interfaces (one
//! process, one dump of links and addresses, no sysfs), the number of slices the 1,000 devices
//! are published as (target at most 8), the writes of an unchanged re-scan (target 0), and
//! resident memory. Needs root; under `CI=true` its absence is a failure.
#![allow(missing_docs, clippy::unwrap_used)]

#[path = "../../netdev/tests/common/mod.rs"]
mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use kubeletplugin::{PoolSpec, SlicePublisher};
use netdev::Sysfs;
use netdev_k8s::{DeviceFilter, Inventory, InventoryConfig};
use peak_alloc::PeakAlloc;
use testkit::{FakeApiServer, RESOURCE_SLICES, percentile};

#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

const INTERFACES: usize = 1000;
const RUNS: usize = 21;
const DRIVER: &str = "netdra.bench";

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    if !privileged("the inventory benchmark") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench());
}

async fn bench() {
    let rss_start = status_kib("VmRSS:");
    let p = prefix("nb");
    let mut created = Created::default();
    let ns = format!("{p}ns");
    created.netns(&ns);
    let start = Instant::now();
    let mut batch = String::new();
    for i in 0..INTERFACES {
        let name = format!("{p}x{i}");
        batch.push_str(&format!("link add {name} type veth peer name p{i} netns {ns}\n"));
        created.record_link(&name, Some(&ns));
    }
    ip_batch(&batch);
    println!("created {INTERFACES} veth interfaces in {:.0} ms", ms(start.elapsed()));

    let inventory = Inventory::new(InventoryConfig::new(
        DRIVER,
        Sysfs::default(),
        DeviceFilter::parse(Some(&format!(
            r#"device.attributes["{DRIVER}"].ifName.startsWith("{p}x")"#
        )))
        .unwrap(),
    ));

    // Warm-up, then the measured runs.
    let heap_before = ALLOCATOR.current_usage();
    ALLOCATOR.reset_peak_usage();
    let scan = inventory.scan().await.unwrap();
    let heap_scan = ALLOCATOR.current_usage().saturating_sub(heap_before);
    let heap_peak = ALLOCATOR.peak_usage().saturating_sub(heap_before);
    assert_eq!(scan.published.len(), INTERFACES, "every bench interface is published");
    drop(scan);
    let mut ours = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = Instant::now();
        let scan = inventory.scan().await.unwrap();
        ours.push(t.elapsed());
        assert_eq!(scan.published.len(), INTERFACES);
    }
    ours.sort();
    let rss_scanned = status_kib("VmRSS:");

    // Baseline: iproute2 listing the same links and addresses (a process per run).
    let mut baseline = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = Instant::now();
        let status = Command::new("ip")
            .args(["-details", "address", "show"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        baseline.push(t.elapsed());
        assert!(status.success());
    }
    baseline.sort();

    // Publishing: slices for 1,000 devices, then an unchanged re-scan.
    let api = FakeApiServer::start().await.unwrap();
    let pool = PoolSpec::new(DRIVER, "bench-node");
    let publisher = SlicePublisher::start(api.client(), pool).await;
    let first = publisher
        .publish(&inventory.scan().await.unwrap().published)
        .await
        .unwrap();
    let slices = api.objects(&RESOURCE_SLICES).len();
    let writes_before = api.write_count();
    let rescan = publisher
        .publish(&inventory.scan().await.unwrap().published)
        .await
        .unwrap();
    let unchanged_writes = api.write_count() - writes_before;
    assert_eq!(rescan.writes, 0);
    assert_eq!(unchanged_writes, 0, "an unchanged re-scan writes nothing");
    assert!(slices <= 8, "{slices} slices for {INTERFACES} devices");

    // Scans while links come and go in bursts: the kernel flags dumps that a change
    // interrupted, and the scan repeats them, so no scan sees a link twice or a half-updated
    // table.
    let churn_ns = ns.clone();
    let churn_prefix = format!("{p}c");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_churn = stop.clone();
    let churn = std::thread::spawn(move || {
        let mut rounds = 0;
        while !stop_churn.load(std::sync::atomic::Ordering::Relaxed) {
            let mut batch = String::new();
            for i in 0..20 {
                batch.push_str(&format!(
                    "link add {churn_prefix}{i} type veth peer name c{i} netns {churn_ns}\n"
                ));
            }
            for i in 0..20 {
                batch.push_str(&format!("link del {churn_prefix}{i}\n"));
            }
            ip_batch(&batch);
            rounds += 1;
            // Bursts with pauses, like pods starting and stopping, not a solid wall of changes.
            std::thread::sleep(Duration::from_millis(100));
        }
        rounds
    });
    let mut retried = 0;
    let mut inconsistent = 0;
    let churn_scans = 40;
    for _ in 0..churn_scans {
        let scan = inventory.scan().await.unwrap();
        retried += scan.retried_dumps;
        inconsistent += usize::from(!scan.consistent);
        let names: std::collections::BTreeSet<&str> = scan.devices.iter().map(|d| d.if_name.as_str()).collect();
        assert_eq!(names.len(), scan.devices.len(), "a scan saw an interface twice");
        assert!(
            (INTERFACES..=INTERFACES + 10).contains(&scan.published.len()),
            "{} published under churn",
            scan.published.len()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let churn_rounds = churn.join().unwrap();

    let rss = status_kib("VmRSS:");
    let hwm = status_kib("VmHWM:");
    let mib = |kib: u64| kib as f64 / 1024.0;
    let (o50, o90, omax) = (percentile(&ours, 0.5), percentile(&ours, 0.9), ours[ours.len() - 1]);
    let (b50, b90) = (percentile(&baseline, 0.5), percentile(&baseline, 0.9));
    println!("inventory of {INTERFACES} veth interfaces, {RUNS} runs each:");
    println!(
        "  netdra scan:                 median {:7.2} ms  p90 {:7.2} ms  max {:7.2} ms  (target median < 200 ms)",
        ms(o50),
        ms(o90),
        ms(omax)
    );
    println!(
        "  baseline `ip -d addr show`:  median {:7.2} ms  p90 {:7.2} ms",
        ms(b50),
        ms(b90)
    );
    println!("  ratio netdra/baseline:       median {:.2}x", ms(o50) / ms(b50));
    println!(
        "  slices: {slices} (target <= 8); first publish {} writes; unchanged re-scan {unchanged_writes} writes (target 0)",
        first.writes
    );
    println!(
        "  under churn ({churn_rounds} bursts of 10 veth pairs added and deleted, 100 ms apart): {churn_scans} scans, {retried} netlink dumps repeated after NLM_F_DUMP_INTR, {inconsistent} scans still inconsistent after the retries, no duplicate or lost bench interface"
    );
    println!(
        "  heap: one scan's result (1,000 devices with their published form) holds {:.1} MiB; {:.1} MiB at the scan's peak",
        heap_scan as f64 / (1024.0 * 1024.0),
        heap_peak as f64 / (1024.0 * 1024.0)
    );
    println!(
        "  resident memory: {:.1} MiB at start, {:.1} MiB after {} scans, {:.1} MiB with the publisher and the fake API server holding the slices (peak {:.1} MiB)",
        mib(rss_start),
        mib(rss_scanned),
        RUNS + 1,
        mib(rss),
        mib(hwm)
    );
    let start = Instant::now();
    drop(created);
    println!(
        "removed the namespace and its {INTERFACES} pairs in {:.0} ms",
        ms(start.elapsed())
    );
    let left: Vec<String> = host_links().into_iter().filter(|l| l.starts_with(&p)).collect();
    assert!(left.is_empty(), "links left behind: {left:?}");
}

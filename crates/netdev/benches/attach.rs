//! Attach and detach against their baselines, side by side in one run, each on fresh veths and
//! namespaces, the variants taking turns round by round:
//!
//! - **netdra**: validation, namespace check, recording, the attach (or detach) itself;
//! - **iproute2**: `ip link set DEV netns NS name net1 mtu 1400 address MAC`, then one
//!   `ip -n NS -batch -` for the address, link up and route (detach: the move back, then one
//!   `ip -batch -` restoring the host address and route);
//! - **floor**: the same netlink messages netdra sends, back to back, with nothing else.
//!
//! Scenarios: one device with `{net1, MTU 1400, MAC, 10.10.0.2/24, 10.20.0.0/16 via
//! 10.10.0.1}`; four devices into one namespace; detach of one device. Each host veth carries
//! an address and a route, as a secondary NIC would, so recording and restoring have work to
//! do. Targets: median netdra − floor ≤ 1 ms, netdra / floor ≤ 1.10, netdra < iproute2. Needs
//! root; under `CI=true` its absence is a failure.
#![allow(missing_docs, clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use netdev::{AttachRequest, InterfaceConfig, Netns, RestoreRecord, RouteConfig, ValidConfig};
use testkit::percentile;

const ROUNDS: usize = 100;
/// Rounds prepared at once.
const CHUNK: usize = 10;
/// The pause before each sample.
const SETTLE: Duration = Duration::from_millis(100);
/// Host veths created so far in this run: numbers their subnets.
static VETHS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The links and namespace of one round, removed when dropped (namespace first).
struct Round {
    ns: String,
    hosts: Vec<String>,
}

impl Round {
    /// A namespace and `count` host veths (peers up on the host), each with an address and a
    /// route in its own subnet.
    fn new(p: &str, tag: char, round: usize, count: usize) -> Self {
        let ns = format!("{p}{tag}{round}ns");
        let hosts: Vec<String> = (0..count).map(|k| format!("{p}{tag}{round}h{k}")).collect();
        let mut batch = format!("netns add {ns}\n");
        for (k, host) in hosts.iter().enumerate() {
            let peer = format!("{p}{tag}{round}p{k}");
            // Every veth of the run gets its own /30 and its own /32 route, in the benchmarking
            // range 198.18.0.0/15, since all rounds exist at once.
            let n = VETHS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (a, b) = ((n * 4) / 256, (n * 4) % 256);
            batch.push_str(&format!(
                "link add {host} type veth peer name {peer}\nlink set {peer} up\nlink set {host} mtu 1450 up\n\
                 addr add 198.18.{a}.{}/30 dev {host}\nroute add 198.19.{}.{}/32 via 198.18.{a}.{} dev {host}\n",
                b + 1,
                n / 256,
                n % 256,
                b + 2
            ));
        }
        // The guard exists before the links do, so a failed batch is cleaned up too.
        let round = Self { ns, hosts };
        ip_batch(&batch);
        round
    }

    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.ns)
    }

    fn index(&self, k: usize) -> u32 {
        std::fs::read_to_string(format!("/sys/class/net/{}/ifindex", self.hosts[k]))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Round {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        // Namespaces are dismantled asynchronously, under the rtnl lock the next round needs:
        // wait until the veths are gone, then remove whatever is still on the host.
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.hosts.iter().any(|h| link_exists(h)) && Instant::now() < deadline {
            let batch: String = self
                .hosts
                .iter()
                .filter(|h| link_exists(h))
                .map(|h| format!("link del {h}\n"))
                .collect();
            if !batch.is_empty() {
                let _ = std::panic::catch_unwind(|| ip_batch(&batch));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

fn config(k: usize) -> InterfaceConfig {
    InterfaceConfig {
        name: Some(format!("net{}", k + 1)),
        mtu: Some(1400),
        hardware_address: Some(format!("02:aa:bb:cc:dd:{:02x}", k + 1)),
        addresses: vec![format!("10.10.{k}.2/24")],
        routes: vec![RouteConfig {
            destination: format!("10.2{k}.0.0/16"),
            gateway: Some(format!("10.10.{k}.1")),
            ..RouteConfig::default()
        }],
        ..InterfaceConfig::default()
    }
}

/// Runs `ip ARGS` with `stdin`, asserting success.
fn ip_with_input(args: &[&str], stdin: &str) {
    let mut child = Command::new("ip")
        .args(args)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn netdra_attach(round: &Round) {
    let configs: Vec<ValidConfig> = (0..round.hosts.len()).map(|k| config(k).validate().unwrap()).collect();
    let requests: Vec<AttachRequest<'_>> = round
        .hosts
        .iter()
        .zip(&configs)
        .map(|(device, config)| AttachRequest::new(device, config))
        .collect();
    let netns = Netns::open(round.path()).unwrap();
    netdev::attach_all(&netns, &requests).unwrap();
}

fn iproute2_attach(round: &Round) {
    let mut batch = String::new();
    for (k, host) in round.hosts.iter().enumerate() {
        let name = format!("net{}", k + 1);
        let mac = format!("02:aa:bb:cc:dd:{:02x}", k + 1);
        ip(&[
            "link", "set", "dev", host, "netns", &round.ns, "name", &name, "mtu", "1400", "address", &mac,
        ]);
        batch.push_str(&format!(
            "addr add 10.10.{k}.2/24 dev {name}\nlink set {name} up\nroute add 10.2{k}.0.0/16 via 10.10.{k}.1 dev {name}\n"
        ));
    }
    ip_with_input(&["-n", &round.ns, "-batch", "-"], &batch);
}

/// Times `variant` on a prepared round; for the floor, also the time spent in the moves.
fn attach_sample(round: &Round, variant: char) -> (Duration, Option<Duration>) {
    match variant {
        'a' => {
            netdev::floor::take_move_time();
            let start = Instant::now();
            netdra_attach(round);
            (start.elapsed(), Some(netdev::floor::take_move_time()))
        }
        'b' => {
            let start = Instant::now();
            iproute2_attach(round);
            (start.elapsed(), None)
        }
        _ => {
            let count = round.hosts.len();
            let configs: Vec<ValidConfig> = (0..count).map(|k| config(k).validate().unwrap()).collect();
            let indexes: Vec<u32> = (0..count).map(|k| round.index(k)).collect();
            let requests: Vec<(u32, &ValidConfig)> = indexes.into_iter().zip(&configs).collect();
            let path = round.path();
            let start = Instant::now();
            let moving = netdev::floor::attach(path.as_ref(), &requests).unwrap();
            (start.elapsed(), Some(moving))
        }
    }
}

/// A round whose device netdra attached (unmeasured), ready to be detached.
fn attached(round: Round) -> (Round, RestoreRecord) {
    let netns = Netns::open(round.path()).unwrap();
    let record = netdev::attach(&netns, &round.hosts[0], &config(0).validate().unwrap()).unwrap();
    (round, record)
}

fn detach_sample(round: &Round, record: &RestoreRecord, variant: char) -> (Duration, Option<Duration>) {
    let host = &record.host;
    let result = match variant {
        'a' => {
            netdev::floor::take_move_time();
            let start = Instant::now();
            netdev::detach(record).unwrap();
            (start.elapsed(), Some(netdev::floor::take_move_time()))
        }
        'b' => {
            let pid = std::process::id().to_string();
            let mac = host.mac.unwrap().to_string();
            let mtu = host.mtu.to_string();
            let start = Instant::now();
            ip(&[
                "-n", &round.ns, "link", "set", "dev", "net1", "netns", &pid, "name", &host.name, "mtu", &mtu,
                "address", &mac, "up",
            ]);
            let route = &host.routes[0];
            ip_with_input(
                &["-batch", "-"],
                &format!(
                    "addr add {0} dev {3}\nroute add {1} via {2} dev {3}\n",
                    host.addresses[0].address,
                    route.destination,
                    route.gateway.unwrap(),
                    host.name
                ),
            );
            (start.elapsed(), None)
        }
        _ => {
            let path = round.path();
            let start = Instant::now();
            let moving = netdev::floor::detach(path.as_ref(), host.index, host).unwrap();
            (start.elapsed(), Some(moving))
        }
    };
    assert!(link_exists(&host.name), "{} back on the host", host.name);
    result
}

/// How many routes the host's tables hold (all tables, both families), as `ip` counts them.
fn routes_on_host() -> String {
    let count = |family: &str| {
        let out = Command::new("ip")
            .args([family, "route", "show", "table", "all"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    format!("{} IPv4 and {} IPv6 routes", count("-4"), count("-6"))
}

struct Column {
    samples: Vec<Duration>,
}

impl Column {
    fn new() -> Self {
        Self {
            samples: Vec::with_capacity(ROUNDS),
        }
    }
    fn sorted(&self) -> Vec<Duration> {
        let mut s = self.samples.clone();
        s.sort();
        s
    }
    fn median(&self) -> Duration {
        percentile(&self.sorted(), 0.5)
    }
    fn p99(&self) -> Duration {
        percentile(&self.sorted(), 0.99)
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// Each sample less its namespace moves: the work of the call itself.
fn own_work(total: &Column, moves: &Column) -> Column {
    Column {
        samples: total
            .samples
            .iter()
            .zip(&moves.samples)
            .map(|(t, m)| t.saturating_sub(*m))
            .collect(),
    }
}

fn report(title: &str, [netdra, iproute2, floor]: [&Column; 3], [netdra_moves, floor_moves]: [&Column; 2]) {
    println!(
        "\n{title} ({} rounds each, fresh veths and namespaces)",
        netdra.samples.len()
    );
    println!("  {:<10} {:>10} {:>10}", "", "median", "p99");
    for (name, column) in [("netdra", netdra), ("iproute2", iproute2), ("floor", floor)] {
        println!(
            "  {name:<10} {:>8.3}ms {:>8.3}ms",
            ms(column.median()),
            ms(column.p99())
        );
    }
    let (a, b, c) = (ms(netdra.median()), ms(iproute2.median()), ms(floor.median()));
    let (a99, b99, c99) = (ms(netdra.p99()), ms(iproute2.p99()), ms(floor.p99()));
    println!(
        "  netdra - floor: median {:.3} ms (target <= 1 ms: {}), p99 {:.3} ms",
        a - c,
        verdict(a - c <= 1.0),
        a99 - c99
    );
    println!(
        "  netdra / floor: median {:.3} (target <= 1.10: {}), p99 {:.3}",
        a / c,
        verdict(a / c <= 1.10),
        a99 / c99
    );
    println!(
        "  netdra / iproute2: median {:.3} (target < 1: {}), p99 {:.3}",
        a / b,
        verdict(a < b),
        a99 / b99
    );
    println!(
        "  namespace moves alone: median {:.3} ms, {:.0}% of the floor",
        ms(floor_moves.median()),
        100.0 * ms(floor_moves.median()) / c
    );
    // The moves vary by more than the overhead; without them, the comparison is exact.
    let (own_a, own_c) = (own_work(netdra, netdra_moves), own_work(floor, floor_moves));
    println!(
        "  outside the moves: netdra median {:.3} ms p99 {:.3} ms, floor median {:.3} ms p99 {:.3} ms: \
         netdra's overhead {:.3} ms (target <= 1 ms: {})",
        ms(own_a.median()),
        ms(own_a.p99()),
        ms(own_c.median()),
        ms(own_c.p99()),
        ms(own_a.median()) - ms(own_c.median()),
        verdict(ms(own_a.median()) - ms(own_c.median()) <= 1.0)
    );
}

fn main() {
    if !privileged("the attach benchmark") {
        return;
    }
    let p = prefix("ab");
    let before = host_links();

    for (title, count, detaching) in [
        (
            "attach of 1 device (move, rename, MTU, MAC, 1 address, 1 route, up)",
            1,
            false,
        ),
        ("attach of 4 devices into one namespace", 4, false),
        (
            "detach of 1 device (move back, name, MTU, MAC, up, host address and route)",
            1,
            true,
        ),
    ] {
        // The rounds are prepared a chunk at a time, before the chunk's first measurement, and
        // removed after its last: creating and dismantling namespaces keeps the kernel busy
        // (under the rtnl lock the moves need) well after the commands return. A chunk also
        // keeps the host's routing table near a busy node's (a route per pod interface).
        let tag = if detaching {
            'd'
        } else if count == 4 {
            'f'
        } else {
            'o'
        };
        let (mut netdra, mut iproute2, mut floor) = (Column::new(), Column::new(), Column::new());
        let (mut netdra_moves, mut moves) = (Column::new(), Column::new());
        let mut table_size = None;
        for chunk in (0..=ROUNDS).collect::<Vec<_>>().chunks(CHUNK) {
            let prepared: Vec<[(Round, Option<RestoreRecord>); 3]> = chunk
                .iter()
                .map(|i| {
                    ['a', 'b', 'c'].map(|variant| {
                        let round = Round::new(&p, tag, i * 3 + (variant as usize - 'a' as usize), count);
                        if detaching {
                            let (round, record) = attached(round);
                            (round, Some(record))
                        } else {
                            (round, None)
                        }
                    })
                })
                .collect();
            table_size.get_or_insert_with(routes_on_host);
            std::thread::sleep(Duration::from_millis(500));
            for (i, rounds) in chunk.iter().zip(&prepared) {
                // The variants take turns, in a rotating order, so drift hits each alike.
                let order = [[0, 1, 2], [1, 2, 0], [2, 0, 1]][i % 3];
                for v in order {
                    let (round, record) = &rounds[v];
                    let variant = ['a', 'b', 'c'][v];
                    // Each move leaves the kernel work to finish under the rtnl lock (link
                    // events, IPv6 address generation): let it settle, so no sample pays for
                    // the last one.
                    std::thread::sleep(SETTLE);
                    let (took, moving) = match record {
                        Some(record) => detach_sample(round, record, variant),
                        None => attach_sample(round, variant),
                    };
                    // Round 0 is a warm-up: page cache, first socket, first process.
                    if *i == 0 {
                        continue;
                    }
                    match variant {
                        'a' => {
                            netdra.samples.push(took);
                            netdra_moves.samples.push(moving.unwrap());
                        }
                        'b' => iproute2.samples.push(took),
                        _ => {
                            floor.samples.push(took);
                            moves.samples.push(moving.unwrap());
                        }
                    }
                }
            }
            drop(prepared);
            std::thread::sleep(Duration::from_millis(300));
        }
        report(title, [&netdra, &iproute2, &floor], [&netdra_moves, &moves]);
        println!(
            "  host routing table during the measurements: {}",
            table_size.unwrap_or_default()
        );
    }

    let after = host_links();
    assert_eq!(
        before,
        after,
        "the benchmark left links behind: {:?}",
        after.difference(&before)
    );
}

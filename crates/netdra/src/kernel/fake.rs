//! A kernel in memory: links that live on the host or in namespaces, namespaces that die (a
//! veth dies with its namespace, a physical NIC comes back to the host as `devN`) or outlive
//! their path (held by a bind mount), and a node-wide lock that serialises moves for a set
//! time, as the kernel's rtnl lock does. Every call is recorded; the next call of an operation
//! can be made to fail, stall (until the test releases it) or panic, before or after it acts.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use netdev::{
    AttachError, DetachError, DetachOutcome, Detached, HostAddress, HostInterface, LinkState, Location, NetnsError,
    OperState, RestoreRecord, Rollback, RtnlError,
};
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

use super::{AttachSpec, Kernel, KernelError};
use crate::lifecycle::NetnsRef;

/// The fake's operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Op {
    Open,
    Record,
    Attach,
    Detach,
    Locate,
}

/// What the next call of an operation does instead of (or around) its work.
#[derive(Clone)]
pub(crate) enum Fault {
    /// Fails before changing anything.
    Fail,
    /// For an attach: moves, then fails; the rollback works or not.
    FailAfterMove { rolled_back: bool },
    /// Waits at the gate before acting (`before`) or after acting (`!before`).
    Stall { gate: Gate, before: bool },
    /// Panics before acting.
    Panic,
}

/// A point where a stalled call waits until the test opens it; the test can wait until a
/// call has reached it.
#[derive(Clone)]
pub(crate) struct Gate {
    open: Arc<Notify>,
    reached: watch::Sender<usize>,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            open: Arc::new(Notify::new()),
            reached: watch::channel(0).0,
        }
    }
}

impl Gate {
    async fn wait(&self) {
        self.reached.send_modify(|n| *n += 1);
        self.open.notified().await;
    }

    /// Waits until a call stands at the gate.
    pub(crate) async fn reached(&self) {
        let mut rx = self.reached.subscribe();
        let _ = rx.wait_for(|n| *n > 0).await;
    }

    /// Lets the waiting call go on.
    pub(crate) fn open(&self) {
        self.open.notify_one();
    }
}

/// One link.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Link {
    /// Its name where it is now.
    pub name: String,
    /// Its MTU.
    pub mtu: u32,
    /// Its addresses (CIDR).
    pub addresses: Vec<String>,
    /// `None` on the host, else the inode of its namespace.
    pub netns: Option<u64>,
    /// A physical NIC survives its namespace (back on the host as `devN`); a veth does not.
    pub physical: bool,
    /// Whether it has a carrier (a veth's peer up, a cable in).
    pub carrier: bool,
}

#[derive(Default)]
struct World {
    /// Links by identity (their original host name).
    links: BTreeMap<String, Link>,
    /// Namespaces alive, by inode, with the path that names them (if still mounted).
    namespaces: BTreeMap<u64, Option<PathBuf>>,
    next_inode: u64,
    faults: BTreeMap<Op, Vec<Fault>>,
    calls: Vec<(Op, String)>,
    /// For each sweep of subinterfaces, how many calls had been made before it.
    sweeps: Vec<usize>,
}

/// The fake kernel; clones share one world.
#[derive(Clone)]
pub(crate) struct FakeKernel {
    world: Arc<Mutex<World>>,
    /// The node-wide lock a namespace move holds, as the kernel's rtnl lock does.
    rtnl: Arc<tokio::sync::Mutex<()>>,
    move_time: Duration,
}

/// An open namespace of the fake.
#[derive(Debug)]
pub(crate) struct FakeNetns {
    inode: u64,
}

impl FakeKernel {
    /// A kernel whose namespace moves take `move_time` each, one at a time.
    pub(crate) fn new(move_time: Duration) -> Self {
        Self {
            world: Arc::new(Mutex::new(World {
                next_inode: 4026532000,
                ..World::default()
            })),
            rtnl: Arc::default(),
            move_time,
        }
    }

    /// Adds a host interface.
    pub(crate) fn add_link(&self, name: &str, physical: bool) {
        self.world.lock().links.insert(
            name.into(),
            Link {
                name: name.into(),
                mtu: 1500,
                addresses: vec![format!("192.0.2.{}/24", name.len())],
                netns: None,
                physical,
                carrier: true,
            },
        );
    }

    /// The link loses (or regains) its carrier, wherever it is.
    pub(crate) fn set_carrier(&self, id: &str, carrier: bool) {
        if let Some(link) = self.world.lock().links.get_mut(id) {
            link.carrier = carrier;
        }
    }

    /// Creates a namespace at `path`; its inode.
    pub(crate) fn add_netns(&self, path: &str) -> u64 {
        let mut world = self.world.lock();
        world.next_inode += 1;
        let inode = world.next_inode;
        world.namespaces.insert(inode, Some(path.into()));
        inode
    }

    /// The path is unmounted, but something else holds the namespace alive.
    pub(crate) fn unmount_held(&self, path: &str) {
        let mut world = self.world.lock();
        for p in world.namespaces.values_mut() {
            if p.as_deref() == Some(Path::new(path)) {
                *p = None;
            }
        }
    }

    /// The namespace dies: its veths with it, its physical NICs back to the host as `devN`.
    pub(crate) fn kill_netns(&self, path: &str) {
        let mut world = self.world.lock();
        let Some(inode) = world
            .namespaces
            .iter()
            .find(|(_, p)| p.as_deref() == Some(Path::new(path)))
            .map(|(i, _)| *i)
        else {
            return;
        };
        world.namespaces.remove(&inode);
        let mut n = 0;
        world.links.retain(|_, link| link.netns != Some(inode) || link.physical);
        for link in world.links.values_mut().filter(|l| l.netns == Some(inode)) {
            n += 1;
            link.netns = None;
            link.name = format!("dev{n}");
        }
    }

    /// Makes the next call of `op` do `fault`.
    pub(crate) fn inject(&self, op: Op, fault: Fault) {
        self.world.lock().faults.entry(op).or_default().push(fault);
    }

    /// Where link `id` is, if it exists.
    pub(crate) fn link(&self, id: &str) -> Option<Link> {
        self.world.lock().links.get(id).cloned()
    }

    /// The path of namespace `inode` when it is alive and mounted.
    pub(crate) fn netns_alive(&self, inode: u64) -> bool {
        self.world.lock().namespaces.contains_key(&inode)
    }

    /// Every call so far: the operation and what it was about.
    pub(crate) fn calls(&self) -> Vec<(Op, String)> {
        self.world.lock().calls.clone()
    }

    /// For each sweep of subinterfaces so far, how many calls came before it.
    pub(crate) fn sweeps(&self) -> Vec<usize> {
        self.world.lock().sweeps.clone()
    }

    fn take_fault(&self, op: Op, about: String) -> Option<Fault> {
        let mut world = self.world.lock();
        world.calls.push((op, about));
        let queue = world.faults.get_mut(&op)?;
        (!queue.is_empty()).then(|| queue.remove(0))
    }

    /// A namespace move: the node-wide lock for `move_time`, then `change`.
    async fn do_move(&self, change: impl FnOnce(&mut World)) {
        let _rtnl = self.rtnl.lock().await;
        tokio::time::sleep(self.move_time).await;
        change(&mut self.world.lock());
    }

    async fn before(&self, op: Op, about: String) -> Result<Option<Fault>, KernelError> {
        match self.take_fault(op, about.clone()) {
            Some(Fault::Fail) => Err(injected(op, &about)),
            Some(Fault::Panic) => panic!("injected panic in {op:?} of {about}"),
            Some(Fault::Stall { gate, before: true }) => {
                gate.wait().await;
                Ok(None)
            }
            other => Ok(other),
        }
    }
}

fn injected(op: Op, about: &str) -> KernelError {
    let source = RtnlError::Decode(format!("injected failure of {op:?}"));
    match op {
        Op::Open => KernelError::Netns(NetnsError::Missing { path: about.into() }),
        Op::Record | Op::Attach => KernelError::Attach(AttachError::Read {
            device: about.into(),
            step: "injected".into(),
            source: source.into(),
        }),
        Op::Detach => KernelError::Detach(DetachError::Stranded {
            device: about.into(),
            name: about.into(),
            netns: PathBuf::from("/injected"),
            source,
        }),
        Op::Locate => KernelError::Lost {
            operation: "locate",
            message: "injected".into(),
        },
    }
}

fn host_record(link: &Link, id: &str, netns: &NetnsRef, spec: &AttachSpec) -> RestoreRecord {
    let host: HostInterface = HostInterface {
        name: id.into(),
        index: 7,
        mtu: link.mtu,
        mac: None,
        permanent_mac: None,
        pci_address: None,
        alias: None,
        up: true,
        addresses: link
            .addresses
            .iter()
            .map(|a| HostAddress {
                address: a.parse().expect("the fake's addresses are CIDRs"),
                broadcast: None,
                scope: 0,
            })
            .collect(),
        routes: vec![],
        settings: Default::default(),
    };
    RestoreRecord {
        host,
        netns: netns.path.clone(),
        netns_inode: Some(netns.inode),
        name_in_pod: spec.config.name.clone().unwrap_or_else(|| id.into()),
        mac_in_pod: None,
        subinterface: None,
    }
}

impl Kernel for FakeKernel {
    type Netns = FakeNetns;

    async fn open(&self, path: &Path) -> Result<(Arc<FakeNetns>, NetnsRef), KernelError> {
        self.before(Op::Open, path.display().to_string()).await?;
        let netns = self.identify(path)?;
        Ok((Arc::new(FakeNetns { inode: netns.inode }), netns))
    }

    fn identify(&self, path: &Path) -> Result<NetnsRef, KernelError> {
        let world = self.world.lock();
        let inode = world
            .namespaces
            .iter()
            .find(|(_, p)| p.as_deref() == Some(path))
            .map(|(i, _)| *i)
            .ok_or_else(|| NetnsError::Missing { path: path.into() })?;
        Ok(NetnsRef {
            path: path.into(),
            inode,
        })
    }

    async fn record(&self, netns: NetnsRef, specs: Arc<Vec<AttachSpec>>) -> Result<Vec<RestoreRecord>, KernelError> {
        let about = specs.iter().map(|s| s.device.as_str()).collect::<Vec<_>>().join(",");
        self.before(Op::Record, about).await?;
        let world = self.world.lock();
        specs
            .iter()
            .map(|spec| match world.links.get(&spec.device) {
                Some(link) if link.netns.is_none() && link.name == spec.device => {
                    Ok(host_record(link, &spec.device, &netns, spec))
                }
                _ => Err(KernelError::Attach(AttachError::NoSuchDevice {
                    device: spec.device.clone(),
                })),
            })
            .collect()
    }

    async fn attach(
        &self,
        netns: Arc<FakeNetns>,
        specs: Arc<Vec<AttachSpec>>,
        records: Vec<RestoreRecord>,
    ) -> Result<(), KernelError> {
        let about = specs.iter().map(|s| s.device.as_str()).collect::<Vec<_>>().join(",");
        let fault = self.before(Op::Attach, about.clone()).await?;
        if !self.netns_alive(netns.inode) {
            return Err(KernelError::Netns(NetnsError::Missing {
                path: records.first().map(|r| r.netns.clone()).unwrap_or_default(),
            }));
        }
        for (spec, record) in specs.iter().zip(&records) {
            let inode = netns.inode;
            let name = record.name_in_pod.clone();
            let mtu = spec.config.mtu;
            let addresses: Vec<String> = spec.config.addresses.iter().map(ToString::to_string).collect();
            self.do_move(|world| {
                if let Some(link) = world.links.get_mut(&spec.device) {
                    link.netns = Some(inode);
                    link.name = name;
                    if let Some(mtu) = mtu {
                        link.mtu = mtu;
                    }
                    if !addresses.is_empty() {
                        link.addresses = addresses;
                    }
                }
            })
            .await;
        }
        match fault {
            Some(Fault::FailAfterMove { rolled_back }) => {
                if rolled_back {
                    for record in &records {
                        let restored = record.clone();
                        self.do_move(move |world| restore(world, &restored)).await;
                    }
                }
                Err(KernelError::Attach(AttachError::Failed {
                    device: about,
                    step: "injected failure after the move".into(),
                    source: RtnlError::Decode("injected".into()).into(),
                    rollback: if rolled_back {
                        Rollback::Restored
                    } else {
                        Rollback::Incomplete(vec!["injected: left in the pod".into()])
                    },
                }))
            }
            Some(Fault::Stall { gate, before: false }) => {
                gate.wait().await;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn detach(&self, record: RestoreRecord) -> Result<Detached, KernelError> {
        let id = record.host.name.clone();
        let fault = self.before(Op::Detach, id.clone()).await?;
        let location = self.where_is(&record);
        let outcome = match location {
            Location::InPod { .. } => {
                let restored = record.clone();
                self.do_move(move |world| restore(world, &restored)).await;
                DetachOutcome::Returned
            }
            Location::OnHost { name } => {
                restore(&mut self.world.lock(), &record);
                DetachOutcome::FoundOnHost { name }
            }
            Location::Gone => DetachOutcome::Vanished,
        };
        if let Some(Fault::Stall { gate, before: false }) = fault {
            gate.wait().await;
        }
        Ok(Detached::new(outcome, vec![]))
    }

    async fn locate(&self, record: RestoreRecord) -> Result<Location, KernelError> {
        self.before(Op::Locate, record.host.name.clone()).await?;
        Ok(self.where_is(&record))
    }

    // Health reads are not recorded as calls: a monitor polls, and the tests of the lifecycle
    // assert the sequence of the calls that change something.
    async fn host_links(&self) -> Result<Vec<LinkState>, KernelError> {
        let world = self.world.lock();
        Ok(world
            .links
            .values()
            .filter(|l| l.netns.is_none())
            .map(state_of)
            .collect())
    }

    async fn pod_link(&self, record: RestoreRecord) -> Result<Option<LinkState>, KernelError> {
        let in_pod = matches!(self.where_is(&record), Location::InPod { .. });
        Ok(in_pod
            .then(|| self.world.lock().links.get(&record.host.name).map(state_of))
            .flatten())
    }

    // Not a call: the fake makes no subinterfaces; when it runs is what the tests look at.
    async fn sweep_subinterfaces(&self) -> Result<Vec<String>, KernelError> {
        let mut world = self.world.lock();
        let before = world.calls.len();
        world.sweeps.push(before);
        Ok(Vec::new())
    }
}

/// What netlink would say of a fake link: up, with its carrier.
fn state_of(link: &Link) -> LinkState {
    LinkState {
        name: link.name.clone(),
        admin_up: true,
        carrier: link.carrier,
        oper: if link.carrier {
            OperState::Up
        } else {
            OperState::LowerLayerDown
        },
    }
}

impl FakeKernel {
    fn where_is(&self, record: &RestoreRecord) -> Location {
        let world = self.world.lock();
        match world.links.get(&record.host.name) {
            None => Location::Gone,
            Some(link) => match link.netns {
                None => Location::OnHost {
                    name: link.name.clone(),
                },
                Some(inode) if Some(inode) == record.netns_inode && world.namespaces.contains_key(&inode) => {
                    Location::InPod {
                        name: link.name.clone(),
                    }
                }
                // In a namespace the record does not name: not this attach's to return.
                Some(_) => Location::Gone,
            },
        }
    }
}

fn restore(world: &mut World, record: &RestoreRecord) {
    if let Some(link) = world.links.get_mut(&record.host.name) {
        link.netns = None;
        link.name = record.host.name.clone();
        link.mtu = record.host.mtu;
        link.addresses = record.host.addresses.iter().map(|a| a.address.to_string()).collect();
    }
}

//! A claim's life on the node, as a state machine: the phases, the events, and one pure
//! function from (phase, event) to the next phase and the effects the shell runs.
//!
//! ```text
//!            Attach              AttachDone(ok)             Stop
//! Prepared ─────────▶ Attaching ───────────────▶ Attached ─────────▶ Detaching
//!    ▲  ▲                 │ AttachDone(err, rolled back)               │   │
//!    │  └─────────────────┘                                            │   │ DetachDone(some out)
//!    │              Retarget (pod B)               DetachDone(all home)│   ▼
//!    └──────── Detached ◀──────────────────────────────────────────────┘ Stranded ──Stop──▶ Detaching
//!                 │ Release (Unprepare)
//!                 ▼
//!             Released  (kept until its status entries are gone)
//! ```
//!
//! Rules that the table test holds the code to:
//! - **Write-ahead**: every step that precedes kernel work (`Attach`, `Detach`) returns the
//!   [`Effect::Journal`] first: the shell makes the new phase durable before the kernel acts,
//!   so a crash at any point leaves a journal that names every interface that may have moved.
//! - **No record is ever dropped**: restore records leave the state only when the interface is
//!   home or gone ([`Phase::Detached`]); a stop during an attach changes nothing here (the
//!   shell keeps it with the running operation, which returns the interfaces when the attach
//!   has ended); an attach that failed without a full rollback, or that was interrupted, is
//!   returned like any attached claim.
//! - **One pod at a time**: a claim attached (or attaching, or being returned, or stranded) for
//!   one pod is refused to every other pod with an error naming the claim and the pod holding
//!   it; a claim at home follows a new pod ([`Event::Retarget`]).
//! - **Release only from home**: Unprepare of a claim that is out first returns it.
//! - **Status follows the phase** ([`crate::status::desired`]): every step that changes what
//!   the claim's status says returns [`Effect::Status`].

use std::path::PathBuf;

use netdev::RestoreRecord;
use serde::{Deserialize, Serialize};

use crate::plan::{ClaimPlan, PodRef};

/// A pod network namespace as the journal names it: the path the runtime gave, and the
/// namespace's identity (the inode of its nsfs file), which outlives the path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetnsRef {
    /// The path, e.g. `/var/run/netns/cni-…`.
    pub path: PathBuf,
    /// The namespace's inode.
    pub inode: u64,
}

impl std::fmt::Display for NetnsRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (net:[{}])", self.path.display(), self.inode)
    }
}

/// What became of one interface when it left its pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Outcome {
    /// Moved back to the host and restored.
    Returned,
    /// Found on the host (the kernel returned it when the namespace died) and restored.
    FoundOnHost {
        /// The name it had when found.
        name: String,
    },
    /// Gone with its namespace (a veth is destroyed with it): nothing to bring back.
    Vanished,
    /// Could not be brought back: still in the namespace, or nowhere it could be reached.
    Stranded {
        /// Why, and where it is.
        error: String,
    },
}

impl Outcome {
    /// Whether the interface is home or gone, i.e. no longer the node's to return.
    pub fn is_settled(&self) -> bool {
        !matches!(self, Self::Stranded { .. })
    }
}

/// Where a journaled interface was found at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// In its pod's namespace.
    InPod,
    /// On the host (never moved, rolled back, or returned by the kernel).
    OnHost,
    /// Nowhere.
    Gone,
    /// It could not be looked for (a netlink or permission error): nothing is concluded.
    Unknown,
}

/// Why a status says what it says, when the phase alone does not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// A CamelCase reason, e.g. `AttachFailed`.
    pub reason: String,
    /// What happened, naming pod and devices.
    pub message: String,
}

/// Where a claim's interfaces are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Phase {
    /// Planned for its pod; nothing of it in the kernel.
    Prepared,
    /// The intent to move is durable; the move may or may not have happened.
    Attaching {
        /// The pod's namespace.
        netns: NetnsRef,
        /// The interfaces' host state, read just before, in plan order.
        records: Vec<RestoreRecord>,
    },
    /// In the pod.
    Attached {
        /// The pod's namespace.
        netns: NetnsRef,
        /// How to bring each interface back, in plan order.
        records: Vec<RestoreRecord>,
    },
    /// The intent to return is durable; the interfaces may be anywhere between pod and host.
    Detaching {
        /// The pod's namespace.
        netns: NetnsRef,
        /// How to bring each interface back, in plan order.
        records: Vec<RestoreRecord>,
        /// Whatever already came back in an earlier try, in plan order (`None`: not yet).
        done: Vec<Option<Outcome>>,
        /// Why: `pod ns/p stopped`, `the claim was unprepared`…
        why: String,
    },
    /// Every interface home or gone.
    Detached {
        /// One per device, in plan order.
        outcomes: Vec<Outcome>,
        /// Why they left the pod.
        why: String,
    },
    /// Some interface could not be returned; the next stop, unprepare or retry tries again.
    Stranded {
        /// The pod's namespace.
        netns: NetnsRef,
        /// How to bring each interface back, in plan order.
        records: Vec<RestoreRecord>,
        /// One per device: settled ones, and the stranded ones with why.
        outcomes: Vec<Outcome>,
        /// Why they were being returned.
        why: String,
    },
    /// Unprepared; kept until its status entries are removed from the claim.
    Released,
}

impl Phase {
    /// Nothing of the claim is out of the host: it may be released or follow another pod.
    pub fn is_home(&self) -> bool {
        matches!(self, Self::Prepared | Self::Detached { .. })
    }

    /// Some interface of the claim is (or may be) out of the host, and no attach is under way:
    /// a stop returns it.
    pub fn is_out(&self) -> bool {
        matches!(
            self,
            Self::Attached { .. } | Self::Detaching { .. } | Self::Stranded { .. }
        )
    }

    /// The pod namespace the claim's interfaces were moved into, while they may be there.
    pub fn netns(&self) -> Option<&NetnsRef> {
        match self {
            Self::Attaching { netns, .. }
            | Self::Attached { netns, .. }
            | Self::Detaching { netns, .. }
            | Self::Stranded { netns, .. } => Some(netns),
            _ => None,
        }
    }

    /// A CamelCase name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Prepared => "Prepared",
            Self::Attaching { .. } => "Attaching",
            Self::Attached { .. } => "Attached",
            Self::Detaching { .. } => "Detaching",
            Self::Detached { .. } => "Detached",
            Self::Stranded { .. } => "Stranded",
            Self::Released => "Released",
        }
    }
}

/// One prepared claim on this node: its plan and where it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    /// What Prepare decided (the pod follows [`Event::Retarget`]).
    pub plan: ClaimPlan,
    /// Where its interfaces are.
    #[serde(flatten)]
    pub phase: Phase,
    /// The claim has no pod as its controller (not made from a pod's template), so other pods
    /// may reference it.
    #[serde(default)]
    pub standalone: bool,
    /// Why the status says what it says beyond the phase (an attach that failed, a hook
    /// missed). Journaled with the steps that change the phase; a note alone (a hook's
    /// timeout) is kept in memory only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<Note>,
}

impl Claim {
    /// A newly prepared claim.
    pub fn prepared(plan: ClaimPlan, standalone: bool) -> Self {
        Self {
            plan,
            phase: Phase::Prepared,
            standalone,
            note: None,
        }
    }
}

/// Something that happens to a claim.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A hook wants the claim's interfaces in `pod`'s namespace; `records` is the host's state
    /// of each, read just now.
    Attach {
        /// The pod's UID.
        pod: String,
        /// Its namespace.
        netns: NetnsRef,
        /// One per device, in plan order.
        records: Vec<RestoreRecord>,
    },
    /// The kernel's answer to the attach.
    AttachDone(Result<(), AttachFailure>),
    /// The pod stopped, was removed, or is gone; or the claim is being unprepared.
    Stop {
        /// Why, for logs and the status.
        why: String,
    },
    /// The kernel's answer to the detach: one per device not yet done, in plan order.
    DetachDone(Vec<Outcome>),
    /// Another pod that references the claim wants it.
    Retarget(PodRef),
    /// Unprepared.
    Release,
    /// Where each journaled interface was found at start-up, in plan order.
    Found(Vec<Found>),
}

/// An attach that did not happen, and whether the kernel was left as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachFailure {
    /// The error, naming device and step.
    pub message: String,
    /// Every interface is back on the host as it was (or never left).
    pub rolled_back: bool,
}

/// Work the shell runs after a step, in the order given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Make the new phase durable (before any kernel effect that follows).
    Journal,
    /// Move the recorded interfaces into the namespace (the attach of the new phase).
    Attach,
    /// Bring the recorded interfaces back (those not yet done).
    Detach,
    /// The claim's status is derived anew.
    Status,
    /// Tell the driver the interfaces are in the pod.
    DriverAttached,
    /// Tell the driver the interfaces left the pod.
    DriverDetached,
    /// Stop keeping the claim's devices published.
    ReleaseHolds,
}

/// Why a claim refused an event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Another pod holds the claim's interfaces.
    #[error("its interfaces are {state} pod {holder}; no other pod can have them until that pod has stopped")]
    InUse {
        /// The pod holding them.
        holder: PodRef,
        /// `in` or `being moved into`.
        state: &'static str,
    },
    /// Its interfaces are being returned from a pod.
    #[error("its interfaces are being returned from pod {holder}")]
    Returning {
        /// The pod.
        holder: PodRef,
    },
    /// An interface could not be returned from a pod.
    #[error("an interface is stranded in pod {holder}'s namespace {netns}: {error}")]
    Stranded {
        /// The pod.
        holder: PodRef,
        /// Its namespace.
        netns: NetnsRef,
        /// What the last try said.
        error: String,
    },
    /// The claim was unprepared.
    #[error("it was unprepared")]
    Released,
    /// The event does not apply to the phase (a programming error the shell reports).
    #[error("event {event} does not apply to a claim that is {phase}")]
    Invalid {
        /// The event.
        event: &'static str,
        /// The phase.
        phase: &'static str,
    },
}

/// The result of a step: the claim as it is to become, and what to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The claim after the step.
    pub claim: Claim,
    /// What to run, in order.
    pub effects: Vec<Effect>,
}

impl Event {
    fn name(&self) -> &'static str {
        match self {
            Self::Attach { .. } => "Attach",
            Self::AttachDone(_) => "AttachDone",
            Self::Stop { .. } => "Stop",
            Self::DetachDone(_) => "DetachDone",
            Self::Retarget(_) => "Retarget",
            Self::Release => "Release",
            Self::Found(_) => "Found",
        }
    }
}

fn held(claim: &Claim) -> Refusal {
    let holder = claim.plan.pod.clone();
    match &claim.phase {
        Phase::Attaching { .. } => Refusal::InUse {
            holder,
            state: "being moved into",
        },
        Phase::Detaching { .. } => Refusal::Returning { holder },
        Phase::Stranded { netns, outcomes, .. } => Refusal::Stranded {
            holder,
            netns: netns.clone(),
            error: outcomes
                .iter()
                .filter_map(|o| match o {
                    Outcome::Stranded { error } => Some(error.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("; "),
        },
        Phase::Released => Refusal::Released,
        _ => Refusal::InUse { holder, state: "in" },
    }
}

/// The pure transition: what `event` does to `claim`. Never performs I/O.
pub fn step(claim: &Claim, event: Event) -> Result<Step, Refusal> {
    use Effect::*;
    let mut next = claim.clone();
    let invalid = |event: &Event| Refusal::Invalid {
        event: event.name(),
        phase: claim.phase.name(),
    };
    let effects = match (&claim.phase, event) {
        (Phase::Released, Event::Release) => vec![],
        (Phase::Released, _) => return Err(Refusal::Released),

        // Attach: only the planned pod, only from home; joining the same pod's attach is a no-op.
        (Phase::Prepared | Phase::Detached { .. }, Event::Attach { pod, netns, records }) => {
            if pod != claim.plan.pod.uid {
                return Err(Refusal::Invalid {
                    event: "Attach for a pod the claim is not planned for",
                    phase: claim.phase.name(),
                });
            }
            next.phase = Phase::Attaching { netns, records };
            next.note = None;
            vec![Journal, Attach, Status]
        }
        (Phase::Attaching { .. } | Phase::Attached { .. }, Event::Attach { pod, .. }) if pod == claim.plan.pod.uid => {
            vec![]
        }
        (_, Event::Attach { .. }) => return Err(held(claim)),

        // The attach's answer.
        (Phase::Attaching { netns, records }, Event::AttachDone(result)) => match result {
            Ok(()) => {
                next.phase = Phase::Attached {
                    netns: netns.clone(),
                    records: records.clone(),
                };
                vec![Journal, Status, DriverAttached]
            }
            Err(failure) if failure.rolled_back => {
                next.phase = Phase::Prepared;
                next.note = Some(Note {
                    reason: "AttachFailed".into(),
                    message: failure.message,
                });
                vec![Journal, Status]
            }
            // Some of it may be in the pod: return whatever is there, like any attached claim.
            Err(failure) => {
                let why = format!("the attach failed and was not undone: {}", failure.message);
                next.phase = detaching(netns, records, why);
                next.note = Some(Note {
                    reason: "AttachFailed".into(),
                    message: failure.message,
                });
                vec![Journal, Detach, Status]
            }
        },
        (_, event @ Event::AttachDone(_)) => return Err(invalid(&event)),

        // Stop: return what is out. An attach under way ends first (its operation returns
        // the interfaces then).
        (Phase::Attached { netns, records }, Event::Stop { why }) => {
            next.phase = detaching(netns, records, why);
            vec![Journal, Detach, Status]
        }
        (
            Phase::Stranded {
                netns,
                records,
                outcomes,
                ..
            },
            Event::Stop { why },
        ) => {
            next.phase = Phase::Detaching {
                netns: netns.clone(),
                records: records.clone(),
                done: outcomes.iter().map(|o| o.is_settled().then(|| o.clone())).collect(),
                why,
            };
            vec![Journal, Detach, Status]
        }
        (
            Phase::Prepared | Phase::Detached { .. } | Phase::Detaching { .. } | Phase::Attaching { .. },
            Event::Stop { .. },
        ) => vec![],

        // The detach's answer, for the devices not done before.
        (
            Phase::Detaching {
                netns,
                records,
                done,
                why,
            },
            Event::DetachDone(results),
        ) => {
            let mut results = results.into_iter();
            let outcomes: Vec<Outcome> = done
                .iter()
                .map(|d| match d {
                    Some(o) => o.clone(),
                    None => results.next().unwrap_or(Outcome::Stranded {
                        error: "the detach gave no answer for it".into(),
                    }),
                })
                .collect();
            if outcomes.iter().all(Outcome::is_settled) {
                next.phase = Phase::Detached {
                    outcomes,
                    why: why.clone(),
                };
            } else {
                next.phase = Phase::Stranded {
                    netns: netns.clone(),
                    records: records.clone(),
                    outcomes,
                    why: why.clone(),
                };
            }
            vec![Journal, Status, DriverDetached]
        }
        (_, event @ Event::DetachDone(_)) => return Err(invalid(&event)),

        // Another pod: only a claim at home follows it.
        (Phase::Prepared | Phase::Detached { .. }, Event::Retarget(pod)) => {
            if pod == claim.plan.pod {
                return Ok(Step {
                    claim: next,
                    effects: vec![],
                });
            }
            next.plan.pod = pod;
            next.phase = Phase::Prepared;
            next.note = None;
            vec![Journal, Status]
        }
        (_, Event::Retarget(pod)) if pod.uid == claim.plan.pod.uid => vec![],
        (_, Event::Retarget(_)) => return Err(held(claim)),

        (Phase::Prepared | Phase::Detached { .. }, Event::Release) => {
            next.phase = Phase::Released;
            next.note = None;
            vec![Journal, Status, ReleaseHolds]
        }
        (_, Event::Release) => return Err(held(claim)),

        // Start-up: converge the journal to what the kernel shows.
        (Phase::Attaching { netns, records, .. }, Event::Found(_)) => {
            // An interrupted attach is undone, wherever it got to (its addresses may not have
            // been added yet); the pod, if it still runs, gets it again at the runtime's resync.
            next.phase = detaching(netns, records, "an attach was interrupted by a restart".into());
            vec![Journal, Detach, Status]
        }
        (Phase::Attached { netns, records }, Event::Found(found)) => {
            // In the pod, or not known: kept (a failed look is no reason to pull a live pod's
            // interface); anything seen elsewhere is returned.
            if found.iter().all(|f| matches!(f, Found::InPod | Found::Unknown)) {
                vec![Status]
            } else {
                next.phase = detaching(
                    netns,
                    records,
                    "the pod's namespace was gone when the agent restarted".into(),
                );
                vec![Journal, Detach, Status]
            }
        }
        (Phase::Detaching { .. }, Event::Found(_)) => vec![Detach, Status],
        (Phase::Stranded { .. }, Event::Found(_)) => {
            return step(
                claim,
                Event::Stop {
                    why: "retrying a stranded interface at start-up".into(),
                },
            );
        }
        (Phase::Prepared | Phase::Detached { .. }, Event::Found(_)) => vec![Status],
    };
    Ok(Step { claim: next, effects })
}

fn detaching(netns: &NetnsRef, records: &[RestoreRecord], why: String) -> Phase {
    Phase::Detaching {
        netns: netns.clone(),
        records: records.to_vec(),
        done: vec![None; records.len()],
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::InterfacePlan;
    use crate::plan::DevicePlan;
    use Effect::*;
    use kubeletplugin::ClaimRef;
    use netdev::InterfaceConfig;

    fn pod(name: &str) -> PodRef {
        PodRef {
            namespace: "ns".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        }
    }

    fn netns() -> NetnsRef {
        NetnsRef {
            path: "/var/run/netns/cni-1".into(),
            inode: 4026532000,
        }
    }

    fn record() -> RestoreRecord {
        serde_json::from_value(serde_json::json!({
            "host": {"name": "eth1", "index": 7, "mtu": 1500, "mac": "02:00:00:00:00:07", "up": true,
                     "addresses": [], "routes": []},
            "netns": "/var/run/netns/cni-1", "nameInPod": "net1", "macInPod": "02:00:00:00:00:07"
        }))
        .unwrap()
    }

    fn claim(phase: Phase) -> Claim {
        Claim {
            plan: ClaimPlan {
                claim: ClaimRef {
                    namespace: "ns".into(),
                    name: "c".into(),
                    uid: "uid-c".into(),
                },
                pod: pod("a"),
                devices: vec![DevicePlan {
                    request: "nic".into(),
                    pool: "node".into(),
                    device: "d0".into(),
                    share_id: None,
                    host_interface: "eth1".into(),
                    pod_interface: "net1".into(),
                    interface: InterfacePlan {
                        config: InterfaceConfig::default().validate().unwrap(),
                        carry_host_addresses: false,
                        placement: Default::default(),
                    },
                    published: Default::default(),
                }],
            },
            phase,
            standalone: true,
            note: None,
        }
    }

    fn attaching() -> Phase {
        Phase::Attaching {
            netns: netns(),
            records: vec![record()],
        }
    }

    fn attached() -> Phase {
        Phase::Attached {
            netns: netns(),
            records: vec![record()],
        }
    }

    fn detaching_(why: &str) -> Phase {
        detaching(&netns(), &[record()], why.into())
    }

    fn stranded() -> Phase {
        Phase::Stranded {
            netns: netns(),
            records: vec![record()],
            outcomes: vec![Outcome::Stranded { error: "EBUSY".into() }],
            why: "pod stopped".into(),
        }
    }

    fn detached() -> Phase {
        Phase::Detached {
            outcomes: vec![Outcome::Returned],
            why: "pod stopped".into(),
        }
    }

    fn attach_for(p: &str) -> Event {
        Event::Attach {
            pod: format!("uid-{p}"),
            netns: netns(),
            records: vec![record()],
        }
    }

    fn stop() -> Event {
        Event::Stop {
            why: "pod stopped".into(),
        }
    }

    /// Each row: the phase, the event, then the next phase's name and the effects, or the
    /// refusal's text.
    #[test]
    fn the_transition_table() {
        let failure = |rolled_back| {
            Event::AttachDone(Err(AttachFailure {
                message: "attach eth1: EEXIST".into(),
                rolled_back,
            }))
        };
        /// The next phase's name and the effects, or a text of the refusal.
        type Expected = Result<(&'static str, Vec<Effect>), &'static str>;
        let rows: Vec<(Phase, Event, Expected)> = vec![
            // Attach: write-ahead (journal before the kernel), only from home, only its pod.
            (
                Phase::Prepared,
                attach_for("a"),
                Ok(("Attaching", vec![Journal, Attach, Status])),
            ),
            (
                detached(),
                attach_for("a"),
                Ok(("Attaching", vec![Journal, Attach, Status])),
            ),
            (attaching(), attach_for("a"), Ok(("Attaching", vec![]))),
            (attached(), attach_for("a"), Ok(("Attached", vec![]))),
            (attached(), attach_for("b"), Err("are in pod ns/a")),
            (attaching(), attach_for("b"), Err("being moved into pod ns/a")),
            (detaching_("x"), attach_for("a"), Err("being returned from pod ns/a")),
            (stranded(), attach_for("a"), Err("stranded in pod ns/a")),
            (Phase::Released, attach_for("a"), Err("unprepared")),
            // The attach's answer.
            (
                attaching(),
                Event::AttachDone(Ok(())),
                Ok(("Attached", vec![Journal, Status, DriverAttached])),
            ),
            (attaching(), failure(true), Ok(("Prepared", vec![Journal, Status]))),
            (
                attaching(),
                failure(false),
                Ok(("Detaching", vec![Journal, Detach, Status])),
            ),
            (attached(), Event::AttachDone(Ok(())), Err("does not apply")),
            // Stop: during an attach it waits; the records are never dropped.
            (attaching(), stop(), Ok(("Attaching", vec![]))),
            (attached(), stop(), Ok(("Detaching", vec![Journal, Detach, Status]))),
            (stranded(), stop(), Ok(("Detaching", vec![Journal, Detach, Status]))),
            (detaching_("x"), stop(), Ok(("Detaching", vec![]))),
            (Phase::Prepared, stop(), Ok(("Prepared", vec![]))),
            // The detach's answer: home only when every interface is.
            (
                detaching_("x"),
                Event::DetachDone(vec![Outcome::Returned]),
                Ok(("Detached", vec![Journal, Status, DriverDetached])),
            ),
            (
                detaching_("x"),
                Event::DetachDone(vec![Outcome::Vanished]),
                Ok(("Detached", vec![Journal, Status, DriverDetached])),
            ),
            (
                detaching_("x"),
                Event::DetachDone(vec![Outcome::Stranded { error: "EBUSY".into() }]),
                Ok(("Stranded", vec![Journal, Status, DriverDetached])),
            ),
            // Another pod: only from home.
            (
                detached(),
                Event::Retarget(pod("b")),
                Ok(("Prepared", vec![Journal, Status])),
            ),
            (
                Phase::Prepared,
                Event::Retarget(pod("b")),
                Ok(("Prepared", vec![Journal, Status])),
            ),
            (Phase::Prepared, Event::Retarget(pod("a")), Ok(("Prepared", vec![]))),
            (attached(), Event::Retarget(pod("b")), Err("are in pod ns/a")),
            (attached(), Event::Retarget(pod("a")), Ok(("Attached", vec![]))),
            (stranded(), Event::Retarget(pod("b")), Err("stranded")),
            // Release: only from home.
            (
                detached(),
                Event::Release,
                Ok(("Released", vec![Journal, Status, ReleaseHolds])),
            ),
            (
                Phase::Prepared,
                Event::Release,
                Ok(("Released", vec![Journal, Status, ReleaseHolds])),
            ),
            (attached(), Event::Release, Err("are in pod ns/a")),
            (attaching(), Event::Release, Err("being moved into")),
            (Phase::Released, Event::Release, Ok(("Released", vec![]))),
            // Start-up against the kernel.
            (
                attaching(),
                Event::Found(vec![Found::InPod]),
                Ok(("Detaching", vec![Journal, Detach, Status])),
            ),
            (
                attaching(),
                Event::Found(vec![Found::OnHost]),
                Ok(("Detaching", vec![Journal, Detach, Status])),
            ),
            (
                attached(),
                Event::Found(vec![Found::InPod]),
                Ok(("Attached", vec![Status])),
            ),
            (
                attached(),
                Event::Found(vec![Found::OnHost]),
                Ok(("Detaching", vec![Journal, Detach, Status])),
            ),
            (
                attached(),
                Event::Found(vec![Found::Gone]),
                Ok(("Detaching", vec![Journal, Detach, Status])),
            ),
            (
                detaching_("x"),
                Event::Found(vec![Found::InPod]),
                Ok(("Detaching", vec![Detach, Status])),
            ),
            (
                stranded(),
                Event::Found(vec![Found::InPod]),
                Ok(("Detaching", vec![Journal, Detach, Status])),
            ),
        ];
        for (phase, event, expected) in rows {
            let described = format!("{} + {event:?}", phase.name());
            let result = step(&claim(phase), event);
            match (result, expected) {
                (Ok(step), Ok((name, effects))) => {
                    assert_eq!(step.claim.phase.name(), name, "{described}");
                    assert_eq!(step.effects, effects, "{described}");
                }
                (Err(refusal), Err(text)) => {
                    assert!(refusal.to_string().contains(text), "{described}: {refusal}");
                }
                (got, want) => panic!("{described}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn every_step_that_precedes_kernel_work_journals_first() {
        let events = [
            attach_for("a"),
            stop(),
            Event::AttachDone(Ok(())),
            Event::Found(vec![Found::Gone]),
        ];
        for phase in [Phase::Prepared, attaching(), attached(), stranded(), detached()] {
            for event in events.clone() {
                if let Ok(step) = step(&claim(phase.clone()), event) {
                    let kernel = step.effects.iter().position(|e| matches!(e, Attach | Detach));
                    let journal = step.effects.iter().position(|e| *e == Journal);
                    if let (Some(kernel), Some(journal)) = (kernel, journal) {
                        assert!(journal < kernel, "{:?}", step.effects);
                    }
                }
            }
        }
    }

    #[test]
    fn records_leave_only_when_every_interface_is_settled() {
        let half = step(
            &claim(Phase::Detaching {
                netns: netns(),
                records: vec![record(), record()],
                done: vec![None, None],
                why: "x".into(),
            }),
            Event::DetachDone(vec![Outcome::Returned, Outcome::Stranded { error: "EBUSY".into() }]),
        )
        .unwrap();
        let Phase::Stranded { records, outcomes, .. } = &half.claim.phase else {
            panic!("{:?}", half.claim.phase);
        };
        assert_eq!(records.len(), 2);
        // The retry only returns the stranded one.
        let retry = step(&half.claim, stop()).unwrap();
        let Phase::Detaching { done, .. } = &retry.claim.phase else {
            panic!();
        };
        assert_eq!(done, &vec![Some(Outcome::Returned), None]);
        assert_eq!(outcomes[0], Outcome::Returned);
        let home = step(
            &retry.claim,
            Event::DetachDone(vec![Outcome::FoundOnHost { name: "dev7".into() }]),
        )
        .unwrap();
        assert_eq!(
            home.claim.phase,
            Phase::Detached {
                outcomes: vec![Outcome::Returned, Outcome::FoundOnHost { name: "dev7".into() }],
                why: "pod stopped".into()
            }
        );
    }

    #[test]
    fn the_journal_form_keeps_the_intent_and_the_note() {
        let mut c = claim(attaching());
        c.note = Some(Note {
            reason: "AttachFailed".into(),
            message: "m".into(),
        });
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["phase"], "attaching");
        assert_eq!(json["netns"]["inode"], 4026532000u64);
        assert_eq!(json["records"][0]["host"]["name"], "eth1");
        let back: Claim = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
    }
}

//! The kubelet's side: Prepare plans and stages, Unprepare brings the interfaces home; the
//! kubelet plugin then commits its batch through [`JournalStore`], which writes the plugin's
//! records and the node's claims in one journal write (one append per batch, not two writes per
//! claim).

use std::sync::Arc;

use kubeletplugin::{
    ClaimRef, DraDriver, DriverError, Preparation, PreparedChange, PreparedClaim, PreparedStore, ResolvedClaim,
};

use crate::{
    driver::NetworkDriver,
    journal::JournalError,
    kernel::Kernel,
    lifecycle::{Claim, Event, Phase, Refusal},
    node::Node,
    plan::plan_claim,
};

/// Why Prepare refused a claim before planning it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrepareError {
    /// The runtime's NRI connection is down: a pod started now would get no interface.
    #[error(
        "container runtime hook not connected (NRI); a pod started now could not get its interfaces, so the \
         claim is not prepared and the kubelet will retry"
    )]
    HookNotConnected {
        /// The claim.
        claim: ClaimRef,
    },
    /// The claim's interfaces are still out of the host for the pod it was prepared for.
    #[error("its interfaces are still {phase} for pod {pod}; it can be prepared again once they are home")]
    StillOut {
        /// The claim.
        claim: ClaimRef,
        /// The pod holding the interfaces.
        pod: crate::plan::PodRef,
        /// Where they are.
        phase: &'static str,
    },
    /// The driver's `plan_interface` panicked.
    #[error("the driver panicked while planning it: {message}")]
    DriverPanicked {
        /// The claim.
        claim: ClaimRef,
        /// The panic's message.
        message: String,
    },
}

/// Why the kubelet plugin's batch could not be committed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The journal write failed: nothing changed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A claim to release is out of the host again (a pod took it after Unprepare brought it
    /// home).
    #[error("claim {claim} cannot be released: {refusal}")]
    NotHome {
        /// The claim.
        claim: ClaimRef,
        /// Why.
        refusal: Refusal,
    },
}

/// The [`DraDriver`] the kubelet plugin SDK calls.
pub(crate) struct KubeletSide<D, K: Kernel>(pub Arc<Node<D, K>>);

impl<D: NetworkDriver, K: Kernel> DraDriver for KubeletSide<D, K> {
    async fn prepare(&self, claim: &ResolvedClaim) -> Result<Preparation, DriverError> {
        let start = std::time::Instant::now();
        let result = self.prepare_claim(claim);
        self.0.metrics.prepared(result.is_ok(), start.elapsed());
        result
    }

    async fn unprepare(&self, claim: &PreparedClaim) -> Result<(), DriverError> {
        let start = std::time::Instant::now();
        let result = self.0.bring_home(&claim.claim).await.map_err(DriverError::from);
        self.0.metrics.unprepared(result.is_ok(), start.elapsed());
        result
    }
}

/// Whether a claim was made by the resource-claim controller from a pod's template: such a
/// claim belongs to that pod alone. Any other claim may be referenced by several pods.
fn standalone(claim: &ResolvedClaim) -> bool {
    !claim
        .object
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "Pod" && o.controller == Some(true))
}

impl<D: NetworkDriver, K: Kernel> KubeletSide<D, K> {
    fn prepare_claim(&self, claim: &ResolvedClaim) -> Result<Preparation, DriverError> {
        let node = &self.0;
        if claim.devices.is_empty() {
            return Ok(Preparation::of_allocation(claim));
        }
        if !*node.nri_connected.borrow() {
            return Err(PrepareError::HookNotConnected {
                claim: claim.claim.clone(),
            }
            .into());
        }
        if let Some(existing) = node.claim(&claim.claim.uid)
            && !existing.phase.is_home()
            && existing.phase != Phase::Released
        {
            return Err(PrepareError::StillOut {
                claim: claim.claim.clone(),
                pod: existing.plan.pod,
                phase: existing.phase.name(),
            }
            .into());
        }
        let plan = {
            // Borrowed, not cloned: a batch of Prepares would otherwise each copy every
            // published device at once.
            let published = node.published.borrow();
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                node.with_plans(|others| plan_claim(&node.driver_name, &node.driver, claim, &published, others))
            }))
            .map_err(|panic| PrepareError::DriverPanicked {
                claim: claim.claim.clone(),
                message: crate::panic_text(&*panic),
            })??
        };
        for device in &plan.devices {
            node.holds.hold_as(device.published.clone());
        }
        let devices: Vec<String> = plan
            .devices
            .iter()
            .map(|d| format!("{} ({} as {})", d.device, d.host_interface, d.pod_interface))
            .collect();
        tracing::debug!(claim = %claim.claim, pod = %plan.pod, devices = %devices.join(", "), "claim planned");
        node.stage(Claim::prepared(plan, standalone(claim)));
        Ok(Preparation::of_allocation(claim))
    }
}

/// The kubelet plugin's store: its records of prepared claims live in the node's journal, next
/// to the claims themselves, and a batch of both is one write.
pub(crate) struct JournalStore<D, K: Kernel>(pub Arc<Node<D, K>>);

impl<D: NetworkDriver, K: Kernel> PreparedStore for JournalStore<D, K> {
    type Error = StoreError;

    async fn load(&self) -> Result<Vec<PreparedClaim>, StoreError> {
        Ok(self.0.kubelet_records())
    }

    async fn commit(&self, changes: Vec<PreparedChange>) -> Result<(), StoreError> {
        let node = &self.0;
        let uids: Vec<String> = changes
            .iter()
            .map(|c| match c {
                PreparedChange::Prepared(p) => p.claim.uid.clone(),
                PreparedChange::Unprepared(c) => c.uid.clone(),
            })
            .collect();
        let mut txn = node.txn(uids).await;
        let mut records = Vec::new();
        for change in changes {
            match change {
                PreparedChange::Prepared(prepared) => {
                    if let Some(claim) = node.staged(&prepared.claim.uid) {
                        txn.put(&prepared.claim.uid, claim);
                    }
                    records.push((prepared.claim.clone(), Some(prepared)));
                }
                PreparedChange::Unprepared(claim) => {
                    if txn.claim(&claim.uid).is_some() {
                        txn.step(&claim.uid, Event::Release)
                            .map_err(|refusal| StoreError::NotHome {
                                claim: claim.clone(),
                                refusal,
                            })?;
                    }
                    records.push((claim, None));
                }
            }
        }
        let extra = records
            .iter()
            .map(|(claim, record)| crate::node::kubelet_change(&claim.uid, record.as_ref()))
            .collect();
        txn.commit(extra).await?;
        for (claim, record) in records {
            match (node.unstage(&claim.uid), &record) {
                (Some(staged), _) => tracing::info!(claim = %claim, pod = %staged.plan.pod, "claim prepared"),
                (None, Some(_)) => tracing::info!(claim = %claim, "claim prepared (no device of this driver)"),
                (None, None) => tracing::info!(claim = %claim, "claim unprepared"),
            }
            node.set_kubelet_record(&claim.uid, record);
        }
        Ok(())
    }
}

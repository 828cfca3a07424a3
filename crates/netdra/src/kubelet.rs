//! The kubelet's side: Prepare plans and persists, Unprepare forgets (returning anything
//! still attached).

use std::sync::Arc;

use kubeletplugin::{DraDriver, DriverError, Preparation, PreparedClaim, ResolvedClaim};

use crate::{
    core::Core,
    driver::NetworkDriver,
    plan::{ClaimPlan, plan_claim},
    state::ClaimEntry,
};

/// Why Prepare refused a claim before planning it.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The runtime's NRI connection is down: a pod started now would get no interface.
    #[error(
        "container runtime hook not connected (NRI); a pod started now could not get its interfaces, so the \
         claim is not prepared and the kubelet will retry"
    )]
    HookNotConnected {
        /// The claim.
        claim: kubeletplugin::ClaimRef,
    },
    /// The claim's interfaces are still in the pod it was prepared for.
    #[error(
        "its interfaces are still attached to pod {pod}; it can be prepared for another pod once that pod has \
         stopped"
    )]
    StillAttached {
        /// The claim.
        claim: kubeletplugin::ClaimRef,
        /// The pod holding the interfaces.
        pod: crate::plan::PodRef,
    },
}

/// The [`DraDriver`] the kubelet plugin SDK calls.
pub(crate) struct KubeletSide<D>(pub Arc<Core<D>>);

impl<D: NetworkDriver> DraDriver for KubeletSide<D> {
    async fn prepare(&self, claim: &ResolvedClaim) -> Result<Preparation, DriverError> {
        let start = std::time::Instant::now();
        let result = self.prepare_claim(claim).await;
        self.0.metrics.prepared(result.is_ok(), start.elapsed());
        result
    }

    async fn unprepare(&self, claim: &PreparedClaim) -> Result<(), DriverError> {
        let start = std::time::Instant::now();
        let result = self.unprepare_claim(claim).await;
        self.0.metrics.unprepared(result.is_ok(), start.elapsed());
        result
    }
}

impl<D: NetworkDriver> KubeletSide<D> {
    async fn prepare_claim(&self, claim: &ResolvedClaim) -> Result<Preparation, DriverError> {
        let core = &self.0;
        if claim.devices.is_empty() {
            return Ok(Preparation::of_allocation(claim));
        }
        if !*core.nri_connected.borrow() {
            return Err(PrepareError::HookNotConnected {
                claim: claim.claim.clone(),
            }
            .into());
        }
        let plan = {
            // Borrowed, not cloned: a batch of Prepares would otherwise each copy every
            // published device at once.
            let published = core.published.borrow();
            let state = core.state.lock();
            if let Some(entry) = state.claims.get(&claim.claim.uid)
                && let Some(pod) = entry.attached.as_ref().map(|_| entry.plan.pod.clone())
            {
                return Err(PrepareError::StillAttached {
                    claim: claim.claim.clone(),
                    pod,
                }
                .into());
            }
            let others: Vec<&ClaimPlan> = state.claims.values().map(|e| &e.plan).collect();
            plan_claim(&core.driver_name, &core.driver, claim, &published, &others)?
        };
        for device in &plan.devices {
            core.holds.hold_as(device.published.clone());
        }
        let pod = plan.pod.clone();
        let devices: Vec<String> = plan
            .devices
            .iter()
            .map(|d| format!("{} ({} as {})", d.device, d.host_interface, d.pod_interface))
            .collect();
        core.state
            .lock()
            .claims
            .insert(claim.claim.uid.clone(), ClaimEntry { plan, attached: None });
        core.persist().await?;
        tracing::info!(claim = %claim.claim, pod = %pod, devices = %devices.join(", "), "claim prepared");
        Ok(Preparation::of_allocation(claim))
    }

    async fn unprepare_claim(&self, claim: &PreparedClaim) -> Result<(), DriverError> {
        let core = &self.0;
        let entry = core.state.lock().claims.get(&claim.claim.uid).cloned();
        let Some(entry) = entry else {
            return Ok(());
        };
        if entry.attached.is_some() {
            core.detach_claim(&entry.plan, "the claim was unprepared").await;
        }
        {
            let mut state = core.state.lock();
            if state.claims.get(&claim.claim.uid).is_some_and(|e| e.attached.is_some()) {
                return Err(format!(
                    "claim {}: an interface is stranded in pod {} and could not be returned; see the agent's log",
                    claim.claim, entry.plan.pod
                )
                .into());
            }
            state.claims.remove(&claim.claim.uid);
        }
        core.persist().await?;
        for device in &entry.plan.devices {
            core.holds.release(&device.device);
        }
        core.status.set(&entry.plan.claim, Vec::new());
        tracing::info!(claim = %claim.claim, pod = %entry.plan.pod, "claim unprepared");
        Ok(())
    }
}

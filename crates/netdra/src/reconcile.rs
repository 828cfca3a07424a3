//! Converging to the truth: at start-up, the journal against the kernel (before the runtime's
//! hooks connect); while running, the claims' status against the API server, stranded
//! interfaces retried, released claims forgotten once their status is gone.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use kubeletplugin::ClaimRef;
use tokio::sync::mpsc;

use crate::{
    driver::NetworkDriver,
    kernel::Kernel,
    lifecycle::Phase,
    node::{Node, OpState, Scope},
    plan::PodRef,
};

/// How long start-up waits for the interfaces it returns.
const START_DETACH_WAIT: Duration = Duration::from_secs(30);

/// How often stranded interfaces are tried again.
pub(crate) const STRANDED_RETRY: Duration = Duration::from_secs(30);

/// Finds every journaled interface that may be out of the host (in its pod's namespace by
/// inode while the namespace lives, on the host by identity, or gone), converges each claim to
/// it, and returns what must come back (an interrupted attach is undone; the runtime's resync
/// attaches it again if its pod still runs), claim by claim: a running pod's other interfaces
/// stay. Waits for those returns, within a bound.
pub(crate) async fn against_kernel<D: NetworkDriver, K: Kernel>(node: &Arc<Node<D, K>>) {
    let out: Vec<String> = node
        .claims()
        .into_iter()
        .filter(|(_, c)| c.phase.is_out() || matches!(c.phase, Phase::Attaching { .. }))
        .map(|(uid, _)| uid)
        .collect();
    if !out.is_empty() {
        node.converge(&out).await;
        return_interrupted(node, &out).await;
    }
    // Only now: a journaled subinterface found on the host has been converged to detached.
    match node.kernel().sweep_subinterfaces().await {
        Ok(deleted) if !deleted.is_empty() => {
            tracing::info!(?deleted, "deleted subinterfaces left on the host");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("could not sweep subinterfaces left on the host: {e}"),
    }
}

/// Waits for the returns that converging `out` started, within a bound.
async fn return_interrupted<D: NetworkDriver, K: Kernel>(node: &Arc<Node<D, K>>, out: &[String]) {
    let mut waits = Vec::new();
    for uid in out {
        let Some(claim) = node.claim(uid) else { continue };
        if !matches!(claim.phase, Phase::Detaching { .. }) {
            continue;
        }
        let scope = Scope::Claims(BTreeSet::from([uid.clone()]));
        if let Some(op) = node
            .stop(&claim.plan.pod, "returning what a restart interrupted", scope)
            .await
        {
            waits.push(Node::<D, K>::wait(op, START_DETACH_WAIT, |s| {
                matches!(s, OpState::Settled(_))
            }));
        }
    }
    futures::future::join_all(waits).await;
}

/// Derives every claim's status anew (writes lost in a crash are made again).
pub(crate) fn report_all<D: NetworkDriver, K: Kernel>(node: &Node<D, K>) {
    for claim in node.claims().values() {
        node.report(claim);
    }
}

/// Tries stranded interfaces again, every [`STRANDED_RETRY`].
pub(crate) async fn retry_stranded<D: NetworkDriver, K: Kernel>(node: Arc<Node<D, K>>) {
    let mut tick = tokio::time::interval(STRANDED_RETRY);
    tick.tick().await;
    loop {
        tick.tick().await;
        let stranded: Vec<(String, PodRef)> = node
            .claims()
            .into_iter()
            .filter(|(_, c)| matches!(c.phase, Phase::Stranded { .. }))
            .map(|(uid, c)| (uid, c.plan.pod))
            .collect();
        for (uid, pod) in stranded {
            let scope = Scope::Claims(BTreeSet::from([uid]));
            let _ = node.stop(&pod, "retrying a stranded interface", scope).await;
        }
    }
}

/// Forgets released claims once their status entries are gone from the API server.
pub(crate) async fn forget_released<D: NetworkDriver, K: Kernel>(
    node: Arc<Node<D, K>>,
    mut settled: mpsc::UnboundedReceiver<ClaimRef>,
) {
    while let Some(claim) = settled.recv().await {
        node.forget_released(&claim).await;
    }
}

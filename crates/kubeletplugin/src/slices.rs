//! Planning the ResourceSlices of one pool: a pure function from the devices a node should
//!
//! The rest of this documentation is on the public item it governs, below, where users read it.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::resource::v1::{Device, ResourcePool, ResourceSlice, ResourceSliceSpec},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};

/// Most devices in one slice.
pub const MAX_DEVICES_PER_SLICE: usize = 128;
/// Most devices in one slice when any device has taints or consumes counters.
pub const MAX_DEVICES_PER_SLICE_WITH_TAINTS_OR_COUNTERS: usize = 64;

/// The pool a node publishes for one driver.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PoolSpec {
    /// The DRA driver name.
    pub driver: String,
    /// The node the devices are on (slices are node-local).
    pub node_name: String,
    /// The pool name (the node name, by convention).
    pub pool: String,
    /// The Node object, so slices are garbage-collected with it.
    pub owner: Option<OwnerReference>,
}

impl PoolSpec {
    /// The devices of the DRA driver `driver` on `node_name`, in the pool named after the
    /// node (the convention), with no owner.
    pub fn new(driver: impl Into<String>, node_name: impl Into<String>) -> Self {
        let node_name = node_name.into();
        Self {
            driver: driver.into(),
            pool: node_name.clone(),
            node_name,
            owner: None,
        }
    }

    /// The same pool, its slices owned by `owner` (the Node object, so they are
    /// garbage-collected with it).
    pub fn with_owner(self, owner: OwnerReference) -> Self {
        Self {
            owner: Some(owner),
            ..self
        }
    }
}

/// One write of a plan.
///
/// Exhaustive on purpose: every caller must handle each operation, so a new one should
/// fail their build rather than fall into a wildcard.
#[derive(Debug, Clone, PartialEq)]
pub enum SliceOp {
    /// Create a slice (named by the API server from `metadata.generateName`).
    Create(ResourceSlice),
    /// Replace an existing slice (its `metadata.name` and `resourceVersion` are set).
    Update(ResourceSlice),
    /// Delete a slice of the pool that is no longer needed.
    Delete {
        /// The slice's name.
        name: String,
    },
}

fn uses_taints_or_counters(d: &Device) -> bool {
    d.taints.as_ref().is_some_and(|t| !t.is_empty()) || d.consumes_counters.as_ref().is_some_and(|c| !c.is_empty())
}

/// The device chunks the pool should be published as: sorted by name, split at the limit.
pub fn chunk_devices(devices: &[Device]) -> Vec<Vec<Device>> {
    let limit = if devices.iter().any(uses_taints_or_counters) {
        MAX_DEVICES_PER_SLICE_WITH_TAINTS_OR_COUNTERS
    } else {
        MAX_DEVICES_PER_SLICE
    };
    // One device per name: a later duplicate replaces an earlier one.
    let by_name: BTreeMap<&str, &Device> = devices.iter().map(|d| (d.name.as_str(), d)).collect();
    let sorted: Vec<Device> = by_name.into_values().cloned().collect();
    sorted.chunks(limit).map(<[Device]>::to_vec).collect()
}

fn belongs_to(pool: &PoolSpec, slice: &ResourceSlice) -> bool {
    slice.spec.driver == pool.driver
        && slice.spec.pool.name == pool.pool
        && slice.spec.node_name.as_deref() == Some(pool.node_name.as_str())
}

fn sorted_devices(slice: &ResourceSlice) -> Vec<Device> {
    let mut devices = slice.spec.devices.clone().unwrap_or_default();
    devices.sort_by(|a, b| a.name.cmp(&b.name));
    devices
}

/// The writes that turn `existing` (any slices; those of other pools are ignored) into the
/// publication of `devices` for `pool`. Empty when nothing changed.
///
/// Planning the ResourceSlices of one pool: a pure function from the devices a node should
/// publish and the slices that exist to the writes that make them agree.
///
/// Rules (`resource.k8s.io/v1`): a slice holds at most 128 devices, 64 when any device uses
/// taints or consumes counters; all slices of a pool carry the same `generation` and
/// `resourceSliceCount`; the generation goes up on every change, so the scheduler never mixes
/// slices of two states. When the existing slices already hold exactly the desired devices,
/// the plan is empty: an unchanged re-scan writes nothing.
pub fn plan(pool: &PoolSpec, devices: &[Device], existing: &[ResourceSlice]) -> Vec<SliceOp> {
    let chunks = chunk_devices(devices);
    let mut ours: Vec<&ResourceSlice> = existing.iter().filter(|s| belongs_to(pool, s)).collect();
    ours.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));

    let count = chunks.len() as i64;
    let generations: Vec<i64> = ours.iter().map(|s| s.spec.pool.generation).collect();
    let consistent = generations.windows(2).all(|w| w[0] == w[1])
        && ours.iter().all(|s| {
            s.spec.pool.resource_slice_count == count
                && s.metadata.owner_references.as_deref().unwrap_or_default() == pool.owner.as_slice()
        });
    if consistent && ours.len() == chunks.len() {
        let mut have: Vec<Vec<Device>> = ours.iter().map(|s| sorted_devices(s)).collect();
        have.sort_by(|a, b| a.first().map(|d| &d.name).cmp(&b.first().map(|d| &d.name)));
        if have == chunks {
            return Vec::new();
        }
    }

    let generation = generations.iter().copied().max().unwrap_or(0) + 1;
    let slice = |name: Option<&ResourceSlice>, devices: Vec<Device>| ResourceSlice {
        metadata: ObjectMeta {
            name: name.and_then(|s| s.metadata.name.clone()),
            resource_version: name.and_then(|s| s.metadata.resource_version.clone()),
            generate_name: name
                .is_none()
                .then(|| format!("{}-{}-", pool.node_name, pool.driver.replace('.', "-"))),
            owner_references: pool.owner.clone().map(|o| vec![o]),
            ..Default::default()
        },
        spec: ResourceSliceSpec {
            driver: pool.driver.clone(),
            node_name: Some(pool.node_name.clone()),
            pool: ResourcePool {
                name: pool.pool.clone(),
                generation,
                resource_slice_count: count,
            },
            devices: Some(devices),
            ..Default::default()
        },
    };
    let mut ops = Vec::new();
    let mut existing_iter = ours.iter();
    for devices in chunks {
        match existing_iter.next() {
            Some(s) => ops.push(SliceOp::Update(slice(Some(s), devices))),
            None => ops.push(SliceOp::Create(slice(None, devices))),
        }
    }
    for surplus in existing_iter {
        if let Some(name) = &surplus.metadata.name {
            ops.push(SliceOp::Delete { name: name.clone() });
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pool() -> PoolSpec {
        PoolSpec::new("net.example.com", "node1").with_owner(OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: "node1".into(),
            uid: "node-uid".into(),
            ..Default::default()
        })
    }

    fn device(name: &str) -> Device {
        Device {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Applies a plan the way the API server would, naming created slices in order.
    fn apply(existing: &[ResourceSlice], ops: &[SliceOp], next_name: &mut usize) -> Vec<ResourceSlice> {
        let mut by_name: BTreeMap<String, ResourceSlice> = existing
            .iter()
            .map(|s| (s.metadata.name.clone().unwrap(), s.clone()))
            .collect();
        for op in ops {
            match op {
                SliceOp::Create(s) => {
                    let mut s = s.clone();
                    *next_name += 1;
                    let name = format!("{}{:05}", s.metadata.generate_name.clone().unwrap(), next_name);
                    s.metadata.name = Some(name.clone());
                    by_name.insert(name, s);
                }
                SliceOp::Update(s) => {
                    let name = s.metadata.name.clone().unwrap();
                    assert!(by_name.contains_key(&name), "update of a missing slice");
                    by_name.insert(name, s.clone());
                }
                SliceOp::Delete { name } => {
                    assert!(by_name.remove(name).is_some(), "delete of a missing slice");
                }
            }
        }
        by_name.into_values().collect()
    }

    #[test]
    fn three_hundred_devices_make_three_slices_and_a_rescan_makes_none() {
        let devices: Vec<Device> = (0..300).map(|i| device(&format!("eth{i:03}"))).collect();
        let ops = plan(&pool(), &devices, &[]);
        assert_eq!(ops.len(), 3);
        assert!(ops.iter().all(|o| matches!(o, SliceOp::Create(_))));
        let mut n = 0;
        let slices = apply(&[], &ops, &mut n);
        for s in &slices {
            assert_eq!(s.spec.pool.resource_slice_count, 3);
            assert_eq!(s.spec.pool.generation, 1);
            assert_eq!(s.metadata.owner_references.as_ref().unwrap()[0].kind, "Node");
        }
        assert_eq!(plan(&pool(), &devices, &slices), vec![]);
        // One more device: the pool's slices are rewritten under a new generation.
        let mut more = devices.clone();
        more.push(device("eth999"));
        let ops = plan(&pool(), &more, &slices);
        let slices = apply(&slices, &ops, &mut n);
        assert!(slices.iter().all(|s| s.spec.pool.generation == 2));
        assert_eq!(plan(&pool(), &more, &slices), vec![]);
    }

    #[test]
    fn taints_lower_the_limit_and_other_pools_are_left_alone() {
        let mut devices: Vec<Device> = (0..100).map(|i| device(&format!("d{i:03}"))).collect();
        devices[0].taints = Some(vec![Default::default()]);
        let chunks = chunk_devices(&devices);
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), vec![64, 36]);
        let mut foreign = ResourceSlice::default();
        foreign.metadata.name = Some("other".into());
        foreign.spec.driver = "gpu.example.com".into();
        foreign.spec.node_name = Some("node1".into());
        foreign.spec.pool.name = "node1".into();
        let ops = plan(&pool(), &[], &[foreign]);
        assert_eq!(ops, vec![], "an empty pool with no slices of ours needs nothing");
    }

    #[test]
    fn emptied_pool_deletes_its_slices() {
        let devices = vec![device("a"), device("b")];
        let mut n = 0;
        let slices = apply(&[], &plan(&pool(), &devices, &[]), &mut n);
        let ops = plan(&pool(), &[], &slices);
        assert_eq!(
            ops,
            vec![SliceOp::Delete {
                name: slices[0].metadata.name.clone().unwrap()
            }]
        );
    }

    proptest! {
        #[test]
        fn slices_cover_every_device_once_within_the_limit_and_replanning_is_a_no_op(
            first in proptest::collection::btree_set("[a-z][a-z0-9]{0,6}", 0..400),
            second in proptest::collection::btree_set("[a-z][a-z0-9]{0,6}", 0..400),
        ) {
            let mut n = 0;
            let mut slices = Vec::new();
            for names in [first, second] {
                let devices: Vec<Device> = names.iter().map(|n| device(n)).collect();
                let ops = plan(&pool(), &devices, &slices);
                slices = apply(&slices, &ops, &mut n);
                let mut published: Vec<String> = slices
                    .iter()
                    .flat_map(|s| s.spec.devices.clone().unwrap_or_default())
                    .map(|d| d.name)
                    .collect();
                published.sort();
                prop_assert_eq!(published, names.iter().cloned().collect::<Vec<_>>());
                prop_assert!(slices.iter().all(|s| s.spec.devices.as_ref().map_or(0, Vec::len) <= MAX_DEVICES_PER_SLICE));
                let generations: std::collections::BTreeSet<i64> = slices.iter().map(|s| s.spec.pool.generation).collect();
                prop_assert!(generations.len() <= 1);
                prop_assert!(slices.iter().all(|s| s.spec.pool.resource_slice_count == slices.len() as i64));
                prop_assert_eq!(plan(&pool(), &devices, &slices), vec![]);
            }
        }
    }
}

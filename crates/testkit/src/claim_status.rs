//! Server-side apply of a ResourceClaim's `status.devices`, as the real API server does it.
//!
//! Rules (from the API's schema and validation):
//! - `status.devices` is a list-map keyed by `driver`, `pool`, `device` and `shareID`.
//! - Each field manager owns the entries it applied (recorded in `metadata.managedFields`,
//!   subresource `status`). Applying a list replaces that manager's entries: an entry it owned
//!   and no longer applies is removed, unless another manager owns it too; entries of other
//!   managers are never touched.
//! - An entry for a device that is not in `status.allocation.devices.results` is invalid (422),
//!   as is the same key twice in one apply.
//! - A `metadata.uid` in the applied object is a precondition (409 when it differs).
//! - The device and duplicate rules hold for every write of the status (a merge patch too),
//!   and so does the UID precondition.
//! - An apply to the status of a claim whose allocation carries opaque parameters is refused
//!   with `422 status.allocation: field is immutable`. The real server (1.36) does this when
//!   those parameters were stored with their keys in other than sorted order: it re-encodes the
//!   allocation while merging, and the bytes differ. Every client but kubectl (which sorts) can
//!   store them so; this fake keeps no key order, so it takes every claim with opaque
//!   parameters to be one of them. A merge patch is accepted (it leaves those bytes alone).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::store::ApiError;

/// An entry's list-map key, in the form `managedFields` writes it.
fn entry_key(entry: &Value) -> String {
    let mut key = Map::new();
    for field in ["device", "driver", "pool", "shareID"] {
        if let Some(v) = entry.get(field).filter(|v| !v.is_null()) {
            key.insert(field.into(), v.clone());
        }
    }
    format!("k:{}", Value::Object(key))
}

fn invalid(name: &str, message: String) -> ApiError {
    ApiError {
        code: 422,
        reason: "Invalid",
        message: format!("ResourceClaim.resource.k8s.io \"{name}\" is invalid: {message}"),
    }
}

/// The keys `manager` owns in `status.devices` of `object`.
fn owned_keys(object: &Value, manager: &str) -> BTreeSet<String> {
    managed_fields(object)
        .iter()
        .filter(|m| m["manager"] == manager && m["subresource"] == "status")
        .filter_map(|m| m.pointer("/fieldsV1/f:status/f:devices")?.as_object())
        .flat_map(|keys| keys.keys().cloned())
        .collect()
}

fn managed_fields(object: &Value) -> Vec<Value> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn claim_name(current: &Value) -> &str {
    current
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// A `metadata.uid` in a patch of the claim is a precondition: 409 when it differs.
pub(crate) fn check_uid(current: &Value, patch: &Value) -> Result<(), ApiError> {
    if let Some(uid) = patch.pointer("/metadata/uid").and_then(Value::as_str) {
        let actual = current
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if uid != actual {
            return Err(ApiError {
                code: 409,
                reason: "Conflict",
                message: format!(
                    "Operation cannot be fulfilled on resourceclaims.resource.k8s.io \"{}\": Precondition failed: \
                     UID in precondition: {uid}, UID in object meta: {actual}",
                    claim_name(current)
                ),
            });
        }
    }
    Ok(())
}

/// Checks the `status.devices` a write would store against the claim's allocation: every
/// entry names an allocated device, no key twice. Returns the entries' keys.
pub(crate) fn validate_devices(current: &Value, devices: &[Value]) -> Result<BTreeSet<String>, ApiError> {
    let name = claim_name(current);
    let allocated: BTreeSet<(String, String, String)> = current
        .pointer("/status/allocation/devices/results")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| {
            let s = |f: &str| r.get(f).and_then(Value::as_str).unwrap_or_default().to_owned();
            (s("driver"), s("pool"), s("device"))
        })
        .collect();
    let mut keys = BTreeSet::new();
    for (i, entry) in devices.iter().enumerate() {
        let s = |f: &str| entry.get(f).and_then(Value::as_str).unwrap_or_default().to_owned();
        let id = (s("driver"), s("pool"), s("device"));
        if !allocated.contains(&id) {
            return Err(invalid(
                name,
                format!(
                    "status.devices[{i}]: Invalid value: {{\"driver\":{:?},\"pool\":{:?},\"device\":{:?}}}: must be an \
                     allocated device in the claim",
                    id.0, id.1, id.2
                ),
            ));
        }
        if !keys.insert(entry_key(entry)) {
            return Err(invalid(
                name,
                format!("status.devices[{i}]: Duplicate value: {}", entry_key(entry)),
            ));
        }
    }
    Ok(keys)
}

/// Applies `patch` (a ResourceClaim with `status.devices`) by `manager` to `current`; the
/// object to store, or the API's error.
pub(crate) fn apply(current: &Value, manager: &str, patch: &Value) -> Result<Value, ApiError> {
    let name = claim_name(current);
    check_uid(current, patch)?;
    let has_opaque_parameters = current
        .pointer("/status/allocation/devices/config")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c.pointer("/opaque/parameters").is_some());
    if has_opaque_parameters {
        let allocation = current.pointer("/status/allocation").cloned().unwrap_or_default();
        return Err(invalid(
            name,
            format!("status.allocation: Invalid value: {allocation}: field is immutable"),
        ));
    }
    let applied: Vec<Value> = match patch.pointer("/status/devices") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(invalid(name, "status.devices: must be a list".into())),
    };
    let keys = validate_devices(current, &applied)?;
    let before = owned_keys(current, manager);
    let others: BTreeSet<String> = managed_fields(current)
        .iter()
        .filter(|m| m["manager"] != manager && m["subresource"] == "status")
        .filter_map(|m| m.pointer("/fieldsV1/f:status/f:devices")?.as_object())
        .flat_map(|k| k.keys().cloned())
        .collect();

    let mut devices: Vec<Value> = current
        .pointer("/status/devices")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    devices.retain(|d| {
        let k = entry_key(d);
        keys.contains(&k) || !before.contains(&k) || others.contains(&k)
    });
    for entry in applied {
        let k = entry_key(&entry);
        match devices.iter_mut().find(|d| entry_key(d) == k) {
            Some(existing) => *existing = entry,
            None => devices.push(entry),
        }
    }

    let mut next = current.clone();
    let status = next
        .as_object_mut()
        .expect("stored objects are objects")
        .entry("status")
        .or_insert_with(|| json!({}));
    if devices.is_empty() {
        status.as_object_mut().map(|s| s.remove("devices"));
    } else {
        status["devices"] = Value::Array(devices);
    }
    let mut fields: Vec<Value> = managed_fields(current)
        .into_iter()
        .filter(|m| !(m["manager"] == manager && m["subresource"] == "status"))
        .collect();
    if !keys.is_empty() {
        let owned: Map<String, Value> = keys.into_iter().map(|k| (k, json!({}))).collect();
        fields.push(json!({
            "manager": manager,
            "operation": "Apply",
            "subresource": "status",
            "apiVersion": "resource.k8s.io/v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:status": {"f:devices": owned}},
        }));
    }
    let meta = next
        .as_object_mut()
        .expect("stored objects are objects")
        .entry("metadata")
        .or_insert_with(|| json!({}));
    if fields.is_empty() {
        meta.as_object_mut().map(|m| m.remove("managedFields"));
    } else {
        meta["managedFields"] = Value::Array(fields);
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim() -> Value {
        json!({
            "metadata": {"name": "c", "namespace": "ns", "uid": "u1"},
            "status": {"allocation": {"devices": {"results": [
                {"request": "a", "driver": "net.x", "pool": "n1", "device": "d1"},
                {"request": "b", "driver": "net.x", "pool": "n1", "device": "d2"},
                {"request": "c", "driver": "gpu.y", "pool": "n1", "device": "g1"},
            ]}}}
        })
    }

    fn entry(driver: &str, device: &str, ready: &str) -> Value {
        json!({"driver": driver, "pool": "n1", "device": device, "conditions": [{"type": "Ready", "status": ready}]})
    }

    fn devices(object: &Value) -> Vec<(String, String)> {
        object
            .pointer("/status/devices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|d| {
                (
                    d["device"].as_str().unwrap().to_owned(),
                    d["conditions"][0]["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn managers_own_their_entries_and_never_touch_others() {
        let c = claim();
        let c = apply(
            &c,
            "gpu.y",
            &json!({"status": {"devices": [entry("gpu.y", "g1", "True")]}}),
        )
        .unwrap();
        let c = apply(
            &c,
            "net.x",
            &json!({"status": {"devices": [entry("net.x", "d1", "True"), entry("net.x", "d2", "True")]}}),
        )
        .unwrap();
        assert_eq!(devices(&c).len(), 3);
        // Re-applying one entry drops the other this manager owned, replaces the kept one.
        let c = apply(
            &c,
            "net.x",
            &json!({"status": {"devices": [entry("net.x", "d1", "False")]}}),
        )
        .unwrap();
        assert_eq!(
            devices(&c),
            [("g1".into(), "True".into()), ("d1".into(), "False".into())]
        );
        // An empty apply removes exactly this manager's entries; the allocation stays.
        let c = apply(&c, "net.x", &json!({"status": {"devices": []}})).unwrap();
        assert_eq!(devices(&c), [("g1".to_owned(), "True".to_owned())]);
        assert!(c.pointer("/status/allocation/devices/results/0").is_some());
        assert_eq!(owned_keys(&c, "net.x").len(), 0);
        assert_eq!(owned_keys(&c, "gpu.y").len(), 1);
    }

    #[test]
    fn unallocated_devices_duplicates_and_other_uids_are_refused() {
        let c = claim();
        let e = apply(
            &c,
            "net.x",
            &json!({"status": {"devices": [entry("net.x", "d9", "True")]}}),
        )
        .unwrap_err();
        assert_eq!(e.code, 422);
        assert!(
            e.message.contains("status.devices[0]") && e.message.contains("d9"),
            "{}",
            e.message
        );
        let dup = json!({"status": {"devices": [entry("net.x", "d1", "True"), entry("net.x", "d1", "False")]}});
        assert_eq!(apply(&c, "net.x", &dup).unwrap_err().code, 422);
        let other = json!({"metadata": {"uid": "u2"}, "status": {"devices": []}});
        let e = apply(&c, "net.x", &other).unwrap_err();
        assert_eq!(e.code, 409);
        assert!(e.message.contains("Precondition failed"), "{}", e.message);
    }
}

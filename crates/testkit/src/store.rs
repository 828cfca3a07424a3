//! The fake API server's object store: plain data and the API server's write semantics, no I/O.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::{
    claim_status,
    resources::{RESOURCE_CLAIMS, ResourceType},
};

/// An API error, rendered as a `kind: Status` body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl ApiError {
    pub(crate) fn not_found(resource: &ResourceType, name: &str) -> Self {
        Self {
            code: 404,
            reason: "NotFound",
            message: format!("{} \"{name}\" not found", resource.qualified()),
        }
    }

    fn already_exists(resource: &ResourceType, name: &str) -> Self {
        Self {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{} \"{name}\" already exists", resource.qualified()),
        }
    }

    fn conflict(resource: &ResourceType, name: &str) -> Self {
        Self {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                resource.qualified()
            ),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self {
            code: 400,
            reason: "BadRequest",
            message: message.into(),
        }
    }

    /// The `kind: Status` body a real API server sends.
    pub(crate) fn to_status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        })
    }
}

/// Identity of a stored object: resource type, namespace (empty when cluster-scoped), name.
type Key = (&'static str, &'static str, String, String);

fn key(resource: &ResourceType, namespace: &str, name: &str) -> Key {
    (resource.group, resource.plural, namespace.to_string(), name.to_string())
}

/// A watch event as stored in the history and sent on watch streams.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    pub resource_version: u64,
    pub resource: ResourceType,
    pub namespace: String,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    pub object: Value,
}

impl Event {
    pub(crate) fn to_json_line(&self) -> String {
        let mut line = json!({"type": self.kind, "object": self.object}).to_string();
        line.push('\n');
        line
    }
}

/// How a PATCH body is to be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchKind {
    /// `application/merge-patch+json` (and strategic merge, treated the same).
    Merge,
    /// `application/apply-patch+yaml`: server-side apply, stored as merged JSON; creates the object.
    Apply,
}

/// Label and field selectors, equality-based (what kubelet plugins use).
#[derive(Debug, Default, Clone)]
pub(crate) struct Selectors {
    pub labels: Vec<Requirement>,
    pub fields: Vec<Requirement>,
}

/// One `key=value`, `key!=value` or `key` (exists) requirement.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Requirement {
    pub key: String,
    pub value: Option<String>,
    pub negated: bool,
}

impl Selectors {
    pub(crate) fn parse(labels: Option<&str>, fields: Option<&str>) -> Self {
        Self {
            labels: labels.map(parse_requirements).unwrap_or_default(),
            fields: fields.map(parse_requirements).unwrap_or_default(),
        }
    }

    fn matches(&self, object: &Value) -> bool {
        let label_ok = self.labels.iter().all(|r| {
            let actual = object
                .pointer(&format!("/metadata/labels/{}", r.key.replace('/', "~1")))
                .and_then(Value::as_str);
            r.matches(actual)
        });
        let field_ok = self.fields.iter().all(|r| {
            let pointer = format!("/{}", r.key.replace('.', "/"));
            r.matches(object.pointer(&pointer).and_then(Value::as_str))
        });
        label_ok && field_ok
    }
}

impl Requirement {
    fn matches(&self, actual: Option<&str>) -> bool {
        match (&self.value, self.negated) {
            (None, _) => actual.is_some(),
            (Some(v), false) => actual == Some(v.as_str()),
            (Some(v), true) => actual != Some(v.as_str()),
        }
    }
}

fn parse_requirements(s: &str) -> Vec<Requirement> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            if let Some((k, v)) = p.split_once("!=") {
                Requirement {
                    key: k.to_string(),
                    value: Some(v.to_string()),
                    negated: true,
                }
            } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
                Requirement {
                    key: k.to_string(),
                    value: Some(v.to_string()),
                    negated: false,
                }
            } else {
                Requirement {
                    key: p.to_string(),
                    value: None,
                    negated: false,
                }
            }
        })
        .collect()
}

/// All objects, a global resourceVersion counter (as etcd's revision) and the event history.
#[derive(Debug, Default)]
pub(crate) struct Store {
    revision: u64,
    next_uid: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<Event>,
    /// History before this revision is gone (etcd's compaction): older watches get 410.
    compacted: u64,
}

impl Store {
    /// The current global resourceVersion.
    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    pub(crate) fn get(&self, resource: &ResourceType, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&key(resource, namespace, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(resource, name))
    }

    /// Objects of a type, optionally in one namespace, filtered by selectors.
    pub(crate) fn list(&self, resource: &ResourceType, namespace: Option<&str>, selectors: &Selectors) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((g, p, ns, _), _)| {
                *g == resource.group && *p == resource.plural && namespace.is_none_or(|n| n == ns)
            })
            .map(|(_, v)| v)
            .filter(|v| selectors.matches(v))
            .cloned()
            .collect()
    }

    /// Events of a type after `since`, optionally in one namespace, filtered by selectors; a
    /// `since` older than the compacted history is `410 Expired`, as the real server answers.
    pub(crate) fn events_since(
        &self,
        resource: &ResourceType,
        namespace: Option<&str>,
        selectors: &Selectors,
        since: u64,
    ) -> Result<Vec<Event>, ApiError> {
        if since < self.compacted {
            return Err(ApiError {
                code: 410,
                reason: "Expired",
                message: format!("too old resource version: {since} ({})", self.compacted),
            });
        }
        Ok(self
            .history
            .iter()
            .filter(|e| e.resource_version > since && event_matches(e, resource, namespace, selectors))
            .cloned()
            .collect())
    }

    /// Forgets the event history up to the current revision, as etcd's compaction does.
    pub(crate) fn compact(&mut self) {
        self.compacted = self.revision;
        self.history.clear();
    }

    /// Creates an object. Status is dropped for types with a status subresource unless `keep_status`.
    pub(crate) fn create(
        &mut self,
        resource: &ResourceType,
        namespace: &str,
        mut object: Value,
        keep_status: bool,
    ) -> Result<(Value, Event), ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request("the request body must be a JSON object"));
        }
        let meta = metadata_mut(&mut object);
        let name = match meta.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) => format!("{prefix}{:05x}", self.next_uid + 1),
                None => {
                    return Err(ApiError::bad_request(
                        "metadata.name or metadata.generateName is required",
                    ));
                }
            },
        };
        if self.objects.contains_key(&key(resource, namespace, &name)) {
            return Err(ApiError::already_exists(resource, &name));
        }
        self.revision += 1;
        self.next_uid += 1;
        let meta = metadata_mut(&mut object);
        meta.insert("name".into(), json!(name));
        if resource.namespaced {
            meta.insert("namespace".into(), json!(namespace));
        }
        if !keep_status || !meta.contains_key("uid") {
            meta.insert(
                "uid".into(),
                json!(format!("00000000-0000-4000-8000-{:012x}", self.next_uid)),
            );
        }
        meta.insert("resourceVersion".into(), json!(self.revision.to_string()));
        meta.insert("generation".into(), json!(1));
        meta.insert("creationTimestamp".into(), json!("2026-01-01T00:00:00Z"));
        let obj = object.as_object_mut().expect("checked above");
        obj.insert("apiVersion".into(), json!(resource.api_version()));
        obj.insert("kind".into(), json!(resource.kind));
        if resource.has_status && !keep_status {
            obj.remove("status");
        }
        self.objects.insert(key(resource, namespace, &name), object.clone());
        Ok((object.clone(), self.record(resource, namespace, "ADDED", object)))
    }

    /// Replaces an object (or only its status), enforcing the resourceVersion precondition.
    pub(crate) fn update(
        &mut self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
        mut object: Value,
        status: bool,
    ) -> Result<(Value, Event), ApiError> {
        let current = self.get(resource, namespace, name)?;
        if !object.is_object() {
            return Err(ApiError::bad_request("the request body must be a JSON object"));
        }
        if let Some(rv) = object.pointer("/metadata/resourceVersion").and_then(Value::as_str)
            && !rv.is_empty()
            && Some(rv) != current.pointer("/metadata/resourceVersion").and_then(Value::as_str)
        {
            return Err(ApiError::conflict(resource, name));
        }
        if object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .is_some_and(|n| n != name)
        {
            return Err(ApiError::bad_request("the name in the body does not match the URL"));
        }
        let merged = if status {
            let mut next = current.clone();
            set_or_remove(&mut next, "status", object.get("status").cloned());
            next
        } else {
            if resource.has_status {
                set_or_remove(&mut object, "status", current.get("status").cloned());
            }
            // Server-owned metadata survives an update.
            let meta = metadata_mut(&mut object);
            for field in ["uid", "creationTimestamp", "namespace", "name"] {
                if let Some(v) = current.pointer(&format!("/metadata/{field}")) {
                    meta.insert(field.into(), v.clone());
                }
            }
            object
        };
        Ok(self.commit(resource, namespace, name, &current, merged))
    }

    /// Applies a merge or server-side-apply patch (by field `manager`, required for apply).
    // The target's four parts, the body and the request's modifiers: a struct for them would
    // only be unpacked again here.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn patch(
        &mut self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
        patch: Value,
        kind: PatchKind,
        status: bool,
        manager: Option<&str>,
    ) -> Result<(Value, Event), ApiError> {
        if !patch.is_object() {
            return Err(ApiError::bad_request("the patch must be a JSON object"));
        }
        let manager = match (kind, manager) {
            (PatchKind::Apply, None | Some("")) => {
                return Err(ApiError::bad_request(
                    "PATCH, application/apply-patch+yaml requires fieldManager to be set",
                ));
            }
            (_, m) => m.unwrap_or_default(),
        };
        let current = match self.get(resource, namespace, name) {
            Ok(c) => c,
            Err(e) if kind == PatchKind::Apply && !status => {
                let _ = e;
                let mut object = patch;
                metadata_mut(&mut object).insert("name".into(), json!(name));
                return self.create(resource, namespace, object, false);
            }
            Err(e) => return Err(e),
        };
        if let Some(rv) = patch.pointer("/metadata/resourceVersion").and_then(Value::as_str)
            && Some(rv) != current.pointer("/metadata/resourceVersion").and_then(Value::as_str)
        {
            return Err(ApiError::conflict(resource, name));
        }
        if status && kind == PatchKind::Apply && *resource == RESOURCE_CLAIMS {
            let next = claim_status::apply(&current, manager, &patch)?;
            return Ok(self.commit(resource, namespace, name, &current, next));
        }
        let mut next = current.clone();
        if status {
            if *resource == RESOURCE_CLAIMS {
                claim_status::check_uid(&current, &patch)?;
            }
            let mut s = next.get("status").cloned().unwrap_or(json!({}));
            merge(&mut s, patch.get("status").cloned().unwrap_or(Value::Null));
            if *resource == RESOURCE_CLAIMS
                && let Some(devices) = s.get("devices").and_then(Value::as_array)
            {
                claim_status::validate_devices(&current, devices)?;
            }
            set_or_remove(&mut next, "status", Some(s));
        } else {
            let mut p = patch;
            if resource.has_status {
                p.as_object_mut().expect("checked above").remove("status");
            }
            for field in ["uid", "resourceVersion", "creationTimestamp", "generation"] {
                if let Some(m) = p.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove(field);
                }
            }
            merge(&mut next, p);
        }
        Ok(self.commit(resource, namespace, name, &current, next))
    }

    pub(crate) fn delete(
        &mut self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
    ) -> Result<(Value, Event), ApiError> {
        let object = self
            .objects
            .remove(&key(resource, namespace, name))
            .ok_or_else(|| ApiError::not_found(resource, name))?;
        self.revision += 1;
        let mut deleted = object.clone();
        metadata_mut(&mut deleted).insert("resourceVersion".into(), json!(self.revision.to_string()));
        Ok((object, self.record(resource, namespace, "DELETED", deleted)))
    }

    fn commit(
        &mut self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
        current: &Value,
        mut next: Value,
    ) -> (Value, Event) {
        self.revision += 1;
        let generation = current
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let spec_changed = strip_meta_status(current) != strip_meta_status(&next);
        let meta = metadata_mut(&mut next);
        meta.insert("resourceVersion".into(), json!(self.revision.to_string()));
        meta.insert(
            "generation".into(),
            json!(if spec_changed { generation + 1 } else { generation }),
        );
        if let Some(obj) = next.as_object_mut() {
            obj.insert("apiVersion".into(), json!(resource.api_version()));
            obj.insert("kind".into(), json!(resource.kind));
        }
        self.objects.insert(key(resource, namespace, name), next.clone());
        (next.clone(), self.record(resource, namespace, "MODIFIED", next))
    }

    fn record(&mut self, resource: &ResourceType, namespace: &str, kind: &'static str, object: Value) -> Event {
        let event = Event {
            resource_version: self.revision,
            resource: *resource,
            namespace: namespace.to_string(),
            kind,
            object,
        };
        self.history.push(event.clone());
        event
    }
}

pub(crate) fn event_matches(
    e: &Event,
    resource: &ResourceType,
    namespace: Option<&str>,
    selectors: &Selectors,
) -> bool {
    e.resource == *resource && namespace.is_none_or(|n| n == e.namespace) && selectors.matches(&e.object)
}

fn strip_meta_status(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("metadata");
        o.remove("status");
        o.remove("apiVersion");
        o.remove("kind");
    }
    v
}

fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    let obj = object.as_object_mut().expect("callers check for an object");
    let meta = obj.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut().expect("just made an object")
}

fn set_or_remove(object: &mut Value, field: &str, value: Option<Value>) {
    if let Some(o) = object.as_object_mut() {
        match value {
            Some(v) => o.insert(field.to_string(), v),
            None => o.remove(field),
        };
    }
}

/// RFC 7386 JSON merge patch.
pub(crate) fn merge(target: &mut Value, patch: Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("just made an object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(&k);
                } else {
                    merge(t.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{RESOURCE_CLAIMS, RESOURCE_SLICES};

    fn claim(name: &str) -> Value {
        json!({"metadata": {"name": name}, "spec": {"devices": {}}, "status": {"allocation": {}}})
    }

    /// A claim allocated to `net.x`'s device d1 with an opaque configuration, as the scheduler
    /// leaves it.
    fn allocated_claim(store: &mut Store) -> Value {
        let claim = json!({
            "metadata": {"name": "c", "uid": "u1"},
            "spec": {"devices": {}},
            "status": {"allocation": {"devices": {
                "results": [{"request": "nic", "driver": "net.x", "pool": "n1", "device": "d1"}],
                "config": [{"source": "FromClaim", "opaque": {"driver": "net.x", "parameters": {"name": "net1"}}}],
            }}},
        });
        store.create(&RESOURCE_CLAIMS, "ns", claim, true).unwrap().0
    }

    #[test]
    fn a_claims_status_takes_merge_patches_with_preconditions_and_refuses_apply_over_opaque_parameters() {
        let mut store = Store::default();
        let stored = allocated_claim(&mut store);
        let rv = stored["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
        let entry = json!({"driver": "net.x", "pool": "n1", "device": "d1", "networkData": {"interfaceName": "net1"}});
        let body = |uid: &str, rv: &str, devices: Value| json!({"metadata": {"uid": uid, "resourceVersion": rv}, "status": {"devices": devices}});
        let patch = |store: &mut Store, p: Value, kind: PatchKind| {
            store.patch(&RESOURCE_CLAIMS, "ns", "c", p, kind, true, Some("net.x"))
        };

        // As the real server: the apply re-encodes the allocation and finds it changed.
        let apply = json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": "c", "namespace": "ns"}, "status": {"devices": [entry.clone()]}});
        let refused = patch(&mut store, apply, PatchKind::Apply).unwrap_err();
        assert_eq!(refused.code, 422);
        assert!(refused.message.contains("status.allocation") && refused.message.contains("field is immutable"));

        // Preconditions: another UID or an old resourceVersion is a conflict.
        let e = patch(&mut store, body("u2", &rv, json!([entry.clone()])), PatchKind::Merge).unwrap_err();
        assert_eq!((e.code, e.message.contains("UID in precondition")), (409, true));
        let e = patch(&mut store, body("u1", "0", json!([entry.clone()])), PatchKind::Merge).unwrap_err();
        assert_eq!(e.code, 409);
        // A device the claim was not allocated is invalid, as with apply.
        let stray = json!({"driver": "net.x", "pool": "n1", "device": "d9"});
        let e = patch(&mut store, body("u1", &rv, json!([stray])), PatchKind::Merge).unwrap_err();
        assert_eq!(e.code, 422);

        let (written, _) = patch(&mut store, body("u1", &rv, json!([entry.clone()])), PatchKind::Merge).unwrap();
        assert_eq!(written["status"]["devices"], json!([entry]));
        assert_eq!(
            written["status"]["allocation"], stored["status"]["allocation"],
            "the allocation is left alone"
        );
        let rv = written["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
        let (cleared, _) = patch(&mut store, body("u1", &rv, json!([])), PatchKind::Merge).unwrap();
        assert_eq!(cleared["status"]["devices"], json!([]));
    }

    #[test]
    fn create_assigns_metadata_and_drops_status() {
        let mut s = Store::default();
        let (c, e) = s.create(&RESOURCE_CLAIMS, "ns", claim("a"), false).unwrap();
        assert_eq!(c["metadata"]["resourceVersion"], "1");
        assert_eq!(c["metadata"]["namespace"], "ns");
        assert!(c["metadata"]["uid"].as_str().unwrap().len() > 10);
        assert!(c.get("status").is_none());
        assert_eq!(e.kind, "ADDED");
        let err = s.create(&RESOURCE_CLAIMS, "ns", claim("a"), false).unwrap_err();
        assert_eq!((err.code, err.reason), (409, "AlreadyExists"));
    }

    #[test]
    fn update_checks_resource_version_and_keeps_status() {
        let mut s = Store::default();
        s.create(&RESOURCE_CLAIMS, "ns", claim("a"), true).unwrap();
        let mut stale = s.get(&RESOURCE_CLAIMS, "ns", "a").unwrap();
        let mut fresh = stale.clone();
        fresh["spec"]["x"] = json!(1);
        fresh["status"] = json!({"ignored": true});
        let (updated, _) = s.update(&RESOURCE_CLAIMS, "ns", "a", fresh, false).unwrap();
        assert_eq!(updated["metadata"]["resourceVersion"], "2");
        assert_eq!(updated["metadata"]["generation"], 2);
        assert_eq!(
            updated["status"],
            json!({"allocation": {}}),
            "main resource ignores status"
        );
        stale["spec"]["x"] = json!(2);
        let err = s.update(&RESOURCE_CLAIMS, "ns", "a", stale, false).unwrap_err();
        assert_eq!((err.code, err.reason), (409, "Conflict"));
        let err = s.update(&RESOURCE_CLAIMS, "ns", "zz", claim("zz"), false).unwrap_err();
        assert_eq!(err.code, 404);
    }

    #[test]
    fn status_update_touches_only_status() {
        let mut s = Store::default();
        s.create(&RESOURCE_CLAIMS, "ns", claim("a"), false).unwrap();
        let mut obj = s.get(&RESOURCE_CLAIMS, "ns", "a").unwrap();
        obj["spec"]["changed"] = json!(true);
        obj["status"] = json!({"devices": [{"driver": "d"}]});
        let (after, _) = s.update(&RESOURCE_CLAIMS, "ns", "a", obj, true).unwrap();
        assert_eq!(after["status"]["devices"][0]["driver"], "d");
        assert!(after["spec"].get("changed").is_none());
        assert_eq!(after["metadata"]["generation"], 1);
    }

    #[test]
    fn apply_creates_then_merges() {
        let mut s = Store::default();
        let p = json!({"metadata": {"name": "s1"}, "spec": {"driver": "d", "devices": [1]}});
        let (c, e) = s
            .patch(&RESOURCE_SLICES, "", "s1", p, PatchKind::Apply, false, Some("test"))
            .unwrap();
        assert_eq!(e.kind, "ADDED");
        assert_eq!(c["spec"]["driver"], "d");
        let p = json!({"spec": {"devices": [1, 2]}});
        let (c, e) = s
            .patch(&RESOURCE_SLICES, "", "s1", p, PatchKind::Apply, false, Some("test"))
            .unwrap();
        assert_eq!(e.kind, "MODIFIED");
        assert_eq!(c["spec"], json!({"driver": "d", "devices": [1, 2]}));
        let err = s
            .patch(&RESOURCE_SLICES, "", "nope", json!({}), PatchKind::Merge, false, None)
            .unwrap_err();
        assert_eq!(err.code, 404);
    }

    #[test]
    fn selectors_and_history() {
        let mut s = Store::default();
        for (n, node) in [("a", "n1"), ("b", "n2")] {
            let obj = json!({"metadata": {"name": n, "labels": {"k": n}}, "spec": {"nodeName": node}});
            s.create(&RESOURCE_SLICES, "", obj, false).unwrap();
        }
        let sel = Selectors::parse(None, Some("spec.nodeName=n2"));
        let names: Vec<_> = s
            .list(&RESOURCE_SLICES, None, &sel)
            .iter()
            .map(|o| o["metadata"]["name"].clone())
            .collect();
        assert_eq!(names, vec![json!("b")]);
        let sel = Selectors::parse(Some("k!=a"), None);
        assert_eq!(s.list(&RESOURCE_SLICES, None, &sel).len(), 1);
        s.delete(&RESOURCE_SLICES, "", "a").unwrap();
        let events = s
            .events_since(&RESOURCE_SLICES, None, &Selectors::default(), 1)
            .unwrap();
        let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec!["ADDED", "DELETED"]);
        assert_eq!(s.delete(&RESOURCE_SLICES, "", "a").unwrap_err().code, 404);
    }
}

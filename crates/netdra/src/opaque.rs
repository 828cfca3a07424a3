//! The opaque configuration a claim (or its DeviceClass) gives this driver's devices.
//!
//! The rest of this documentation is on the public item it governs, below, where users read it.

use std::fmt;

use kubeletplugin::{AllocatedDevice, ClaimRef, ConfigSource, ResolvedClaim};
use netdev::EthtoolConfig;
use netdev::InterfaceConfig;
use serde_json::Value;

/// The `apiVersion` of netdra's opaque configuration.
///
/// The opaque configuration a claim (or its DeviceClass) gives this driver's devices.
///
/// Rules:
/// - Each `parameters` object is versioned: `apiVersion` is [`API_VERSION`]
///   (`netdra.dev/v1alpha2`) or `netdra.dev/v1alpha1`, and `kind` [`KIND`]; the rest is an
///   [`InterfaceConfig`] whose unknown fields are rejected.
/// - `v1alpha1` is the subset of `v1alpha2` without the fields `v1alpha2` added (`rules`, `neighbours`, `sysctls`, `ethtool`, the
///   GSO/GRO sizes, `txQueueLen`) and `routes[].table`; it
///   converts as it is. A `v1alpha1` object that uses one of those fields (even empty) is an
///   error naming the field and the version it needs.
/// - Configurations apply in the order the SDK hands them over (class first, then claim), after
///   each is converted to `v1alpha2` (so a class and a claim may be of different versions): a
///   field a later one sets replaces the earlier value; `addresses`, `routes`, `rules` and
///   `neighbours` are replaced as whole lists, never appended; `sysctls` and
///   `ethtool.features` are merged key by key, the later value winning (a later configuration
///   cannot remove a key an earlier one set, only change its value).
/// - A claim configuration for this driver that names a request the claim does not have is an
///   error (a typo there would otherwise silently configure nothing).
///
/// Every error names the claim, the request and the field.
pub const API_VERSION: &str = "netdra.dev/v1alpha2";
/// The previous `apiVersion`, still accepted: [`API_VERSION`] without [`V1ALPHA2_FIELDS`].
pub const API_VERSION_V1ALPHA1: &str = "netdra.dev/v1alpha1";
/// The top-level fields [`API_VERSION`] added (besides `routes[].table`).
pub const V1ALPHA2_FIELDS: &[&str] = &[
    "rules",
    "neighbours",
    "sysctls",
    "ethtool",
    "gsoMaxSize",
    "groMaxSize",
    "gsoIPv4MaxSize",
    "groIPv4MaxSize",
    "txQueueLen",
];
/// The `kind` of netdra's opaque configuration.
pub const KIND: &str = "InterfaceConfig";

/// A configuration that cannot be used, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("request {request:?}: {source_name} config: {field}: {message}")]
#[non_exhaustive]
pub struct OpaqueError {
    /// The claim.
    pub claim: ClaimRef,
    /// The request whose device the configuration applies to (or names).
    pub request: String,
    /// `class` or `claim`.
    pub source_name: &'static str,
    /// The field at fault (`parameters` for the object as a whole).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn source_name(source: ConfigSource) -> &'static str {
    match source {
        ConfigSource::Class => "class",
        ConfigSource::Claim => "claim",
    }
}

/// Parses one versioned `parameters` object into an [`InterfaceConfig`]; the error is the
/// field and message.
pub fn parse(parameters: &Value) -> Result<InterfaceConfig, (String, String)> {
    let Value::Object(map) = parameters else {
        return Err((
            "parameters".into(),
            format!("expected a JSON object, found {}", json_type(parameters)),
        ));
    };
    let mut map = map.clone();
    let check = |map: &mut serde_json::Map<String, Value>, field: &str, want: &[&str]| match map.remove(field) {
        Some(Value::String(s)) if want.contains(&s.as_str()) => Ok(s),
        Some(Value::String(s)) => Err((
            field.to_owned(),
            format!("{s:?} is not supported, use {}", Quoted(want)),
        )),
        Some(other) => Err((
            field.to_owned(),
            format!("expected a string, found {}", json_type(&other)),
        )),
        None => Err((field.to_owned(), format!("missing, use {}", Quoted(want)))),
    };
    let version = check(&mut map, "apiVersion", &[API_VERSION, API_VERSION_V1ALPHA1])?;
    check(&mut map, "kind", &[KIND])?;
    if version == API_VERSION_V1ALPHA1 {
        check_v1alpha1(&map)?;
    }
    serde_json::from_value(Value::Object(map)).map_err(|e| {
        let message = e.to_string();
        // serde names an unknown field in its message; point the field at it too.
        let field = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
            .map_or_else(|| "parameters".to_owned(), str::to_owned);
        (field, message)
    })
}

/// Refuses the fields of `v1alpha2` in a `v1alpha1` object, naming the first.
fn check_v1alpha1(map: &serde_json::Map<String, Value>) -> Result<(), (String, String)> {
    let needs = |field: String| {
        let message = format!("{field} needs apiVersion {API_VERSION:?} (this object is {API_VERSION_V1ALPHA1:?})");
        Err((field, message))
    };
    if let Some(field) = V1ALPHA2_FIELDS.iter().find(|f| map.contains_key(**f)) {
        return needs((*field).to_owned());
    }
    if let Some(Value::Array(routes)) = map.get("routes")
        && let Some(i) = routes
            .iter()
            .position(|r| r.as_object().is_some_and(|r| r.contains_key("table")))
    {
        return needs(format!("routes[{i}].table"));
    }
    Ok(())
}

/// `"a"` or `"a" or "b"`.
struct Quoted<'a>(&'a [&'a str]);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" or ")?;
            }
            write!(f, "{s:?}")?;
        }
        Ok(())
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Replaces every field of `base` that `over` sets; merges the maps key by key.
fn overlay(base: &mut InterfaceConfig, over: InterfaceConfig) {
    if over.name.is_some() {
        base.name = over.name;
    }
    if over.mtu.is_some() {
        base.mtu = over.mtu;
    }
    if over.hardware_address.is_some() {
        base.hardware_address = over.hardware_address;
    }
    if !over.addresses.is_empty() {
        base.addresses = over.addresses;
    }
    if !over.routes.is_empty() {
        base.routes = over.routes;
    }
    if over.up.is_some() {
        base.up = over.up;
    }
    if !over.rules.is_empty() {
        base.rules = over.rules;
    }
    if !over.neighbours.is_empty() {
        base.neighbours = over.neighbours;
    }
    base.sysctls.extend(over.sysctls);
    if let Some(ethtool) = over.ethtool {
        base.ethtool
            .get_or_insert_with(EthtoolConfig::default)
            .features
            .extend(ethtool.features);
    }
    let tuning = [
        (&mut base.gso_max_size, over.gso_max_size),
        (&mut base.gro_max_size, over.gro_max_size),
        (&mut base.gso_ipv4_max_size, over.gso_ipv4_max_size),
        (&mut base.gro_ipv4_max_size, over.gro_ipv4_max_size),
        (&mut base.tx_queue_len, over.tx_queue_len),
    ];
    for (base, over) in tuning {
        if over.is_some() {
            *base = over;
        }
    }
}

/// The merged configuration of one allocated device, `None` when nothing configures it.
pub fn merged(claim: &ClaimRef, device: &AllocatedDevice) -> Result<Option<InterfaceConfig>, OpaqueError> {
    let mut result: Option<InterfaceConfig> = None;
    for config in &device.configs {
        let parsed = parse(&config.parameters).map_err(|(field, message)| OpaqueError {
            claim: claim.clone(),
            request: device.request.clone(),
            source_name: source_name(config.source),
            field,
            message,
        })?;
        overlay(result.get_or_insert_with(InterfaceConfig::default), parsed);
    }
    Ok(result)
}

/// Checks that every claim configuration of `driver` names only requests the claim has.
pub fn check_requests(driver: &str, claim: &ResolvedClaim) -> Result<(), OpaqueError> {
    let Some(devices) = claim.object.spec.devices.as_ref() else {
        return Ok(());
    };
    let known: Vec<&str> = devices.requests.iter().flatten().map(|r| r.name.as_str()).collect();
    for (i, config) in devices.config.iter().flatten().enumerate() {
        if config.opaque.as_ref().is_none_or(|o| o.driver != driver) {
            continue;
        }
        for (j, request) in config.requests.iter().flatten().enumerate() {
            // A subrequest `parent/sub` belongs to request `parent`.
            let parent = request.split('/').next().unwrap_or(request);
            if !known.contains(&parent) {
                return Err(OpaqueError {
                    claim: claim.claim.clone(),
                    request: request.clone(),
                    source_name: "claim",
                    field: format!("spec.devices.config[{i}].requests[{j}]"),
                    message: format!("the claim has no request {request:?} (it has {})", Names(&known)),
                });
            }
        }
    }
    Ok(())
}

struct Names<'a>(&'a [&'a str]);

impl fmt::Display for Names<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, n) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{n:?}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(extra: Value) -> Value {
        let mut base = json!({"apiVersion": API_VERSION, "kind": KIND});
        base.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        base
    }

    #[test]
    fn versioned_objects_parse_and_everything_else_names_its_field() {
        let ok = parse(&v(json!({"name": "net1", "mtu": 1400}))).unwrap();
        assert_eq!(ok.name.as_deref(), Some("net1"));
        let cases = [
            (json!("{not json"), "parameters", "found a string"),
            (json!([1]), "parameters", "found an array"),
            (json!({"kind": KIND}), "apiVersion", "missing"),
            (
                json!({"apiVersion": "netdra.dev/v2", "kind": KIND}),
                "apiVersion",
                "not supported",
            ),
            (
                json!({"apiVersion": API_VERSION, "kind": "Foo"}),
                "kind",
                "not supported",
            ),
            (json!({"apiVersion": API_VERSION}), "kind", "missing"),
            (v(json!({"nmae": "x"})), "nmae", "unknown field"),
            (v(json!({"mtu": "big"})), "parameters", "invalid type"),
        ];
        for (input, field, message) in cases {
            let (f, m) = parse(&input).unwrap_err();
            assert_eq!(f, field, "{input}");
            assert!(m.contains(message), "{input}: {m}");
        }
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-zA-Z0-9./:-]{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("apiVersion".to_owned()),
                        Just("kind".to_owned()),
                        Just("name".to_owned()),
                        Just("mtu".to_owned()),
                        Just("addresses".to_owned()),
                        Just("routes".to_owned()),
                        Just("table".to_owned()),
                        Just("rules".to_owned()),
                        Just("neighbours".to_owned()),
                        Just("sysctls".to_owned()),
                        Just("ethtool".to_owned()),
                        Just("features".to_owned()),
                        Just("txQueueLen".to_owned()),
                        "[a-z]{1,6}"
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Any JSON a claim can carry parses or names a field; it never panics.
        #[test]
        fn any_parameters_parse_or_name_a_field(
            mut value in json_value(),
            versioned in proptest::bool::ANY,
            old in proptest::bool::ANY,
        ) {
            if versioned && let Value::Object(map) = &mut value {
                let version = if old { API_VERSION_V1ALPHA1 } else { API_VERSION };
                map.insert("apiVersion".into(), json!(version));
                map.insert("kind".into(), json!(KIND));
            }
            match parse(&value) {
                // Whatever parses also validates or names a field, without panicking.
                Ok(config) => {
                    if let Err(err) = config.validate() {
                        proptest::prop_assert!(!err.field.is_empty());
                    }
                }
                Err((field, message)) => proptest::prop_assert!(!field.is_empty() && !message.is_empty()),
            }
        }
    }

    fn v1(extra: Value) -> Value {
        let mut value = v(extra);
        value["apiVersion"] = json!(API_VERSION_V1ALPHA1);
        value
    }

    #[test]
    fn a_v1alpha1_object_converts_to_the_same_config() {
        let fields = json!({"name": "net1", "mtu": 1400, "hardwareAddress": "02:00:00:00:00:01",
            "addresses": ["10.10.0.2/24", "fd00::2/64"],
            "routes": [{"destination": "10.20.0.0/16", "gateway": "10.10.0.1", "metric": 10},
                       {"destination": "default", "gateway": "fd00::1"}],
            "up": true});
        let old = parse(&v1(fields.clone())).unwrap();
        let new = parse(&v(fields)).unwrap();
        assert_eq!(old, new);
        assert_eq!(old.validate().unwrap(), new.validate().unwrap());
    }

    #[test]
    fn a_v1alpha1_object_with_a_v1alpha2_field_names_it() {
        let cases = [
            (json!({"rules": [{"table": 100, "ipFamily": "IPv4"}]}), "rules"),
            (json!({"rules": []}), "rules"),
            (json!({"neighbours": []}), "neighbours"),
            (json!({"sysctls": {"ipv4.arp_ignore": 1}}), "sysctls"),
            (json!({"ethtool": {"features": {"rx-gro": false}}}), "ethtool"),
            (json!({"gsoMaxSize": 65536}), "gsoMaxSize"),
            (json!({"groMaxSize": 65536}), "groMaxSize"),
            (json!({"gsoIPv4MaxSize": 65536}), "gsoIPv4MaxSize"),
            (json!({"groIPv4MaxSize": 65536}), "groIPv4MaxSize"),
            (json!({"txQueueLen": 1000}), "txQueueLen"),
            (
                json!({"addresses": ["10.10.0.2/24"], "routes": [
                    {"destination": "10.20.0.0/16", "gateway": "10.10.0.1"},
                    {"destination": "10.30.0.0/16", "gateway": "10.10.0.1", "table": 100}]}),
                "routes[1].table",
            ),
        ];
        for (fields, field) in cases {
            let (f, m) = parse(&v1(fields.clone())).unwrap_err();
            assert_eq!(f, field, "{fields}");
            assert!(m.contains("needs apiVersion \"netdra.dev/v1alpha2\""), "{fields}: {m}");
            // The same object under v1alpha2 parses.
            assert!(parse(&v(fields.clone())).is_ok(), "{fields}");
        }
        // Unknown fields stay unknown under either version.
        let (f, m) = parse(&v1(json!({"table": 1}))).unwrap_err();
        assert_eq!((f.as_str(), m.contains("unknown field")), ("table", true));
    }

    #[test]
    fn a_v1alpha2_object_carries_every_field() {
        let config = parse(&v(json!({
            "addresses": ["10.10.0.2/24"],
            "routes": [{"destination": "10.20.0.0/16", "gateway": "10.10.0.1", "table": 100}],
            "rules": [{"priority": 100, "from": "10.10.0.0/24", "table": 100}],
            "neighbours": [{"address": "10.10.0.1", "hardwareAddress": "02:00:00:00:00:01"}],
            "sysctls": {"ipv4.arp_ignore": 1, "ipv6.accept_ra": 0},
            "ethtool": {"features": {"rx-gro-list": true}},
            "gsoMaxSize": 131072, "groMaxSize": 131072, "gsoIPv4MaxSize": 65536,
            "groIPv4MaxSize": 65536, "txQueueLen": 1000,
        })))
        .unwrap();
        let valid = config.validate().unwrap();
        assert_eq!(valid.routes[0].table, Some(100));
        assert_eq!(
            (valid.rules.len(), valid.neighbours.len(), valid.sysctls.len()),
            (1, 1, 2)
        );
        assert_eq!(valid.features.get("rx-gro-list"), Some(&true));
        assert_eq!(valid.tuning.gso_max_size, Some(131_072));
        assert_eq!(valid.tuning.txqueuelen, Some(1000));
    }

    #[test]
    fn later_configs_replace_rules_and_neighbours_and_merge_maps_by_key() {
        // A class of the old version under a claim of the new one.
        let mut base = parse(&v1(json!({"name": "a", "mtu": 1400}))).unwrap();
        overlay(
            &mut base,
            parse(&v(json!({
                "rules": [{"ipFamily": "IPv4", "table": 100}, {"ipFamily": "IPv6", "table": 100}],
                "neighbours": [{"address": "10.0.0.1", "hardwareAddress": "02:00:00:00:00:01"}],
                "sysctls": {"ipv4.arp_ignore": 1, "ipv4.arp_announce": 2},
                "ethtool": {"features": {"rx-gro": true, "rx-gro-list": true}},
                "gsoMaxSize": 65536, "txQueueLen": 500,
            })))
            .unwrap(),
        );
        overlay(
            &mut base,
            parse(&v(json!({
                "rules": [{"ipFamily": "IPv6", "table": 200}],
                "sysctls": {"ipv4.arp_ignore": 8, "ipv6.accept_ra": 0},
                "ethtool": {"features": {"rx-gro": false}},
                "txQueueLen": 1000,
            })))
            .unwrap(),
        );
        assert_eq!((base.name.as_deref(), base.mtu), (Some("a"), Some(1400)));
        assert_eq!(base.rules.len(), 1, "replaced as a whole list");
        assert_eq!(base.rules[0].table, Some(200));
        assert_eq!(base.neighbours.len(), 1, "kept: the last config gives none");
        let sysctls: Vec<(&str, i64)> = base.sysctls.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(
            sysctls,
            [("ipv4.arp_announce", 2), ("ipv4.arp_ignore", 8), ("ipv6.accept_ra", 0)]
        );
        let features = &base.ethtool.as_ref().unwrap().features;
        assert_eq!((features["rx-gro"], features["rx-gro-list"]), (false, true));
        assert_eq!((base.gso_max_size, base.tx_queue_len), (Some(65536), Some(1000)));
        assert!(base.validate().is_ok());
    }

    #[test]
    fn later_configs_replace_fields_and_whole_lists() {
        let mut base = parse(&v(
            json!({"name": "a", "mtu": 1400, "addresses": ["10.0.0.1/24", "10.0.1.1/24"]}),
        ))
        .unwrap();
        overlay(
            &mut base,
            parse(&v(json!({"mtu": 9000, "addresses": ["10.9.0.1/24"]}))).unwrap(),
        );
        assert_eq!(base.name.as_deref(), Some("a"));
        assert_eq!(base.mtu, Some(9000));
        assert_eq!(base.addresses, ["10.9.0.1/24"]);
    }
}

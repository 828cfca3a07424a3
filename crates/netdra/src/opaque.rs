//! The opaque configuration a claim (or its DeviceClass) gives this driver's devices.
//!
//! Rules:
//! - Each `parameters` object is versioned: `apiVersion` must be [`API_VERSION`] and `kind`
//!   [`KIND`]; the rest is an [`InterfaceConfig`] whose unknown fields are rejected.
//! - Configurations apply in the order the SDK hands them over (class first, then claim): a
//!   field a later one sets replaces the earlier value; `addresses` and `routes` are replaced
//!   as whole lists, never appended.
//! - A claim configuration for this driver that names a request the claim does not have is an
//!   error (a typo there would otherwise silently configure nothing).
//!
//! Every error names the claim, the request and the field.

use std::fmt;

use kubeletplugin::{AllocatedDevice, ClaimRef, ConfigSource, ResolvedClaim};
use netdev::InterfaceConfig;
use serde_json::Value;

/// The `apiVersion` of netdra's opaque configuration.
pub const API_VERSION: &str = "netdra.dev/v1alpha1";
/// The `kind` of netdra's opaque configuration.
pub const KIND: &str = "InterfaceConfig";

/// A configuration that cannot be used, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("request {request:?}: {source_name} config: {field}: {message}")]
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
    let check = |map: &mut serde_json::Map<String, Value>, field: &str, want: &str| match map.remove(field) {
        Some(Value::String(s)) if s == want => Ok(()),
        Some(Value::String(s)) => Err((field.to_owned(), format!("{s:?} is not supported, use {want:?}"))),
        Some(other) => Err((
            field.to_owned(),
            format!("expected a string, found {}", json_type(&other)),
        )),
        None => Err((field.to_owned(), format!("missing, use {want:?}"))),
    };
    check(&mut map, "apiVersion", API_VERSION)?;
    check(&mut map, "kind", KIND)?;
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

/// Replaces every field of `base` that `over` sets.
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
        fn any_parameters_parse_or_name_a_field(mut value in json_value(), versioned in proptest::bool::ANY) {
            if versioned && let Value::Object(map) = &mut value {
                map.insert("apiVersion".into(), json!(API_VERSION));
                map.insert("kind".into(), json!(KIND));
            }
            if let Err((field, message)) = parse(&value) {
                proptest::prop_assert!(!field.is_empty() && !message.is_empty());
            }
        }
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

//! Which interfaces are published: the default rule, or a CEL expression instead of it.
//!
//! The rest of this documentation is on the public item it governs, below, where users read it.

use std::collections::{BTreeMap, HashMap};

use std::sync::Arc;

use cel::{Context, Env, Program, Value};
use k8s_openapi::api::resource::v1::{Device, DeviceAttribute};

/// The filter could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    /// The expression does not parse.
    #[error("invalid device filter {expression:?}: {message}")]
    Parse {
        /// The expression.
        expression: String,
        /// The parser's message.
        message: String,
    },
}

/// Which devices are published.
///
/// Which interfaces are published: the default rule, or a CEL expression instead of it.
///
/// The expression sees one variable, `device`, shaped like the `device` of a DeviceClass
/// selector, so what an administrator writes here reads like what they write there:
///
/// ```text
/// device.driver                              the driver name
/// device.name                                the DRA device name
/// device.attributes["<domain>"].<name>       attribute values; the driver's own attributes
///                                            are under the driver name, the standard ones
///                                            under "resource.kubernetes.io"
/// device.selectedByDefault                   the default rule's verdict, to extend it
/// ```
///
/// For example `device.selectedByDefault || device.attributes["netdra.dev"].ifName == "veth7"`.
/// An expression that fails to parse is a start-up error carrying the parser's message; one
/// that fails on a device (a missing attribute without `has()` or `in`, a non-boolean result)
/// leaves that device out and says so at debug level.
#[non_exhaustive]
pub enum DeviceFilter {
    /// The default rule: everything backed by a device, except the uplinks and pod networking
    /// (loopback and software interfaces stay out, see [`crate::Exclusion`]).
    Default,
    /// A CEL expression that decides instead of the default rule.
    Cel {
        /// The expression as given.
        expression: String,
        /// The compiled program.
        program: Box<Program>,
        /// The standard environment, built once: building it per evaluation costs more than
        /// the evaluation.
        env: Arc<Env>,
    },
}

impl std::fmt::Debug for DeviceFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Default => f.write_str("DeviceFilter::Default"),
            Self::Cel { expression, .. } => f.debug_tuple("DeviceFilter::Cel").field(expression).finish(),
        }
    }
}

impl DeviceFilter {
    /// The CEL filter `expression`, or the default rule when it is `None` or blank.
    pub fn parse(expression: Option<&str>) -> Result<Self, FilterError> {
        let Some(expression) = expression.map(str::trim).filter(|e| !e.is_empty()) else {
            return Ok(Self::Default);
        };
        let program = Program::compile(expression).map_err(|e| FilterError::Parse {
            expression: expression.to_owned(),
            message: e.to_string(),
        })?;
        Ok(Self::Cel {
            expression: expression.to_owned(),
            program: Box::new(program),
            env: Arc::new(Env::stdlib()),
        })
    }

    /// Whether `device` of `driver` is published; `selected_by_default` is the default rule's
    /// verdict.
    pub fn selects(&self, driver: &str, device: &Device, selected_by_default: bool) -> bool {
        let Self::Cel {
            expression,
            program,
            env,
        } = self
        else {
            return selected_by_default;
        };
        let mut context = Context::with_env(env.clone());
        context.add_variable_from_value("device", device_value(driver, device, selected_by_default));
        match program.execute(&context) {
            Ok(Value::Bool(b)) => b,
            Ok(other) => {
                tracing::debug!(device = %device.name, %expression, result = ?other, "device filter did not return a boolean; device left out");
                false
            }
            Err(e) => {
                tracing::debug!(device = %device.name, %expression, error = %e, "device filter failed on this device; device left out");
                false
            }
        }
    }
}

fn attribute_value(a: &DeviceAttribute) -> Value {
    if let Some(b) = a.bool {
        Value::Bool(b)
    } else if let Some(i) = a.int {
        Value::Int(i)
    } else if let Some(s) = a.string.as_ref().or(a.version.as_ref()) {
        Value::String(s.clone().into())
    } else {
        Value::Null
    }
}

/// `device` as the CEL value the expression sees.
fn device_value(driver: &str, device: &Device, selected_by_default: bool) -> Value {
    let mut domains: BTreeMap<String, HashMap<String, Value>> = BTreeMap::new();
    for (name, value) in device.attributes.iter().flatten() {
        let (domain, id) = name.split_once('/').unwrap_or((driver, name));
        domains
            .entry(domain.to_owned())
            .or_default()
            .insert(id.to_owned(), attribute_value(value));
    }
    let attributes: HashMap<String, Value> = domains.into_iter().map(|(d, m)| (d, Value::from(m))).collect();
    let fields: HashMap<String, Value> = HashMap::from([
        ("driver".to_owned(), Value::String(driver.to_owned().into())),
        ("name".to_owned(), Value::String(device.name.clone().into())),
        ("attributes".to_owned(), Value::from(attributes)),
        ("selectedByDefault".to_owned(), Value::Bool(selected_by_default)),
    ]);
    Value::from(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(name: &str, kind: &str) -> Device {
        let mut attributes = BTreeMap::new();
        attributes.insert(
            "kind".to_owned(),
            DeviceAttribute {
                string: Some(kind.into()),
                ..Default::default()
            },
        );
        attributes.insert(
            "mtu".to_owned(),
            DeviceAttribute {
                int: Some(1500),
                ..Default::default()
            },
        );
        attributes.insert(
            "resource.kubernetes.io/pcieRoot".to_owned(),
            DeviceAttribute {
                string: Some("pci0000:00".into()),
                ..Default::default()
            },
        );
        Device {
            name: name.into(),
            attributes: Some(attributes),
            ..Default::default()
        }
    }

    #[test]
    fn no_expression_is_the_default_rule() {
        let f = DeviceFilter::parse(Some("  ")).expect("blank");
        assert!(f.selects("d.example", &device("a", "veth"), true));
        assert!(!f.selects("d.example", &device("a", "veth"), false));
    }

    #[test]
    fn expressions_see_attributes_by_domain_and_the_default_verdict() {
        let f = DeviceFilter::parse(Some(r#"device.attributes["d.example"].kind != "veth""#)).expect("parses");
        assert!(f.selects("d.example", &device("a", "physical"), false));
        assert!(!f.selects("d.example", &device("b", "veth"), true));

        let f = DeviceFilter::parse(Some(
            r#"device.attributes["resource.kubernetes.io"].pcieRoot == "pci0000:00" && device.attributes["d.example"].mtu >= 1500"#,
        ))
        .expect("parses");
        assert!(f.selects("d.example", &device("a", "veth"), false));

        let f = DeviceFilter::parse(Some(r#"device.selectedByDefault || device.name == "b""#)).expect("parses");
        assert!(f.selects("d.example", &device("a", "veth"), true));
        assert!(f.selects("d.example", &device("b", "veth"), false));
        assert!(!f.selects("d.example", &device("c", "veth"), false));
    }

    #[test]
    fn failing_or_non_boolean_expressions_leave_the_device_out() {
        let missing = DeviceFilter::parse(Some(r#"device.attributes["d.example"].nope == "x""#)).expect("parses");
        assert!(!missing.selects("d.example", &device("a", "veth"), true));
        let guarded = DeviceFilter::parse(Some(
            r#"!has(device.attributes["d.example"].nope) && device.name == "a""#,
        ))
        .expect("parses");
        assert!(guarded.selects("d.example", &device("a", "veth"), false));
        let string = DeviceFilter::parse(Some("device.name")).expect("parses");
        assert!(!string.selects("d.example", &device("a", "veth"), true));
    }

    #[test]
    fn a_broken_expression_is_an_error_with_the_parser_message() {
        let err = DeviceFilter::parse(Some(r#"device.attributes["x"].kind == "#)).expect_err("does not parse");
        let text = err.to_string();
        assert!(text.starts_with("invalid device filter"), "{text}");
        assert!(text.contains(r#"device.attributes[\"x\"].kind =="#), "{text}");
        assert!(text.contains("Syntax error"), "{text}");
    }
}

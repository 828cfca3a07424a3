//! Types, bounds, generics and signatures of rustdoc JSON written back as Rust source text.
//!
//! The text is for a reader comparing two listings, not for a compiler: paths are written as the
//! crate's source wrote them, and a shape this module does not know is written as `?kind` so
//! that it shows in review rather than vanishing.

use serde_json::Value;

/// The single key of a JSON object (rustdoc writes Rust enums as `{ "variant": data }`), with
/// its value; a bare string (a unit variant) as the key with `null`.
pub fn tagged(value: &Value) -> Option<(&str, &Value)> {
    match value {
        Value::Object(map) if map.len() == 1 => map.iter().next().map(|(k, v)| (k.as_str(), v)),
        Value::String(s) => Some((s.as_str(), &Value::Null)),
        _ => None,
    }
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("?")
}

fn list(values: &Value, each: impl Fn(&Value) -> String, separator: &str) -> String {
    values
        .as_array()
        .map(|items| items.iter().map(each).collect::<Vec<_>>().join(separator))
        .unwrap_or_default()
}

/// A type: `ty` is rustdoc's `Type`.
pub fn ty(ty: &Value) -> String {
    let Some((kind, data)) = tagged(ty) else {
        return "?".to_owned();
    };
    match kind {
        "resolved_path" => path(data),
        "dyn_trait" => {
            let traits = list(&data["traits"], |t| path(&t["trait"]), " + ");
            match data["lifetime"].as_str() {
                Some(lifetime) => format!("dyn {traits} + {lifetime}"),
                None => format!("dyn {traits}"),
            }
        }
        "generic" | "primitive" => text(data).to_owned(),
        "function_pointer" => format!("fn{}", signature(&data["sig"])),
        "tuple" => format!("({})", list(data, self::ty, ", ")),
        "slice" => format!("[{}]", self::ty(data)),
        "array" => format!("[{}; {}]", self::ty(&data["type"]), text(&data["len"])),
        "pat" => self::ty(&data["type"]),
        "impl_trait" => format!("impl {}", list(data, bound, " + ")),
        "infer" => "_".to_owned(),
        "raw_pointer" => {
            let mutability = if data["is_mutable"].as_bool() == Some(true) {
                "mut"
            } else {
                "const"
            };
            format!("*{mutability} {}", self::ty(&data["type"]))
        }
        "borrowed_ref" => {
            let lifetime = data["lifetime"].as_str().map(|l| format!("{l} ")).unwrap_or_default();
            let mutability = if data["is_mutable"].as_bool() == Some(true) {
                "mut "
            } else {
                ""
            };
            format!("&{lifetime}{mutability}{}", self::ty(&data["type"]))
        }
        "qualified_path" => {
            let name = text(&data["name"]);
            let self_type = self::ty(&data["self_type"]);
            // `Self::Assoc` inside a trait comes with the trait's path left empty.
            match data.get("trait").filter(|t| !t.is_null() && t["path"] != "") {
                Some(t) => format!("<{self_type} as {}>::{name}{}", path(t), args(&data["args"])),
                None => format!("{self_type}::{name}{}", args(&data["args"])),
            }
        }
        other => format!("?{other}"),
    }
}

/// A path with its generic arguments: rustdoc's `Path`.
pub fn path(path: &Value) -> String {
    format!("{}{}", text(&path["path"]), args(&path["args"]))
}

fn args(args: &Value) -> String {
    let Some((kind, data)) = tagged(args) else {
        return String::new();
    };
    match kind {
        "angle_bracketed" => {
            let mut all: Vec<String> = data["args"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|arg| match tagged(arg) {
                    Some(("type", t)) => self::ty(t),
                    Some(("lifetime", l)) => text(l).to_owned(),
                    Some(("const", c)) => text(&c["expr"]).to_owned(),
                    Some(("infer", _)) => "_".to_owned(),
                    _ => "?".to_owned(),
                })
                .collect();
            all.extend(data["constraints"].as_array().into_iter().flatten().map(constraint));
            if all.is_empty() {
                String::new()
            } else {
                format!("<{}>", all.join(", "))
            }
        }
        "parenthesized" => {
            let inputs = list(&data["inputs"], self::ty, ", ");
            match data.get("output").filter(|o| !o.is_null()) {
                Some(output) => format!("({inputs}) -> {}", self::ty(output)),
                None => format!("({inputs})"),
            }
        }
        "return_type_notation" => "(..)".to_owned(),
        other => format!("?{other}"),
    }
}

fn constraint(constraint: &Value) -> String {
    let name = format!("{}{}", text(&constraint["name"]), args(&constraint["args"]));
    match tagged(&constraint["binding"]) {
        Some(("equality", term)) => match tagged(term) {
            Some(("type", t)) => format!("{name} = {}", self::ty(t)),
            Some(("constant", c)) => format!("{name} = {}", text(&c["expr"])),
            _ => format!("{name} = ?"),
        },
        Some(("constraint", bounds)) => format!("{name}: {}", list(bounds, bound, " + ")),
        _ => format!("{name}?"),
    }
}

/// A bound: rustdoc's `GenericBound`.
pub fn bound(bound: &Value) -> String {
    match tagged(bound) {
        Some(("trait_bound", data)) => {
            let modifier = match data["modifier"].as_str() {
                Some("maybe") => "?",
                Some("maybe_const") => "~const ",
                _ => "",
            };
            let binder = higher_ranked(&data["generic_params"]);
            format!("{binder}{modifier}{}", path(&data["trait"]))
        }
        Some(("outlives", lifetime)) => text(lifetime).to_owned(),
        Some(("use", captured)) => format!(
            "use<{}>",
            list(captured, |c| text(tagged(c).map_or(c, |(_, v)| v)).to_owned(), ", ")
        ),
        _ => "?".to_owned(),
    }
}

fn higher_ranked(params: &Value) -> String {
    let names = list(params, |p| text(&p["name"]).to_owned(), ", ");
    if names.is_empty() {
        String::new()
    } else {
        format!("for<{names}> ")
    }
}

/// The generic parameters of an item, `<...>`, without the `impl Trait` arguments rustdoc adds
/// as synthetic parameters.
pub fn generics(generics: &Value) -> String {
    let params: Vec<String> = generics["params"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|param| {
            let name = text(&param["name"]);
            match tagged(&param["kind"]) {
                Some(("lifetime", data)) => {
                    let outlives = list(&data["outlives"], |l| text(l).to_owned(), " + ");
                    Some(if outlives.is_empty() {
                        name.to_owned()
                    } else {
                        format!("{name}: {outlives}")
                    })
                }
                Some(("type", data)) if data["is_synthetic"].as_bool() == Some(true) => None,
                Some(("type", data)) => {
                    let bounds = list(&data["bounds"], bound, " + ");
                    let mut param = if bounds.is_empty() {
                        name.to_owned()
                    } else {
                        format!("{name}: {bounds}")
                    };
                    if let Some(default) = data.get("default").filter(|d| !d.is_null()) {
                        param.push_str(&format!(" = {}", self::ty(default)));
                    }
                    Some(param)
                }
                Some(("const", data)) => Some(format!("const {name}: {}", self::ty(&data["type"]))),
                _ => Some(format!("?{name}")),
            }
        })
        .collect();
    if params.is_empty() {
        String::new()
    } else {
        format!("<{}>", params.join(", "))
    }
}

/// The `where` clause of an item, with its leading space, or nothing.
pub fn where_clause(generics: &Value) -> String {
    let predicates = list(
        &generics["where_predicates"],
        |predicate| match tagged(predicate) {
            Some(("bound_predicate", data)) => format!(
                "{}{}: {}",
                higher_ranked(&data["generic_params"]),
                self::ty(&data["type"]),
                list(&data["bounds"], bound, " + ")
            ),
            Some(("lifetime_predicate", data)) => {
                format!(
                    "{}: {}",
                    text(&data["lifetime"]),
                    list(&data["outlives"], |l| text(l).to_owned(), " + ")
                )
            }
            Some(("eq_predicate", data)) => format!("{} = {}", self::ty(&data["lhs"]), self::ty(&data["rhs"]["type"])),
            _ => "?".to_owned(),
        },
        ", ",
    );
    if predicates.is_empty() {
        String::new()
    } else {
        format!(" where {predicates}")
    }
}

/// A function signature after its name: `(inputs) -> output`.
pub fn signature(sig: &Value) -> String {
    let inputs = list(
        &sig["inputs"],
        |input| {
            let name = text(&input[0]);
            let ty = &input[1];
            if name == "self" {
                match tagged(ty) {
                    Some(("generic", g)) if g == "Self" => return "self".to_owned(),
                    Some(("borrowed_ref", r)) if r["type"].get("generic").and_then(Value::as_str) == Some("Self") => {
                        let lifetime = r["lifetime"].as_str().map(|l| format!("{l} ")).unwrap_or_default();
                        let mutability = if r["is_mutable"].as_bool() == Some(true) {
                            "mut "
                        } else {
                            ""
                        };
                        return format!("&{lifetime}{mutability}self");
                    }
                    _ => {}
                }
            }
            format!("{name}: {}", self::ty(ty))
        },
        ", ",
    );
    match sig.get("output").filter(|o| !o.is_null()) {
        Some(output) => format!("({inputs}) -> {}", self::ty(output)),
        None => format!("({inputs})"),
    }
}

/// The qualifiers before `fn`: `const`, `async`, `unsafe`.
pub fn qualifiers(header: &Value) -> String {
    let mut out = String::new();
    for (flag, word) in [("is_const", "const "), ("is_async", "async "), ("is_unsafe", "unsafe ")] {
        if header[flag].as_bool() == Some(true) {
            out.push_str(word);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn references_paths_and_arguments() {
        let t = json!({"borrowed_ref": {"lifetime": "'a", "is_mutable": true, "type": {"resolved_path": {
            "path": "Option", "id": 1, "args": {"angle_bracketed": {"args": [{"type": {"primitive": "u32"}}], "constraints": []}}}}}});
        assert_eq!(ty(&t), "&'a mut Option<u32>");
    }

    #[test]
    fn impl_trait_with_an_associated_type() {
        let t = json!({"impl_trait": [{"trait_bound": {"trait": {"path": "Iterator", "id": 2, "args": {"angle_bracketed": {
            "args": [], "constraints": [{"name": "Item", "args": null, "binding": {"equality": {"type": {"generic": "T"}}}}]}}},
            "generic_params": [], "modifier": "none"}}]});
        assert_eq!(ty(&t), "impl Iterator<Item = T>");
    }

    #[test]
    fn self_receivers_and_output() {
        let sig = json!({"inputs": [["self", {"borrowed_ref": {"lifetime": null, "is_mutable": false, "type": {"generic": "Self"}}}],
            ["n", {"primitive": "usize"}]], "output": {"tuple": []}, "is_c_variadic": false});
        assert_eq!(signature(&sig), "(&self, n: usize) -> ()");
    }

    #[test]
    fn an_unknown_shape_shows() {
        assert_eq!(ty(&json!({"something_new": {}})), "?something_new");
    }

    #[test]
    fn synthetic_parameters_are_left_out() {
        let g = json!({"params": [
            {"name": "'a", "kind": {"lifetime": {"outlives": []}}},
            {"name": "T", "kind": {"type": {"bounds": [{"trait_bound": {"trait": {"path": "Clone", "id": 3, "args": null},
                "generic_params": [], "modifier": "none"}}], "default": null, "is_synthetic": false}}},
            {"name": "impl AsRef<Path>", "kind": {"type": {"bounds": [], "default": null, "is_synthetic": true}}}],
            "where_predicates": []});
        assert_eq!(generics(&g), "<'a, T: Clone>");
    }
}

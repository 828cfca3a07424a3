//! Types, bounds, generics and signatures of rustdoc JSON written back as Rust source text.
//!
//! The text is for a reader comparing two listings, not for a compiler. A path to an item of
//! the crate is written as the listing lists it (its shortest public path); one the listing
//! cannot name is written `<unnameable path>` and the listing refuses it; an item of another
//! crate is written by its full path there. A shape this module does not know is written as
//! `?kind`, so that it shows in review rather than vanishing.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// The single key of a JSON object (rustdoc writes Rust enums as `{ "variant": data }`), with
/// its value; a bare string (a unit variant) as the key with `null`.
pub fn tagged(value: &Value) -> Option<(&str, &Value)> {
    match value {
        Value::Object(map) if map.len() == 1 => map.iter().next().map(|(k, v)| (k.as_str(), v)),
        Value::String(s) => Some((s.as_str(), &Value::Null)),
        _ => None,
    }
}

/// The marker of a path the listing cannot name.
pub const UNNAMEABLE: &str = "<unnameable ";

/// How paths are written: the listing's own paths by item id, and rustdoc's path table for
/// the items of other crates.
#[derive(Default)]
pub struct Render<'a> {
    /// The path the listing gives each of the crate's items it lists, by id.
    pub listed: HashMap<u64, String>,
    /// rustdoc's `paths`: every item a path refers to, with its crate and full path.
    pub paths: Option<&'a Map<String, Value>>,
    /// rustdoc's `index`: the crate's documented items. One of the crate's items missing from
    /// it is `#[doc(hidden)]`: named by its path, not refused.
    pub index: Option<&'a Map<String, Value>>,
}

impl Render<'_> {
    /// The name of the item `id`, written `written` in the source.
    fn name(&self, id: &Value, written: &str) -> String {
        let Some(number) = id.as_u64() else {
            return written.to_owned();
        };
        if let Some(listed) = self.listed.get(&number) {
            return listed.clone();
        }
        let Some(entry) = self.paths.and_then(|paths| paths.get(&number.to_string())) else {
            return written.to_owned();
        };
        let full = entry["path"].as_array().map(|segments| {
            segments
                .iter()
                .map(|s| s.as_str().unwrap_or("?"))
                .collect::<Vec<_>>()
                .join("::")
        });
        let full = full.unwrap_or_else(|| written.to_owned());
        let local = entry["crate_id"].as_u64() == Some(0);
        // An item of this crate in the documented index but not listed is unreachable for a
        // user; one absent from the index is `#[doc(hidden)]`, reachable but unpromised.
        let documented = self.index.is_some_and(|index| index.contains_key(&number.to_string()));
        if local && documented {
            format!("{UNNAMEABLE}{full}>")
        } else {
            full
        }
    }

    /// A type: `ty` is rustdoc's `Type`.
    pub fn ty(&self, ty: &Value) -> String {
        let Some((kind, data)) = tagged(ty) else {
            return "?".to_owned();
        };
        match kind {
            "resolved_path" => self.path(data),
            "dyn_trait" => {
                let traits = list(&data["traits"], |t| self.path(&t["trait"]), " + ");
                match data["lifetime"].as_str() {
                    Some(lifetime) => format!("dyn {traits} + {lifetime}"),
                    None => format!("dyn {traits}"),
                }
            }
            "generic" | "primitive" => text(data).to_owned(),
            "function_pointer" => format!("fn{}", self.signature(&data["sig"])),
            "tuple" => format!("({})", list(data, |t| self.ty(t), ", ")),
            "slice" => format!("[{}]", self.ty(data)),
            "array" => format!("[{}; {}]", self.ty(&data["type"]), text(&data["len"])),
            "pat" => self.ty(&data["type"]),
            "impl_trait" => format!("impl {}", list(data, |b| self.bound(b), " + ")),
            "infer" => "_".to_owned(),
            "raw_pointer" => {
                let mutability = if data["is_mutable"].as_bool() == Some(true) {
                    "mut"
                } else {
                    "const"
                };
                format!("*{mutability} {}", self.ty(&data["type"]))
            }
            "borrowed_ref" => {
                let lifetime = data["lifetime"].as_str().map(|l| format!("{l} ")).unwrap_or_default();
                let mutability = if data["is_mutable"].as_bool() == Some(true) {
                    "mut "
                } else {
                    ""
                };
                format!("&{lifetime}{mutability}{}", self.ty(&data["type"]))
            }
            "qualified_path" => {
                let name = text(&data["name"]);
                let self_type = self.ty(&data["self_type"]);
                // `Self::Assoc` inside a trait comes with the trait's path left empty.
                match data.get("trait").filter(|t| !t.is_null() && t["path"] != "") {
                    Some(t) => format!("<{self_type} as {}>::{name}{}", self.path(t), self.args(&data["args"])),
                    None => format!("{self_type}::{name}{}", self.args(&data["args"])),
                }
            }
            other => format!("?{other}"),
        }
    }

    /// A path with its generic arguments: rustdoc's `Path`.
    pub fn path(&self, path: &Value) -> String {
        format!(
            "{}{}",
            self.name(&path["id"], text(&path["path"])),
            self.args(&path["args"])
        )
    }

    fn args(&self, args: &Value) -> String {
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
                        Some(("type", t)) => self.ty(t),
                        Some(("lifetime", l)) => text(l).to_owned(),
                        Some(("const", c)) => text(&c["expr"]).to_owned(),
                        Some(("infer", _)) => "_".to_owned(),
                        _ => "?".to_owned(),
                    })
                    .collect();
                all.extend(
                    data["constraints"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| self.constraint(c)),
                );
                if all.is_empty() {
                    String::new()
                } else {
                    format!("<{}>", all.join(", "))
                }
            }
            "parenthesized" => {
                let inputs = list(&data["inputs"], |t| self.ty(t), ", ");
                match data.get("output").filter(|o| !o.is_null()) {
                    Some(output) => format!("({inputs}) -> {}", self.ty(output)),
                    None => format!("({inputs})"),
                }
            }
            "return_type_notation" => "(..)".to_owned(),
            other => format!("?{other}"),
        }
    }

    fn constraint(&self, constraint: &Value) -> String {
        let name = format!("{}{}", text(&constraint["name"]), self.args(&constraint["args"]));
        match tagged(&constraint["binding"]) {
            Some(("equality", term)) => match tagged(term) {
                Some(("type", t)) => format!("{name} = {}", self.ty(t)),
                Some(("constant", c)) => format!("{name} = {}", text(&c["expr"])),
                _ => format!("{name} = ?"),
            },
            Some(("constraint", bounds)) => format!("{name}: {}", list(bounds, |b| self.bound(b), " + ")),
            _ => format!("{name}?"),
        }
    }

    /// A bound: rustdoc's `GenericBound`.
    pub fn bound(&self, bound: &Value) -> String {
        match tagged(bound) {
            Some(("trait_bound", data)) => {
                let modifier = match data["modifier"].as_str() {
                    Some("maybe") => "?",
                    Some("maybe_const") => "~const ",
                    _ => "",
                };
                let binder = self.higher_ranked(&data["generic_params"]);
                format!("{binder}{modifier}{}", self.path(&data["trait"]))
            }
            Some(("outlives", lifetime)) => text(lifetime).to_owned(),
            Some(("use", captured)) => format!(
                "use<{}>",
                list(captured, |c| text(tagged(c).map_or(c, |(_, v)| v)).to_owned(), ", ")
            ),
            _ => "?".to_owned(),
        }
    }

    fn higher_ranked(&self, params: &Value) -> String {
        let names = list(params, |p| text(&p["name"]).to_owned(), ", ");
        if names.is_empty() {
            String::new()
        } else {
            format!("for<{names}> ")
        }
    }

    /// A list of bounds after the name they bound, `: A + B`, or nothing when there is none.
    pub fn bounds_after(&self, bounds: &Value) -> String {
        let bounds = list(bounds, |b| self.bound(b), " + ");
        if bounds.is_empty() {
            String::new()
        } else {
            format!(": {bounds}")
        }
    }

    /// The generic parameters of an item, `<...>`, without the `impl Trait` arguments rustdoc adds
    /// as synthetic parameters.
    pub fn generics(&self, generics: &Value) -> String {
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
                        let bounds = list(&data["bounds"], |b| self.bound(b), " + ");
                        let mut param = if bounds.is_empty() {
                            name.to_owned()
                        } else {
                            format!("{name}: {bounds}")
                        };
                        if let Some(default) = data.get("default").filter(|d| !d.is_null()) {
                            param.push_str(&format!(" = {}", self.ty(default)));
                        }
                        Some(param)
                    }
                    Some(("const", data)) => Some(format!("const {name}: {}", self.ty(&data["type"]))),
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
    pub fn where_clause(&self, generics: &Value) -> String {
        let predicates = list(
            &generics["where_predicates"],
            |predicate| match tagged(predicate) {
                Some(("bound_predicate", data)) => format!(
                    "{}{}: {}",
                    self.higher_ranked(&data["generic_params"]),
                    self.ty(&data["type"]),
                    list(&data["bounds"], |b| self.bound(b), " + ")
                ),
                Some(("lifetime_predicate", data)) => {
                    format!(
                        "{}: {}",
                        text(&data["lifetime"]),
                        list(&data["outlives"], |l| text(l).to_owned(), " + ")
                    )
                }
                Some(("eq_predicate", data)) => {
                    format!("{} = {}", self.ty(&data["lhs"]), self.ty(&data["rhs"]["type"]))
                }
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
    pub fn signature(&self, sig: &Value) -> String {
        let inputs = list(
            &sig["inputs"],
            |input| {
                let name = text(&input[0]);
                let ty = &input[1];
                if name == "self" {
                    match tagged(ty) {
                        Some(("generic", g)) if g == "Self" => return "self".to_owned(),
                        Some(("borrowed_ref", r))
                            if r["type"].get("generic").and_then(Value::as_str) == Some("Self") =>
                        {
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
                format!("{name}: {}", self.ty(ty))
            },
            ", ",
        );
        match sig.get("output").filter(|o| !o.is_null()) {
            Some(output) => format!("({inputs}) -> {}", self.ty(output)),
            None => format!("({inputs})"),
        }
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
        assert_eq!(Render::default().ty(&t), "&'a mut Option<u32>");
    }

    #[test]
    fn impl_trait_with_an_associated_type() {
        let t = json!({"impl_trait": [{"trait_bound": {"trait": {"path": "Iterator", "id": 2, "args": {"angle_bracketed": {
            "args": [], "constraints": [{"name": "Item", "args": null, "binding": {"equality": {"type": {"generic": "T"}}}}]}}},
            "generic_params": [], "modifier": "none"}}]});
        assert_eq!(Render::default().ty(&t), "impl Iterator<Item = T>");
    }

    #[test]
    fn self_receivers_and_output() {
        let sig = json!({"inputs": [["self", {"borrowed_ref": {"lifetime": null, "is_mutable": false, "type": {"generic": "Self"}}}],
            ["n", {"primitive": "usize"}]], "output": {"tuple": []}, "is_c_variadic": false});
        assert_eq!(Render::default().signature(&sig), "(&self, n: usize) -> ()");
    }

    #[test]
    fn an_unknown_shape_shows() {
        assert_eq!(Render::default().ty(&json!({"something_new": {}})), "?something_new");
    }

    #[test]
    fn synthetic_parameters_are_left_out() {
        let g = json!({"params": [
            {"name": "'a", "kind": {"lifetime": {"outlives": []}}},
            {"name": "T", "kind": {"type": {"bounds": [{"trait_bound": {"trait": {"path": "Clone", "id": 3, "args": null},
                "generic_params": [], "modifier": "none"}}], "default": null, "is_synthetic": false}}},
            {"name": "impl AsRef<Path>", "kind": {"type": {"bounds": [], "default": null, "is_synthetic": true}}}],
            "where_predicates": []});
        assert_eq!(Render::default().generics(&g), "<'a, T: Clone>");
    }
}

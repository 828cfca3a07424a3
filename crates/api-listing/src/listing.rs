//! A crate's public items, from its rustdoc JSON, one line each.
//!
//! Rules:
//! - The walk starts at the crate root and follows public modules and `pub use` re-exports, so
//!   an item is listed at every path a user can name it by, and not at a path inside a private
//!   module.
//! - Structs, enums and traits bring their public fields, variants, inherent methods, associated
//!   items, and the traits they implement by hand or by derive. Blanket and auto-trait impls are
//!   left out: they follow from the rest. A trait impl is listed once, for the type as the
//!   listing names it, with the associated types it chooses. A struct with private fields is
//!   marked `{ .. }`: users cannot build it with a literal.
//! - Types in signatures, fields and impls are named by the shortest path the listing gives
//!   them; a type of the crate that no public path reaches is refused (`Unnameable`): a user
//!   could receive it but not name it. Types of other crates are named by their full path.
//! - `#[non_exhaustive]` is written before the item it marks: adding it, or taking it off, is a
//!   change of promise too.
//! - Items hidden with `#[doc(hidden)]` are absent from rustdoc's JSON and so from the listing.
//! - The lines are sorted and unique, so a listing is the same for the same API whatever the
//!   order of the source.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::{Map, Value};

use crate::render::{self, Render, UNNAMEABLE, tagged};

/// The rustdoc JSON format this reducer was written against; another may name things otherwise.
pub const FORMAT_VERSION: u64 = 57;

/// Why a rustdoc JSON document could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    /// The document is not rustdoc JSON of the expected shape.
    #[error("not rustdoc JSON: {0}")]
    Malformed(&'static str),
    /// A public item uses a type of the crate that users cannot name (its module is private
    /// and it is not re-exported).
    #[error("public items use types users cannot name; re-export them or make them private:\n{}", .0.join("\n"))]
    Unnameable(Vec<String>),
    /// The document is rustdoc JSON of another format version.
    #[error(
        "rustdoc JSON format {found}, but this reducer reads format {FORMAT_VERSION}: check the rules in \
         crates/api-listing against the new format, then update FORMAT_VERSION and the listings"
    )]
    Format {
        /// The format version the document declares.
        found: u64,
    },
}

/// The public items of the crate `doc` describes, sorted, one line each; an error when a public
/// item uses a type of the crate users cannot name, unless `allow_unnameable`.
pub fn list(doc: &Value, allow_unnameable: bool) -> Result<Vec<String>, ListingError> {
    let found = doc["format_version"]
        .as_u64()
        .ok_or(ListingError::Malformed("no format_version"))?;
    if found != FORMAT_VERSION {
        return Err(ListingError::Format { found });
    }
    let index = doc["index"].as_object().ok_or(ListingError::Malformed("no index"))?;
    let root = lookup(index, &doc["root"]).ok_or(ListingError::Malformed("the root module is not in the index"))?;
    let name = root["name"]
        .as_str()
        .ok_or(ListingError::Malformed("the root module has no name"))?;
    let paths = doc["paths"].as_object();
    // Two walks: the first finds the path the listing gives each item, the second writes the
    // lines with every type named by those paths.
    let walk = |listed| {
        let render = Render {
            listed,
            paths,
            index: Some(index),
        };
        let mut lister = Lister {
            index,
            render,
            names: HashMap::new(),
            lines: BTreeSet::new(),
            walking: HashSet::new(),
        };
        lister.module(root, name);
        lister
    };
    let lister = walk(walk(HashMap::new()).names);
    let unnameable: Vec<String> = lister
        .lines
        .iter()
        .filter(|l| l.contains(UNNAMEABLE))
        .cloned()
        .collect();
    if !unnameable.is_empty() && !allow_unnameable {
        return Err(ListingError::Unnameable(unnameable));
    }
    Ok(lister.lines.into_iter().collect())
}

fn lookup<'a>(index: &'a Map<String, Value>, id: &Value) -> Option<&'a Value> {
    index.get(&id.as_u64()?.to_string())
}

struct Lister<'a> {
    index: &'a Map<String, Value>,
    render: Render<'a>,
    /// The shortest path of each item walked so far, by id.
    names: HashMap<u64, String>,
    lines: BTreeSet<String>,
    /// The modules being walked, by id: a glob re-export of an ancestor would loop.
    walking: HashSet<u64>,
}

impl<'a> Lister<'a> {
    fn item_of(&self, id: &Value) -> Option<&'a Value> {
        lookup(self.index, id)
    }

    fn line(&mut self, line: String) {
        self.lines.insert(line);
    }

    /// The items of `module`, at `path`.
    fn module(&mut self, module: &'a Value, path: &str) {
        let Some(id) = module["id"].as_u64() else { return };
        if !self.walking.insert(id) {
            return;
        }
        let children = module["inner"]["module"]["items"].as_array().into_iter().flatten();
        for child in children {
            let Some(item) = self.item_of(child) else { continue };
            if item["visibility"] != "public" {
                continue;
            }
            if let Some(import) = item["inner"].get("use") {
                self.reexport(import, path);
            } else if let Some(name) = item["name"].as_str() {
                self.item(item, &format!("{path}::{name}"));
            }
        }
        self.walking.remove(&id);
    }

    fn reexport(&mut self, import: &'a Value, path: &str) {
        let source = import["source"].as_str().unwrap_or("?");
        let target = self.item_of(&import["id"]);
        if import["is_glob"].as_bool() == Some(true) {
            match target {
                Some(module) if module["inner"].get("module").is_some() => self.module(module, path),
                _ => self.line(format!("pub use {path}::* (from {source})")),
            }
            return;
        }
        let name = import["name"].as_str().unwrap_or("?");
        match target {
            Some(item) => self.item(item, &format!("{path}::{name}")),
            // An item of another crate, re-exported.
            None => self.line(format!("pub use {path}::{name} = {source}")),
        }
    }

    fn item(&mut self, item: &'a Value, path: &str) {
        if let Some(id) = item["id"].as_u64() {
            let name = self.names.entry(id).or_insert_with(|| path.to_owned());
            if (path.len(), path) < (name.len(), name.as_str()) {
                *name = path.to_owned();
            }
        }
        let mark = if non_exhaustive(item) { "#[non_exhaustive] " } else { "" };
        let Some((kind, data)) = tagged(&item["inner"]) else {
            self.line(format!("pub ? {path}"));
            return;
        };
        match kind {
            "module" => {
                self.line(format!("pub mod {path}"));
                self.module(item, path);
            }
            "function" => self.line(format!("pub {}", function(&self.render, data, path))),
            "struct" | "union" => {
                self.line(format!(
                    "{mark}pub {kind} {path}{}{}",
                    self.render.generics(&data["generics"]),
                    self.shape(data)
                ));
                self.fields(data, path);
                self.impls(data, path);
            }
            "enum" => {
                self.line(format!(
                    "{mark}pub enum {path}{}",
                    self.render.generics(&data["generics"])
                ));
                for variant in data["variants"].as_array().into_iter().flatten() {
                    if let Some(variant) = self.item_of(variant) {
                        self.variant(variant, path);
                    }
                }
                self.impls(data, path);
            }
            "trait" => {
                let supertraits = self.render.bounds_after(&data["bounds"]);
                let safety = if data["is_unsafe"].as_bool() == Some(true) {
                    "unsafe "
                } else {
                    ""
                };
                self.line(format!(
                    "pub {safety}trait {path}{}{supertraits}",
                    self.render.generics(&data["generics"])
                ));
                for member in data["items"].as_array().into_iter().flatten() {
                    if let Some(member) = self.item_of(member) {
                        self.associated(member, path, true);
                    }
                }
            }
            "constant" => self.line(format!("pub const {path}: {}", self.render.ty(&data["type"]))),
            "static" => self.line(format!("pub static {path}: {}", self.render.ty(&data["type"]))),
            "type_alias" => self.line(format!(
                "pub type {path}{} = {}",
                self.render.generics(&data["generics"]),
                self.render.ty(&data["type"])
            )),
            "macro" | "proc_macro" => self.line(format!("macro {path}")),
            other => self.line(format!("pub {other} {path}")),
        }
    }

    /// A tuple struct's field types after its name, `{ .. }` after a struct with private fields.
    fn shape(&self, data: &Value) -> String {
        let Some((kind, fields)) = tagged(&data["kind"]) else {
            return String::new();
        };
        if kind == "plain" {
            // Private fields: users cannot build it with a literal.
            let stripped = fields["has_stripped_fields"].as_bool() == Some(true);
            return if stripped { " { .. }".to_owned() } else { String::new() };
        }
        if kind != "tuple" {
            return String::new();
        }
        let fields: Vec<String> = fields
            .as_array()
            .into_iter()
            .flatten()
            .map(|field| match self.item_of(field) {
                Some(field) => format!("pub {}", self.render.ty(&field["inner"]["struct_field"])),
                None => "_".to_owned(),
            })
            .collect();
        format!("({})", fields.join(", "))
    }

    fn fields(&mut self, data: &'a Value, path: &str) {
        let Some(("plain", plain)) = tagged(&data["kind"]) else {
            return;
        };
        for field in plain["fields"].as_array().into_iter().flatten() {
            if let Some(field) = self.item_of(field) {
                let name = field["name"].as_str().unwrap_or("?");
                self.line(format!(
                    "pub {path}.{name}: {}",
                    self.render.ty(&field["inner"]["struct_field"])
                ));
            }
        }
    }

    fn variant(&mut self, variant: &'a Value, path: &str) {
        let name = variant["name"].as_str().unwrap_or("?");
        let mark = if non_exhaustive(variant) {
            "#[non_exhaustive] "
        } else {
            ""
        };
        let kind = &variant["inner"]["variant"]["kind"];
        let field = |id: &Value, named: bool| match self.item_of(id) {
            Some(f) if named => format!(
                "{}: {}",
                f["name"].as_str().unwrap_or("?"),
                self.render.ty(&f["inner"]["struct_field"])
            ),
            Some(f) => self.render.ty(&f["inner"]["struct_field"]),
            None => "_".to_owned(),
        };
        let shape = match tagged(kind) {
            Some(("tuple", fields)) => {
                format!(
                    "({})",
                    fields
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|f| field(f, false))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
            Some(("struct", data)) => {
                let fields: Vec<String> = data["fields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|f| field(f, true))
                    .collect();
                let rest = if data["has_stripped_fields"].as_bool() == Some(true) {
                    ", .."
                } else {
                    ""
                };
                format!(" {{ {}{rest} }}", fields.join(", "))
            }
            _ => String::new(),
        };
        self.line(format!("{mark}{path}::{name}{shape}"));
    }

    fn impls(&mut self, data: &'a Value, path: &str) {
        for id in data["impls"].as_array().into_iter().flatten() {
            let Some(block) = self.item_of(id).and_then(|i| i["inner"].get("impl")) else {
                continue;
            };
            if block["is_synthetic"].as_bool() == Some(true) || !block["blanket_impl"].is_null() {
                continue;
            }
            match block.get("trait").filter(|t| !t.is_null()) {
                Some(t) if t["path"] == "StructuralPartialEq" => {}
                Some(t) => {
                    let negative = if block["is_negative"].as_bool() == Some(true) {
                        "!"
                    } else {
                        ""
                    };
                    let head = format!(
                        "impl{} {negative}{} for {}{}",
                        self.render.generics(&block["generics"]),
                        self.render.path(t),
                        self.render.ty(&block["for"]),
                        self.render.where_clause(&block["generics"])
                    );
                    // The associated types an impl chooses (`type Err = ...`) are part of it.
                    for member in block["items"].as_array().into_iter().flatten() {
                        let Some(member) = self.item_of(member) else { continue };
                        if let Some(chosen) = member["inner"]["assoc_type"].get("type").filter(|t| !t.is_null()) {
                            let name = member["name"].as_str().unwrap_or("?");
                            self.line(format!("{head}: type {name} = {}", self.render.ty(chosen)));
                        }
                    }
                    self.line(head);
                }
                None => {
                    for member in block["items"].as_array().into_iter().flatten() {
                        if let Some(member) = self.item_of(member).filter(|m| m["visibility"] == "public") {
                            self.associated(member, path, false);
                        }
                    }
                }
            }
        }
    }

    /// A method, associated constant or associated type of `owner`.
    fn associated(&mut self, member: &Value, owner: &str, in_trait: bool) {
        let name = member["name"].as_str().unwrap_or("?");
        let path = format!("{owner}::{name}");
        let visibility = if in_trait { "" } else { "pub " };
        let Some((kind, data)) = tagged(&member["inner"]) else {
            return;
        };
        let line = match kind {
            "function" => {
                let provided = if in_trait && data["has_body"].as_bool() == Some(true) {
                    " (provided)"
                } else {
                    ""
                };
                format!("{visibility}{}{provided}", function(&self.render, data, &path))
            }
            "assoc_const" | "constant" => format!("{visibility}const {path}: {}", self.render.ty(&data["type"])),
            "assoc_type" => {
                format!("type {path}{}", self.render.bounds_after(&data["bounds"]))
            }
            other => format!("{visibility}{other} {path}"),
        };
        self.line(line);
    }
}

fn function(render: &Render<'_>, data: &Value, path: &str) -> String {
    format!(
        "{}fn {path}{}{}{}",
        render::qualifiers(&data["header"]),
        render.generics(&data["generics"]),
        render.signature(&data["sig"]),
        render.where_clause(&data["generics"])
    )
}

fn non_exhaustive(item: &Value) -> bool {
    item["attrs"].as_array().into_iter().flatten().any(|attr| match attr {
        Value::String(s) => s == "non_exhaustive",
        other => other
            .get("other")
            .and_then(Value::as_str)
            .is_some_and(|s| s.starts_with("#[non_exhaustive")),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A crate `demo` with a private module whose struct is re-exported at the root, a public
    /// module with a function, and an enum marked `#[non_exhaustive]`.
    fn demo() -> Value {
        json!({
            "format_version": FORMAT_VERSION,
            "root": 0,
            "index": {
                "0": {"id": 0, "name": "demo", "visibility": "public", "attrs": [],
                      "inner": {"module": {"is_crate": true, "items": [1, 2, 3, 6]}}},
                "1": {"id": 1, "name": null, "visibility": "public", "attrs": [],
                      "inner": {"use": {"source": "private::Thing", "name": "Thing", "id": 4, "is_glob": false}}},
                "2": {"id": 2, "name": "open", "visibility": "public", "attrs": [],
                      "inner": {"module": {"is_crate": false, "items": [5]}}},
                "3": {"id": 3, "name": "Mode", "visibility": "public", "attrs": ["non_exhaustive"],
                      "inner": {"enum": {"generics": {"params": [], "where_predicates": []}, "variants": [7], "impls": []}}},
                "4": {"id": 4, "name": "Thing", "visibility": "public", "attrs": [],
                      "inner": {"struct": {"kind": {"plain": {"fields": [8], "has_stripped_fields": true}},
                                           "generics": {"params": [], "where_predicates": []}, "impls": []}}},
                "5": {"id": 5, "name": "run", "visibility": "public", "attrs": [],
                      "inner": {"function": {"sig": {"inputs": [["n", {"primitive": "u8"}]], "output": null},
                                             "generics": {"params": [], "where_predicates": []},
                                             "header": {"is_const": false, "is_async": false, "is_unsafe": false}}}},
                "6": {"id": 6, "name": "hidden_helper", "visibility": "crate", "attrs": [],
                      "inner": {"function": {"sig": {"inputs": [], "output": null},
                                             "generics": {"params": [], "where_predicates": []}, "header": {}}}},
                "7": {"id": 7, "name": "Fast", "visibility": "default", "attrs": [],
                      "inner": {"variant": {"kind": "plain", "discriminant": null}}},
                "8": {"id": 8, "name": "size", "visibility": "public", "attrs": [],
                      "inner": {"struct_field": {"primitive": "u32"}}}
            }
        })
    }

    #[test]
    fn lists_items_at_the_paths_users_name_them_by() {
        let lines = list(&demo(), false).expect("listable");
        assert_eq!(
            lines,
            [
                "#[non_exhaustive] pub enum demo::Mode",
                "demo::Mode::Fast",
                "pub demo::Thing.size: u32",
                "pub fn demo::open::run(n: u8)",
                "pub mod demo::open",
                "pub struct demo::Thing { .. }",
            ]
        );
    }

    #[test]
    fn a_type_users_cannot_name_is_refused() {
        let mut doc = demo();
        // `open::make() -> Hidden`, where `Hidden` sits in a private module, not re-exported.
        doc["index"]["10"] = json!({"id": 10, "name": "Hidden", "visibility": "public", "attrs": [],
            "inner": {"struct": {"kind": "unit", "generics": {"params": [], "where_predicates": []}, "impls": []}}});
        doc["index"]["11"] = json!({"id": 11, "name": "make", "visibility": "public", "attrs": [],
            "inner": {"function": {"sig": {"inputs": [], "output": {"resolved_path": {"path": "Hidden", "id": 10, "args": null}}},
                                   "generics": {"params": [], "where_predicates": []}, "header": {}}}});
        doc["index"]["2"]["inner"]["module"]["items"] = json!([5, 11]);
        doc["paths"] = json!({"10": {"crate_id": 0, "path": ["demo", "private", "Hidden"], "kind": "struct"}});
        let Err(ListingError::Unnameable(lines)) = list(&doc, false) else {
            panic!("an unnameable return type must be refused");
        };
        assert_eq!(
            lines,
            ["pub fn demo::open::make() -> <unnameable demo::private::Hidden>"]
        );
        // Re-exported, it is named by its public path.
        doc["index"]["0"]["inner"]["module"]["items"] = json!([1, 2, 3, 6, 12]);
        doc["index"]["12"] = json!({"id": 12, "name": null, "visibility": "public", "attrs": [],
            "inner": {"use": {"source": "private::Hidden", "name": "Hidden", "id": 10, "is_glob": false}}});
        let lines = list(&doc, false).expect("nameable now");
        assert!(
            lines.contains(&"pub fn demo::open::make() -> demo::Hidden".to_owned()),
            "{lines:?}"
        );
    }

    #[test]
    fn another_format_version_is_refused() {
        let mut doc = demo();
        doc["format_version"] = json!(FORMAT_VERSION + 1);
        assert!(matches!(list(&doc, false), Err(ListingError::Format { found }) if found == FORMAT_VERSION + 1));
    }

    #[test]
    fn a_glob_reexport_of_an_ancestor_does_not_loop() {
        let mut doc = demo();
        doc["index"]["9"] = json!({"id": 9, "name": null, "visibility": "public", "attrs": [],
            "inner": {"use": {"source": "crate", "name": "demo", "id": 0, "is_glob": true}}});
        doc["index"]["2"]["inner"]["module"]["items"] = json!([5, 9]);
        let lines = list(&doc, false).expect("listable");
        assert!(lines.contains(&"pub fn demo::open::run(n: u8)".to_owned()));
    }
}

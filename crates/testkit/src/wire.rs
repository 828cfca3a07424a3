//! Checking compiled protos against the wire fact tables in `proto/wire/`.

use std::collections::BTreeSet;

use prost::Message;
use prost_types::{
    FileDescriptorSet,
    field_descriptor_proto::{Label, Type},
};

/// The data rows of a wire fact table (comment lines and blank lines dropped).
pub fn table_rows(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

fn type_name(
    field: &prost_types::FieldDescriptorProto,
    package: &str,
    scope: &str,
    map_entries: &[(String, String)],
) -> String {
    // Written as in the .proto: relative to the package, and to the enclosing message.
    let short = |full: &str| {
        let name = full.trim_start_matches('.');
        let name = name.strip_prefix(package).map_or(name, |s| s.trim_start_matches('.'));
        name.strip_prefix(scope)
            .and_then(|s| s.strip_prefix('.'))
            .unwrap_or(name)
            .to_string()
    };
    match field.r#type() {
        Type::Message | Type::Enum => {
            let name = short(field.type_name());
            if let Some((_, map)) = map_entries.iter().find(|(entry, _)| *entry == name) {
                map.clone()
            } else {
                name
            }
        }
        Type::String => "string".into(),
        Type::Bool => "bool".into(),
        Type::Int64 => "int64".into(),
        Type::Int32 => "int32".into(),
        Type::Bytes => "bytes".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Rows in the tables' format (`proto/wire/TABLES.md`) from an encoded `FileDescriptorSet`.
pub fn descriptor_rows(encoded_descriptor_set: &[u8]) -> BTreeSet<String> {
    let fds = FileDescriptorSet::decode(encoded_descriptor_set).expect("a valid descriptor set");
    let mut rows = BTreeSet::new();
    for file in &fds.file {
        let package = file.package();
        for message in &file.message_type {
            // Map fields are nested *Entry messages in descriptors; the tables write map<K,V>.
            let map_entries: Vec<(String, String)> = message
                .nested_type
                .iter()
                .filter(|n| n.options.as_ref().is_some_and(|o| o.map_entry()))
                .map(|n| {
                    let k = type_name(&n.field[0], package, "", &[]);
                    let v = type_name(&n.field[1], package, "", &[]);
                    (n.name().to_string(), format!("map<{k},{v}>"))
                })
                .collect();
            for e in &message.enum_type {
                for v in &e.value {
                    rows.insert(format!(
                        "{package}\t{}.{}\t{}\t{}\tenum\t-",
                        message.name(),
                        e.name(),
                        v.name(),
                        v.number()
                    ));
                }
            }
            if message.field.is_empty() {
                rows.insert(format!("{package}\t{}\t(none)\t-\t-\tempty", message.name()));
            }
            for field in &message.field {
                let ty = type_name(field, package, message.name(), &map_entries);
                let label = if ty.starts_with("map<") {
                    "map"
                } else if field.label() == Label::Repeated {
                    "repeated"
                } else if field.proto3_optional() {
                    "optional"
                } else {
                    "-"
                };
                rows.insert(format!(
                    "{package}\t{}\t{}\t{}\t{ty}\t{label}",
                    message.name(),
                    field.name(),
                    field.number()
                ));
            }
        }
        for e in &file.enum_type {
            for v in &e.value {
                rows.insert(format!(
                    "{package}\t{}\t{}\t{}\tenum\t-",
                    e.name(),
                    v.name(),
                    v.number()
                ));
            }
        }
        for s in &file.service {
            for m in &s.method {
                let kind = match (m.client_streaming(), m.server_streaming()) {
                    (false, false) => "unary",
                    (false, true) => "server-stream",
                    (true, false) => "client-stream",
                    (true, true) => "bidi-stream",
                };
                let short = |t: &str| {
                    t.trim_start_matches('.')
                        .trim_start_matches(package)
                        .trim_start_matches('.')
                        .to_string()
                };
                rows.insert(format!(
                    "{package}\t{}\t{}\t{}\t{}\t{kind}",
                    s.name(),
                    m.name(),
                    short(m.input_type()),
                    short(m.output_type())
                ));
            }
        }
    }
    rows
}

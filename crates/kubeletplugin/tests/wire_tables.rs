//! The compiled protos match the upstream wire fact tables in `proto/wire/` row for row:
//! every field's number, type and label, every enum value, every RPC, and nothing extra.
#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::BTreeSet;

use prost::Message;
use prost_types::{
    FileDescriptorSet,
    field_descriptor_proto::{Label, Type},
};

fn type_name(field: &prost_types::FieldDescriptorProto, package: &str, map_entries: &[(String, String)]) -> String {
    let short = |full: &str| {
        full.trim_start_matches('.')
            .strip_prefix(package)
            .map(|s| s.trim_start_matches('.').to_string())
            .unwrap_or_else(|| full.trim_start_matches('.').to_string())
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

/// Rows in the tables' format, from the compiled descriptors.
fn descriptor_rows() -> BTreeSet<String> {
    let fds = FileDescriptorSet::decode(kubeletplugin::proto::FILE_DESCRIPTOR_SET).unwrap();
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
                    let k = type_name(&n.field[0], package, &[]);
                    let v = type_name(&n.field[1], package, &[]);
                    (format!("{}.{}", message.name(), n.name()), format!("map<{k},{v}>"))
                })
                .collect();
            if message.field.is_empty() {
                rows.insert(format!("{package}\t{}\t(none)\t-\t-\tempty", message.name()));
            }
            for field in &message.field {
                let ty = type_name(field, package, &map_entries);
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

#[test]
fn protos_match_the_wire_tables_exactly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto/wire");
    let mut expected = BTreeSet::new();
    for table in [
        "pluginregistration.v1.tsv",
        "dra.v1.tsv",
        "dra.v1beta1.tsv",
        "dra-health.v1alpha1.tsv",
    ] {
        let text = std::fs::read_to_string(dir.join(table)).unwrap();
        expected.extend(
            text.lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .map(str::to_string),
        );
    }
    assert!(expected.len() > 40, "tables were read");
    let actual = descriptor_rows();
    let missing: Vec<_> = expected.difference(&actual).collect();
    let extra: Vec<_> = actual.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing from protos: {missing:#?}\nnot in tables: {extra:#?}"
    );
}

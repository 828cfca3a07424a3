//! The compiled protos match the upstream wire fact tables in `proto/wire/` row for row:
//! every field's number, type and label, every enum value, every RPC, and nothing extra.
#![allow(missing_docs)]

use std::collections::BTreeSet;

#[test]
fn protos_match_the_wire_tables_exactly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto/wire");
    let mut expected = BTreeSet::new();
    for table in [
        "pluginregistration.v1.tsv",
        "dra.v1.tsv",
        "dra.v1beta1.tsv",
        "dra-health.v1alpha1.tsv",
        "dra-health.v1.tsv",
    ] {
        expected.extend(testkit::wire::table_rows(
            &std::fs::read_to_string(dir.join(table)).unwrap(),
        ));
    }
    assert!(expected.len() > 40, "tables were read");
    let actual = testkit::wire::descriptor_rows(kubeletplugin::proto::FILE_DESCRIPTOR_SET);
    let missing: Vec<_> = expected.difference(&actual).collect();
    let extra: Vec<_> = actual.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing from protos: {missing:#?}\nnot in tables: {extra:#?}"
    );
}

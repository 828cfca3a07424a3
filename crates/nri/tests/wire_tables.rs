//! The compiled NRI and ttrpc protos match the upstream wire fact tables in `proto/wire/`.
#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::BTreeSet;

fn table(name: &str) -> BTreeSet<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto/wire");
    testkit::wire::table_rows(&std::fs::read_to_string(dir.join(name)).unwrap())
}

#[test]
fn nri_api_matches_the_wire_table_exactly() {
    let expected = table("nri.pkg.api.v1alpha1.tsv");
    assert!(expected.len() > 300);
    let actual: BTreeSet<String> = testkit::wire::descriptor_rows(nri::proto::FILE_DESCRIPTOR_SET)
        .into_iter()
        .filter(|r| r.starts_with("nri.pkg.api.v1alpha1\t"))
        .collect();
    let missing: Vec<_> = expected.difference(&actual).collect();
    let extra: Vec<_> = actual.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing from protos: {missing:#?}\nnot in tables: {extra:#?}"
    );
}

#[test]
fn ttrpc_envelope_matches_the_wire_table() {
    let expected = table("ttrpc.tsv");
    let actual: BTreeSet<String> = testkit::wire::descriptor_rows(nri::proto::FILE_DESCRIPTOR_SET)
        .into_iter()
        .filter(|r| r.starts_with("ttrpc\t"))
        .collect();
    assert_eq!(actual, expected);
    // google.rpc.Status as ttrpc-rust's table has it: code=1, message=2, details=3.
    let status: BTreeSet<String> = testkit::wire::descriptor_rows(nri::proto::FILE_DESCRIPTOR_SET)
        .into_iter()
        .filter(|r| r.starts_with("google.rpc\tStatus\t"))
        .map(|r| r.split('\t').take(4).collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        status,
        BTreeSet::from([
            "google.rpc Status code 1".to_string(),
            "google.rpc Status details 3".to_string(),
            "google.rpc Status message 2".to_string()
        ])
    );
}

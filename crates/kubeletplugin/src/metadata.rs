//! Device metadata files (KEP-5304): what a driver tells a workload about the devices of its
//! claim, written the way `k8s.io/dynamic-resource-allocation` v0.37 writes them, byte for byte.
//!
//! For every request of a prepared claim, [`MetadataWriter`] writes two files:
//!
//! - the metadata file `{plugin dir}/dra-device-metadata/{namespace}_{claim}/{request}/metadata.json`;
//! - a CDI spec `{cdi dir}/{driver}_metadata_{claim uid}_{request}.json` with one device,
//!   `{driver}/metadata={claim uid}_{request}`, that bind-mounts the metadata file read-only
//!   into the container at
//!   `/var/run/kubernetes.io/dra-device-attributes/resourceclaims/{claim}/{request}/{driver}-metadata.json`;
//!   for a claim generated from a template (annotation `resource.kubernetes.io/pod-claim-name`,
//!   non-empty) the path is `.../resourceclaimtemplates/{pod claim name}/{request}/{driver}-metadata.json`,
//!   which the pod's author knows before the claim's generated name exists.
//!
//! `{request}` is the base request: a subrequest (`net/fast`) is stripped to its request
//! (`net`), while the document records the full name. The caller adds the CDI device ID to the
//! first device it reports for the request, so the runtime mounts the file.
//!
//! # The metadata file
//!
//! A JSON stream: the same `DeviceMetadata` document once per API version, newest first
//! (`metadata.resource.k8s.io/v1beta1`, then `v1alpha1`), each indented by two spaces and
//! followed by a newline. A reader takes the first version it knows and skips the others. The
//! first document of a freshly prepared claim:
//!
//! ```json
//! {
//!   "kind": "DeviceMetadata",
//!   "apiVersion": "metadata.resource.k8s.io/v1beta1",
//!   "metadata": {
//!     "name": "pod-net",
//!     "namespace": "default",
//!     "uid": "8f2d9a4e-1c3b-4e5f-9a7b-6c5d4e3f2a1b",
//!     "generation": 1
//!   },
//!   "requests": [
//!     {
//!       "name": "net",
//!       "devices": [
//!         {
//!           "driver": "net.example.com",
//!           "pool": "node-1",
//!           "name": "eth1"
//!         }
//!       ]
//!     }
//!   ]
//! }
//! ```
//!
//! `podClaimName` follows `metadata` for a template's claim; a device gains `attributes` (as in
//! a ResourceSlice) and `networkData` (`interfaceName`, `ips`, `hardwareAddress`) once the driver
//! knows them. Field order, omitted empty fields and string escaping (`<`, `>`, `&`, U+2028 and
//! U+2029 as `\u` escapes) are Go's `encoding/json`, so the files equal the Go helper's.
//!
//! # Rules
//!
//! - Prepare writes generation 1 of every request; its devices may lack attributes and network
//!   data.
//! - A driver that learns more later (a network driver once it attached the interface, in the
//!   pod's sandbox hook) replaces a request's devices with [`MetadataWriter::update_request`]:
//!   generation + 1, and the pod claim name kept from the file it replaces.
//! - Every write replaces its file atomically: a temporary file in the same directory, written,
//!   fsynced and renamed over the target. A reader sees the old or the new file, never a part.
//!   The temporary name ends in `.tmp`, so the runtime's CDI registry, which watches its
//!   directory for `*.json`, never loads a half-written spec.
//! - Unprepare removes the claim's metadata directory and CDI specs
//!   ([`MetadataWriter::remove_claim`]); after a restart, [`MetadataWriter::sweep`] removes those
//!   of claims no longer prepared. Other drivers' files in the CDI directory are never touched.
//! - Files are 0644 whatever the umask (a container of any user reads them), directories 0755.
//! - Names from the claim and its allocation become path components; one that is empty, `.`,
//!   `..` or contains `/` is refused rather than written or removed outside these directories.
//! - The calls block on the filesystem: async code runs them on a blocking thread.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsString,
    fs::{self, DirBuilder, OpenOptions, Permissions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use k8s_openapi::api::resource::v1::{DeviceAttribute, NetworkDeviceData};
use serde::{Serialize, Serializer};

use crate::driver::{ClaimRef, ResolvedClaim};

/// Set by the ResourceClaim controller on a claim it generates from a template: the pod's own
/// name for the claim (`pod.spec.resourceClaims[].name`).
const POD_CLAIM_NAME_ANNOTATION: &str = "resource.kubernetes.io/pod-claim-name";
/// Under the plugin directory: one directory per claim.
const METADATA_SUBDIR: &str = "dra-device-metadata";
const METADATA_FILE: &str = "metadata.json";
/// Where the files appear inside containers.
const CONTAINER_DIR: &str = "/var/run/kubernetes.io/dra-device-attributes";
const KIND: &str = "DeviceMetadata";
/// The versions written, newest first: a reader takes the first one it knows.
const API_VERSIONS: [&str; 2] = ["metadata.resource.k8s.io/v1beta1", "metadata.resource.k8s.io/v1alpha1"];
const FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;

/// Why device metadata could not be written or removed. Every variant names the claim (a
/// sweep's, the directory it could not list) and, where one was built, the path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// A file or directory could not be read, written, listed or removed.
    #[error("device metadata of claim {claim}: cannot {action} {path}: {source}")]
    Io {
        /// The claim.
        claim: ClaimRef,
        /// What was being done (`write`, `remove`, ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// An update names a request that was never prepared: its metadata file does not exist.
    #[error("device metadata of claim {claim}: request {request:?} was not prepared ({path} does not exist)")]
    NotPrepared {
        /// The claim.
        claim: ClaimRef,
        /// The request as the update named it.
        request: String,
        /// The metadata file that would hold it.
        path: PathBuf,
    },
    /// The metadata file an update would replace is not a metadata stream this code reads; it
    /// is left untouched.
    #[error(
        "device metadata of claim {claim}: {path} is not a readable metadata stream ({reason}); it was left untouched"
    )]
    Corrupt {
        /// The claim.
        claim: ClaimRef,
        /// The metadata file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A name from the claim or its allocation cannot be a single path component (empty, `.`,
    /// `..`, or containing `/`); nothing was written or removed for it.
    #[error(
        "device metadata of claim {claim}: {what} {value:?} cannot be a file name (empty, `.`, `..`, or contains `/`)"
    )]
    InvalidName {
        /// The claim.
        claim: ClaimRef,
        /// Which name (`namespace`, `request`, ...).
        what: &'static str,
        /// The name.
        value: String,
    },
    /// Two requests given to one [`MetadataWriter::write_prepared`] share a base request, and
    /// there is one file per base request; nothing was written.
    #[error("device metadata of claim {claim}: request {request:?} is given twice (one file per base request: {path})")]
    DuplicateRequest {
        /// The claim.
        claim: ClaimRef,
        /// The second request naming the base request.
        request: String,
        /// The metadata file both would write.
        path: PathBuf,
    },
    /// A sweep could not list a directory.
    #[error("sweeping device metadata: cannot list {path}: {source}")]
    Sweep {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// The claim whose devices the metadata describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMeta {
    /// Which claim.
    pub claim: ClaimRef,
    /// The claim's `resource.kubernetes.io/pod-claim-name` annotation, set on claims generated
    /// from a template. When non-empty, the in-container path uses it instead of the claim's
    /// generated name; it is recorded in the document as `podClaimName` (even when empty, as
    /// the Go helper does).
    pub pod_claim_name: Option<String>,
}

impl ClaimMeta {
    /// The identity of a resolved claim and its pod claim name annotation.
    pub fn of(claim: &ResolvedClaim) -> Self {
        let pod_claim_name = claim
            .object
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(POD_CLAIM_NAME_ANNOTATION))
            .cloned();
        Self {
            claim: claim.claim.clone(),
            pod_claim_name,
        }
    }
}

/// The devices this driver allocated for one request, as its metadata file lists them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RequestDevices {
    /// The request as the allocation names it, subrequest included (`net/fast`). The document
    /// records it as given; the file is named after the base request (`net`).
    pub request: String,
    /// The request's devices of this driver.
    pub devices: Vec<MetadataDevice>,
}

/// One device in a metadata document.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetadataDevice {
    /// The pool the device belongs to.
    pub pool: String,
    /// The device's name in the pool.
    pub device: String,
    /// Attributes as a ResourceSlice gives them: unqualified names belong to the driver's
    /// domain, others carry a domain prefix (`resource.kubernetes.io/pcieRoot`). Best published
    /// alongside the slice's attributes plus what only the runtime knows. Omitted when empty.
    pub attributes: BTreeMap<String, DeviceAttribute>,
    /// Interface name, addresses (CIDR) and hardware address, once known. Omitted when `None`.
    pub network_data: Option<NetworkDeviceData>,
}

impl MetadataDevice {
    /// A device with no attributes and no network data yet.
    pub fn new(pool: impl Into<String>, device: impl Into<String>) -> Self {
        Self {
            pool: pool.into(),
            device: device.into(),
            ..Self::default()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The documents (pure).

/// A metadata document without its `kind` and `apiVersion`, which [`encode`] adds per version
/// (the versions have the same fields).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Document {
    pub metadata: DocumentMeta,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_claim_name: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<DocumentRequest>,
}

/// The document's ObjectMeta: only the fields the writer sets, each omitted when empty as
/// Go's `omitempty` does (no `creationTimestamp`: the Go helper emits none).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct DocumentMeta {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub generation: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct DocumentRequest {
    pub name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DocumentDevice>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DocumentDevice {
    pub driver: String,
    pub pool: String,
    pub name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", serialize_with = "go_attributes")]
    pub attributes: BTreeMap<String, DeviceAttribute>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "go_network_data")]
    pub network_data: Option<NetworkDeviceData>,
}

// k8s-openapi serialises fields alphabetically and keeps empty strings; Go writes them in
// struct order and its `omitempty` drops empty strings and lists. These mirror the Go structs.

#[derive(Serialize)]
struct GoAttribute<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    int: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bool: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    string: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'a str>,
}

fn go_attributes<S: Serializer>(attributes: &BTreeMap<String, DeviceAttribute>, s: S) -> Result<S::Ok, S::Error> {
    // A BTreeMap orders keys bytewise, as Go sorts map keys.
    s.collect_map(attributes.iter().map(|(name, a)| {
        let value = GoAttribute {
            int: a.int,
            bool: a.bool,
            string: a.string.as_deref(),
            version: a.version.as_deref(),
        };
        (name, value)
    }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GoNetworkData<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    interface_name: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    ips: &'a [String],
    #[serde(skip_serializing_if = "str::is_empty")]
    hardware_address: &'a str,
}

fn go_network_data<S: Serializer>(data: &Option<NetworkDeviceData>, s: S) -> Result<S::Ok, S::Error> {
    match data {
        Some(d) => GoNetworkData {
            interface_name: d.interface_name.as_deref().unwrap_or_default(),
            ips: d.ips.as_deref().unwrap_or_default(),
            hardware_address: d.hardware_address.as_deref().unwrap_or_default(),
        }
        .serialize(s),
        None => s.serialize_none(),
    }
}

/// The metadata stream of one document: each version newest first, pretty-printed, each
/// followed by a newline.
pub(crate) fn encode(doc: &Document) -> Vec<u8> {
    #[derive(Serialize)]
    struct Versioned<'a> {
        kind: &'static str,
        #[serde(rename = "apiVersion")]
        api_version: &'static str,
        #[serde(flatten)]
        doc: &'a Document,
    }
    let mut out = Vec::new();
    for api_version in API_VERSIONS {
        let versioned = Versioned {
            kind: KIND,
            api_version,
            doc,
        };
        let json = serde_json::to_string_pretty(&versioned).expect("metadata documents always serialise");
        out.extend_from_slice(escape_like_go(json).as_bytes());
        out.push(b'\n');
    }
    out
}

/// Go's `encoding/json` escapes `<`, `>`, `&`, U+2028 and U+2029, serde_json does not. In JSON
/// text these characters can only occur inside strings, where serde_json writes them verbatim,
/// so replacing them anywhere in its output escapes exactly the string characters Go escapes.
fn escape_like_go(json: String) -> String {
    const GO_ESCAPED: [char; 5] = ['<', '>', '&', '\u{2028}', '\u{2029}'];
    if !json.contains(GO_ESCAPED) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 32);
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// What an update needs from the file it replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FirstDocument {
    /// `metadata.generation` (0 when absent, as Go reads it).
    pub generation: i64,
    /// `podClaimName`, kept by the update.
    pub pod_claim_name: Option<String>,
    /// `metadata.uid`: the claim the file was written for.
    pub uid: Option<String>,
}

/// Reads the first document of a metadata stream in a version this code knows, skipping
/// documents of other versions as the Go decoder does. The bytes come from a file outside our
/// control: any input yields a value or a reason, never a panic.
pub(crate) fn first_document(bytes: &[u8]) -> Result<FirstDocument, String> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(default)]
        metadata: HeadMeta,
        #[serde(default, rename = "podClaimName")]
        pod_claim_name: Option<String>,
    }
    #[derive(serde::Deserialize, Default)]
    struct HeadMeta {
        #[serde(default)]
        generation: i64,
        #[serde(default)]
        uid: Option<String>,
    }

    let mut unknown = Vec::new();
    for value in serde_json::Deserializer::from_slice(bytes).into_iter::<serde_json::Value>() {
        let value = value.map_err(|e| format!("not a JSON stream: {e}"))?;
        let api_version = match value.get("apiVersion").and_then(serde_json::Value::as_str) {
            Some(v) if !v.is_empty() => v,
            _ => return Err("a document has no apiVersion".into()),
        };
        if !API_VERSIONS.contains(&api_version) {
            unknown.push(api_version.to_string());
            continue;
        }
        let kind = value
            .get("kind")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        if kind != KIND {
            return Err(format!("the {api_version} document is of kind {kind:?}, not {KIND}"));
        }
        let head = <Head as serde::Deserialize>::deserialize(&value)
            .map_err(|e| format!("the {api_version} document: {e}"))?;
        return Ok(FirstDocument {
            generation: head.metadata.generation,
            pod_claim_name: head.pod_claim_name,
            uid: head.metadata.uid,
        });
    }
    if unknown.is_empty() {
        Err("no documents".into())
    } else {
        Err(format!("no document in a known version (found {})", unknown.join(", ")))
    }
}

// ---------------------------------------------------------------------------------------------
// The CDI spec (pure).

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CdiSpec<'a> {
    cdi_version: &'static str,
    kind: String,
    devices: [CdiDevice<'a>; 1],
    /// Go's `omitempty` keeps an empty struct: the spec-wide edits are written as `{}`.
    container_edits: NoEdits,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CdiDevice<'a> {
    name: &'a str,
    container_edits: CdiMounts<'a>,
}

#[derive(Serialize)]
struct CdiMounts<'a> {
    mounts: [CdiMount<'a>; 1],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CdiMount<'a> {
    host_path: &'a str,
    container_path: &'a str,
    options: [&'static str; 2],
}

#[derive(Serialize)]
struct NoEdits {}

/// The `cdiVersion` CDI's `MinimumRequiredVersion` gives this spec: device names starting
/// with a digit (as most claim UIDs do) need 0.5.0; nothing else in it needs more than the
/// earliest version, 0.3.0 (no annotations, no dot in the kind's class, no mount type, no
/// device nodes, intelRdt, additionalGids or netDevices).
fn cdi_version(device_name: &str) -> &'static str {
    if device_name.starts_with(|c: char| c.is_ascii_digit()) {
        "0.5.0"
    } else {
        "0.3.0"
    }
}

/// The CDI spec of one request: device `device_name` of kind `{driver}/metadata` bind-mounts
/// `host_path` read-only at `container_path`. Formatted as Go's `json.MarshalIndent(spec, "",
/// "  ")`, without a trailing newline.
pub(crate) fn cdi_spec(driver: &str, device_name: &str, host_path: &str, container_path: &str) -> Vec<u8> {
    let spec = CdiSpec {
        cdi_version: cdi_version(device_name),
        kind: format!("{driver}/metadata"),
        devices: [CdiDevice {
            name: device_name,
            container_edits: CdiMounts {
                mounts: [CdiMount {
                    host_path,
                    container_path,
                    options: ["ro", "bind"],
                }],
            },
        }],
        container_edits: NoEdits {},
    };
    let json = serde_json::to_string_pretty(&spec).expect("CDI specs always serialise");
    escape_like_go(json).into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Names and paths (pure).

/// The request a (sub)request reference belongs to: `net/fast` → `net`.
pub(crate) fn base_request(request: &str) -> &str {
    request.split_once('/').map_or(request, |(base, _)| base)
}

/// The CDI device name of a request's metadata, unique per claim and request.
fn cdi_device_name(claim_uid: &str, base_request: &str) -> String {
    format!("{claim_uid}_{base_request}")
}

/// Where the metadata file of a request appears inside containers.
pub(crate) fn container_path(driver: &str, claim: &ClaimMeta, base_request: &str) -> String {
    match claim.pod_claim_name.as_deref().filter(|n| !n.is_empty()) {
        Some(pod_claim) => {
            format!("{CONTAINER_DIR}/resourceclaimtemplates/{pod_claim}/{base_request}/{driver}-metadata.json")
        }
        None => format!(
            "{CONTAINER_DIR}/resourceclaims/{}/{base_request}/{driver}-metadata.json",
            claim.claim.name
        ),
    }
}

/// Whether `name` can be one path component: joined onto a directory, it names an entry of
/// that directory and nothing else.
fn is_component(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

// ---------------------------------------------------------------------------------------------
// The writer (I/O).

/// Writes, updates and removes the device metadata files and CDI specs of one driver.
///
/// Calls for one claim must not overlap (the SDK serialises a claim's prepare and unprepare;
/// a driver updates a request from its sandbox hook, after prepare and before unprepare).
#[derive(Debug, Clone)]
pub struct MetadataWriter {
    driver: String,
    plugin_dir: PathBuf,
    cdi_dir: PathBuf,
}

impl MetadataWriter {
    /// Where container runtimes look for CDI specs unless configured otherwise.
    pub const DEFAULT_CDI_DIR: &'static str = "/var/run/cdi";

    /// A writer for `driver` (a valid driver name, as [`crate::validate_driver_name`] checks)
    /// keeping metadata files under `plugin_dir` (the plugin's data directory, by default
    /// `/var/lib/kubelet/plugins/{driver}`) and CDI specs in `cdi_dir`. Nothing is read or
    /// written yet.
    pub fn new(driver: impl Into<String>, plugin_dir: impl Into<PathBuf>, cdi_dir: impl Into<PathBuf>) -> Self {
        Self {
            driver: driver.into(),
            plugin_dir: plugin_dir.into(),
            cdi_dir: cdi_dir.into(),
        }
    }

    /// Writes generation 1 of the metadata file and the CDI spec of every request, and returns
    /// the CDI device ID to inject for each base request (`net` → `{driver}/metadata={uid}_net`).
    ///
    /// All names are checked before anything is written. A failed write may leave the files of
    /// the requests before it: the caller undoes the claim with [`remove_claim`](Self::remove_claim).
    pub fn write_prepared(
        &self,
        claim: &ClaimMeta,
        requests: &[RequestDevices],
    ) -> Result<BTreeMap<String, String>, MetadataError> {
        let c = &claim.claim;
        check_claim(c)?;
        if let Some(pod_claim) = claim.pod_claim_name.as_deref().filter(|n| !n.is_empty()) {
            check_name(c, "pod claim name", pod_claim)?;
        }
        // Everything is checked before anything is written.
        let mut planned = Vec::with_capacity(requests.len());
        let mut bases = BTreeSet::new();
        for r in requests {
            let base = base_request(&r.request);
            check_name(c, "request", base)?;
            let file = self.metadata_file(c, base);
            if !bases.insert(base) {
                return Err(MetadataError::DuplicateRequest {
                    claim: c.clone(),
                    request: r.request.clone(),
                    path: file,
                });
            }
            // The CDI spec holds the path as a JSON string.
            let host_path = file
                .to_str()
                .map(str::to_string)
                .ok_or_else(|| MetadataError::InvalidName {
                    claim: c.clone(),
                    what: "metadata file path (not UTF-8)",
                    value: file.display().to_string(),
                })?;
            planned.push((r, base, file, host_path));
        }

        let mut cdi_ids = BTreeMap::new();
        for (r, base, file, host_path) in planned {
            let doc = self.document(c, claim.pod_claim_name.clone(), 1, &r.request, &r.devices);
            if let Some(dir) = file.parent() {
                create_dir(dir).map_err(|e| io_error(c, "create", dir, e))?;
            }
            write_atomically(&file, &encode(&doc)).map_err(|e| io_error(c, "write", &file, e))?;

            let device_name = cdi_device_name(&c.uid, base);
            let spec = cdi_spec(
                &self.driver,
                &device_name,
                &host_path,
                &container_path(&self.driver, claim, base),
            );
            create_dir(&self.cdi_dir).map_err(|e| io_error(c, "create", &self.cdi_dir, e))?;
            let spec_file = self.cdi_spec_file(&c.uid, base);
            write_atomically(&spec_file, &spec).map_err(|e| io_error(c, "write", &spec_file, e))?;
            cdi_ids.insert(base.to_string(), self.cdi_device_id(&c.uid, base));
        }
        Ok(cdi_ids)
    }

    /// Replaces the devices of one prepared request and returns the new generation: the
    /// generation in the file plus one. `request` is named as at prepare (with its subrequest,
    /// which the document records); the pod claim name is kept from the file.
    pub fn update_request(
        &self,
        claim: &ClaimRef,
        request: &str,
        devices: &[MetadataDevice],
    ) -> Result<i64, MetadataError> {
        check_claim(claim)?;
        let base = base_request(request);
        check_name(claim, "request", base)?;
        let path = self.metadata_file(claim, base);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(MetadataError::NotPrepared {
                    claim: claim.clone(),
                    request: request.to_string(),
                    path,
                });
            }
            Err(e) => return Err(io_error(claim, "read", &path, e)),
        };
        let corrupt = |reason: String| MetadataError::Corrupt {
            claim: claim.clone(),
            path: path.clone(),
            reason,
        };
        let previous = first_document(&bytes).map_err(corrupt)?;
        let generation = previous
            .generation
            .checked_add(1)
            .ok_or_else(|| corrupt(format!("generation {} cannot be incremented", previous.generation)))?;
        let doc = self.document(claim, previous.pod_claim_name, generation, request, devices);
        write_atomically(&path, &encode(&doc)).map_err(|e| io_error(claim, "write", &path, e))?;
        Ok(generation)
    }

    /// Removes the claim's CDI specs (the files `{driver}_metadata_{uid}_*.json` of the CDI
    /// directory, and the temporary files a crash may have left while writing one), then its
    /// metadata directory. Files already gone are not an error.
    ///
    /// The directory is named after the claim's namespace and name, as the Go helper names it:
    /// a claim deleted and made again under the same name may have been prepared before the
    /// old one's Unprepare came. A directory whose files name another UID is left to its claim.
    pub fn remove_claim(&self, claim: &ClaimRef) -> Result<(), MetadataError> {
        // Checked so that removing a directory tree stays inside the metadata directory.
        check_claim(claim)?;
        // The specs first: a spec whose file is gone would fail the containers it names.
        let names = file_names(&self.cdi_dir).map_err(|e| io_error(claim, "list", &self.cdi_dir, e))?;
        let prefix = format!("{}_", claim.uid);
        for name in names {
            if self
                .metadata_cdi_rest(&name)
                .is_some_and(|rest| rest.starts_with(&prefix))
            {
                let path = self.cdi_dir.join(&name);
                if let Err(e) = fs::remove_file(&path)
                    && e.kind() != io::ErrorKind::NotFound
                {
                    return Err(io_error(claim, "remove", &path, e));
                }
            }
        }
        let dir = self.claim_dir(claim);
        if let Some(other) = self.other_owner(&dir, &claim.uid) {
            tracing::info!(claim = %claim, other_uid = %other, dir = %dir.display(), "the device metadata directory belongs to a newer claim of the same name; left to it");
            return Ok(());
        }
        if let Err(e) = fs::remove_dir_all(&dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            return Err(io_error(claim, "remove", &dir, e));
        }
        Ok(())
    }

    /// The UID another claim wrote into a request file of `dir`, if any. Files that cannot be
    /// read or decoded name no owner: they are removed with the directory.
    fn other_owner(&self, dir: &Path, uid: &str) -> Option<String> {
        file_names(dir).ok()?.into_iter().find_map(|request| {
            let bytes = fs::read(dir.join(request).join(METADATA_FILE)).ok()?;
            first_document(&bytes).ok()?.uid.filter(|owner| owner != uid)
        })
    }

    /// Removes the metadata of every claim not in `keep`: the claim directories under
    /// `{plugin dir}/dra-device-metadata/` and this driver's `{driver}_metadata_*` CDI specs,
    /// and every temporary CDI spec file of this driver a crash left (kept claim or not). For a restart, once the prepared claims are
    /// known: the claims unprepared while the plugin was down left their files behind.
    ///
    /// Returns what it removed, sorted. An entry that cannot be removed is logged and left for
    /// the next sweep; only a directory that cannot be listed is an error.
    pub fn sweep(&self, keep: &[ClaimRef]) -> Result<Vec<PathBuf>, MetadataError> {
        let kept_dirs: BTreeSet<String> = keep.iter().map(|c| format!("{}_{}", c.namespace, c.name)).collect();
        let kept_uids: Vec<String> = keep.iter().map(|c| format!("{}_", c.uid)).collect();
        let mut removed = Vec::new();

        let root = self.metadata_root();
        let names = file_names(&root).map_err(|source| MetadataError::Sweep {
            path: root.clone(),
            source,
        })?;
        for name in names.into_iter().filter(|n| !kept_dirs.contains(n)) {
            let path = root.join(name);
            let result = match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => fs::remove_dir_all(&path),
                Ok(_) => fs::remove_file(&path),
                Err(e) => Err(e),
            };
            sweep_result(result, path, &mut removed);
        }

        let names = file_names(&self.cdi_dir).map_err(|source| MetadataError::Sweep {
            path: self.cdi_dir.clone(),
            source,
        })?;
        for name in names {
            let Some(rest) = self.metadata_cdi_rest(&name) else {
                continue;
            };
            // A temporary file is a dead writer's (the sweep runs before the plugin serves),
            // kept claim or not.
            let temporary = name.starts_with('.');
            if !temporary && kept_uids.iter().any(|uid| rest.starts_with(uid.as_str())) {
                continue;
            }
            let path = self.cdi_dir.join(&name);
            let result = fs::remove_file(&path);
            sweep_result(result, path, &mut removed);
        }
        removed.sort();
        Ok(removed)
    }

    fn document(
        &self,
        claim: &ClaimRef,
        pod_claim_name: Option<String>,
        generation: i64,
        request: &str,
        devices: &[MetadataDevice],
    ) -> Document {
        Document {
            metadata: DocumentMeta {
                name: claim.name.clone(),
                namespace: claim.namespace.clone(),
                uid: claim.uid.clone(),
                generation,
            },
            pod_claim_name,
            requests: vec![DocumentRequest {
                name: request.to_string(),
                devices: devices
                    .iter()
                    .map(|d| DocumentDevice {
                        driver: self.driver.clone(),
                        pool: d.pool.clone(),
                        name: d.device.clone(),
                        attributes: d.attributes.clone(),
                        network_data: d.network_data.clone(),
                    })
                    .collect(),
            }],
        }
    }

    fn metadata_root(&self) -> PathBuf {
        self.plugin_dir.join(METADATA_SUBDIR)
    }

    /// `{plugin dir}/dra-device-metadata/{namespace}_{name}`
    fn claim_dir(&self, claim: &ClaimRef) -> PathBuf {
        self.metadata_root().join(format!("{}_{}", claim.namespace, claim.name))
    }

    /// `{plugin dir}/dra-device-metadata/{namespace}_{name}/{base request}/metadata.json`
    fn metadata_file(&self, claim: &ClaimRef, base_request: &str) -> PathBuf {
        self.claim_dir(claim).join(base_request).join(METADATA_FILE)
    }

    /// `{cdi dir}/{driver}_metadata_{claim uid}_{base request}.json`
    fn cdi_spec_file(&self, claim_uid: &str, base_request: &str) -> PathBuf {
        self.cdi_dir
            .join(format!("{}_metadata_{claim_uid}_{base_request}.json", self.driver))
    }

    /// `{driver}/metadata={claim uid}_{base request}`
    fn cdi_device_id(&self, claim_uid: &str, base_request: &str) -> String {
        format!("{}/metadata={}", self.driver, cdi_device_name(claim_uid, base_request))
    }

    /// For a CDI spec of this driver's metadata (`{driver}_metadata_….json`) or a temporary
    /// file left while writing one (`.{driver}_metadata_….json.….tmp`), the part after
    /// `{driver}_metadata_`, which starts with `{claim uid}_`. Driver names have no `_`, so
    /// another driver's files never match.
    fn metadata_cdi_rest<'a>(&self, file_name: &'a str) -> Option<&'a str> {
        let (name, suffix) = match file_name.strip_prefix('.') {
            Some(temporary) => (temporary, ".tmp"),
            None => (file_name, ".json"),
        };
        if !name.ends_with(suffix) {
            return None;
        }
        name.strip_prefix(self.driver.as_str())?.strip_prefix("_metadata_")
    }
}

/// Checks the names of a claim that become path components.
fn check_claim(claim: &ClaimRef) -> Result<(), MetadataError> {
    check_name(claim, "namespace", &claim.namespace)?;
    check_name(claim, "name", &claim.name)?;
    check_name(claim, "UID", &claim.uid)
}

fn check_name(claim: &ClaimRef, what: &'static str, value: &str) -> Result<(), MetadataError> {
    if is_component(value) {
        Ok(())
    } else {
        Err(MetadataError::InvalidName {
            claim: claim.clone(),
            what,
            value: value.to_string(),
        })
    }
}

fn io_error(claim: &ClaimRef, action: &'static str, path: &Path, source: io::Error) -> MetadataError {
    MetadataError::Io {
        claim: claim.clone(),
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn sweep_result(result: io::Result<()>, path: PathBuf, removed: &mut Vec<PathBuf>) {
    match result {
        Ok(()) => removed.push(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove stale device metadata; the next sweep tries again")
        }
    }
}

/// The UTF-8 names in `dir` (others cannot be ours); none when `dir` does not exist.
fn file_names(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        // Not there, or a file where a directory was expected: nothing of ours is inside.
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        if let Ok(name) = entry?.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Distinguishes the temporary files of concurrent writes in one process; the PID, those of
/// processes (an old and a new plugin during a rolling update).
static TEMP_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `bytes`: a temporary file in the same directory (so the rename cannot
/// cross filesystems), written, fsynced, then renamed over the target. On error the temporary
/// file is removed.
///
/// The rename gives the path a new inode, and a bind mount made before it would keep showing
/// the old one. That is safe here: the runtime resolves a CDI mount when it creates a
/// container, and containers are created after the pod's sandbox hook, where a driver makes its
/// last update; a container created later (a restart) mounts the newest file.
///
/// The directory is not fsynced: the files only mean something within one boot (after a power
/// loss every pod is created and prepared again), and a directory commit in the sandbox hook
/// would cost every pod start. The checkpoint is written the same way.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a file path"));
    };
    let mut temporary_name = OsString::from(".");
    temporary_name.push(name);
    temporary_name.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        TEMP_SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ));
    let temporary = dir.join(temporary_name);
    let written = write_synced(&temporary, bytes).and_then(|()| fs::rename(&temporary, path));
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    // Truncating rather than refusing an existing file: one with this name can only be left
    // by a dead process whose PID was reused.
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    // The mode given at creation is filtered by the umask; containers of any user read the file.
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    const DRIVER: &str = "net.example.com";
    const UID: &str = "8f2d9a4e-1c3b-4e5f-9a7b-6c5d4e3f2a1b";
    const TEMPLATE_UID: &str = "c3f1e2d4-5a6b-4c7d-8e9f-0a1b2c3d4e5f";

    fn claim_ref(namespace: &str, name: &str, uid: &str) -> ClaimRef {
        ClaimRef {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
        }
    }

    fn direct() -> ClaimMeta {
        ClaimMeta {
            claim: claim_ref("default", "pod-net", UID),
            pod_claim_name: None,
        }
    }

    fn template() -> ClaimMeta {
        ClaimMeta {
            claim: claim_ref("team-a", "web-0-net-x7k2p", TEMPLATE_UID),
            pod_claim_name: Some("net".into()),
        }
    }

    fn one_device(request: &str) -> Vec<RequestDevices> {
        vec![RequestDevices {
            request: request.into(),
            devices: vec![MetadataDevice::new("node-1", "eth1")],
        }]
    }

    /// The devices of the update golden: full attributes and network data, and a device whose
    /// attributes and network data are present but empty.
    fn attached() -> Vec<MetadataDevice> {
        let string = |s: &str| DeviceAttribute {
            string: Some(s.into()),
            ..DeviceAttribute::default()
        };
        let attributes = BTreeMap::from([
            ("model".to_string(), string("E810 <rev&2>")),
            ("resource.kubernetes.io/pcieRoot".to_string(), string("pci0000:00")),
            (
                "numaNode".to_string(),
                DeviceAttribute {
                    int: Some(0),
                    ..DeviceAttribute::default()
                },
            ),
            (
                "sriov".to_string(),
                DeviceAttribute {
                    bool: Some(true),
                    ..DeviceAttribute::default()
                },
            ),
            (
                "driverVersion".to_string(),
                DeviceAttribute {
                    version: Some("1.2.3".into()),
                    ..DeviceAttribute::default()
                },
            ),
        ]);
        vec![
            MetadataDevice {
                attributes,
                network_data: Some(NetworkDeviceData {
                    interface_name: Some("net1".into()),
                    ips: Some(vec!["10.0.0.5/24".into(), "fd00::5/64".into()]),
                    hardware_address: Some("aa:bb:cc:dd:ee:01".into()),
                }),
                ..MetadataDevice::new("node-1", "eth1")
            },
            MetadataDevice {
                network_data: Some(NetworkDeviceData {
                    interface_name: Some(String::new()),
                    ips: Some(vec![]),
                    hardware_address: None,
                }),
                ..MetadataDevice::new("node-1", "eth2")
            },
        ]
    }

    /// The stream of a v1beta1 document: it, then the same as v1alpha1 (the Go output shows
    /// the versions differ only in apiVersion; the first golden spells both out).
    fn stream(v1beta1: &str) -> String {
        let v1alpha1 = v1beta1.replace("metadata.resource.k8s.io/v1beta1", "metadata.resource.k8s.io/v1alpha1");
        format!("{v1beta1}\n{v1alpha1}\n")
    }

    // The goldens below are the output of k8s.io/dynamic-resource-allocation v0.37.2's
    // metadataWriter (processPreparedClaim, then updateRequestMetadata) for the same claims,
    // versions [v1beta1, v1alpha1], CDI specs-go v1.1.0; only the host path prefix differs.

    const GENERATION_1_STREAM: &str = r#"{
  "kind": "DeviceMetadata",
  "apiVersion": "metadata.resource.k8s.io/v1beta1",
  "metadata": {
    "name": "pod-net",
    "namespace": "default",
    "uid": "8f2d9a4e-1c3b-4e5f-9a7b-6c5d4e3f2a1b",
    "generation": 1
  },
  "requests": [
    {
      "name": "net",
      "devices": [
        {
          "driver": "net.example.com",
          "pool": "node-1",
          "name": "eth1"
        }
      ]
    }
  ]
}
{
  "kind": "DeviceMetadata",
  "apiVersion": "metadata.resource.k8s.io/v1alpha1",
  "metadata": {
    "name": "pod-net",
    "namespace": "default",
    "uid": "8f2d9a4e-1c3b-4e5f-9a7b-6c5d4e3f2a1b",
    "generation": 1
  },
  "requests": [
    {
      "name": "net",
      "devices": [
        {
          "driver": "net.example.com",
          "pool": "node-1",
          "name": "eth1"
        }
      ]
    }
  ]
}
"#;

    const UPDATED_V1BETA1: &str = r#"{
  "kind": "DeviceMetadata",
  "apiVersion": "metadata.resource.k8s.io/v1beta1",
  "metadata": {
    "name": "pod-net",
    "namespace": "default",
    "uid": "8f2d9a4e-1c3b-4e5f-9a7b-6c5d4e3f2a1b",
    "generation": 2
  },
  "requests": [
    {
      "name": "net",
      "devices": [
        {
          "driver": "net.example.com",
          "pool": "node-1",
          "name": "eth1",
          "attributes": {
            "driverVersion": {
              "version": "1.2.3"
            },
            "model": {
              "string": "E810 \u003crev\u00262\u003e"
            },
            "numaNode": {
              "int": 0
            },
            "resource.kubernetes.io/pcieRoot": {
              "string": "pci0000:00"
            },
            "sriov": {
              "bool": true
            }
          },
          "networkData": {
            "interfaceName": "net1",
            "ips": [
              "10.0.0.5/24",
              "fd00::5/64"
            ],
            "hardwareAddress": "aa:bb:cc:dd:ee:01"
          }
        },
        {
          "driver": "net.example.com",
          "pool": "node-1",
          "name": "eth2",
          "networkData": {}
        }
      ]
    }
  ]
}"#;

    const TEMPLATE_V1BETA1: &str = r#"{
  "kind": "DeviceMetadata",
  "apiVersion": "metadata.resource.k8s.io/v1beta1",
  "metadata": {
    "name": "web-0-net-x7k2p",
    "namespace": "team-a",
    "uid": "c3f1e2d4-5a6b-4c7d-8e9f-0a1b2c3d4e5f",
    "generation": 1
  },
  "podClaimName": "net",
  "requests": [
    {
      "name": "net/fast",
      "devices": [
        {
          "driver": "net.example.com",
          "pool": "node-1",
          "name": "eth1"
        }
      ]
    }
  ]
}"#;

    const DIRECT_CDI_SPEC: &str = r#"{
  "cdiVersion": "0.5.0",
  "kind": "net.example.com/metadata",
  "devices": [
    {
      "name": "8f2d9a4e-1c3b-4e5f-9a7b-6c5d4e3f2a1b_net",
      "containerEdits": {
        "mounts": [
          {
            "hostPath": "/var/lib/kubelet/plugins/net.example.com/dra-device-metadata/default_pod-net/net/metadata.json",
            "containerPath": "/var/run/kubernetes.io/dra-device-attributes/resourceclaims/pod-net/net/net.example.com-metadata.json",
            "options": [
              "ro",
              "bind"
            ]
          }
        ]
      }
    }
  ],
  "containerEdits": {}
}"#;

    const TEMPLATE_CDI_SPEC: &str = r#"{
  "cdiVersion": "0.3.0",
  "kind": "net.example.com/metadata",
  "devices": [
    {
      "name": "c3f1e2d4-5a6b-4c7d-8e9f-0a1b2c3d4e5f_net",
      "containerEdits": {
        "mounts": [
          {
            "hostPath": "/var/lib/kubelet/plugins/net.example.com/dra-device-metadata/team-a_web-0-net-x7k2p/net/metadata.json",
            "containerPath": "/var/run/kubernetes.io/dra-device-attributes/resourceclaimtemplates/net/net/net.example.com-metadata.json",
            "options": [
              "ro",
              "bind"
            ]
          }
        ]
      }
    }
  ],
  "containerEdits": {}
}"#;

    const PLUGIN_DIR: &str = "/var/lib/kubelet/plugins/net.example.com";

    fn node_writer() -> MetadataWriter {
        MetadataWriter::new(DRIVER, PLUGIN_DIR, MetadataWriter::DEFAULT_CDI_DIR)
    }

    struct Node {
        dir: tempfile::TempDir,
        writer: MetadataWriter,
    }

    impl Node {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let writer = MetadataWriter::new(DRIVER, dir.path().join("plugin"), dir.path().join("cdi"));
            Self { dir, writer }
        }
        fn cdi(&self) -> PathBuf {
            self.dir.path().join("cdi")
        }
        fn metadata(&self) -> PathBuf {
            self.dir.path().join("plugin").join(METADATA_SUBDIR)
        }
        fn read(&self, claim: &ClaimRef, base: &str) -> String {
            String::from_utf8(fs::read(self.writer.metadata_file(claim, base)).unwrap()).unwrap()
        }
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names = file_names(dir).unwrap();
        names.sort();
        names
    }

    #[test]
    fn golden_generation_1_stream() {
        let writer = node_writer();
        let claim = direct();
        let doc = writer.document(&claim.claim, None, 1, "net", &one_device("net")[0].devices);
        assert_eq!(String::from_utf8(encode(&doc)).unwrap(), GENERATION_1_STREAM);

        let node = Node::new();
        node.writer.write_prepared(&claim, &one_device("net")).unwrap();
        assert_eq!(node.read(&claim.claim, "net"), GENERATION_1_STREAM);
    }

    #[test]
    fn golden_update_with_attributes_and_network_data() {
        let node = Node::new();
        let claim = direct();
        node.writer.write_prepared(&claim, &one_device("net")).unwrap();
        assert_eq!(node.writer.update_request(&claim.claim, "net", &attached()).unwrap(), 2);
        assert_eq!(node.read(&claim.claim, "net"), stream(UPDATED_V1BETA1));
    }

    #[test]
    fn golden_template_claim_with_a_subrequest_keeps_its_pod_claim_name_on_update() {
        let node = Node::new();
        let claim = template();
        let ids = node.writer.write_prepared(&claim, &one_device("net/fast")).unwrap();
        assert_eq!(
            ids,
            BTreeMap::from([("net".to_string(), format!("{DRIVER}/metadata={TEMPLATE_UID}_net"))])
        );
        assert_eq!(node.read(&claim.claim, "net"), stream(TEMPLATE_V1BETA1));

        // The update names no pod claim name: it comes from the file.
        node.writer
            .update_request(&claim.claim, "net/fast", &one_device("x")[0].devices)
            .unwrap();
        let expected = TEMPLATE_V1BETA1.replace("\"generation\": 1", "\"generation\": 2");
        assert_eq!(node.read(&claim.claim, "net"), stream(&expected));
    }

    #[test]
    fn golden_cdi_specs() {
        let writer = node_writer();
        for (claim, golden) in [(direct(), DIRECT_CDI_SPEC), (template(), TEMPLATE_CDI_SPEC)] {
            let host = writer.metadata_file(&claim.claim, "net");
            let spec = cdi_spec(
                DRIVER,
                &cdi_device_name(&claim.claim.uid, "net"),
                host.to_str().unwrap(),
                &container_path(DRIVER, &claim, "net"),
            );
            assert_eq!(String::from_utf8(spec).unwrap(), golden);
        }

        // The spec on disk is the same, with the host path of that node.
        let node = Node::new();
        node.writer.write_prepared(&direct(), &one_device("net")).unwrap();
        let on_disk = fs::read_to_string(node.cdi().join(format!("{DRIVER}_metadata_{UID}_net.json"))).unwrap();
        let plugin = node.dir.path().join("plugin");
        assert_eq!(on_disk, DIRECT_CDI_SPEC.replace(PLUGIN_DIR, plugin.to_str().unwrap()));
    }

    #[test]
    fn an_empty_pod_claim_name_is_recorded_but_does_not_choose_the_path() {
        // As the Go helper does with an empty annotation.
        let claim = ClaimMeta {
            claim: claim_ref("ns", "c", "u-1"),
            pod_claim_name: Some(String::new()),
        };
        let node = Node::new();
        node.writer.write_prepared(&claim, &one_device("r")).unwrap();
        assert!(node.read(&claim.claim, "r").contains("\n  \"podClaimName\": \"\",\n"));
        assert_eq!(
            container_path(DRIVER, &claim, "r"),
            "/var/run/kubernetes.io/dra-device-attributes/resourceclaims/c/r/net.example.com-metadata.json"
        );
    }

    #[test]
    fn cdi_version_is_the_minimum_the_spec_requires() {
        assert_eq!(cdi_version("8f2d_net"), "0.5.0");
        assert_eq!(cdi_version("c3f1_net"), "0.3.0");
    }

    #[test]
    fn go_escaping_of_strings() {
        let escaped = escape_like_go(
            serde_json::to_string("\u{0}\u{1}\u{8}\u{c}\n\r\t\u{1f}\u{7f}\u{2028}\u{2029}<>&'\"\\/é😀").unwrap(),
        );
        // Go 1.26 json.MarshalIndent of the same string.
        assert_eq!(
            escaped,
            "\"\\u0000\\u0001\\b\\f\\n\\r\\t\\u001f\u{7f}\\u2028\\u2029\\u003c\\u003e\\u0026'\\\"\\\\/é😀\""
        );
    }

    #[test]
    fn paths_of_both_claim_kinds_and_of_a_subrequest() {
        let writer = node_writer();
        let d = direct();
        assert_eq!(base_request("net/fast"), "net");
        assert_eq!(base_request("net"), "net");
        assert_eq!(
            writer.metadata_file(&d.claim, base_request("net/fast")),
            Path::new("/var/lib/kubelet/plugins/net.example.com/dra-device-metadata/default_pod-net/net/metadata.json")
        );
        assert_eq!(
            writer.cdi_spec_file(UID, "net"),
            Path::new("/var/run/cdi/net.example.com_metadata_8f2d9a4e-1c3b-4e5f-9a7b-6c5d4e3f2a1b_net.json")
        );
        assert_eq!(
            writer.cdi_device_id(UID, "net"),
            "net.example.com/metadata=8f2d9a4e-1c3b-4e5f-9a7b-6c5d4e3f2a1b_net"
        );
        assert_eq!(
            container_path(DRIVER, &d, "net"),
            "/var/run/kubernetes.io/dra-device-attributes/resourceclaims/pod-net/net/net.example.com-metadata.json"
        );
        assert_eq!(
            container_path(DRIVER, &template(), "net"),
            "/var/run/kubernetes.io/dra-device-attributes/resourceclaimtemplates/net/net/net.example.com-metadata.json"
        );
    }

    #[test]
    fn claim_meta_reads_the_pod_claim_name_annotation() {
        let mut object = k8s_openapi::api::resource::v1::ResourceClaim::default();
        let resolved = |object: &k8s_openapi::api::resource::v1::ResourceClaim| ResolvedClaim {
            claim: template().claim,
            devices: vec![],
            object: Arc::new(object.clone()),
        };
        assert_eq!(ClaimMeta::of(&resolved(&object)).pod_claim_name, None);
        object.metadata.annotations = Some(BTreeMap::from([(
            POD_CLAIM_NAME_ANNOTATION.to_string(),
            "net".to_string(),
        )]));
        assert_eq!(ClaimMeta::of(&resolved(&object)), template());
    }

    #[test]
    fn updates_replace_the_file_whole_and_count_generations() {
        let node = Node::new();
        let claim = direct();
        node.writer.write_prepared(&claim, &one_device("net")).unwrap();
        let file = node.writer.metadata_file(&claim.claim, "net");
        for expected in [2, 3] {
            assert_eq!(
                node.writer.update_request(&claim.claim, "net", &attached()).unwrap(),
                expected
            );
            let bytes = fs::read(&file).unwrap();
            assert_eq!(first_document(&bytes).unwrap().generation, expected);
            assert!(bytes.ends_with(b"}\n"), "the stream is whole");
            assert_eq!(
                names_in(file.parent().unwrap()),
                ["metadata.json"],
                "no temporary file remains"
            );
        }
        assert_eq!(names_in(&node.cdi()).len(), 1, "no temporary file remains");
        assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o644);
        let spec = node.cdi().join(format!("{DRIVER}_metadata_{UID}_net.json"));
        assert_eq!(fs::metadata(spec).unwrap().permissions().mode() & 0o777, 0o644);
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file_and_the_target_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        // A non-empty directory where the file goes: the rename fails.
        let target = dir.path().join("metadata.json");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("keep"), b"x").unwrap();
        assert!(write_atomically(&target, b"{}").is_err());
        assert_eq!(names_in(dir.path()), ["metadata.json"]);
        assert_eq!(names_in(&target), ["keep"]);
    }

    #[test]
    fn updating_a_request_never_prepared_names_the_claim() {
        let node = Node::new();
        let claim = direct();
        node.writer.write_prepared(&claim, &one_device("net")).unwrap();
        let e = node.writer.update_request(&claim.claim, "other", &[]).unwrap_err();
        assert!(matches!(e, MetadataError::NotPrepared { .. }), "{e}");
        assert!(e.to_string().contains("default/pod-net"), "{e}");

        // A damaged file is reported and left as it is.
        let file = node.writer.metadata_file(&claim.claim, "net");
        fs::write(&file, b"{\"kind\":").unwrap();
        let e = node.writer.update_request(&claim.claim, "net", &[]).unwrap_err();
        assert!(matches!(e, MetadataError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains(&file.display().to_string()), "{e}");
        assert_eq!(fs::read(&file).unwrap(), b"{\"kind\":");
    }

    #[test]
    fn names_that_are_not_one_path_component_are_refused_before_writing() {
        let node = Node::new();
        let mut claim = direct();
        let two = vec![
            RequestDevices {
                request: "net".into(),
                ..RequestDevices::default()
            },
            RequestDevices {
                request: "..".into(),
                ..RequestDevices::default()
            },
        ];
        let e = node.writer.write_prepared(&claim, &two).unwrap_err();
        assert!(matches!(e, MetadataError::InvalidName { what: "request", .. }), "{e}");
        assert!(!node.metadata().exists(), "nothing was written");

        claim.claim.namespace = "../../etc".into();
        let e = node.writer.remove_claim(&claim.claim).unwrap_err();
        assert!(matches!(e, MetadataError::InvalidName { what: "namespace", .. }), "{e}");

        let e = node
            .writer
            .write_prepared(&direct(), &[one_device("net/a"), one_device("net/b")].concat())
            .unwrap_err();
        assert!(matches!(e, MetadataError::DuplicateRequest { .. }), "{e}");
        assert!(!node.metadata().exists(), "nothing was written");
    }

    #[test]
    fn removing_a_claim_removes_its_files_and_only_those() {
        let node = Node::new();
        let claim = direct();
        let two_requests = [one_device("net"), one_device("storage")].concat();
        node.writer.write_prepared(&claim, &two_requests).unwrap();
        let other_claim = template();
        node.writer
            .write_prepared(&other_claim, &one_device("net/fast"))
            .unwrap();
        // Another driver's spec for the same claim, and another spec of ours.
        let foreign = [
            format!("other.example.com_metadata_{UID}_net.json"),
            format!("x{DRIVER}_metadata_{UID}_net.json"),
            format!("{DRIVER}_nri.json"),
            format!("{DRIVER}_metadata_{UID}_net.yaml"),
        ];
        for name in &foreign {
            fs::write(node.cdi().join(name), b"{}").unwrap();
        }
        // A temporary file a crash left.
        let leftover = format!(".{DRIVER}_metadata_{UID}_net.json.1.0.tmp");
        fs::write(node.cdi().join(&leftover), b"{").unwrap();

        node.writer.remove_claim(&claim.claim).unwrap();
        assert!(!node.writer.claim_dir(&claim.claim).exists());
        let mut expected: Vec<String> = foreign.to_vec();
        expected.push(format!("{DRIVER}_metadata_{TEMPLATE_UID}_net.json"));
        expected.sort();
        assert_eq!(names_in(&node.cdi()), expected);
        assert_eq!(node.read(&other_claim.claim, "net"), stream(TEMPLATE_V1BETA1));

        // Again, and with nothing ever written: nothing to remove is not an error.
        node.writer.remove_claim(&claim.claim).unwrap();
        Node::new().writer.remove_claim(&claim.claim).unwrap();
    }

    /// A claim deleted and made again under its name, prepared before the old one's
    /// Unprepare: the old claim's removal takes its own specs and leaves the new one's files.
    #[test]
    fn removing_an_old_claim_leaves_a_newer_claim_of_the_same_name() {
        let node = Node::new();
        let old = direct();
        node.writer.write_prepared(&old, &one_device("net")).unwrap();
        let mut new = direct();
        new.claim.uid = "0b6f3c1e-2d4a-4b5c-8d9e-0f1a2b3c4d5e".into();
        node.writer.write_prepared(&new, &one_device("net")).unwrap();

        node.writer.remove_claim(&old.claim).unwrap();
        assert_eq!(
            names_in(&node.cdi()),
            [format!("{DRIVER}_metadata_{}_net.json", new.claim.uid)]
        );
        assert!(
            node.writer.metadata_file(&new.claim, "net").exists(),
            "the new claim keeps its file"
        );
        node.writer.remove_claim(&new.claim).unwrap();
        assert!(names_in(&node.cdi()).is_empty());
        assert!(!node.writer.claim_dir(&new.claim).exists());
    }

    #[test]
    fn sweep_removes_the_claims_not_kept() {
        let node = Node::new();
        let claims: Vec<ClaimMeta> = ["a", "b", "c"]
            .into_iter()
            .map(|n| ClaimMeta {
                claim: claim_ref("ns", n, &format!("uid-{n}")),
                pod_claim_name: None,
            })
            .collect();
        for claim in &claims {
            node.writer.write_prepared(claim, &one_device("net")).unwrap();
        }
        let foreign = "other.example.com_metadata_uid-a_net.json";
        fs::write(node.cdi().join(foreign), b"{}").unwrap();
        for name in ["c", "b"] {
            fs::write(
                node.cdi()
                    .join(format!(".{DRIVER}_metadata_uid-{name}_net.json.9.9.tmp")),
                b"",
            )
            .unwrap();
        }

        let removed = node.writer.sweep(&[claims[1].claim.clone()]).unwrap();
        let mut expected = vec![
            node.cdi().join(format!(".{DRIVER}_metadata_uid-b_net.json.9.9.tmp")),
            node.cdi().join(format!("{DRIVER}_metadata_uid-a_net.json")),
            node.cdi().join(format!("{DRIVER}_metadata_uid-c_net.json")),
            node.cdi().join(format!(".{DRIVER}_metadata_uid-c_net.json.9.9.tmp")),
            node.metadata().join("ns_a"),
            node.metadata().join("ns_c"),
        ];
        expected.sort();
        assert_eq!(removed, expected);
        assert_eq!(names_in(&node.metadata()), ["ns_b"]);
        assert_eq!(
            names_in(&node.cdi()),
            [format!("{DRIVER}_metadata_uid-b_net.json"), foreign.to_string()]
        );
        assert!(node.writer.sweep(&[claims[1].claim.clone()]).unwrap().is_empty());
        assert!(Node::new().writer.sweep(&[]).unwrap().is_empty(), "no directories yet");
    }

    #[test]
    fn reading_skips_unknown_versions_and_refuses_the_rest() {
        let v1beta1 = r#"{"kind":"DeviceMetadata","apiVersion":"metadata.resource.k8s.io/v1beta1","metadata":{"generation":4},"podClaimName":"p"}"#;
        let newer =
            r#"{"kind":"DeviceMetadata","apiVersion":"metadata.resource.k8s.io/v2","metadata":{"generation":"x"}}"#;
        assert_eq!(
            first_document(format!("{newer}\n{v1beta1}").as_bytes()).unwrap(),
            FirstDocument {
                generation: 4,
                pod_claim_name: Some("p".into()),
                uid: None,
            }
        );
        assert!(first_document(b"").unwrap_err().contains("no documents"));
        assert!(first_document(newer.as_bytes()).unwrap_err().contains("v2"));
        assert!(first_document(b"{\"kind\":\"DeviceMetadata\"}").is_err());
        assert!(first_document(b"[1]").is_err());
        let wrong_kind = v1beta1.replace("\"DeviceMetadata\"", "\"Pod\"");
        assert!(first_document(wrong_kind.as_bytes()).is_err());
        let max = v1beta1.replace("4", &i64::MAX.to_string());
        assert_eq!(first_document(max.as_bytes()).unwrap().generation, i64::MAX);
    }

    proptest! {
        #[test]
        fn reading_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = first_document(&bytes);
        }

        #[test]
        fn reading_json_like_text_never_panics(text in r#"[\[\]{}":, 0-9a-zA-Z./\n-]{0,300}"#) {
            let _ = first_document(text.as_bytes());
        }

        #[test]
        fn a_written_generation_is_read_back_and_any_cut_of_it_is_handled(
            generation in any::<i64>(),
            name in "[a-z0-9-]{1,20}",
            pod_claim_name in proptest::option::of("[a-z0-9-]{0,10}"),
            cut in any::<prop::sample::Index>(),
        ) {
            let claim = claim_ref("ns", &name, "uid");
            let bytes = encode(&node_writer().document(&claim, pod_claim_name.clone(), generation, "net", &attached()));
            prop_assert_eq!(first_document(&bytes).unwrap(), FirstDocument { generation, pod_claim_name, uid: Some("uid".into()) });
            let _ = first_document(&bytes[..cut.index(bytes.len())]);
        }
    }
}

//! The agent's write-ahead journal: a map from keys to JSON values, written before the kernel
//! or the kubelet is told anything.
//!
//! What goes in it is the caller's (the node's claims, the kubelet plugin's prepared claims);
//! this module only writes changes, in order, all of a batch or none.
//!
//! File format, version 3 (`netdra-state`):
//!
//! ```text
//! netdra-journal v3\n
//! <crc32 of the JSON, 8 hex digits> <one record as JSON>\n
//! …
//! ```
//!
//! The first record after the header names the boot it was written in (`{"boot":"<id>"}`);
//! then `{"put":{"key":…,"value":…}}` and `{"delete":{"key":…}}` records, replayed in order.
//!
//! Rules:
//! - A commit appends one line per change with one `write`: concurrent commits (the claims of
//!   a kubelet batch, many pods' hooks at once) are grouped into one write, each caller answered
//!   once the file holds its lines.
//! - What the journal survives is what it is read back after: the agent's crash, `SIGKILL`,
//!   OOM kill or container restart, on the same boot. A written line is in the kernel's page
//!   cache, which outlives the process, so the caller may act as soon as `write` returned. A
//!   reboot (power loss, kernel crash) discards the journal by design: its boot record differs,
//!   and a previous boot's interfaces did not survive either. So the `fdatasync` runs right
//!   after the callers are answered, off their path (on this project's VMs it alone has a p99
//!   of 2.6–12 ms, more than a hook's whole budget above the kernel's moves); it bounds what a
//!   failing disk could lose within the boot. If it fails, the disk may not hold what the page
//!   cache showed: the next commit rewrites the whole file from the replica (see below) and is
//!   refused while that fails. A previous boot's file is recognised by its first record alone
//!   ([`boot_of`]), which a snapshot always flushed: a power loss may have damaged it further on.
//!   Without a boot ID a later start could not tell a reboot, so every commit is then flushed
//!   before it is answered.
//! - The caller's memory changes only after its commit returned `Ok` (copy, commit, swap): a
//!   failed write leaves the file as it was (the torn tail is cut off again) and the caller's
//!   state as it was.
//! - A last line without its newline, or whose checksum fails, is a write the crash interrupted:
//!   its caller never got `Ok`, so nothing acted on it; it is dropped with a warning. Damage
//!   anywhere else, or another version, stops start-up with an error naming the file, which is
//!   left in place: it may be the only record of interfaces sitting in pods.
//! - At start, whenever enough records have piled up, and after a failed flush, the file is
//!   rewritten as a snapshot (temporary file, fsync, rename, fsync of the directory): a boot
//!   record and one `put` per key. The snapshot is flushed before the rename because the rename
//!   replaces the only copy.
//!
//! Hand-written rather than an embedded database (sled, redb): the journal holds a few hundred
//! small entries, needs no queries, and one append per change is the whole cost that the
//! runtime's hook budget can afford; the formats stay readable with `cat`.

use std::{
    collections::BTreeMap,
    fs::File,
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::oneshot;

/// The first line of a journal file.
///
/// Version 3 has the same lines as version 2; its values may hold what version 2's readers
/// would silently drop (a claim's subinterface placement, a record's `subinterface`): an
/// older agent that read them would take a shared NIC's record for a moved interface and
/// "restore" the parent. So an older agent refuses a version 3 file (it stops naming the
/// file), and this one reads version 2 files (they hold nothing of the kind) and writes
/// version 3 from its first snapshot at start.
const HEADER: &str = "netdra-journal v3";
/// The first line of a version 2 journal file, still read.
const HEADER_V2: &str = "netdra-journal v2";

/// Whether `line` (with its newline) is the header of a journal this agent reads.
fn known_header(line: &[u8]) -> bool {
    [HEADER, HEADER_V2]
        .iter()
        .any(|h| line.strip_suffix(b"\n") == Some(h.as_bytes()))
}

/// Records appended since the last snapshot before the next one is written.
const COMPACT_AFTER: usize = 512;

/// One change: a key set to a value (its JSON text), or removed.
pub(crate) type Change = (String, Option<String>);

/// Why the journal could not be read or written. Every variant names the file.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// Reading or writing failed.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error (shared: every caller of a failed group write gets it).
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The file is damaged or of another version.
    #[error(
        "state file {path} cannot be used ({reason}); it was left untouched: it may be the only record of interfaces sitting in pods"
    )]
    Unusable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The write was lost (its thread failed).
    #[error("state file {path}: the journal's write was lost")]
    Lost {
        /// The file.
        path: PathBuf,
    },
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
enum Record {
    Boot(String),
    Put { key: String, value: Value },
    Delete { key: String },
}

/// What a journal file held.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Contents {
    /// The boot the entries were written in (`None` for a new file).
    pub boot_id: Option<String>,
    /// Every key's last value.
    pub entries: BTreeMap<String, Value>,
    /// Whether a torn last write was dropped.
    pub torn_tail: bool,
}

/// One line: the checksum, the record's JSON (as serde writes a [`Record`]), a newline.
fn line_of(json: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("{:08x} ", crc32fast::hash(json)).as_bytes());
    out.extend_from_slice(json);
    out.push(b'\n');
}

fn quoted(key: &str) -> String {
    serde_json::to_string(key).expect("a string always serialises")
}

/// The line of one change; `value` is JSON text, embedded as it is (the replica keeps values
/// as text, not as trees: a hundred claims as `serde_json::Value`s cost megabytes).
fn change_line((key, value): &Change, out: &mut Vec<u8>) {
    let json = match value {
        Some(value) => format!("{{\"put\":{{\"key\":{},\"value\":{value}}}}}", quoted(key)),
        None => format!("{{\"delete\":{{\"key\":{}}}}}", quoted(key)),
    };
    line_of(json.as_bytes(), out);
}

/// The bytes of a snapshot holding `entries` (values as JSON text), written in boot `boot_id`.
pub(crate) fn snapshot(boot_id: &str, entries: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = format!("{HEADER}\n").into_bytes();
    line_of(format!("{{\"boot\":{}}}", quoted(boot_id)).as_bytes(), &mut out);
    for (key, value) in entries {
        change_line(&(key.clone(), Some(value.clone())), &mut out);
    }
    out
}

fn changes_bytes(changes: &[Change]) -> Vec<u8> {
    let mut out = Vec::new();
    for change in changes {
        change_line(change, &mut out);
    }
    out
}

/// Decodes a journal file's bytes; `path` only names the file in errors. Never panics.
pub(crate) fn decode(path: &Path, bytes: &[u8]) -> Result<Contents, JournalError> {
    let unusable = |reason: String| JournalError::Unusable {
        path: path.to_owned(),
        reason,
    };
    let mut lines = bytes.split_inclusive(|&b| b == b'\n');
    let header = lines.next().unwrap_or_default();
    if !known_header(header) {
        let shown = String::from_utf8_lossy(&header[..header.len().min(40)]).into_owned();
        return Err(unusable(format!(
            "its first line {shown:?} is not \"{HEADER}\" (not a journal, or another version)"
        )));
    }
    let lines: Vec<&[u8]> = lines.collect();
    let mut contents = Contents::default();
    for (at, raw) in lines.iter().enumerate() {
        let last = at + 1 == lines.len();
        let number = at + 2;
        let record = match parse_line(raw) {
            Ok(record) => record,
            // The write a crash interrupted: never acknowledged, so nothing acted on it.
            Err(_) if last => {
                contents.torn_tail = true;
                break;
            }
            Err(reason) => return Err(unusable(format!("line {number}: {reason}"))),
        };
        match record {
            Record::Boot(id) if at == 0 => contents.boot_id = Some(id),
            Record::Boot(_) => return Err(unusable(format!("line {number}: a boot record after the first"))),
            _ if at == 0 => return Err(unusable("line 2 is not the boot record".into())),
            Record::Put { key, value } => {
                contents.entries.insert(key, value);
            }
            Record::Delete { key } => {
                contents.entries.remove(&key);
            }
        }
    }
    Ok(contents)
}

fn parse_line(raw: &[u8]) -> Result<Record, String> {
    let Some(body) = raw.strip_suffix(b"\n") else {
        return Err("no newline at its end".into());
    };
    if body.len() < 10 || body[8] != b' ' {
        return Err("no checksum".into());
    }
    let (crc, json) = (&body[..8], &body[9..]);
    let crc = std::str::from_utf8(crc)
        .ok()
        .and_then(|c| u32::from_str_radix(c, 16).ok())
        .ok_or("no checksum")?;
    let actual = crc32fast::hash(json);
    if actual != crc {
        return Err(format!("checksum {crc:08x} but the record has {actual:08x}"));
    }
    serde_json::from_slice(json).map_err(|e| format!("invalid record: {e}"))
}

/// The boot a journal file's bytes were written in: its header and first record only, so a
/// file damaged further on still names its boot. `None` when those are not readable.
pub(crate) fn boot_of(bytes: &[u8]) -> Option<String> {
    let mut lines = bytes.split_inclusive(|&b| b == b'\n');
    if !known_header(lines.next()?) {
        return None;
    }
    match parse_line(lines.next()?) {
        Ok(Record::Boot(id)) => Some(id),
        _ => None,
    }
}

/// The bytes of the journal at `path`; `None` when there is no file.
pub(crate) async fn read(path: &Path) -> Result<Option<Vec<u8>>, JournalError> {
    let task_path = path.to_owned();
    let io = |source: std::io::Error| JournalError::Io {
        path: path.to_owned(),
        source: Arc::new(source),
    };
    match tokio::task::spawn_blocking(move || std::fs::read(task_path)).await {
        Ok(Ok(bytes)) => Ok(Some(bytes)),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Ok(Err(e)) => Err(io(e)),
        Err(e) => Err(io(std::io::Error::other(e))),
    }
}

/// Reads and decodes the journal at `path`; a missing file is an empty journal.
#[cfg(test)]
pub(crate) async fn load(path: &Path) -> Result<Contents, JournalError> {
    match read(path).await? {
        Some(bytes) => decode(path, &bytes),
        None => Ok(Contents::default()),
    }
}

/// Where the journal's bytes go: the file, or in tests a stand-in that fails on demand.
pub(crate) trait Storage: Send + 'static {
    /// Replaces the whole file with `bytes`, flushed to disk before it replaces the old one.
    fn rewrite(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// Appends `bytes` (to the page cache; [`Storage::flusher`] takes them to disk).
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// Cuts the file back to `len` bytes (after a failed append).
    fn truncate(&mut self, len: u64) -> std::io::Result<()>;
    /// What flushes the file's appended bytes to disk, usable without the writer (a flush
    /// must not hold up the next append).
    fn flusher(&self) -> std::io::Result<Box<dyn Flush>>;
}

/// Flushes a journal file's written bytes to disk.
pub(crate) trait Flush: Send + Sync {
    /// `fdatasync`: the file's length changes with each append, so it is covered; not the times.
    fn flush(&self) -> std::io::Result<()>;
}

impl Flush for File {
    fn flush(&self) -> std::io::Result<()> {
        self.sync_data()
    }
}

/// The journal's file on disk.
pub(crate) struct FileStorage {
    path: PathBuf,
    file: Option<File>,
}

impl FileStorage {
    pub(crate) fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            file: None,
        }
    }
}

impl Storage for FileStorage {
    fn rewrite(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = self.path.with_extension("tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &self.path)?;
        File::open(dir)?.sync_all()?;
        self.file = Some(std::fs::OpenOptions::new().append(true).open(&self.path)?);
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("the journal was never written"))?;
        file.write_all(bytes)
    }

    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("the journal was never written"))?;
        file.set_len(len)
    }

    fn flusher(&self) -> std::io::Result<Box<dyn Flush>> {
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| std::io::Error::other("the journal was never written"))?;
        // The same open file (a duplicated descriptor): a snapshot that replaces the file
        // meanwhile was flushed itself, so flushing the old one is harmless.
        Ok(Box::new(file.try_clone()?))
    }
}

struct Request {
    changes: Vec<Change>,
    /// The changes' lines, encoded by the caller (the blocking thread only writes).
    bytes: Vec<u8>,
    done: oneshot::Sender<Result<(), JournalError>>,
}

/// The journal of one agent. A commit queues its changes and hands the write to a blocking
/// thread; whichever thread takes the writer first writes everything queued by then in one
/// append (group commit), answers each caller, then flushes the file to disk unless another
/// thread is flushing already (which then flushes once more). One hop to a blocking thread per
/// commit, no task in between: the hook's write-ahead is on the runtime's clock.
pub(crate) struct Journal {
    path: PathBuf,
    shared: Arc<Shared>,
}

struct Shared {
    queue: parking_lot::Mutex<Vec<Request>>,
    writer: parking_lot::Mutex<Writer>,
    flush: parking_lot::Mutex<FlushState>,
    /// Flush before answering: the boot is unknown, so the journal may be read back after a
    /// reboot, when only what reached the disk is there.
    flush_before_answer: bool,
}

/// The flush behind the writes.
#[derive(Default)]
struct FlushState {
    /// A thread is flushing; a writer that finds this only marks `pending`.
    running: bool,
    /// Appends were made since the running flush started.
    pending: bool,
    /// The file appends go to now; set by the writer, under its lock, so it is never older
    /// than the last append.
    target: Option<Arc<dyn Flush>>,
    /// A flush failed: the disk may lack lines the page cache showed; the next write is a
    /// snapshot.
    failed: bool,
}

/// What the writer keeps: the file's state and a replica of its entries, for snapshots.
struct Writer {
    path: PathBuf,
    storage: Box<dyn Storage>,
    boot_id: String,
    entries: BTreeMap<String, String>,
    /// The file's length after its last good write.
    len: u64,
    /// Records since the last snapshot.
    appended: usize,
    /// A failed append could not be cut back, or a flush failed: the next write must be a
    /// snapshot.
    dirty: bool,
    /// What flushes the current file.
    flusher: Option<Arc<dyn Flush>>,
}

impl Writer {
    fn io(&self, source: std::io::Error) -> JournalError {
        JournalError::Io {
            path: self.path.clone(),
            source: Arc::new(source),
        }
    }

    fn write_snapshot(&mut self) -> Result<(), JournalError> {
        let bytes = snapshot(&self.boot_id, &self.entries);
        self.storage.rewrite(&bytes).map_err(|e| self.io(e))?;
        self.len = bytes.len() as u64;
        self.appended = 0;
        // A new file, on disk whole: appends go there now. Without a way to flush it (no
        // descriptor left), appending would go unflushed: the next write is a snapshot again.
        match self.storage.flusher() {
            Ok(flusher) => {
                self.flusher = Some(Arc::from(flusher));
                self.dirty = false;
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "the journal's new file cannot be flushed later; the next write rewrites it again");
                self.flusher = None;
                self.dirty = true;
            }
        }
        Ok(())
    }

    /// Writes one group of changes (`bytes` are their lines): all in the file, or none and the
    /// replica unchanged. `Ok(true)` when the write was a snapshot, already on disk.
    fn write(&mut self, changes: Vec<Change>, bytes: &[u8]) -> Result<bool, JournalError> {
        if self.dirty {
            // The file may end in a torn line, or the disk may lack what was appended: rewrite
            // it whole, with these changes.
            let before = self.entries.clone();
            apply(&mut self.entries, changes);
            return self
                .write_snapshot()
                .map(|()| true)
                .inspect_err(|_| self.entries = before);
        }
        let appended = changes.len();
        if let Err(e) = self.storage.append(bytes) {
            if self.storage.truncate(self.len).is_err() {
                self.dirty = true;
            }
            return Err(self.io(e));
        }
        self.len += bytes.len() as u64;
        self.appended += appended;
        apply(&mut self.entries, changes);
        if self.appended >= COMPACT_AFTER {
            match self.write_snapshot() {
                Ok(()) => return Ok(true),
                Err(e) => {
                    // The appended lines are in the file; the snapshot is only tidiness.
                    tracing::warn!(error = %e, "journal snapshot failed; appending goes on");
                    self.dirty = true;
                }
            }
        }
        Ok(false)
    }
}

fn apply(entries: &mut BTreeMap<String, String>, changes: Vec<Change>) {
    for (key, value) in changes {
        match value {
            Some(value) => entries.insert(key, value),
            None => entries.remove(&key),
        };
    }
}

impl Shared {
    /// Writes everything queued, answers each caller, then flushes (on the calling blocking
    /// thread, after the answers; before them while the boot is unknown).
    fn write_queued(&self) {
        let mut writer = self.writer.lock();
        let group = std::mem::take(&mut *self.queue.lock());
        if group.is_empty() {
            // An earlier thread wrote these changes with its own.
            return;
        }
        let mut changes = Vec::new();
        let mut bytes = Vec::new();
        let mut answers = Vec::with_capacity(group.len());
        for request in group {
            changes.extend(request.changes);
            bytes.extend_from_slice(&request.bytes);
            answers.push(request.done);
        }
        if std::mem::take(&mut self.flush.lock().failed) {
            writer.dirty = true;
        }
        let before = self.flush_before_answer.then(|| writer.entries.clone());
        let mut result = writer.write(changes, &bytes);
        // A snapshot is on disk already; a failed write left nothing new to flush (and, if it
        // was a snapshot, the writer stays dirty).
        let appended = matches!(result, Ok(false));
        if appended
            && self.flush_before_answer
            && let Some(Err(e)) = writer.flusher.as_ref().map(|f| f.flush())
        {
            // The lines are in the file but not known to be on disk: refused, so the replica
            // forgets them too, and the next write rewrites the file whole from it.
            if let Some(before) = before {
                writer.entries = before;
            }
            writer.dirty = true;
            result = Err(writer.io(e));
        }
        let flush_behind = appended && !self.flush_before_answer;
        if flush_behind {
            let mut state = self.flush.lock();
            state.target = writer.flusher.clone();
            state.pending = true;
        }
        drop(writer);
        for done in answers {
            let _ = done.send(result.clone().map(|_| ()));
        }
        if flush_behind {
            self.run_flushes();
        }
    }

    /// Flushes the current file until no append is pending, unless another thread is doing so
    /// (it then sees the pending append: both look under the same lock).
    fn run_flushes(&self) {
        let mut state = self.flush.lock();
        if state.running {
            return;
        }
        state.running = true;
        while std::mem::take(&mut state.pending) {
            let Some(target) = state.target.clone() else { break };
            drop(state);
            let result = target.flush();
            state = self.flush.lock();
            if let Err(e) = result {
                tracing::error!(error = %e, "the journal could not be flushed to disk; the next commit rewrites it whole");
                state.failed = true;
            }
        }
        state.running = false;
    }
}

impl Journal {
    /// Starts the journal at `path` for boot `boot_id`, holding `entries`: writes them as a
    /// fresh snapshot first (which also drops a torn tail and records this boot). With no boot
    /// ID (the kernel did not give one), a later start cannot tell a reboot happened, so every
    /// commit is flushed before it is answered.
    pub(crate) async fn start(
        path: PathBuf,
        storage: impl Storage,
        boot_id: Option<String>,
        entries: BTreeMap<String, Value>,
    ) -> Result<Self, JournalError> {
        let flush_before_answer = boot_id.is_none();
        let mut writer = Writer {
            path: path.clone(),
            storage: Box::new(storage),
            boot_id: boot_id.unwrap_or_else(|| "unknown".into()),
            entries: entries.into_iter().map(|(k, v)| (k, v.to_string())).collect(),
            len: 0,
            appended: 0,
            dirty: false,
            flusher: None,
        };
        let writer = tokio::task::spawn_blocking(move || writer.write_snapshot().map(|()| writer))
            .await
            .map_err(|e| JournalError::Io {
                path: path.clone(),
                source: Arc::new(std::io::Error::other(e)),
            })??;
        Ok(Self {
            path,
            shared: Arc::new(Shared {
                queue: parking_lot::Mutex::default(),
                writer: parking_lot::Mutex::new(writer),
                flush: parking_lot::Mutex::default(),
                flush_before_answer,
            }),
        })
    }

    /// Writes `changes`, together with whatever else is being committed at the moment; `Ok`
    /// once the file holds them (see the module's rules for when they reach the disk).
    pub(crate) async fn commit(&self, changes: Vec<Change>) -> Result<(), JournalError> {
        if changes.is_empty() {
            return Ok(());
        }
        let (done, answer) = oneshot::channel();
        let bytes = changes_bytes(&changes);
        self.shared.queue.lock().push(Request { changes, bytes, done });
        let shared = self.shared.clone();
        // Not awaited: a caller that goes away does not stop a write others wait for.
        drop(tokio::task::spawn_blocking(move || shared.write_queued()));
        answer.await.unwrap_or_else(|_| {
            Err(JournalError::Lost {
                path: self.path.clone(),
            })
        })
    }

    /// Flushes what was written to disk now (at shutdown), waiting for it; after a failed flush
    /// (whose error the kernel reports only once), rewrites the file whole instead.
    pub(crate) async fn flush(&self) -> Result<(), JournalError> {
        let shared = self.shared.clone();
        let result = tokio::task::spawn_blocking(move || {
            // No write while it runs: it covers everything written so far.
            let mut writer = shared.writer.lock();
            if std::mem::take(&mut shared.flush.lock().failed) || writer.dirty {
                return writer.write_snapshot();
            }
            match writer.flusher.clone() {
                Some(target) => target.flush().map_err(|e| writer.io(e)),
                None => Ok(()),
            }
        })
        .await;
        result.unwrap_or_else(|_| {
            Err(JournalError::Lost {
                path: self.path.clone(),
            })
        })
    }

    /// Whether a flush failed and the next write is to rewrite the file (tests).
    #[cfg(test)]
    pub(crate) fn flush_failed(&self) -> bool {
        self.shared.flush.lock().failed
    }

    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// A [`Storage`] for tests: the real file, with failures on demand.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::{FileStorage, Flush, Storage};

    /// Fails the next `n` appends (and snapshot rewrites) after [`Faults::fail_next`], the
    /// next `n` flushes after [`Faults::fail_next_flush`].
    #[derive(Clone, Default)]
    pub(crate) struct Faults {
        writes: Arc<AtomicUsize>,
        flushes: Arc<AtomicUsize>,
    }

    fn take(n: &AtomicUsize) -> bool {
        n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    impl Faults {
        pub(crate) fn fail_next(&self, n: usize) {
            self.writes.store(n, Ordering::SeqCst);
        }

        pub(crate) fn fail_next_flush(&self, n: usize) {
            self.flushes.store(n, Ordering::SeqCst);
        }

        /// Flush failures asked for and not yet made.
        pub(crate) fn flushes_pending(&self) -> usize {
            self.flushes.load(Ordering::SeqCst)
        }
    }

    pub(crate) struct FaultyStorage {
        pub(crate) inner: FileStorage,
        pub(crate) faults: Faults,
    }

    struct FaultyFlush {
        inner: Box<dyn Flush>,
        faults: Faults,
    }

    impl Flush for FaultyFlush {
        fn flush(&self) -> std::io::Result<()> {
            if take(&self.faults.flushes) {
                return Err(std::io::Error::other("injected: fdatasync failed"));
            }
            self.inner.flush()
        }
    }

    impl Storage for FaultyStorage {
        fn rewrite(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            if take(&self.faults.writes) {
                return Err(std::io::Error::other("injected: write failed"));
            }
            self.inner.rewrite(bytes)
        }
        fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            if take(&self.faults.writes) {
                // Half of the bytes reach the file, as a failing disk would leave them.
                let _ = self.inner.append(&bytes[..bytes.len() / 2]);
                return Err(std::io::Error::other("injected: write failed"));
            }
            self.inner.append(bytes)
        }
        fn truncate(&mut self, len: u64) -> std::io::Result<()> {
            self.inner.truncate(len)
        }
        fn flusher(&self) -> std::io::Result<Box<dyn Flush>> {
            Ok(Box::new(FaultyFlush {
                inner: self.inner.flusher()?,
                faults: self.faults.clone(),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// A journal on a real file whose writes and flushes fail on demand, started in `boot`.
    async fn faulty_journal(boot: Option<&str>) -> (tempfile::TempDir, Faults, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("netdra-state");
        let faults = Faults::default();
        let storage = FaultyStorage {
            inner: FileStorage::new(&path),
            faults: faults.clone(),
        };
        let journal = Journal::start(path, storage, boot.map(str::to_owned), BTreeMap::new())
            .await
            .unwrap();
        (dir, faults, journal)
    }

    #[test]
    fn a_snapshot_has_golden_bytes_and_decodes_to_its_entries() {
        let entries = BTreeMap::from([("claim/u1".to_owned(), json!({"a": 1}))]);
        let text: BTreeMap<String, String> = entries.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
        let bytes = snapshot("boot-1", &text);
        let boot = br#"{"boot":"boot-1"}"#;
        let put = br#"{"put":{"key":"claim/u1","value":{"a":1}}}"#;
        let expected = format!(
            "netdra-journal v3\n{:08x} {}\n{:08x} {}\n",
            crc32fast::hash(boot),
            String::from_utf8_lossy(boot),
            crc32fast::hash(put),
            String::from_utf8_lossy(put)
        );
        assert_eq!(String::from_utf8(bytes.clone()).unwrap(), expected);
        let contents = decode(Path::new("j"), &bytes).unwrap();
        assert_eq!(contents.boot_id.as_deref(), Some("boot-1"));
        assert_eq!(contents.entries, entries);
        assert!(!contents.torn_tail);
    }

    #[test]
    fn puts_and_deletes_replay_in_order_and_a_torn_tail_is_dropped() {
        let mut bytes = snapshot("b", &BTreeMap::new());
        bytes.extend(changes_bytes(&[
            ("k1".into(), Some("1".into())),
            ("k2".into(), Some("2".into())),
            ("k1".into(), None),
        ]));
        let whole = decode(Path::new("j"), &bytes).unwrap();
        assert_eq!(whole.entries, BTreeMap::from([("k2".to_owned(), json!(2))]));
        // A crash in the middle of the next append.
        let next = changes_bytes(&[("k3".into(), Some("3".into()))]);
        bytes.extend_from_slice(&next[..next.len() - 5]);
        let torn = decode(Path::new("j"), &bytes).unwrap();
        assert!(torn.torn_tail);
        assert_eq!(torn.entries, whole.entries, "the torn write is not applied");
    }

    #[test]
    fn damage_before_the_last_line_and_other_versions_are_refused_with_the_path() {
        let mut bytes = snapshot("b", &BTreeMap::from([("k".to_owned(), "\"v\"".to_owned())]));
        bytes.extend(changes_bytes(&[("k2".into(), Some("2".into()))]));
        let mut flipped = bytes.clone();
        let second_line = flipped.iter().position(|&b| b == b'\n').unwrap() + 12;
        flipped[second_line] ^= 1;
        let v1 = b"netdra-state v1 crc32=00000000\n{}".to_vec();
        let v4 = b"netdra-journal v4\n".to_vec();
        for (bytes, why) in [(&flipped, "line 2"), (&v1, "another version"), (&v4, "another version")] {
            let e = decode(Path::new("/x/netdra-state"), bytes).unwrap_err().to_string();
            assert!(e.contains("/x/netdra-state") && e.contains(why), "{e}");
        }
    }

    #[test]
    fn a_version_2_file_is_read_and_snapshots_are_version_3() {
        let records = BTreeMap::from([("k".to_owned(), "\"v\"".to_owned())]);
        let v3 = snapshot("b", &records);
        assert!(v3.starts_with(b"netdra-journal v3\n"), "written as version 3");
        let mut v2 = b"netdra-journal v2\n".to_vec();
        v2.extend_from_slice(&v3[v3.iter().position(|&b| b == b'\n').unwrap() + 1..]);
        let read = decode(Path::new("/x/netdra-state"), &v2).unwrap();
        assert_eq!(read, decode(Path::new("/x/netdra-state"), &v3).unwrap());
        assert_eq!(boot_of(&v2).as_deref(), Some("b"));
    }

    #[tokio::test]
    async fn commits_are_durable_grouped_and_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("netdra-state");
        let journal = Journal::start(path.clone(), FileStorage::new(&path), Some("b".into()), BTreeMap::new())
            .await
            .unwrap();
        let commits = (0..20).map(|i| journal.commit(vec![(format!("k{i}"), Some(i.to_string()))]));
        for result in futures::future::join_all(commits).await {
            result.unwrap();
        }
        journal.commit(vec![("k3".into(), None)]).await.unwrap();
        let contents = load(&path).await.unwrap();
        assert_eq!(contents.entries.len(), 19);
        assert_eq!(contents.entries["k7"], json!(7));
        assert!(!contents.entries.contains_key("k3"));
    }

    #[tokio::test]
    async fn a_failed_append_changes_nothing_and_the_next_commit_works() {
        let (dir, faults, journal) = faulty_journal(Some("b")).await;
        let path = dir.path().join("netdra-state");
        journal.commit(vec![("a".into(), Some("1".into()))]).await.unwrap();
        faults.fail_next(1);
        let e = journal.commit(vec![("b".into(), Some("2".into()))]).await.unwrap_err();
        assert!(e.to_string().contains("injected"), "{e}");
        let after_failure = load(&path).await.unwrap();
        assert_eq!(after_failure.entries, BTreeMap::from([("a".to_owned(), json!(1))]));
        assert!(!after_failure.torn_tail, "the torn bytes were cut off");
        journal.commit(vec![("c".into(), Some("3".into()))]).await.unwrap();
        assert_eq!(load(&path).await.unwrap().entries.len(), 2);
    }

    #[tokio::test]
    async fn a_failed_flush_makes_the_next_commit_a_whole_snapshot() {
        let (dir, faults, journal) = faulty_journal(Some("b")).await;
        let path = dir.path().join("netdra-state");
        let flushed = || async {
            while journal.shared.flush.lock().running || faults.flushes_pending() > 0 {
                tokio::task::yield_now().await;
            }
        };
        faults.fail_next_flush(1);
        // Answered once written: the failed flush behind it is not this caller's.
        journal.commit(vec![("z".into(), Some("1".into()))]).await.unwrap();
        flushed().await;
        assert!(journal.shared.flush.lock().failed, "the failure is remembered");
        journal.commit(vec![("a".into(), Some("2".into()))]).await.unwrap();
        assert!(!journal.shared.flush.lock().failed);
        let text = std::fs::read_to_string(&path).unwrap();
        // A snapshot lists its keys in order; appending would have put `z` first.
        let keys: Vec<&str> = text.lines().skip(2).map(|l| &l[24..25]).collect();
        assert_eq!(keys, ["a", "z"], "rewritten whole\n{text}");
        // While the rewrite fails, commits are refused and change nothing; the next one that
        // succeeds is the rewrite (appending would have left `c` and `e` after `z`).
        faults.fail_next_flush(1);
        journal.commit(vec![("c".into(), Some("3".into()))]).await.unwrap();
        flushed().await;
        faults.fail_next(1);
        let e = journal.commit(vec![("d".into(), Some("4".into()))]).await.unwrap_err();
        assert!(e.to_string().contains("injected: write failed"), "{e}");
        journal.commit(vec![("e".into(), Some("5".into()))]).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let keys: Vec<&str> = text.lines().skip(2).map(|l| &l[24..25]).collect();
        assert_eq!(keys, ["a", "c", "e", "z"], "rewritten whole\n{text}");
        journal.flush().await.unwrap();
    }

    #[test]
    fn a_damaged_journal_still_names_its_boot() {
        let mut bytes = snapshot("boot-0", &BTreeMap::new());
        bytes.extend(changes_bytes(&[("k".into(), Some("1".into()))]));
        bytes.extend(b"\0\0\0\0 zeros a power loss left\n");
        bytes.extend(changes_bytes(&[("k".into(), Some("2".into()))]));
        assert!(decode(Path::new("j"), &bytes).is_err());
        assert_eq!(boot_of(&bytes).as_deref(), Some("boot-0"));
        assert_eq!(boot_of(b"netdra-journal v2\n"), None);
        assert_eq!(boot_of(b"something else\n"), None);
    }

    /// Without a boot ID, a commit is on disk before it is answered: a failed flush refuses
    /// it, and the next commit rewrites the file whole.
    #[tokio::test]
    async fn with_no_boot_id_a_commit_is_flushed_before_its_answer() {
        let (dir, faults, journal) = faulty_journal(None).await;
        let path = dir.path().join("netdra-state");
        faults.fail_next_flush(1);
        let e = journal.commit(vec![("z".into(), Some("1".into()))]).await.unwrap_err();
        assert!(e.to_string().contains("injected: fdatasync failed"), "{e}");
        assert_eq!(faults.flushes_pending(), 0, "flushed before the answer");
        journal.commit(vec![("a".into(), Some("2".into()))]).await.unwrap();
        let contents = load(&path).await.unwrap();
        assert_eq!(contents.boot_id.as_deref(), Some("unknown"));
        let text = std::fs::read_to_string(&path).unwrap();
        let keys: Vec<&str> = text.lines().skip(2).map(|l| &l[24..25]).collect();
        assert_eq!(keys, ["a"], "rewritten whole, without the refused `z`\n{text}");
    }

    #[tokio::test]
    async fn many_records_are_compacted_into_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("netdra-state");
        let journal = Journal::start(path.clone(), FileStorage::new(&path), Some("b".into()), BTreeMap::new())
            .await
            .unwrap();
        for i in 0..COMPACT_AFTER + 3 {
            journal
                .commit(vec![("same".into(), Some(i.to_string()))])
                .await
                .unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.lines().count() < 10, "compacted: {} lines", text.lines().count());
        assert_eq!(load(&path).await.unwrap().entries["same"], json!(COMPACT_AFTER + 2));
    }

    proptest! {
        /// Any bytes give contents or an error, never a panic; and a boot or none.
        #[test]
        fn decoding_outside_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(Path::new("j"), &bytes);
            let _ = boot_of(&bytes);
        }

        /// Any line after a valid header and boot record gives contents or an error.
        #[test]
        fn decoding_any_record_line_never_panics(crc in "[0-9a-f ]{0,10}", json in ".{0,64}", newline in any::<bool>()) {
            let mut bytes = snapshot("b", &BTreeMap::new());
            bytes.extend(crc.as_bytes());
            bytes.extend(json.as_bytes());
            if newline { bytes.push(b'\n'); }
            let _ = decode(Path::new("j"), &bytes);
        }

        /// A journal cut at any byte decodes to a prefix of its changes (a torn tail at most).
        #[test]
        fn a_journal_cut_anywhere_decodes_to_a_prefix(values in proptest::collection::vec(0u32..5, 1..12), cut in any::<proptest::sample::Index>()) {
            let mut bytes = snapshot("b", &BTreeMap::new());
            let header_len = bytes.len();
            let changes: Vec<Change> = values.iter().enumerate().map(|(i, v)| (format!("k{v}"), (i % 3 != 2).then(|| i.to_string()))).collect();
            bytes.extend(changes_bytes(&changes));
            let at = header_len + cut.index(bytes.len() - header_len + 1);
            let contents = decode(Path::new("j"), &bytes[..at]).unwrap();
            let whole_lines = bytes[header_len..at].iter().filter(|&&b| b == b'\n').count();
            let mut expected = BTreeMap::new();
            apply(&mut expected, changes[..whole_lines].to_vec());
            let decoded: BTreeMap<String, String> = contents.entries.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
            prop_assert_eq!(decoded, expected);
        }
    }
}

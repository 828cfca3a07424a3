//! Helpers shared by the integration tests and benchmarks of every crate: finding an example
//! binary, skipping (or, in CI, failing) when the machine lacks something, and percentiles.

use std::{path::PathBuf, time::Duration};

/// The example binary `name`, which `cargo test` builds next to the running test binary.
///
/// # Panics
/// When it is not there (the test was built alone, without its package's examples).
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in <profile>/deps");
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: run the whole test suite (cargo test builds examples)",
        path.display()
    );
    path
}

/// Whether what a test needs is `available`. When it is not, the test must not pass silently:
/// under `CI=true` this panics with `reason`; elsewhere it prints `SKIPPED: reason` and the
/// caller returns early.
pub fn available_or_skip(available: bool, reason: &str) -> bool {
    if available {
        return true;
    }
    assert!(std::env::var("CI").map_or(true, |v| v != "true"), "{reason}");
    eprintln!("SKIPPED: {reason}");
    false
}

/// Runs `command` to its end; its standard output.
///
/// # Panics
/// When it cannot start or exits unsuccessfully: the message names the command and carries
/// what it printed on standard error.
pub fn command_output(command: &mut std::process::Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?} did not start: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether this process runs as root (its effective user ID is 0), as the privileged tests need.
///
/// # Panics
/// When `/proc/self/status` cannot be read (not Linux).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

/// The containerd 2.x flavors (`tests/e2e/containerd.sh`) the end-to-end tests written for
/// containerd 2 run on: the Debian-packaged 2.1 (`2`) and 2.4, built from its Go module.
/// `NETDRA_E2E_FLAVORS` (space-separated) replaces the list, as `scripts/matrix.sh` does for 2.2
/// and 2.3.
///
/// # Panics
/// When the variable names a flavor the script does not know.
pub fn newer_containerd_flavors() -> Vec<&'static str> {
    const KNOWN: [&str; 4] = ["2", "2.2", "2.3", "2.4"];
    let Ok(list) = std::env::var("NETDRA_E2E_FLAVORS") else {
        return vec!["2", "2.4"];
    };
    list.split_whitespace()
        .map(|f| {
            *KNOWN
                .iter()
                .find(|k| **k == f)
                .unwrap_or_else(|| panic!("NETDRA_E2E_FLAVORS: unknown containerd flavor {f:?} (known: {KNOWN:?})"))
        })
        .collect()
}

/// `tag` made unique per containerd `flavor` (`l` on 2.4 is `l24`), for names a test derives
/// from it (veths, pods).
pub fn flavor_tag(tag: &str, flavor: &str) -> String {
    format!("{tag}{}", flavor.replace('.', ""))
}

/// The `p` quantile (0.0–1.0, nearest rank) of `sorted`, which is sorted ascending.
///
/// # Panics
/// When `sorted` is empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let ms: Vec<Duration> = (1..=101).map(Duration::from_millis).collect();
        assert_eq!(percentile(&ms, 0.5), Duration::from_millis(51));
        assert_eq!(percentile(&ms, 0.99), Duration::from_millis(100));
        assert_eq!(percentile(&ms, 1.0), Duration::from_millis(101));
        assert_eq!(percentile(&ms[..1], 0.99), Duration::from_millis(1));
    }

    #[test]
    fn what_is_there_is_never_skipped() {
        assert!(available_or_skip(true, "unused"));
    }
}

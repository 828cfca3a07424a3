//! The `ip` command (iproute2), as the tests and the demo set up and inspect links and
//! namespaces: what they run is what a reader can run by hand.

use std::process::{Command, ExitStatus};

/// `ip` could not run or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IpError {
    /// The command did not start.
    #[error("running `ip {args}` (install iproute2)")]
    Start {
        /// The arguments, space-separated.
        args: String,
        /// Why it did not start.
        #[source]
        source: std::io::Error,
    },
    /// The command exited unsuccessfully.
    #[error("`ip {args}` failed ({status}): {stderr}")]
    Failed {
        /// The arguments, space-separated.
        args: String,
        /// How it exited.
        status: ExitStatus,
        /// What it printed on standard error, trimmed.
        stderr: String,
    },
}

/// Runs `ip ARGS` (in a named namespace with `-n NS` among them); its standard output.
pub fn try_ip(args: &[&str]) -> Result<String, IpError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| IpError::Start {
            args: args.join(" "),
            source,
        })?;
    if !out.status.success() {
        return Err(IpError::Failed {
            args: args.join(" "),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// [`try_ip`] for tests: its standard output.
///
/// # Panics
/// When `ip` cannot run or fails: the message names the command and carries its stderr.
pub fn ip(args: &[&str]) -> String {
    try_ip(args).unwrap_or_else(|e| match std::error::Error::source(&e) {
        Some(cause) => panic!("{e}: {cause}"),
        None => panic!("{e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_names_the_command_and_its_stderr() {
        match try_ip(&["no-such-object"]) {
            Err(e @ IpError::Failed { .. }) => {
                let text = e.to_string();
                assert!(text.starts_with("`ip no-such-object` failed ("), "{text}");
                assert!(text.contains("no-such-object"), "{text}");
            }
            // Without iproute2 the start fails, named the same way.
            Err(e @ IpError::Start { .. }) => {
                assert_eq!(e.to_string(), "running `ip no-such-object` (install iproute2)")
            }
            Ok(out) => panic!("ip accepted a bogus object: {out}"),
        }
    }
}

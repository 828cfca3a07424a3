//! The Kubernetes API client a driver binary builds at start-up, from the same sources in the
//! same order for every program: a `--kubeconfig` file, else `KUBECONFIG`, else in-cluster.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
};

use kube::config::{InClusterError, KubeConfigOptions, Kubeconfig, KubeconfigError};

/// No API client could be built; the message names the source that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The kubeconfig file given by `--kubeconfig` could not be read or used.
    #[error("--kubeconfig {}", path.display())]
    Flag {
        /// The file.
        path: PathBuf,
        /// Why it could not be used.
        #[source]
        source: KubeconfigError,
    },
    /// The kubeconfig files `KUBECONFIG` lists could not be read, merged or used.
    #[error("KUBECONFIG={}", value.display())]
    Env {
        /// The variable's value (files separated as in `PATH`).
        value: PathBuf,
        /// Why they could not be used.
        #[source]
        source: KubeconfigError,
    },
    /// Neither a file nor `KUBECONFIG` was given, and this is not a pod with a service account.
    #[error("no --kubeconfig, no KUBECONFIG and no in-cluster configuration")]
    InCluster(#[source] InClusterError),
    /// The configuration was read but no client could be made of it.
    #[error("cannot build the API client")]
    Build(#[source] kube::Error),
}

/// The API client of a driver binary, from the first source that is given:
///
/// 1. `kubeconfig`, the file a `--kubeconfig` flag names;
/// 2. the `KUBECONFIG` environment variable (several files are merged in order, as kubectl
///    does, except that a missing file is an error here rather than skipped);
/// 3. the in-cluster configuration (the pod's service account).
///
/// A source that is given but fails is an error: the next one is not tried. A program whose
/// flag falls back to `KUBECONFIG` itself (clap's `env`) passes the variable's value as
/// `kubeconfig`: a value equal to the variable's is read as the variable (a list of files,
/// named `KUBECONFIG` in errors). Needs a Tokio runtime.
pub async fn api_client(kubeconfig: Option<&Path>) -> Result<kube::Client, ClientError> {
    let env = std::env::var_os("KUBECONFIG");
    let config = config_from(kubeconfig, env.as_deref(), kube::Config::incluster).await?;
    kube::Client::try_from(config).map_err(ClientError::Build)
}

/// [`api_client`]'s choice of configuration, with the variable and the in-cluster loader
/// passed in so tests need not touch the process's environment.
async fn config_from(
    flag: Option<&Path>,
    env: Option<&OsStr>,
    in_cluster: impl FnOnce() -> Result<kube::Config, InClusterError>,
) -> Result<kube::Config, ClientError> {
    // A flag that only repeats the variable (clap's `env` fallback) is the variable.
    let flag = flag.filter(|path| env != Some(path.as_os_str()));
    if let Some(path) = flag {
        let from_file = async {
            let kubeconfig = Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await
        };
        return from_file.await.map_err(|source| ClientError::Flag {
            path: path.to_owned(),
            source,
        });
    }
    // Empty entries are skipped, and an empty or all-empty value is no value, as for kubectl.
    let files: Vec<PathBuf> = env
        .map(|value| {
            std::env::split_paths(value)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    if let Some(value) = env
        && !files.is_empty()
    {
        let from_env = async {
            let merged = files.iter().try_fold(Kubeconfig::default(), |merged, file| {
                merged.merge(Kubeconfig::read_from(file)?)
            })?;
            kube::Config::from_custom_kubeconfig(merged, &KubeConfigOptions::default()).await
        };
        return from_env.await.map_err(|source| ClientError::Env {
            value: value.into(),
            source,
        });
    }
    in_cluster().map_err(ClientError::InCluster)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kubeconfig whose one cluster is at `server`.
    fn kubeconfig(dir: &Path, name: &str, server: &str) -> PathBuf {
        let path = dir.join(name);
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
             clusters:\n- name: test\n  cluster:\n    server: {server}\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n\
             users:\n- name: test\n  user: {{}}\n"
        );
        std::fs::write(&path, text).expect("write the kubeconfig");
        path
    }

    fn no_cluster() -> Result<kube::Config, InClusterError> {
        Err(InClusterError::ReadEnvironmentVariable(std::env::VarError::NotPresent))
    }

    fn in_cluster() -> Result<kube::Config, InClusterError> {
        Ok(kube::Config::new("https://10.0.0.1:6443".parse().expect("a URI")))
    }

    fn server(config: &kube::Config) -> String {
        config.cluster_url.to_string()
    }

    #[tokio::test]
    async fn the_flag_comes_first_then_kubeconfig_then_the_cluster() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let flag = kubeconfig(dir.path(), "flag", "https://127.0.0.1:1");
        let env = kubeconfig(dir.path(), "env", "https://127.0.0.1:2");
        let of = |flag, env| async move { server(&config_from(flag, env, in_cluster).await.expect("a config")) };

        assert_eq!(of(Some(&flag), Some(env.as_os_str())).await, "https://127.0.0.1:1/");
        assert_eq!(of(None, Some(env.as_os_str())).await, "https://127.0.0.1:2/");
        assert_eq!(of(None, None).await, "https://10.0.0.1:6443/");
        // An empty variable is no variable.
        assert_eq!(of(None, Some(OsStr::new(""))).await, "https://10.0.0.1:6443/");
        // Several files merge: the first to name the current context wins.
        let list = std::env::join_paths([&env, &flag]).expect("joinable paths");
        assert_eq!(of(None, Some(list.as_os_str())).await, "https://127.0.0.1:2/");
        // A flag filled from the variable by clap is the variable: its list is merged.
        let from_env = PathBuf::from(&list);
        assert_eq!(
            of(Some(&from_env), Some(list.as_os_str())).await,
            "https://127.0.0.1:2/"
        );
    }

    #[tokio::test]
    async fn a_given_source_that_fails_is_the_error() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let good = kubeconfig(dir.path(), "good", "https://127.0.0.1:1");
        let missing = dir.path().join("missing");

        let err = config_from(Some(&missing), Some(good.as_os_str()), in_cluster)
            .await
            .expect_err("a missing --kubeconfig file");
        assert_eq!(err.to_string(), format!("--kubeconfig {}", missing.display()));

        let err = config_from(None, Some(missing.as_os_str()), in_cluster)
            .await
            .expect_err("a missing KUBECONFIG file");
        assert_eq!(err.to_string(), format!("KUBECONFIG={}", missing.display()));

        // The same through a flag clap filled from the variable: named as the variable.
        let err = config_from(Some(&missing), Some(missing.as_os_str()), in_cluster)
            .await
            .expect_err("a missing KUBECONFIG file given as the flag's value");
        assert_eq!(err.to_string(), format!("KUBECONFIG={}", missing.display()));
    }

    #[tokio::test]
    async fn nothing_configured_says_so() {
        let err = config_from(None, None, no_cluster).await.expect_err("no source");
        assert_eq!(
            err.to_string(),
            "no --kubeconfig, no KUBECONFIG and no in-cluster configuration"
        );
        assert!(matches!(err, ClientError::InCluster(_)));
    }

    #[tokio::test]
    async fn a_kubeconfig_file_makes_a_client() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let flag = kubeconfig(dir.path(), "flag", "https://127.0.0.1:1");
        // The flag is read before the process's KUBECONFIG, so whatever that holds is not read.
        let client = api_client(Some(&flag)).await.expect("a client");
        assert_eq!(client.default_namespace(), "default");
    }
}

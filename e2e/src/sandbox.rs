//! The pod sandbox: its network namespace, and one mount+UTS namespace held open by a
//! pause process in which volumes, `/etc/hosts` and `/etc/hostname` sit at their real paths.
//! Containers and exec probes enter the pause process's namespaces.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use k8s_openapi::api::core::v1::Pod;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::error::Error;
use crate::host;
use crate::network::PodNetwork;

/// Runs inside the new namespaces: sets the hostname, makes the bind mounts (read-only where
/// asked), says `ready`, then holds the namespaces open. It works from the node's state
/// directory and gets the sources under it as relative paths: a pod mount over one of its
/// ancestors (an emptyDir at `/tmp` with the state in `/tmp/mapchaos-e2e`) then cannot hide
/// the sources of the mounts after it, since the working directory keeps the original.
const PAUSE_SCRIPT: &str = r#"set -e
hostname "$1"; shift
cd "$1"; shift
while [ "$#" -gt 0 ]; do
  mount --bind "$1" "$2"
  if [ "$3" = ro ]; then mount -o remount,bind,ro "$2"; fi
  shift 3
done
echo ready
exec sleep infinity
"#;

/// One bind mount inside the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// A running sandbox.
#[derive(Debug)]
pub struct Sandbox {
    pub network: PodNetwork,
    pause: Child,
    pub pause_pid: u32,
}

impl Sandbox {
    /// Starts the pause process in `network`'s namespace with `mounts` made. Mount points
    /// missing on the host are created first and recorded in `mount_point_log`, so that
    /// `e2e/cluster down` can remove them (removing them earlier would detach other pods'
    /// mounts of the same path).
    pub async fn start(
        network: PodNetwork,
        hostname: &str,
        mounts: &[BindMount],
        mount_point_log: &Path,
        log: &Path,
    ) -> Result<Self, Error> {
        for m in mounts {
            ensure_mount_point(&m.target, m.source.is_dir(), mount_point_log).await?;
        }
        let mut args: Vec<String> = vec![
            format!("--net=/run/netns/{}", network.netns),
            "--".into(),
            "unshare".into(),
            "--mount".into(),
            "--uts".into(),
            "--propagation".into(),
            "private".into(),
            "--".into(),
            "/bin/sh".into(),
            "-c".into(),
            PAUSE_SCRIPT.into(),
            "pause".into(),
            hostname.into(),
        ];
        let base = mount_point_log.parent().unwrap_or(Path::new("/"));
        args.push(base.to_string_lossy().into_owned());
        for m in mounts {
            let source = match m.source.strip_prefix(base) {
                Ok(rel) if base != Path::new("/") => Path::new(".").join(rel),
                _ => m.source.clone(),
            };
            args.push(source.to_string_lossy().into_owned());
            args.push(m.target.to_string_lossy().into_owned());
            args.push(if m.read_only { "ro" } else { "rw" }.into());
        }
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::Sandbox(format!("opening {}: {e}", log.display())))?;
        let mut pause = Command::new("nsenter")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| Error::Sandbox(format!("starting pause process: {e}")))?;
        let pause_pid = pause
            .id()
            .ok_or_else(|| Error::Sandbox("pause process exited at once".to_owned()))?;
        let mut stdout = BufReader::new(pause.stdout.take().expect("stdout is piped"));
        let mut line = String::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            stdout.read_line(&mut line),
        )
        .await;
        if line.trim() != "ready" {
            let mut err = String::new();
            if let Some(mut stderr) = pause.stderr.take() {
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(2),
                    stderr.read_to_string(&mut err),
                )
                .await;
            }
            let _ = pause.start_kill();
            let _ = pause.wait().await;
            let why = match read {
                Err(_) => "timed out".to_owned(),
                Ok(_) => err.trim().to_owned(),
            };
            return Err(Error::Mount(format!("setting up the pod's mounts: {why}")));
        }
        // From here on the pause process's stderr goes nowhere useful; hand it to the log so a
        // late complaint is not lost.
        if let Some(stderr) = pause.stderr.take() {
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    use std::io::Write as _;
                    let _ = writeln!(&log_file, "pause: {line}");
                }
            });
        }
        Ok(Self {
            network,
            pause,
            pause_pid,
        })
    }

    /// Kills the pause process (and anything left in the namespace) and deletes the network.
    pub async fn destroy(mut self) {
        host::kill("KILL", i64::from(self.pause_pid)).await;
        let _ = self.pause.wait().await;
        self.network.delete().await;
    }
}

/// Plans the pod's bind mounts: every container's volumeMounts (one mount namespace per pod,
/// so two containers may not put different things at one path) plus hosts/hostname files.
pub fn plan_mounts(
    pod: &Pod,
    volumes: &BTreeMap<String, PathBuf>,
    etc: &Path,
) -> Result<Vec<BindMount>, Error> {
    let mut mounts: Vec<BindMount> = vec![
        BindMount {
            source: etc.join("hosts"),
            target: "/etc/hosts".into(),
            read_only: false,
        },
        BindMount {
            source: etc.join("hostname"),
            target: "/etc/hostname".into(),
            read_only: false,
        },
    ];
    let spec = pod.spec.as_ref();
    let containers = spec.into_iter().flat_map(|s| {
        s.init_containers
            .iter()
            .flatten()
            .chain(s.containers.iter())
    });
    for c in containers {
        for vm in c.volume_mounts.iter().flatten() {
            let base = volumes.get(&vm.name).ok_or_else(|| {
                Error::Mount(format!(
                    "container {} mounts unknown volume {:?}",
                    c.name, vm.name
                ))
            })?;
            let source = match vm.sub_path.as_deref() {
                Some(sub) if !sub.is_empty() => {
                    if sub.split('/').any(|p| p == "..") {
                        return Err(Error::Mount(format!("invalid subPath {sub:?}")));
                    }
                    base.join(sub)
                }
                _ => base.clone(),
            };
            let mount = BindMount {
                source,
                target: PathBuf::from(&vm.mount_path),
                read_only: vm.read_only == Some(true),
            };
            match mounts.iter().find(|m| m.target == mount.target) {
                Some(existing) if existing.source == mount.source => {}
                Some(existing) => {
                    return Err(Error::Mount(format!(
                        "{} is mounted from both {} and {}; the e2e node agent shares one mount \
                         namespace per pod",
                        mount.target.display(),
                        existing.source.display(),
                        mount.source.display()
                    )));
                }
                None => mounts.push(mount),
            }
        }
    }
    Ok(mounts)
}

/// Makes `target` exist on the host (as a directory, or an empty file for file mounts),
/// recording each path it creates.
async fn ensure_mount_point(target: &Path, dir: bool, log: &Path) -> Result<(), Error> {
    if tokio::fs::symlink_metadata(target).await.is_ok() {
        return Ok(());
    }
    let mut missing = vec![target.to_path_buf()];
    let mut at = target.parent();
    while let Some(p) = at {
        if tokio::fs::symlink_metadata(p).await.is_ok() {
            break;
        }
        missing.push(p.to_path_buf());
        at = p.parent();
    }
    let fail = |p: &Path, e: std::io::Error| Error::Mount(format!("creating {}: {e}", p.display()));
    for (i, p) in missing.iter().rev().enumerate() {
        let is_target = i == missing.len() - 1;
        if is_target && !dir {
            tokio::fs::write(p, b"").await.map_err(|e| fail(p, e))?;
        } else {
            match tokio::fs::create_dir(p).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(fail(p, e)),
            }
        }
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| fail(log, e))?;
        writeln!(f, "{}", p.display()).map_err(|e| fail(log, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec, VolumeMount};

    fn pod(mounts: Vec<(&str, Vec<VolumeMount>)>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: mounts
                    .into_iter()
                    .map(|(name, vms)| Container {
                        name: name.into(),
                        volume_mounts: Some(vms),
                        ..Container::default()
                    })
                    .collect(),
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    fn vm(name: &str, path: &str) -> VolumeMount {
        VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }
    }

    fn volumes() -> BTreeMap<String, PathBuf> {
        [
            ("token".to_string(), PathBuf::from("/state/v/token")),
            ("data".to_string(), PathBuf::from("/state/v/data")),
        ]
        .into()
    }

    #[test]
    fn shared_mounts_are_planned_once_after_etc_files() {
        let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
        let p = pod(vec![
            ("a", vec![vm("token", sa)]),
            ("b", vec![vm("token", sa)]),
        ]);
        let mounts = plan_mounts(&p, &volumes(), Path::new("/state/etc")).expect("plan");
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[0].target, PathBuf::from("/etc/hosts"));
        assert_eq!(mounts[2].source, PathBuf::from("/state/v/token"));
        assert!(mounts[2].read_only);
    }

    #[test]
    fn different_volumes_at_one_path_are_refused() {
        let p = pod(vec![
            ("a", vec![vm("token", "/x")]),
            ("b", vec![vm("data", "/x")]),
        ]);
        let err = plan_mounts(&p, &volumes(), Path::new("/e")).expect_err("conflict");
        assert!(
            err.to_string().contains("one mount namespace per pod"),
            "{err}"
        );
    }

    #[test]
    fn sub_path_points_into_the_volume_and_may_not_escape() {
        let mut m = vm("data", "/etc/app.conf");
        m.sub_path = Some("conf/app.conf".into());
        let mounts = plan_mounts(
            &pod(vec![("a", vec![m.clone()])]),
            &volumes(),
            Path::new("/e"),
        )
        .expect("plan");
        assert_eq!(
            mounts[2].source,
            PathBuf::from("/state/v/data/conf/app.conf")
        );
        m.sub_path = Some("../../etc".into());
        assert!(plan_mounts(&pod(vec![("a", vec![m])]), &volumes(), Path::new("/e")).is_err());
    }
}

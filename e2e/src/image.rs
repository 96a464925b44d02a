//! Images: the map from a container image name to a binary on this machine, and how a
//! container's `command`/`args` combine with it (Docker's ENTRYPOINT/CMD rules).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::Error;

/// The image map file (YAML):
///
/// ```yaml
/// images:
///   mapchaos:dev: {path: /work/main/target/debug/mapchaos, args: [sidecar]}
///   python:3:     {path: /usr/bin/python3}
/// ```
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageMap {
    #[serde(default)]
    pub images: BTreeMap<String, Image>,
}

/// What an image name stands for: the binary is the image's ENTRYPOINT, `args` a fixed
/// prefix of it; the host's filesystem is the image's filesystem.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Image {
    pub path: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment the image itself would carry (ENV lines).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Default working directory (WORKDIR); `/` when unset.
    pub working_dir: Option<String>,
}

impl ImageMap {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading image map {}: {e}", path.display()))?;
        serde_saphyr::from_str(&text)
            .map_err(|e| anyhow::anyhow!("parsing image map {}: {e}", path.display()))
    }

    /// Finds an image by its exact reference, then by the reference without tag or digest,
    /// so `mapchaos` in the map serves `mapchaos:dev` and `mapchaos@sha256:...`.
    pub fn resolve(&self, reference: &str) -> Result<&Image, Error> {
        let image = self
            .images
            .get(reference)
            .or_else(|| self.images.get(repository(reference)))
            .ok_or_else(|| {
                Error::ImagePull(format!(
                    "image {reference:?} is not in the node's image map (known: {})",
                    self.images.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            })?;
        if !image.path.is_file() {
            return Err(Error::ImagePull(format!(
                "image {reference:?} maps to {}, which does not exist",
                image.path.display()
            )));
        }
        Ok(image)
    }
}

/// `registry:5000/team/app:1.2@sha256:...` → `registry:5000/team/app`.
fn repository(reference: &str) -> &str {
    let without_digest = reference.split_once('@').map_or(reference, |(r, _)| r);
    match without_digest.rfind(':') {
        Some(colon) if !without_digest[colon..].contains('/') => &without_digest[..colon],
        _ => without_digest,
    }
}

/// The argv a container runs, before `$(VAR)` expansion of the container's own parts:
/// `command` replaces the entrypoint (and drops the image's args); `args` replace nothing
/// of the entrypoint, they follow it.
pub fn argv(image: &Image, command: &[String], args: &[String]) -> Vec<String> {
    if command.is_empty() {
        let mut argv = vec![image.path.to_string_lossy().into_owned()];
        argv.extend(image.args.iter().cloned());
        argv.extend(args.iter().cloned());
        argv
    } else {
        command.iter().chain(args).cloned().collect()
    }
}

/// Where binaries from outside the system directories run from (see [`staged`]);
/// `cluster down` removes it.
pub const STAGE_DIR: &str = "/var/lib/mapchaos-e2e/images";

/// A pod's volumes cover their mount paths inside its mount namespace, so a binary
/// under one of them — a workspace under /tmp when the pod mounts an emptyDir at /tmp —
/// would be gone for the container. A binary outside the system directories therefore
/// runs from a copy in `stage_dir`, named by its path, size and modification time, so a
/// rebuilt binary gets a fresh copy and a running one keeps its own.
pub fn staged(image: &Image, stage_dir: &Path) -> Result<Image, Error> {
    const SYSTEM: [&str; 6] = ["/usr", "/bin", "/sbin", "/lib", "/lib64", "/opt"];
    if SYSTEM.iter().any(|dir| image.path.starts_with(dir)) {
        return Ok(image.clone());
    }
    let failed = |what: &str, e: std::io::Error| {
        Error::ImagePull(format!(
            "staging {} into {}: {what}: {e}",
            image.path.display(),
            stage_dir.display()
        ))
    };
    let meta = std::fs::metadata(&image.path).map_err(|e| failed("stat", e))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&(&image.path, meta.len(), mtime), &mut hasher);
    let file_name = image
        .path
        .file_name()
        .map_or_else(|| "image".into(), |n| n.to_string_lossy().into_owned());
    let name = format!("{file_name}-{:016x}", std::hash::Hasher::finish(&hasher));
    let target = stage_dir.join(&name);
    if !target.is_file() {
        std::fs::create_dir_all(stage_dir).map_err(|e| failed("create", e))?;
        // Copy under a private name, then rename: a concurrent start never runs a
        // half-written binary.
        let partial = stage_dir.join(format!(".{name}.{}", std::process::id()));
        std::fs::copy(&image.path, &partial).map_err(|e| failed("copy", e))?;
        std::fs::rename(&partial, &target).map_err(|e| failed("rename", e))?;
    }
    Ok(Image {
        path: target,
        ..image.clone()
    })
}

/// The `imageID` reported in container statuses.
pub fn image_id(image: &Image) -> String {
    format!("local://{}", image.path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> ImageMap {
        serde_saphyr::from_str(
            "images:\n  mapchaos:dev: {path: /bin/sh, args: [sidecar]}\n  python: {path: /bin/sh, env: {PYTHONUNBUFFERED: '1'}}\n",
        )
        .expect("valid image map")
    }

    #[test]
    fn binaries_outside_system_directories_run_from_a_fresh_copy() {
        let dir = std::env::temp_dir().join(format!("mapchaos-stage-test-{}", std::process::id()));
        let workspace = dir.join("workspace");
        std::fs::create_dir_all(&workspace).unwrap();
        let binary = workspace.join("app");
        std::fs::write(&binary, b"one").unwrap();
        let stage = dir.join("stage");
        let image = Image {
            path: binary.clone(),
            args: vec!["serve".into()],
            ..Image::default()
        };
        let first = staged(&image, &stage).unwrap();
        assert!(first.path.starts_with(&stage), "{}", first.path.display());
        assert_eq!(std::fs::read(&first.path).unwrap(), b"one");
        assert_eq!(first.args, image.args);
        assert_eq!(staged(&image, &stage).unwrap().path, first.path, "reused");
        // A rebuild (new size) gets its own copy; the old one stays for running containers.
        std::fs::write(&binary, b"two!").unwrap();
        let second = staged(&image, &stage).unwrap();
        assert_ne!(second.path, first.path);
        assert_eq!(std::fs::read(&second.path).unwrap(), b"two!");
        assert_eq!(std::fs::read(&first.path).unwrap(), b"one");
        // System binaries run in place (python finds its libraries from its own path).
        let system = Image {
            path: "/usr/bin/env".into(),
            ..Image::default()
        };
        assert_eq!(staged(&system, &stage).unwrap(), system);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn exact_reference_wins() {
        let m = map();
        assert_eq!(
            m.resolve("mapchaos:dev").expect("found").args,
            vec!["sidecar"]
        );
    }

    #[test]
    fn tag_and_digest_fall_back_to_repository() {
        let m = map();
        assert!(m.resolve("python:3.11").is_ok());
        assert!(m.resolve("python@sha256:abcd").is_ok());
        assert_eq!(repository("reg:5000/team/app:1.2"), "reg:5000/team/app");
        assert_eq!(repository("reg:5000/team/app"), "reg:5000/team/app");
    }

    #[test]
    fn unknown_image_is_an_image_pull_error_naming_it() {
        let err = map().resolve("nginx:1.25").expect_err("unknown image");
        assert_eq!(err.reason(), "ErrImagePull");
        assert!(err.to_string().contains("nginx:1.25"), "{err}");
    }

    #[test]
    fn image_pointing_at_missing_binary_is_an_image_pull_error() {
        let m: ImageMap =
            serde_saphyr::from_str("images:\n  gone: {path: /nonexistent/bin}\n").expect("valid");
        assert_eq!(
            m.resolve("gone").expect_err("missing").reason(),
            "ErrImagePull"
        );
    }

    #[test]
    fn args_follow_the_entrypoint_and_command_replaces_it() {
        let image = Image {
            path: "/bin/app".into(),
            args: vec!["serve".into()],
            ..Image::default()
        };
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(argv(&image, &[], &[]), s(&["/bin/app", "serve"]));
        assert_eq!(
            argv(&image, &[], &s(&["--port", "1"])),
            s(&["/bin/app", "serve", "--port", "1"])
        );
        assert_eq!(
            argv(&image, &s(&["sh", "-c"]), &s(&["exit 1"])),
            s(&["sh", "-c", "exit 1"])
        );
    }
}

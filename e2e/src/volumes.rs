//! Pod volumes on the host: secret, configMap, projected (incl. service-account tokens),
//! downwardAPI, emptyDir and hostPath, written under the pod's directory so the sandbox can
//! bind-mount them at their real paths.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, ServiceAccount, Volume,
};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::env::{self, PodFields};
use crate::error::Error;

/// Writes every volume of `pod` under `dir`; returns each volume's host path by name.
pub async fn prepare(
    client: &Client,
    pod: &Pod,
    fields: &PodFields,
    dir: &Path,
) -> Result<BTreeMap<String, PathBuf>, Error> {
    let mut paths = BTreeMap::new();
    let spec = pod.spec.as_ref();
    for volume in spec.and_then(|s| s.volumes.as_deref()).unwrap_or(&[]) {
        let path = prepare_one(client, pod, fields, dir, volume)
            .await
            .map_err(|e| match e {
                Error::Mount(m) => Error::Mount(format!(
                    "MountVolume.SetUp failed for volume {:?} : {m}",
                    volume.name
                )),
                other => other,
            })?;
        paths.insert(volume.name.clone(), path);
    }
    Ok(paths)
}

async fn prepare_one(
    client: &Client,
    pod: &Pod,
    fields: &PodFields,
    dir: &Path,
    volume: &Volume,
) -> Result<PathBuf, Error> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let target = dir.join(&volume.name);
    if let Some(host) = &volume.host_path {
        let path = PathBuf::from(&host.path);
        let create = matches!(host.type_.as_deref(), Some("DirectoryOrCreate"));
        if create {
            mkdir(&path).await?;
        } else if !path.exists() && host.type_.as_deref().is_some_and(|t| !t.is_empty()) {
            return Err(Error::Mount(format!(
                "hostPath {} does not exist",
                host.path
            )));
        }
        return Ok(path);
    }
    mkdir(&target).await?;
    let mut files = Files::default();
    if volume.empty_dir.is_some() {
        return Ok(target);
    } else if let Some(s) = &volume.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        match fetch_secret(client, namespace, &name).await? {
            Some(data) => {
                files.add_items(&data, s.items.as_deref(), s.default_mode, "secret", &name)?
            }
            None if s.optional == Some(true) => {}
            None => return Err(Error::Mount(format!("secret {name:?} not found"))),
        }
    } else if let Some(cm) = &volume.config_map {
        match fetch_config_map(client, namespace, &cm.name).await? {
            Some(data) => files.add_items(
                &data,
                cm.items.as_deref(),
                cm.default_mode,
                "configmap",
                &cm.name,
            )?,
            None if cm.optional == Some(true) => {}
            None => return Err(Error::Mount(format!("configmap {:?} not found", cm.name))),
        }
    } else if let Some(d) = &volume.downward_api {
        files.add_downward(
            pod,
            fields,
            d.items.as_deref().unwrap_or(&[]),
            d.default_mode,
        )?;
    } else if let Some(p) = &volume.projected {
        for source in p.sources.iter().flatten() {
            if let Some(s) = &source.secret {
                match fetch_secret(client, namespace, &s.name).await? {
                    Some(data) => files.add_items(
                        &data,
                        s.items.as_deref(),
                        p.default_mode,
                        "secret",
                        &s.name,
                    )?,
                    None if s.optional == Some(true) => {}
                    None => return Err(Error::Mount(format!("secret {:?} not found", s.name))),
                }
            } else if let Some(cm) = &source.config_map {
                match fetch_config_map(client, namespace, &cm.name).await? {
                    Some(data) => files.add_items(
                        &data,
                        cm.items.as_deref(),
                        p.default_mode,
                        "configmap",
                        &cm.name,
                    )?,
                    None if cm.optional == Some(true) => {}
                    None => return Err(Error::Mount(format!("configmap {:?} not found", cm.name))),
                }
            } else if let Some(d) = &source.downward_api {
                files.add_downward(
                    pod,
                    fields,
                    d.items.as_deref().unwrap_or(&[]),
                    p.default_mode,
                )?;
            } else if let Some(t) = &source.service_account_token {
                let token =
                    request_token(client, pod, t.audience.clone(), t.expiration_seconds).await?;
                files.add(&t.path, token.into_bytes(), p.default_mode)?;
            }
        }
    } else {
        return Err(Error::Mount(
            "unsupported volume type (the e2e node agent supports secret, configMap, projected, \
             downwardAPI, emptyDir, hostPath)"
                .to_owned(),
        ));
    }
    files.write(&target).await?;
    Ok(target)
}

/// The files of one volume before they are written.
#[derive(Debug, Default)]
struct Files(Vec<(PathBuf, Vec<u8>, u32)>);

impl Files {
    fn add(&mut self, rel: &str, content: Vec<u8>, mode: Option<i32>) -> Result<(), Error> {
        let rel = Path::new(rel);
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(Error::Mount(format!("invalid item path {}", rel.display())));
        }
        let mode = mode.and_then(|m| u32::try_from(m).ok()).unwrap_or(0o644);
        self.0.push((rel.to_path_buf(), content, mode));
        Ok(())
    }

    fn add_items(
        &mut self,
        data: &BTreeMap<String, Vec<u8>>,
        items: Option<&[KeyToPath]>,
        default_mode: Option<i32>,
        kind: &str,
        name: &str,
    ) -> Result<(), Error> {
        match items {
            Some(items) if !items.is_empty() => {
                for item in items {
                    let content = data.get(&item.key).ok_or_else(|| {
                        Error::Mount(format!("couldn't find key {} in {kind} {name}", item.key))
                    })?;
                    self.add(&item.path, content.clone(), item.mode.or(default_mode))?;
                }
            }
            _ => {
                for (key, content) in data {
                    self.add(key, content.clone(), default_mode)?;
                }
            }
        }
        Ok(())
    }

    fn add_downward(
        &mut self,
        pod: &Pod,
        fields: &PodFields,
        items: &[DownwardAPIVolumeFile],
        default_mode: Option<i32>,
    ) -> Result<(), Error> {
        for item in items {
            let value = if let Some(f) = &item.field_ref {
                let as_lines = |map: &Option<BTreeMap<String, String>>| {
                    map.iter()
                        .flatten()
                        .map(|(k, v)| format!("{k}={v:?}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                match f.field_path.as_str() {
                    "metadata.labels" => as_lines(&pod.metadata.labels),
                    "metadata.annotations" => as_lines(&pod.metadata.annotations),
                    _ => env::field_ref(pod, fields, f).map_err(|e| Error::Mount(e.to_string()))?,
                }
            } else if let Some(r) = &item.resource_field_ref {
                let spec = pod.spec.as_ref();
                let container = spec
                    .and_then(|s| {
                        s.containers
                            .iter()
                            .find(|c| Some(&c.name) == r.container_name.as_ref())
                    })
                    .cloned()
                    .unwrap_or_default();
                env::resource_field_ref(pod, &container, fields, r)
                    .map_err(|e| Error::Mount(e.to_string()))?
            } else {
                continue;
            };
            self.add(&item.path, value.into_bytes(), item.mode.or(default_mode))?;
        }
        Ok(())
    }

    async fn write(self, dir: &Path) -> Result<(), Error> {
        for (rel, content, mode) in self.0 {
            let path = dir.join(&rel);
            if let Some(parent) = path.parent() {
                mkdir(parent).await?;
            }
            tokio::fs::write(&path, &content)
                .await
                .map_err(|e| Error::Mount(format!("writing {}: {e}", path.display())))?;
            tokio::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .await
                .map_err(|e| Error::Mount(format!("chmod {}: {e}", path.display())))?;
        }
        Ok(())
    }
}

async fn mkdir(path: &Path) -> Result<(), Error> {
    tokio::fs::create_dir_all(path)
        .await
        .map_err(|e| Error::Mount(format!("creating {}: {e}", path.display())))
}

fn api_error(what: &str, e: kube::Error) -> Error {
    Error::Mount(format!("reading {what}: {e}"))
}

/// A Secret's data, or `None` when it does not exist.
pub async fn fetch_secret(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, Error> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| api_error(&format!("secret {name}"), e))?;
    Ok(secret.map(|s| {
        let mut data: BTreeMap<String, Vec<u8>> = s
            .string_data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        data.extend(
            s.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0)),
        );
        data
    }))
}

/// A ConfigMap's data (text and binary), or `None` when it does not exist.
pub async fn fetch_config_map(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, Error> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| api_error(&format!("configmap {name}"), e))?;
    Ok(cm.map(|cm| {
        let mut data: BTreeMap<String, Vec<u8>> = cm
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        data.extend(
            cm.binary_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0)),
        );
        data
    }))
}

/// A bound service-account token for the pod (TokenRequest API), as projected volumes need.
async fn request_token(
    client: &Client,
    pod: &Pod,
    audience: Option<String>,
    expiration_seconds: Option<i64>,
) -> Result<String, Error> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".to_owned());
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.into_iter().collect(),
            expiration_seconds: expiration_seconds.or(Some(3600)),
            bound_object_ref: Some(k8s_openapi::api::authentication::v1::BoundObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Pod".to_owned()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..TokenRequest::default()
    };
    let response = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(&sa, &PostParams::default(), &request)
        .await
        .map_err(|e| api_error(&format!("token for serviceaccount {sa}"), e))?;
    response
        .status
        .map(|s| s.token)
        .ok_or_else(|| Error::Mount("TokenRequest returned no token".to_owned()))
}

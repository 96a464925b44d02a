//! Container environment: `env`, `envFrom`, the downward API (`fieldRef`,
//! `resourceFieldRef`) and `$(VAR)` expansion, resolved the way the kubelet does. Pure: the
//! ConfigMaps and Secrets it may read are handed in.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, Pod, ResourceFieldSelector};

use crate::error::Error;

/// Facts about the running pod the downward API can expose.
#[derive(Clone, Debug, Default)]
pub struct PodFields {
    pub pod_ip: String,
    pub host_ip: String,
    pub node_name: String,
    /// Node allocatable, used for `resourceFieldRef` when the container sets no limit.
    pub node_cpu_cores: f64,
    pub node_memory_bytes: f64,
}

/// ConfigMap and Secret data the container's env may reference, by object name.
#[derive(Clone, Debug, Default)]
pub struct EnvSources {
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
}

/// An ordered environment where a later definition of a name replaces the earlier one
/// (at the earlier one's position, as the kubelet's list does).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Environment(Vec<(String, String)>);

impl Environment {
    pub fn set(&mut self, name: &str, value: String) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = value,
            None => self.0.push((name.to_owned(), value)),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn vars(&self) -> &[(String, String)] {
        &self.0
    }

    /// Expands `$(NAME)` references against this environment.
    pub fn expand(&self, input: &str) -> String {
        expand(input, |name| self.get(name).map(str::to_owned))
    }
}

/// The names of the ConfigMaps and Secrets `container`'s env refers to, so the caller
/// can fetch exactly those.
pub fn referenced_objects(container: &Container) -> (Vec<String>, Vec<String>) {
    let mut config_maps = Vec::new();
    let mut secrets = Vec::new();
    for from in container.env_from.iter().flatten() {
        if let Some(cm) = &from.config_map_ref {
            config_maps.push(cm.name.clone());
        }
        if let Some(s) = &from.secret_ref {
            secrets.push(s.name.clone());
        }
    }
    for var in container.env.iter().flatten() {
        let Some(from) = &var.value_from else {
            continue;
        };
        if let Some(r) = &from.config_map_key_ref {
            config_maps.push(r.name.clone());
        }
        if let Some(r) = &from.secret_key_ref {
            secrets.push(r.name.clone());
        }
    }
    config_maps.sort();
    config_maps.dedup();
    secrets.sort();
    secrets.dedup();
    (config_maps, secrets)
}

/// Builds the container's environment on top of `base` (image env, service variables):
/// `envFrom` in order, then `env` in order, each `value` expanded against what came before.
pub fn resolve(
    pod: &Pod,
    container: &Container,
    fields: &PodFields,
    sources: &EnvSources,
    base: Environment,
) -> Result<Environment, Error> {
    let mut env = base;
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let (data, kind, name, optional) = if let Some(cm) = &from.config_map_ref {
            (
                sources.config_maps.get(&cm.name),
                "configmap",
                &cm.name,
                cm.optional,
            )
        } else if let Some(s) = &from.secret_ref {
            (sources.secrets.get(&s.name), "secret", &s.name, s.optional)
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (key, value) in data {
                    let name = format!("{prefix}{key}");
                    if is_env_name(&name) {
                        env.set(&name, value.clone());
                    }
                }
            }
            None if optional == Some(true) => {}
            None => {
                return Err(Error::CreateContainerConfig(format!(
                    "{kind} {name:?} not found"
                )));
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (_, Some(from)) => {
                if let Some(f) = &from.field_ref {
                    Some(field_ref(pod, fields, f)?)
                } else if let Some(r) = &from.resource_field_ref {
                    Some(resource_field_ref(pod, container, fields, r)?)
                } else if let Some(r) = &from.config_map_key_ref {
                    key_ref(
                        &sources.config_maps,
                        "configmap",
                        &r.name,
                        &r.key,
                        r.optional,
                    )?
                } else if let Some(r) = &from.secret_key_ref {
                    key_ref(&sources.secrets, "secret", &r.name, &r.key, r.optional)?
                } else {
                    None
                }
            }
            (Some(v), None) => Some(env.expand(v)),
            (None, None) => Some(String::new()),
        };
        if let Some(value) = value {
            env.set(&var.name, value);
        }
    }
    Ok(env)
}

fn key_ref(
    objects: &BTreeMap<String, BTreeMap<String, String>>,
    kind: &str,
    name: &str,
    key: &str,
    optional: Option<bool>,
) -> Result<Option<String>, Error> {
    match objects.get(name).map(|data| data.get(key)) {
        Some(Some(value)) => Ok(Some(value.clone())),
        _ if optional == Some(true) => Ok(None),
        Some(None) => Err(Error::CreateContainerConfig(format!(
            "couldn't find key {key} in {kind} {name}"
        ))),
        None => Err(Error::CreateContainerConfig(format!(
            "{kind} {name:?} not found"
        ))),
    }
}

/// The downward API's `fieldRef` paths the kubelet supports for env.
pub fn field_ref(pod: &Pod, fields: &PodFields, f: &ObjectFieldSelector) -> Result<String, Error> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let path = f.field_path.as_str();
    let from_map = |map: &Option<BTreeMap<String, String>>, key: &str| {
        map.as_ref()
            .and_then(|m| m.get(key))
            .cloned()
            .unwrap_or_default()
    };
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec
            .and_then(|s| s.node_name.clone())
            .unwrap_or_else(|| fields.node_name.clone()),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => fields.host_ip.clone(),
        "status.podIP" | "status.podIPs" => fields.pod_ip.clone(),
        _ => {
            if let Some(key) = bracketed(path, "metadata.labels") {
                from_map(&meta.labels, key)
            } else if let Some(key) = bracketed(path, "metadata.annotations") {
                from_map(&meta.annotations, key)
            } else {
                return Err(Error::CreateContainerConfig(format!(
                    "unsupported fieldRef path {path:?}"
                )));
            }
        }
    };
    Ok(value)
}

/// `metadata.labels['app']` → `app`.
fn bracketed<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    path.strip_prefix(prefix)?
        .strip_prefix("['")?
        .strip_suffix("']")
}

/// `resourceFieldRef`: the container's limit (or request), defaulting like the kubelet to the
/// node's allocatable when no limit is set; rounded up in units of `divisor`.
pub fn resource_field_ref(
    pod: &Pod,
    own: &Container,
    fields: &PodFields,
    r: &ResourceFieldSelector,
) -> Result<String, Error> {
    let container = match &r.container_name {
        Some(name) if !name.is_empty() => pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| &c.name == name))
            .ok_or_else(|| {
                Error::CreateContainerConfig(format!("resourceFieldRef: no container {name:?}"))
            })?,
        _ => own,
    };
    let (kind, resource) = r.resource.split_once('.').ok_or_else(|| {
        Error::CreateContainerConfig(format!("unsupported resource {:?}", r.resource))
    })?;
    let resources = container.resources.as_ref();
    let table = match kind {
        "limits" => resources.and_then(|x| x.limits.as_ref()),
        "requests" => resources.and_then(|x| x.requests.as_ref()),
        _ => None,
    };
    let set = table
        .and_then(|t| t.get(resource))
        .map(|q| quantity(&q.0))
        .transpose()?;
    let value = match (set, kind, resource) {
        (Some(v), _, _) => v,
        (None, "limits", "cpu") => fields.node_cpu_cores,
        (None, "limits", "memory") => fields.node_memory_bytes,
        (None, "requests", _) => 0.0,
        (None, _, "ephemeral-storage") => 0.0,
        _ => {
            return Err(Error::CreateContainerConfig(format!(
                "unsupported resource {:?}",
                r.resource
            )));
        }
    };
    let default_divisor = 1.0;
    let divisor = r
        .divisor
        .as_ref()
        .map(|d| quantity(&d.0))
        .transpose()?
        .filter(|d| *d > 0.0)
        .unwrap_or(default_divisor);
    Ok(format!(
        "{}",
        (value / divisor)
            .ceil()
            .max(if value > 0.0 { 1.0 } else { 0.0 })
    ))
}

/// Parses a Kubernetes quantity (`500m`, `2`, `128Mi`, `1G`, `1e3`) to a number.
pub fn quantity(s: &str) -> Result<f64, Error> {
    let bad = || Error::CreateContainerConfig(format!("invalid quantity {s:?}"));
    let s = s.trim();
    let suffixes: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    for (suffix, factor) in suffixes {
        if let Some(number) = s.strip_suffix(suffix) {
            return number.parse::<f64>().map(|n| n * factor).map_err(|_| bad());
        }
    }
    s.parse::<f64>().map_err(|_| bad())
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Kubernetes' `$(VAR)` expansion: defined names are replaced, `$$` escapes a `$`, and
/// anything else (undefined names, unclosed references) stays as written.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(close) => {
                    let name = &inner[..close];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[close + 1..];
                }
                None => {
                    out.push_str(&rest[dollar..]);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, EnvFromSource, EnvVar, EnvVarSource, PodSpec, ResourceRequirements,
        SecretKeySelector,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("shop".into()),
                uid: Some("u-1".into()),
                labels: Some([("app".to_string(), "cart".to_string())].into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-a".into()),
                service_account_name: Some("cart-sa".into()),
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    /// `c`'s environment in [`pod`], with no ConfigMap, Secret or base environment.
    fn resolve_alone(c: &Container) -> Result<Environment, Error> {
        resolve(
            &pod(),
            c,
            &fields(),
            &EnvSources::default(),
            Environment::default(),
        )
    }

    fn fields() -> PodFields {
        PodFields {
            pod_ip: "10.213.0.7".into(),
            host_ip: "10.213.0.1".into(),
            node_name: "node-a".into(),
            node_cpu_cores: 2.0,
            node_memory_bytes: 4.0 * 1024.0 * 1024.0 * 1024.0,
        }
    }

    fn field(name: &str, path: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: path.into(),
                    api_version: Some("v1".into()),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }
    }

    fn value(name: &str, v: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(v.into()),
            ..EnvVar::default()
        }
    }

    #[test]
    fn downward_api_fields_resolve_from_pod_and_node() {
        let c = Container {
            name: "app".into(),
            env: Some(vec![
                field("POD_NAME", "metadata.name"),
                field("POD_NAMESPACE", "metadata.namespace"),
                field("POD_IP", "status.podIP"),
                field("NODE_NAME", "spec.nodeName"),
                field("HOST_IP", "status.hostIP"),
                field("SA", "spec.serviceAccountName"),
                field("APP", "metadata.labels['app']"),
            ]),
            ..Container::default()
        };
        let env = resolve_alone(&c).expect("resolves");
        let get = |n| env.get(n).expect(n).to_owned();
        assert_eq!(get("POD_NAME"), "web-1");
        assert_eq!(get("POD_NAMESPACE"), "shop");
        assert_eq!(get("POD_IP"), "10.213.0.7");
        assert_eq!(get("NODE_NAME"), "node-a");
        assert_eq!(get("HOST_IP"), "10.213.0.1");
        assert_eq!(get("SA"), "cart-sa");
        assert_eq!(get("APP"), "cart");
    }

    #[test]
    fn values_expand_earlier_variables_and_keep_unknown_ones() {
        let c = Container {
            env: Some(vec![
                field("POD_IP", "status.podIP"),
                value("ADDR", "$(POD_IP):6379"),
                value("LATER", "$(UNSET) and $$(POD_IP)"),
            ]),
            ..Container::default()
        };
        let env = resolve_alone(&c).expect("resolves");
        assert_eq!(env.get("ADDR"), Some("10.213.0.7:6379"));
        assert_eq!(env.get("LATER"), Some("$(UNSET) and $(POD_IP)"));
    }

    #[test]
    fn env_overrides_env_from_and_base_in_place() {
        let mut base = Environment::default();
        base.set("PATH", "/bin".into());
        base.set("MODE", "image".into());
        let sources = EnvSources {
            config_maps: [(
                "cfg".to_string(),
                [
                    ("MODE".to_string(), "cm".to_string()),
                    ("1BAD".to_string(), "x".to_string()),
                ]
                .into(),
            )]
            .into(),
            ..EnvSources::default()
        };
        let c = Container {
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "cfg".into(),
                    optional: None,
                }),
                ..EnvFromSource::default()
            }]),
            env: Some(vec![value("EXTRA", "1")]),
            ..Container::default()
        };
        let env = resolve(&pod(), &c, &fields(), &sources, base).expect("resolves");
        assert_eq!(
            env.vars(),
            &[
                ("PATH".to_string(), "/bin".to_string()),
                ("MODE".to_string(), "cm".to_string()),
                ("EXTRA".to_string(), "1".to_string())
            ]
        );
    }

    #[test]
    fn missing_secret_key_is_a_config_error_unless_optional() {
        let secret_ref = |optional| EnvVar {
            name: "PW".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: "db".into(),
                    key: "password".into(),
                    optional,
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        };
        let c = Container {
            env: Some(vec![secret_ref(None)]),
            ..Container::default()
        };
        let err = resolve(
            &pod(),
            &c,
            &fields(),
            &EnvSources::default(),
            Environment::default(),
        )
        .expect_err("missing secret");
        assert_eq!(err.reason(), "CreateContainerConfigError");
        let c = Container {
            env: Some(vec![secret_ref(Some(true))]),
            ..Container::default()
        };
        let env = resolve_alone(&c).expect("optional");
        assert_eq!(env.get("PW"), None);
    }

    #[test]
    fn resource_field_ref_uses_limits_or_node_allocatable() {
        let selector = |resource: &str, divisor: Option<&str>| ResourceFieldSelector {
            resource: resource.into(),
            divisor: divisor.map(|d| Quantity(d.into())),
            container_name: None,
        };
        let limited = Container {
            resources: Some(ResourceRequirements {
                limits: Some(
                    [
                        ("cpu".to_string(), Quantity("500m".into())),
                        ("memory".to_string(), Quantity("64Mi".into())),
                    ]
                    .into(),
                ),
                ..ResourceRequirements::default()
            }),
            ..Container::default()
        };
        let f = fields();
        let get = |c: &Container, s| resource_field_ref(&pod(), c, &f, &s).expect("resolves");
        assert_eq!(get(&limited, selector("limits.cpu", None)), "1");
        assert_eq!(get(&limited, selector("limits.cpu", Some("1m"))), "500");
        assert_eq!(get(&limited, selector("limits.memory", Some("1Mi"))), "64");
        let unlimited = Container::default();
        assert_eq!(get(&unlimited, selector("limits.cpu", None)), "2");
        assert_eq!(get(&unlimited, selector("limits.memory", Some("1Gi"))), "4");
    }

    #[test]
    fn quantities_parse_binary_and_decimal_suffixes() {
        assert_eq!(quantity("250m").expect("q"), 0.25);
        assert_eq!(quantity("2Ki").expect("q"), 2048.0);
        assert_eq!(quantity("1G").expect("q"), 1e9);
        assert_eq!(quantity("3").expect("q"), 3.0);
        assert!(quantity("lots").is_err());
    }

    #[test]
    fn expansion_handles_escapes_and_unclosed_references() {
        let look = |n: &str| (n == "A").then(|| "x".to_string());
        assert_eq!(expand("$(A)-$(A)", look), "x-x");
        assert_eq!(expand("$$(A)", look), "$(A)");
        assert_eq!(expand("cost $5 $(A", look), "cost $5 $(A");
        assert_eq!(expand("$(B)", look), "$(B)");
    }
}

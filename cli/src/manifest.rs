//! Reads MapChaos manifests: the same YAML a user applies to a cluster. Other
//! kinds in the file are skipped with a note; a bad field is reported by its
//! path.

use std::path::Path;

use mapchaos_api::spec::MapChaosSpec;
use serde_json::Value;

/// The API group/version and kind `mapchaos run` accepts.
pub const API_VERSION: &str = "mapchaos.io/v1alpha1";
pub const KIND: &str = "MapChaos";
/// The largest manifest file read: more than any cluster stores for one
/// object (etcd's 1.5 MiB), with room for other documents in the file.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// One MapChaos from a file.
#[derive(Debug)]
pub struct Manifest {
    pub name: String,
    pub spec: MapChaosSpec,
    /// Things worth telling the user (skipped documents, ignored fields).
    pub notes: Vec<String>,
}

/// Bad input, said so a person can fix it.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is {size} bytes, over the limit of {MAX_MANIFEST_BYTES} bytes for a manifest")]
    TooBig { path: String, size: u64 },
    #[error("{path}: {KIND} {name:?} has apiVersion {found}; mapchaos reads only {API_VERSION}")]
    ApiVersion {
        path: String,
        name: String,
        found: String,
    },
    #[error("{path}: {KIND} {name:?} has no spec: say at least what to storm for how long")]
    NoSpec { path: String, name: String },
    #[error("{path} is not valid YAML: {message}")]
    Yaml { path: String, message: String },
    #[error("{path} holds no {KIND} (found: {found})")]
    NoMapChaos { path: String, found: String },
    #[error("{path} holds several {KIND}s ({names}); choose one with --name")]
    Ambiguous { path: String, names: String },
    #[error("{path} has no {KIND} named {name:?} (it has: {names})")]
    NoSuchName {
        path: String,
        name: String,
        names: String,
    },
    #[error("{path}: {KIND} {name:?}: {field}: {message}")]
    Field {
        path: String,
        name: String,
        field: String,
        message: String,
    },
}

/// Load the MapChaos from `path`; `name` picks one when the file has several.
pub fn load(path: &Path, name: Option<&str>) -> Result<Manifest, ManifestError> {
    use std::io::Read as _;
    let shown = path.display().to_string();
    let read_error = |source| ManifestError::Read {
        path: shown.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    // Read one byte past the limit rather than trust the file's size: a
    // pipe or a growing file has none.
    let mut bytes = Vec::new();
    file.take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        let size = std::fs::metadata(path).map_or(bytes.len() as u64, |m| m.len());
        return Err(ManifestError::TooBig { path: shown, size });
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        read_error(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            e.utf8_error(),
        ))
    })?;
    parse(&text, &shown, name)
}

/// Parse manifest text (`path` is only for messages).
pub fn parse(text: &str, path: &str, name: Option<&str>) -> Result<Manifest, ManifestError> {
    // A manifest is a few hundred nodes: bound the parser's work well below
    // its defaults, so an alias bomb costs milliseconds, not memory.
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: 100_000,
            max_aliases: 1_000,
            max_nodes: 50_000,
        },
    };
    let documents: Vec<Value> =
        serde_saphyr::from_multiple_with_options(text, options).map_err(|e| {
            ManifestError::Yaml {
                path: path.to_owned(),
                message: e.to_string(),
            }
        })?;
    let mut notes = Vec::new();
    let mut candidates = Vec::new();
    let mut found = Vec::new();
    for document in documents.into_iter().filter(|d| !d.is_null()) {
        let kind = document["kind"].as_str().unwrap_or("<no kind>").to_owned();
        let doc_name = document["metadata"]["name"]
            .as_str()
            .unwrap_or("<unnamed>")
            .to_owned();
        found.push(format!("{kind}/{doc_name}"));
        if kind != KIND {
            notes.push(format!(
                "skipping {kind}/{doc_name}: mapchaos run only runs {KIND}"
            ));
            continue;
        }
        candidates.push((doc_name, document));
    }
    let names = || {
        candidates
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (doc_name, document) = match (name, candidates.len()) {
        (_, 0) => {
            return Err(ManifestError::NoMapChaos {
                path: path.to_owned(),
                found: if found.is_empty() {
                    "nothing".into()
                } else {
                    found.join(", ")
                },
            });
        }
        (None, 1) => candidates.pop().expect("one candidate"),
        (None, _) => {
            return Err(ManifestError::Ambiguous {
                path: path.to_owned(),
                names: names(),
            });
        }
        (Some(wanted), _) => {
            let all = names();
            match candidates.into_iter().find(|(n, _)| n == wanted) {
                Some(found) => found,
                None => {
                    return Err(ManifestError::NoSuchName {
                        path: path.to_owned(),
                        name: wanted.to_owned(),
                        names: all,
                    });
                }
            }
        }
    };
    // What a cluster would refuse is refused here too: another version of
    // the resource may mean other fields, and no spec means nothing to run.
    match document.get("apiVersion") {
        Some(Value::String(version)) if version == API_VERSION => {}
        other => {
            return Err(ManifestError::ApiVersion {
                path: path.to_owned(),
                name: doc_name,
                found: match other {
                    None | Some(Value::Null) => "none".into(),
                    Some(Value::String(version)) => format!("{version:?}"),
                    Some(value) => value.to_string(),
                },
            });
        }
    }
    let spec_value = match document.get("spec") {
        None | Some(Value::Null) => {
            return Err(ManifestError::NoSpec {
                path: path.to_owned(),
                name: doc_name,
            });
        }
        Some(spec) => spec.clone(),
    };
    let spec: MapChaosSpec = serde_path_to_error::deserialize(spec_value).map_err(|error| {
        let field = match error.path().to_string() {
            p if p == "." => "spec".to_owned(),
            p => format!("spec.{p}"),
        };
        ManifestError::Field {
            path: path.to_owned(),
            name: doc_name.clone(),
            field,
            message: error.into_inner().to_string(),
        }
    })?;
    Ok(Manifest {
        name: doc_name,
        spec,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORM: &str = r#"
apiVersion: mapchaos.io/v1alpha1
kind: MapChaos
metadata: {name: cart-delete-storm, namespace: shop}
spec:
  selector: {labelSelectors: {app: cart}}
  mode: fixed-percent
  value: "50"
  duration: 10s
  storm:
    workers: 8
    mix: {del: 60, get: 25, set: 10, scan: 5}
    keys: {count: 100, distribution: zipf}
"#;

    #[test]
    fn reads_a_mapchaos_and_skips_other_kinds() {
        let text =
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\n---{STORM}");
        let manifest = parse(&text, "storm.yaml", None).unwrap();
        assert_eq!(manifest.name, "cart-delete-storm");
        assert_eq!(manifest.spec.storm.workers, 8);
        assert_eq!(manifest.spec.storm.keys.count, 100);
        assert_eq!(manifest.spec.duration.0, std::time::Duration::from_secs(10));
        assert_eq!(
            manifest.notes,
            ["skipping ConfigMap/settings: mapchaos run only runs MapChaos"]
        );
    }

    #[test]
    fn a_bad_field_is_named_by_its_path() {
        let text = STORM.replace("workers: 8", "workers: many");
        let error = parse(&text, "storm.yaml", None).unwrap_err().to_string();
        assert!(error.contains("spec.storm.workers"), "{error}");
        let text = STORM.replace("workers: 8", "wrkers: 8");
        let error = parse(&text, "storm.yaml", None).unwrap_err().to_string();
        assert!(error.contains("unknown field `wrkers`"), "{error}");
        let text = STORM.replace("duration: 10s", "duration: ten seconds");
        let error = parse(&text, "storm.yaml", None).unwrap_err().to_string();
        assert!(error.contains("spec.duration"), "{error}");
    }

    #[test]
    fn several_mapchaos_need_a_name() {
        let text = format!("{STORM}---{}", STORM.replace("cart-delete-storm", "second"));
        let error = parse(&text, "s.yaml", None).unwrap_err().to_string();
        assert!(error.contains("choose one with --name"), "{error}");
        assert_eq!(
            parse(&text, "s.yaml", Some("second")).unwrap().name,
            "second"
        );
        let error = parse(&text, "s.yaml", Some("third"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("cart-delete-storm, second"), "{error}");
    }

    #[test]
    fn a_file_without_mapchaos_says_what_it_found() {
        let error = parse("kind: Pod\nmetadata: {name: p}\n", "p.yaml", None).unwrap_err();
        assert_eq!(error.to_string(), "p.yaml holds no MapChaos (found: Pod/p)");
    }

    #[test]
    fn another_api_version_or_no_spec_is_refused() {
        let text = STORM.replace("mapchaos.io/v1alpha1", "mapchaos.io/v1");
        let error = parse(&text, "s.yaml", None).unwrap_err().to_string();
        assert!(
            error.contains(
                "has apiVersion \"mapchaos.io/v1\"; mapchaos reads only mapchaos.io/v1alpha1"
            ),
            "{error}"
        );
        let text = STORM.replace("apiVersion: mapchaos.io/v1alpha1\n", "");
        let error = parse(&text, "s.yaml", None).unwrap_err().to_string();
        assert!(error.contains("has apiVersion none"), "{error}");
        let text = &STORM[..STORM.find("spec:").unwrap()];
        let error = parse(text, "s.yaml", None).unwrap_err().to_string();
        assert!(error.contains("has no spec"), "{error}");
        let text = format!("{text}spec:\n");
        let error = parse(&text, "s.yaml", None).unwrap_err().to_string();
        assert!(error.contains("has no spec"), "{error}");
    }

    #[test]
    fn a_file_over_the_size_limit_is_not_read() {
        let dir = std::env::temp_dir().join(format!("mapchaos-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("big.yaml");
        let padding = "#".repeat(MAX_MANIFEST_BYTES as usize);
        std::fs::write(&path, format!("{STORM}{padding}\n")).unwrap();
        let error = load(&path, None).unwrap_err().to_string();
        assert!(
            error.contains(&format!("over the limit of {MAX_MANIFEST_BYTES} bytes")),
            "{error}"
        );
        std::fs::write(&path, STORM).unwrap();
        assert!(load(&path, None).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_alias_bomb_is_refused_not_expanded() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..12 {
            let prev = (b'a' + level - 1) as char;
            let name = (b'a' + level) as char;
            text.push_str(&format!(
                "{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
        }
        let started = std::time::Instant::now();
        let error = parse(&text, "bomb.yaml", None).unwrap_err();
        assert!(matches!(error, ManifestError::Yaml { .. }), "{error}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}

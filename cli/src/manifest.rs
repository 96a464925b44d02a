//! Reads MapChaos manifests: the same YAML a user applies to a cluster. Other
//! kinds in the file are skipped with a note; a bad field is reported by its
//! path.

use std::path::Path;

use mapchaos_api::spec::MapChaosSpec;
use serde_json::Value;

/// The API group/version and kind `mapchaos run` accepts.
pub const API_VERSION: &str = "mapchaos.io/v1alpha1";
pub const KIND: &str = "MapChaos";

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
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: shown.clone(),
        source,
    })?;
    parse(&text, &shown, name)
}

/// Parse manifest text (`path` is only for messages).
pub fn parse(text: &str, path: &str, name: Option<&str>) -> Result<Manifest, ManifestError> {
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| ManifestError::Yaml {
            path: path.to_owned(),
            message: e.to_string(),
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
        if let Some(version) = document["apiVersion"].as_str()
            && version != API_VERSION
        {
            notes.push(format!(
                "{KIND}/{doc_name} has apiVersion {version}; reading it as {API_VERSION}"
            ));
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
    let spec_value = document
        .get("spec")
        .cloned()
        .unwrap_or(Value::Object(Default::default()));
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
}

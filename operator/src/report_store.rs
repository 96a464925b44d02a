//! The edges of report collection (see `reports` for what is collected):
//! list an experiment's report Secrets, fetch a finished storm's page from
//! its sidecar (signed; trimmed to fewer timelines until it fits a Secret),
//! write it owned by the MapChaos, and delete the Secrets of pruned runs.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use mapchaos_api::MapChaos;

use crate::error::Error;
use crate::reports::{
    Collect, DATA_KEY, EXPERIMENT_LABEL, EXPERIMENT_UID_LABEL, KIND_LABEL, KIND_REPORT,
    MAX_COMPRESSED_BYTES, PHASE_ANNOTATION, POD_ANNOTATION, RUN_LABEL, STORM_ANNOTATION,
    StoredReport, TARGET_LABEL, TRIM_STEPS, TRIMMED_ANNOTATION, VERDICT_ANNOTATION, gzip,
};
use crate::storm_client::StormClient;

/// The label selector of an experiment's report Secrets.
pub fn selector(experiment_uid: &str) -> String {
    format!("{KIND_LABEL}={KIND_REPORT},{EXPERIMENT_UID_LABEL}={experiment_uid}")
}

/// The report Secrets of `experiment`.
pub async fn list(
    client: &Client,
    namespace: &str,
    experiment_uid: &str,
) -> Result<Vec<StoredReport>, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let list = api
        .list_metadata(&ListParams::default().labels(&selector(experiment_uid)))
        .await?;
    Ok(list
        .items
        .iter()
        .map(|s| StoredReport {
            name: s.name_any(),
            run: s.labels().get(RUN_LABEL).and_then(|r| r.parse().ok()),
        })
        .collect())
}

/// What became of one collection.
#[derive(Debug)]
pub enum Collected {
    /// The Secret was written (or already there).
    Stored,
    /// The sidecar no longer has the report (or never had one): 4xx.
    Gone(String),
    /// It may work next time (the sidecar or API server did not answer).
    Retry(String),
}

/// Fetch `work`'s page and store it in its Secret.
pub async fn collect(
    client: &Client,
    storms: &StormClient,
    experiment: &MapChaos,
    work: &Collect,
) -> Collected {
    let (compressed, trimmed) = match fetch_fitting(storms, work).await {
        Ok(found) => found,
        Err(Error::StormRefused {
            status, message, ..
        }) if (400..500).contains(&status) => return Collected::Gone(message),
        Err(error) => return Collected::Retry(error.to_string()),
    };
    let Some(namespace) = experiment.namespace() else {
        return Collected::Gone("the MapChaos has no namespace".into());
    };
    let secret = secret_of(experiment, work, compressed, trimmed);
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Collected::Stored,
        Err(kube::Error::Api(status)) if status.code == 409 => Collected::Stored,
        Err(error) => Collected::Retry(error.to_string()),
    }
}

/// The page, compressed, with as many timelines as fit
/// [`MAX_COMPRESSED_BYTES`]; the cap it was trimmed to, if it was.
async fn fetch_fitting(
    storms: &StormClient,
    work: &Collect,
) -> Result<(Vec<u8>, Option<usize>), Error> {
    let whole = storms
        .get_report(&work.endpoint, &work.storm_id, None)
        .await?;
    let compressed = gzip(&whole);
    if compressed.len() <= MAX_COMPRESSED_BYTES {
        return Ok((compressed, None));
    }
    let mut smallest = compressed;
    let mut cap = None;
    for step in TRIM_STEPS {
        let page = storms
            .get_report(&work.endpoint, &work.storm_id, Some(step))
            .await?;
        smallest = gzip(&page);
        cap = Some(step);
        if smallest.len() <= MAX_COMPRESSED_BYTES {
            break;
        }
    }
    if smallest.len() > MAX_COMPRESSED_BYTES {
        return Err(Error::StormRefused {
            method: "GET",
            url: format!("/v1/storms/{}/report", work.storm_id),
            status: 413,
            message: format!(
                "the report is {} bytes compressed even without timelines, over the {MAX_COMPRESSED_BYTES} a Secret may hold",
                smallest.len()
            ),
        });
    }
    Ok((smallest, cap))
}

/// A label value, if `value` can be one (at most 63 characters).
fn label_value(value: &str) -> Option<String> {
    (value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
    .then(|| value.to_owned())
}

/// The Secret holding `work`'s report: owned by the MapChaos, labelled
/// with its uid, name, run and target.
pub fn secret_of(
    experiment: &MapChaos,
    work: &Collect,
    compressed: Vec<u8>,
    trimmed: Option<usize>,
) -> Secret {
    let uid = experiment.uid().unwrap_or_default();
    let mut labels = BTreeMap::from([
        (KIND_LABEL.to_owned(), KIND_REPORT.to_owned()),
        (EXPERIMENT_UID_LABEL.to_owned(), uid.clone()),
        (RUN_LABEL.to_owned(), work.run.to_string()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "mapchaos".to_owned(),
        ),
    ]);
    if let Some(name) = label_value(&experiment.name_any()) {
        labels.insert(EXPERIMENT_LABEL.to_owned(), name);
    }
    if let Some(pod) = label_value(&work.target.pod) {
        labels.insert(TARGET_LABEL.to_owned(), pod);
    }
    let target = &work.target;
    let mut annotations = BTreeMap::from([
        (
            POD_ANNOTATION.to_owned(),
            format!("{}/{}", target.namespace, target.pod),
        ),
        (STORM_ANNOTATION.to_owned(), work.storm_id.clone()),
        (PHASE_ANNOTATION.to_owned(), format!("{:?}", target.phase)),
    ]);
    if let Some(verdict) = target.verdict {
        annotations.insert(VERDICT_ANNOTATION.to_owned(), format!("{verdict:?}"));
    }
    if let Some(cap) = trimmed {
        annotations.insert(TRIMMED_ANNOTATION.to_owned(), cap.to_string());
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(work.secret.clone()),
            namespace: experiment.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            // Not blockOwnerDeletion: that needs rights on the MapChaos's
            // finalizers the operator has no other use for.
            owner_references: Some(vec![OwnerReference {
                api_version: MapChaos::api_version(&()).into_owned(),
                kind: MapChaos::kind(&()).into_owned(),
                name: experiment.name_any(),
                uid,
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..ObjectMeta::default()
        },
        type_: Some("mapchaos.io/storm-report".to_owned()),
        data: Some(BTreeMap::from([(
            DATA_KEY.to_owned(),
            ByteString(compressed),
        )])),
        ..Secret::default()
    }
}

/// Delete the Secrets of pruned runs; one that is gone already is fine.
pub async fn prune(client: &Client, namespace: &str, names: &[String]) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for name in names {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::json;

use super::*;

const PUBLIC_KEY: &str = "5d15367514a7e597bdce5cf17d4e932c2b2e0477ea37685bd0ba91c80437140e";

fn sidecar() -> SidecarTemplate {
    SidecarTemplate {
        image: "ghcr.io/mapchaos/mapchaos:0.1.0".into(),
        image_pull_policy: Some("IfNotPresent".into()),
        resources: ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("50m".into())),
                ("memory".to_owned(), Quantity("64Mi".into())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity("512Mi".into()),
            )])),
            ..ResourceRequirements::default()
        },
        operator_public_key: PUBLIC_KEY.into(),
    }
}

/// The container the webhook must add, written out by hand.
fn expected_container() -> Value {
    json!({
        "name": "mapchaos-sidecar",
        "image": "ghcr.io/mapchaos/mapchaos:0.1.0",
        "imagePullPolicy": "IfNotPresent",
        "args": ["sidecar", "--http-addr", "0.0.0.0:9464"],
        "env": [
            {"name": "MAPCHAOS_OPERATOR_PUBLIC_KEY", "value": PUBLIC_KEY},
            // The sidecar's pod, from the downward API: signed storm
            // requests are bound to it.
            {"name": "MAPCHAOS_POD_NAMESPACE",
             "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}},
            {"name": "MAPCHAOS_POD_NAME",
             "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
            {"name": "MAPCHAOS_POD_UID",
             "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.uid"}}}
        ],
        "ports": [{"name": "mapchaos-http", "containerPort": 9464, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "mapchaos-http"},
            "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 3
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "mapchaos-http"},
            "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3
        },
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"memory": "512Mi"}
        },
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}
        }
    })
}

fn pod(metadata: Value, containers: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": containers}
    })
}

fn app_container() -> Value {
    json!([{"name": "app", "image": "shop/cart:1"}])
}

fn admission_review(operation: &str, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": object,
            "oldObject": null,
            "dryRun": false
        }
    }))
    .unwrap()
}

/// The response as the API server reads it: allowed, the uid echoed, and the
/// JSON patch (if any) decoded.
fn answer(body: &[u8]) -> (Value, Option<Patch>) {
    let review = review(body, &sidecar()).unwrap();
    let text = serde_json::to_value(&review).unwrap();
    let response = review.response.expect("a response");
    assert!(response.allowed, "never denied: {text}");
    assert_eq!(response.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(text["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(text["kind"], "AdmissionReview");
    let patch = response.patch.map(|bytes| {
        assert_eq!(text["response"]["patchType"], "JSONPatch");
        serde_json::from_slice::<Patch>(&bytes).unwrap()
    });
    (text, patch)
}

fn applied(mut object: Value, patch: &Patch) -> Value {
    json_patch::patch(&mut object, patch).unwrap();
    object
}

#[test]
fn a_labelled_pod_gets_the_sidecar_its_label_and_the_injected_annotation() {
    let object = pod(
        json!({
            "generateName": "cart-7d9f-",
            "namespace": "shop",
            "labels": {"app": "cart", "mapchaos.io/inject": "true"},
            "annotations": {"team": "checkout"}
        }),
        app_container(),
    );
    let (_, patch) = answer(&admission_review("CREATE", object.clone()));
    let patch = patch.expect("a patch");
    assert_eq!(
        serde_json::to_value(&patch).unwrap(),
        json!([
            {"op": "add", "path": "/spec/containers/-", "value": expected_container()},
            {"op": "add", "path": "/metadata/labels/mapchaos.io~1sidecar", "value": "true"},
            {"op": "add", "path": "/metadata/annotations/mapchaos.io~1injected", "value": "true"}
        ])
    );
    let patched = applied(object, &patch);
    assert_eq!(
        patched["metadata"]["labels"],
        json!({"app": "cart", "mapchaos.io/inject": "true", "mapchaos.io/sidecar": "true"})
    );
    assert_eq!(
        patched["metadata"]["annotations"],
        json!({"team": "checkout", "mapchaos.io/injected": "true"})
    );
    assert_eq!(
        patched["spec"]["containers"],
        json!([{"name": "app", "image": "shop/cart:1"}, expected_container()])
    );
}

#[test]
fn a_pod_without_labels_or_annotations_gets_both_maps_created() {
    // Sent because its namespace is labelled mapchaos.io/inject: "true".
    let object = pod(
        json!({"name": "cart", "namespace": "shop"}),
        app_container(),
    );
    let (_, patch) = answer(&admission_review("CREATE", object.clone()));
    let patch = patch.expect("a patch");
    let ops = serde_json::to_value(&patch).unwrap();
    assert_eq!(
        ops[1],
        json!({"op": "add", "path": "/metadata/labels", "value": {"mapchaos.io/sidecar": "true"}})
    );
    assert_eq!(
        ops[2],
        json!({"op": "add", "path": "/metadata/annotations", "value": {"mapchaos.io/injected": "true"}})
    );
    let patched = applied(object, &patch);
    assert_eq!(
        patched["metadata"]["labels"],
        json!({"mapchaos.io/sidecar": "true"})
    );
    assert_eq!(
        patched["metadata"]["annotations"],
        json!({"mapchaos.io/injected": "true"})
    );
    assert_eq!(patched["spec"]["containers"][1], expected_container());
}

#[test]
fn a_pod_that_already_has_the_sidecar_gets_no_patch() {
    let object = pod(
        json!({"name": "cart", "labels": {"mapchaos.io/inject": "true"}}),
        json!([{"name": "app", "image": "shop/cart:1"}, {"name": "mapchaos-sidecar", "image": "x"}]),
    );
    let (text, patch) = answer(&admission_review("CREATE", object));
    assert!(patch.is_none(), "{text}");
    assert!(text["response"].get("patchType").is_none(), "{text}");

    // A native sidecar (an init container) counts too.
    let mut native = pod(json!({"name": "cart"}), app_container());
    native["spec"]["initContainers"] =
        json!([{"name": "mapchaos-sidecar", "image": "x", "restartPolicy": "Always"}]);
    assert!(answer(&admission_review("CREATE", native)).1.is_none());
}

#[test]
fn injecting_the_patched_pod_again_changes_nothing() {
    let object = pod(json!({"name": "cart"}), app_container());
    let patch = answer(&admission_review("CREATE", object.clone()))
        .1
        .unwrap();
    let once = applied(object, &patch);
    assert!(answer(&admission_review("CREATE", once)).1.is_none());
}

#[test]
fn a_pod_that_opts_out_gets_no_patch() {
    for metadata in [
        json!({"name": "cart", "annotations": {"mapchaos.io/inject": "false"}}),
        json!({"name": "cart", "labels": {"mapchaos.io/inject": "false"}}),
    ] {
        let (text, patch) = answer(&admission_review(
            "CREATE",
            pod(metadata.clone(), app_container()),
        ));
        assert!(patch.is_none(), "{metadata}: {text}");
    }
}

#[test]
fn only_creates_are_patched() {
    let object = pod(json!({"name": "cart"}), app_container());
    let (_, patch) = answer(&admission_review("UPDATE", object));
    assert!(patch.is_none());
}

#[test]
fn an_unreadable_object_is_admitted_without_a_patch() {
    // `spec.containers` of the wrong type: the handler cannot read the Pod.
    let object = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": 7}});
    let (text, patch) = answer(&admission_review("CREATE", object));
    assert!(patch.is_none(), "{text}");
}

#[test]
fn a_body_that_is_no_admission_review_is_an_error() {
    assert!(
        review(b"{}", &sidecar())
            .unwrap_err()
            .contains("request.uid")
    );
    assert!(
        review(b"nope", &sidecar())
            .unwrap_err()
            .contains("not JSON")
    );
}

#[test]
fn the_sidecar_passes_the_restricted_pod_security_checks() {
    let context = sidecar_container(&sidecar()).security_context.unwrap();
    assert_eq!(context.run_as_non_root, Some(true));
    assert_ne!(context.run_as_user, Some(0));
    assert_eq!(context.allow_privilege_escalation, Some(false));
    assert_eq!(
        context.capabilities.unwrap().drop,
        Some(vec!["ALL".to_owned()])
    );
    assert_eq!(context.seccomp_profile.unwrap().type_, "RuntimeDefault");
}

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/webhook/testdata")
        .join(name)
}

#[test]
fn a_missing_or_mismatched_certificate_is_an_error_naming_the_file() {
    let missing = tls_config(Path::new("/nonexistent/tls.crt"), &testdata("tls.key")).unwrap_err();
    assert_eq!(missing.metric_label(), "webhook");
    assert!(
        missing.to_string().contains("/nonexistent/tls.crt"),
        "{missing}"
    );
    // The CA certificate does not belong to the serving key.
    let mismatched = tls_config(&testdata("ca.crt"), &testdata("tls.key")).unwrap_err();
    assert!(mismatched.to_string().contains("ca.crt"), "{mismatched}");
}

/// The whole server: TLS with the mounted certificate, POST /mutate, an
/// AdmissionReview back with the patch. The test client trusts only the CA
/// that signed the serving certificate, as the API server trusts caBundle.
#[tokio::test]
async fn serves_admission_reviews_over_tls() {
    use http_body_util::{BodyExt, Full};
    use tokio_rustls::TlsConnector;
    use tokio_rustls::rustls::pki_types::ServerName;
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    let addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let config = WebhookConfig {
        addr,
        cert_file: testdata("tls.crt"),
        key_file: testdata("tls.key"),
        image: "ghcr.io/mapchaos/mapchaos:0.1.0".into(),
        image_pull_policy: Some("IfNotPresent".into()),
        resources: sidecar().resources,
    };
    let shutdown = CancellationToken::new();
    let admission = Arc::new(AdmissionState {
        cluster: Arc::new(Refusing),
        guardrails: crate::policy::Guardrails::default(),
    });
    let server = serve(&config, PUBLIC_KEY.into(), admission, shutdown.clone())
        .await
        .unwrap();

    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(testdata("ca.crt")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = TlsConnector::from(Arc::new(client))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);

    let object = pod(
        json!({"name": "cart", "labels": {"mapchaos.io/inject": "true"}}),
        app_container(),
    );
    let request = axum::http::Request::post(MUTATE_PATH)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(admission_review("CREATE", object))))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let review: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["response"]["allowed"], true);
    assert_eq!(review["response"]["patchType"], "JSONPatch");
    // A base64 string, as the API server decodes a []byte.
    let patch: ByteString =
        serde_json::from_value(review["response"]["patch"].clone()).expect("the patch is base64");
    let patch: Patch = serde_json::from_slice(&patch.0).unwrap();
    assert_eq!(
        serde_json::to_value(&patch).unwrap()[0]["value"],
        expected_container()
    );

    // The MapChaos admission webhooks on the same server and connection.
    let mapchaos = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "7c1d",
            "kind": {"group": "mapchaos.io", "version": "v1alpha1", "kind": "MapChaos"},
            "resource": {"group": "mapchaos.io", "version": "v1alpha1", "resource": "mapchaos"},
            "name": "storm",
            "namespace": "team-a",
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": {"apiVersion": "mapchaos.io/v1alpha1", "kind": "MapChaos",
                "metadata": {"name": "storm", "namespace": "team-a"}, "spec": {}},
            "oldObject": null
        }
    });
    for (path, allowed) in [
        (crate::admission::VALIDATE_PATH, false),
        (crate::admission::STAMP_PATH, true),
    ] {
        let request = axum::http::Request::post(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                serde_json::to_vec(&mapchaos).unwrap(),
            )))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let review: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(review["response"]["uid"], "7c1d", "{path}: {review}");
        assert_eq!(review["response"]["allowed"], allowed, "{path}: {review}");
        if !allowed {
            let message = review["response"]["status"]["message"].as_str().unwrap();
            assert!(
                message.contains("\"alice\"") && message.contains("team-a"),
                "{message}"
            );
        } else {
            assert_eq!(review["response"]["patchType"], "JSONPatch", "{review}");
        }
    }

    shutdown.cancel();
    server.await.unwrap();
}

/// An API server whose authorizer allows nothing.
struct Refusing;

impl crate::admission::Cluster for Refusing {
    fn review_access(
        &self,
        _: k8s_openapi::api::authorization::v1::SubjectAccessReview,
    ) -> futures::future::BoxFuture<
        '_,
        Result<k8s_openapi::api::authorization::v1::SubjectAccessReviewStatus, String>,
    > {
        Box::pin(async { Ok(Default::default()) })
    }

    fn namespace(
        &self,
        _: String,
    ) -> futures::future::BoxFuture<'_, Result<Option<crate::policy::NamespaceFacts>, String>> {
        Box::pin(async { Ok(None) })
    }
}

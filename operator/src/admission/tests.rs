//! The MapChaos admission decisions and stamps, one behaviour per test, and
//! the handler over a scripted API server (no cluster).

use std::collections::BTreeSet;

use parking_lot::Mutex;
use serde_json::json;

use super::*;
use crate::policy::{EXISTING_KEYS_ANNOTATION, STORMS_ALLOWED, STORMS_LABEL};

const UID: &str = "705ab4f5-6393-11e8-b7cc-42010a800002";

fn spec(value: Value) -> MapChaosSpec {
    serde_json::from_value(value).unwrap()
}

fn alice() -> UserInfo {
    UserInfo {
        username: Some("alice".into()),
        groups: Some(vec!["team-a-devs".into(), "system:authenticated".into()]),
        uid: Some("uid-alice".into()),
        extra: Some([("scopes.example.com".to_owned(), vec!["storms".to_owned()])].into()),
    }
}

fn object(spec: Value, annotations: Value) -> Value {
    let mut metadata = json!({"name": "storm", "namespace": "team-a"});
    if !annotations.is_null() {
        metadata["annotations"] = annotations;
    }
    json!({
        "apiVersion": "mapchaos.io/v1alpha1",
        "kind": "MapChaos",
        "metadata": metadata,
        "spec": spec,
    })
}

fn body(operation: &str, user: &str, object: Value, old: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": UID,
            "kind": {"group": "mapchaos.io", "version": "v1alpha1", "kind": "MapChaos"},
            "resource": {"group": "mapchaos.io", "version": "v1alpha1", "resource": "mapchaos"},
            "name": "storm",
            "namespace": "team-a",
            "operation": operation,
            "userInfo": {
                "username": user,
                "uid": format!("uid-{user}"),
                "groups": ["system:authenticated"],
                "extra": {"scopes.example.com": ["storms"]}
            },
            "object": object,
            "oldObject": old,
            "dryRun": false
        }
    }))
    .unwrap()
}

fn request(body: &[u8]) -> AdmissionRequest<MapChaos> {
    request_of(serde_json::from_slice(body).unwrap()).unwrap()
}

fn review(namespaces: &[&str], verb: Verb, check_policy: bool) -> Review {
    Review {
        verb,
        user: alice(),
        namespaces: namespaces.iter().map(|n| (*n).to_owned()).collect(),
        check_policy,
        spec: spec(json!({})),
    }
}

fn labelled() -> Option<NamespaceFacts> {
    Some(NamespaceFacts {
        labels: [(STORMS_LABEL.to_owned(), STORMS_ALLOWED.to_owned())].into(),
        ..NamespaceFacts::default()
    })
}

fn guardrails() -> Guardrails {
    Guardrails {
        require_namespace_label: true,
        operator_namespace: Some("mapchaos-system".into()),
        ..Guardrails::default()
    }
}

fn answers(access: &[(&str, Access)], namespaces: &[(&str, Option<NamespaceFacts>)]) -> Answers {
    Answers {
        access: access
            .iter()
            .map(|(n, a)| ((*n).to_owned(), a.clone()))
            .collect(),
        namespaces: namespaces
            .iter()
            .map(|(n, f)| ((*n).to_owned(), Ok(f.clone())))
            .collect(),
    }
}

#[test]
fn an_experiment_without_namespaces_reaches_only_its_own() {
    assert_eq!(reachable_namespaces(&spec(json!({})), "team-a"), ["team-a"]);
}

#[test]
fn selector_namespaces_and_the_keys_of_selector_pods_are_all_reached() {
    let namespaces = spec(json!({"selector": {"namespaces": ["team-c", "team-b", "team-c"]}}));
    assert_eq!(
        reachable_namespaces(&namespaces, "team-a"),
        ["team-b", "team-c"],
        "the own namespace is not added when namespaces are named"
    );
    let pods = spec(json!({"selector": {"pods": {"team-b": ["cart-0"], "team-d": ["x"]}}}));
    assert_eq!(reachable_namespaces(&pods, "team-a"), ["team-b", "team-d"]);
    let both =
        spec(json!({"selector": {"namespaces": ["team-a"], "pods": {"team-b": ["cart-0"]}}}));
    assert_eq!(
        reachable_namespaces(&both, "team-a"),
        ["team-a", "team-b"],
        "both lists are checked, whichever the selector uses"
    );
}

#[test]
fn the_access_review_asks_for_the_crd_plural_and_group_with_the_whole_user() {
    let crd = mapchaos_api::resource::crd();
    let question = access_review(&alice(), Verb::Update, "team-b");
    let attributes = question.spec.resource_attributes.clone().unwrap();
    assert_eq!(attributes.group.as_deref(), Some(crd.spec.group.as_str()));
    assert_eq!(
        attributes.resource.as_deref(),
        Some(crd.spec.names.plural.as_str())
    );
    assert_eq!(attributes.resource.as_deref(), Some("mapchaos"));
    assert_eq!(attributes.verb.as_deref(), Some("update"));
    assert_eq!(attributes.namespace.as_deref(), Some("team-b"));
    assert_eq!(attributes.name, None);
    let user = alice();
    assert_eq!(question.spec.user, user.username);
    assert_eq!(question.spec.groups, user.groups);
    assert_eq!(question.spec.uid, user.uid);
    assert_eq!(question.spec.extra, user.extra);
    assert_eq!(
        access_review(&alice(), Verb::Create, "team-a")
            .spec
            .resource_attributes
            .unwrap()
            .verb
            .as_deref(),
        Some("create")
    );
}

#[test]
fn a_create_is_checked_as_create_with_the_guardrails() {
    let create = body(
        "CREATE",
        "alice",
        object(json!({"selector": {"namespaces": ["team-b"]}}), Value::Null),
        Value::Null,
    );
    let Scope::Check(review) = scope(&request(&create)).unwrap() else {
        panic!("a create is checked");
    };
    assert_eq!(review.verb, Verb::Create);
    assert_eq!(review.namespaces, ["team-b"]);
    assert!(review.check_policy);
    assert_eq!(review.user.username.as_deref(), Some("alice"));
}

#[test]
fn an_update_is_checked_as_update_and_its_guardrails_only_when_the_spec_changes() {
    let old = object(json!({}), Value::Null);
    let grown = body(
        "UPDATE",
        "alice",
        object(
            json!({"selector": {"namespaces": ["team-a", "team-b"]}}),
            Value::Null,
        ),
        old.clone(),
    );
    let Scope::Check(review) = scope(&request(&grown)).unwrap() else {
        panic!("a spec change is checked");
    };
    assert_eq!(review.verb, Verb::Update);
    assert_eq!(review.namespaces, ["team-a", "team-b"]);
    assert!(review.check_policy);

    // A resume (the pause annotation removed) starts storms: access is
    // checked, but the spec was checked when it was written.
    let paused = object(json!({}), json!({"mapchaos.io/pause": "true"}));
    let resumed = body("UPDATE", "alice", old.clone(), paused);
    let Scope::Check(review) = scope(&request(&resumed)).unwrap() else {
        panic!("an annotation change is checked");
    };
    assert!(!review.check_policy);
}

#[test]
fn finalizer_only_updates_deletions_and_deletes_pass_unchecked() {
    let old = object(json!({}), json!({"mapchaos.io/created-by": "alice"}));
    let mut finalized = old.clone();
    finalized["metadata"]["finalizers"] = json!(["mapchaos.io/storms"]);
    let operator = body(
        "UPDATE",
        "system:serviceaccount:mapchaos-system:mapchaos",
        finalized.clone(),
        old.clone(),
    );
    assert!(matches!(
        scope(&request(&operator)).unwrap(),
        Scope::Pass(_)
    ));

    let mut deleting = object(
        json!({"selector": {"namespaces": ["kube-system"]}}),
        Value::Null,
    );
    deleting["metadata"]["deletionTimestamp"] = json!("2026-05-01T12:00:00Z");
    let release = body("UPDATE", "mallory", deleting, finalized);
    assert!(matches!(scope(&request(&release)).unwrap(), Scope::Pass(_)));

    let delete = body("DELETE", "alice", Value::Null, old);
    assert!(matches!(scope(&request(&delete)).unwrap(), Scope::Pass(_)));
}

#[test]
fn a_change_of_the_stamps_alone_is_no_change() {
    let old = object(json!({}), json!({"mapchaos.io/created-by": "alice"}));
    let forged = object(
        json!({}),
        json!({"mapchaos.io/created-by": "root", "mapchaos.io/updated-by": "root"}),
    );
    let old: MapChaos = serde_json::from_value(old).unwrap();
    let forged: MapChaos = serde_json::from_value(forged).unwrap();
    assert!(!changes_experiment(&old, &forged));
    let mut labelled = old.clone();
    labelled.metadata.labels = Some([("team".to_owned(), "a".to_owned())].into());
    assert!(changes_experiment(&old, &labelled));
}

#[test]
fn access_in_every_reached_labelled_namespace_admits() {
    let review = review(&["team-a", "team-b"], Verb::Create, true);
    let answers = answers(
        &[("team-a", Access::Allowed), ("team-b", Access::Allowed)],
        &[("team-a", labelled()), ("team-b", labelled())],
    );
    assert_eq!(decide(&review, &answers, &guardrails()), Ok(()));
}

#[test]
fn a_denied_namespace_refuses_naming_the_user_the_verb_and_the_namespace() {
    for verb in [Verb::Create, Verb::Update] {
        let review = review(&["team-a", "team-b"], verb, true);
        let answers = answers(
            &[
                ("team-a", Access::Allowed),
                ("team-b", Access::Denied("no RBAC rule allows it".into())),
            ],
            &[("team-a", labelled()), ("team-b", labelled())],
        );
        let message = decide(&review, &answers, &guardrails()).unwrap_err();
        assert!(message.contains("\"alice\""), "{message}");
        assert!(
            message.contains(&format!("may not {} mapchaos.io/mapchaos", verb.as_str())),
            "{message}"
        );
        assert!(message.contains("namespace \"team-b\""), "{message}");
        assert!(message.contains("no RBAC rule allows it"), "{message}");
    }
}

#[test]
fn an_unanswered_or_failed_access_review_refuses() {
    let review = review(&["team-a", "team-b"], Verb::Create, false);
    let failed = answers(
        &[
            ("team-a", Access::Allowed),
            ("team-b", Access::Unknown("connection refused".into())),
        ],
        &[],
    );
    let message = decide(&review, &failed, &guardrails()).unwrap_err();
    assert!(
        message.contains("team-b") && message.contains("connection refused"),
        "{message}"
    );
    let missing = answers(&[("team-a", Access::Allowed)], &[]);
    assert!(
        decide(&review, &missing, &guardrails())
            .unwrap_err()
            .contains("team-b")
    );
}

#[test]
fn an_access_review_status_is_read_as_the_authorizer_meant_it() {
    let status = |allowed, denied, reason: &str, error: &str| SubjectAccessReviewStatus {
        allowed,
        denied,
        reason: (!reason.is_empty()).then(|| reason.to_owned()),
        evaluation_error: (!error.is_empty()).then(|| error.to_owned()),
    };
    assert_eq!(Access::from(status(true, None, "", "")), Access::Allowed);
    assert_eq!(
        Access::from(status(true, Some(true), "denied by policy", "")),
        Access::Denied("denied by policy".into()),
        "an explicit deny wins"
    );
    assert_eq!(
        Access::from(status(false, None, "", "")),
        Access::Denied(String::new())
    );
    assert_eq!(
        Access::from(status(false, None, "", "webhook authorizer down")),
        Access::Unknown("webhook authorizer down".into())
    );
}

#[test]
fn an_unlabelled_protected_or_missing_namespace_refuses_at_admission() {
    let cases = [
        (
            "team-b",
            Some(NamespaceFacts::default()),
            "mapchaos.io/storms=allowed",
        ),
        ("kube-system", labelled(), "protected"),
        ("mapchaos-system", labelled(), "operator's own namespace"),
        ("ghost", None, "does not exist"),
    ];
    for (namespace, facts, expected) in cases {
        let review = review(&[namespace], Verb::Create, true);
        let answers = answers(&[(namespace, Access::Allowed)], &[(namespace, facts)]);
        let message = decide(&review, &answers, &guardrails()).unwrap_err();
        assert!(message.contains(namespace), "{message}");
        assert!(message.contains(expected), "{message}");
    }
}

#[test]
fn existing_keys_are_refused_where_the_namespace_forbids_them() {
    let mut review = review(&["team-a"], Verb::Create, true);
    review.spec = spec(json!({"storm": {"keys": {"source": "existing", "pattern": "cart:*"}}}));
    let mut facts = labelled().unwrap();
    facts
        .annotations
        .insert(EXISTING_KEYS_ANNOTATION.into(), "forbidden".into());
    let answers = answers(&[("team-a", Access::Allowed)], &[("team-a", Some(facts))]);
    let message = decide(&review, &answers, &guardrails()).unwrap_err();
    assert!(message.contains(EXISTING_KEYS_ANNOTATION), "{message}");
}

#[test]
fn without_a_spec_change_the_guardrails_are_not_asked() {
    let review = review(&["team-b"], Verb::Update, false);
    let answers = answers(&[("team-b", Access::Allowed)], &[]);
    assert_eq!(decide(&review, &answers, &guardrails()), Ok(()));
}

#[test]
fn a_namespace_that_cannot_be_read_refuses() {
    let review = review(&["team-a"], Verb::Create, true);
    let mut answers = answers(&[("team-a", Access::Allowed)], &[]);
    answers
        .namespaces
        .insert("team-a".into(), Err("forbidden".into()));
    let message = decide(&review, &answers, &guardrails()).unwrap_err();
    assert!(
        message.contains("team-a") && message.contains("forbidden"),
        "{message}"
    );
}

#[test]
fn an_experiment_reaching_too_many_namespaces_refuses_naming_the_limit() {
    let names: Vec<String> = (0..=MAX_NAMESPACES).map(|i| format!("ns-{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let review = review(&names, Verb::Create, true);
    let message = decide(&review, &Answers::default(), &guardrails()).unwrap_err();
    assert!(message.contains(&MAX_NAMESPACES.to_string()), "{message}");
}

fn patched(body: &[u8]) -> Option<Value> {
    let request = request(body);
    let patch = stamp(&request)?;
    let mut object = serde_json::to_value(request.object.unwrap()).unwrap();
    json_patch::patch(&mut object, &patch).unwrap();
    Some(object["metadata"]["annotations"].clone())
}

#[test]
fn a_create_is_stamped_with_its_user_creating_the_annotations() {
    let create = body(
        "CREATE",
        "alice",
        object(json!({}), Value::Null),
        Value::Null,
    );
    assert_eq!(
        patched(&create).unwrap(),
        json!({"mapchaos.io/created-by": "alice"})
    );
}

#[test]
fn stamps_written_by_the_user_on_create_are_overwritten() {
    let forged = object(
        json!({}),
        json!({"team": "a", "mapchaos.io/created-by": "bob", "mapchaos.io/updated-by": "bob"}),
    );
    let create = body("CREATE", "alice", forged, Value::Null);
    assert_eq!(
        patched(&create).unwrap(),
        json!({"team": "a", "mapchaos.io/created-by": "alice"})
    );
}

#[test]
fn an_update_keeps_the_creator_and_names_the_updater() {
    let old = object(json!({}), json!({"mapchaos.io/created-by": "alice"}));
    let new = object(
        json!({"duration": "30s"}),
        json!({"mapchaos.io/created-by": "carol"}),
    );
    let update = body("UPDATE", "bob", new, old);
    assert_eq!(
        patched(&update).unwrap(),
        json!({"mapchaos.io/created-by": "alice", "mapchaos.io/updated-by": "bob"})
    );
}

#[test]
fn forging_the_stamps_alone_is_undone() {
    let old = object(
        json!({}),
        json!({"mapchaos.io/created-by": "alice", "mapchaos.io/updated-by": "bob"}),
    );
    let new = object(
        json!({}),
        json!({"mapchaos.io/created-by": "mallory", "mapchaos.io/updated-by": "mallory"}),
    );
    let update = body("UPDATE", "mallory", new, old);
    assert_eq!(
        patched(&update).unwrap(),
        json!({"mapchaos.io/created-by": "alice", "mapchaos.io/updated-by": "bob"})
    );
    // Removing them is undone too.
    let old = object(json!({}), json!({"mapchaos.io/created-by": "alice"}));
    let stripped = body("UPDATE", "mallory", object(json!({}), json!({})), old);
    assert_eq!(
        patched(&stripped).unwrap(),
        json!({"mapchaos.io/created-by": "alice"})
    );
}

#[test]
fn a_creator_cannot_be_invented_for_an_object_that_had_none() {
    let old = object(json!({}), Value::Null);
    let new = object(json!({}), json!({"mapchaos.io/created-by": "alice"}));
    let update = body("UPDATE", "mallory", new, old);
    assert_eq!(patched(&update).unwrap(), json!({}));
}

#[test]
fn the_operators_finalizer_write_changes_no_stamp() {
    let old = object(
        json!({}),
        json!({"mapchaos.io/created-by": "alice", "mapchaos.io/updated-by": "bob"}),
    );
    let mut finalized = old.clone();
    finalized["metadata"]["finalizers"] = json!(["mapchaos.io/storms"]);
    let update = body(
        "UPDATE",
        "system:serviceaccount:mapchaos-system:mapchaos",
        finalized,
        old,
    );
    assert_eq!(stamp(&request(&update)), None);
}

/// An API server whose authorizer allows exactly `allowed` (user, verb,
/// namespace) and which holds `namespaces`; it records every question.
#[derive(Default)]
struct ScriptedCluster {
    allowed: BTreeSet<(String, String, String)>,
    namespaces: BTreeMap<String, NamespaceFacts>,
    asked: Mutex<Vec<SubjectAccessReview>>,
    down: bool,
}

impl Cluster for ScriptedCluster {
    fn review_access(
        &self,
        review: SubjectAccessReview,
    ) -> BoxFuture<'_, Result<SubjectAccessReviewStatus, String>> {
        Box::pin(async move {
            if self.down {
                return Err("connection refused".into());
            }
            let attributes = review.spec.resource_attributes.clone().unwrap_or_default();
            let key = (
                review.spec.user.clone().unwrap_or_default(),
                attributes.verb.unwrap_or_default(),
                attributes.namespace.unwrap_or_default(),
            );
            let ok = attributes.group.as_deref() == Some("mapchaos.io")
                && attributes.resource.as_deref() == Some("mapchaos")
                && self.allowed.contains(&key);
            self.asked.lock().push(review);
            Ok(SubjectAccessReviewStatus {
                allowed: ok,
                reason: (!ok).then(|| "RBAC: no rule allows it".to_owned()),
                ..SubjectAccessReviewStatus::default()
            })
        })
    }

    fn namespace(&self, name: String) -> BoxFuture<'_, Result<Option<NamespaceFacts>, String>> {
        Box::pin(async move { Ok(self.namespaces.get(&name).cloned()) })
    }
}

fn alice_in_team_a() -> ScriptedCluster {
    ScriptedCluster {
        allowed: [("alice", "create", "team-a"), ("alice", "update", "team-a")]
            .iter()
            .map(|(u, v, n)| ((*u).to_owned(), (*v).to_owned(), (*n).to_owned()))
            .collect(),
        namespaces: [
            ("team-a".to_owned(), labelled().unwrap()),
            ("team-b".to_owned(), labelled().unwrap()),
        ]
        .into(),
        ..ScriptedCluster::default()
    }
}

fn state(cluster: ScriptedCluster) -> (AdmissionState, Arc<ScriptedCluster>) {
    let cluster = Arc::new(cluster);
    (
        AdmissionState {
            cluster: cluster.clone(),
            guardrails: guardrails(),
        },
        cluster,
    )
}

fn response(review: &AdmissionReview<DynamicObject>) -> Value {
    let text = serde_json::to_value(review).unwrap();
    assert_eq!(text["response"]["uid"], UID, "{text}");
    assert_eq!(text["apiVersion"], "admission.k8s.io/v1");
    text["response"].clone()
}

#[tokio::test]
async fn alice_is_admitted_in_her_namespace_and_refused_in_another() {
    let (state, cluster) = state(alice_in_team_a());
    let own = body(
        "CREATE",
        "alice",
        object(json!({}), Value::Null),
        Value::Null,
    );
    let answer = response(&validate(&own, &state).await.unwrap());
    assert_eq!(answer["allowed"], true, "{answer}");

    let other = body(
        "CREATE",
        "alice",
        object(
            json!({"selector": {"pods": {"team-b": ["cart-0"]}}}),
            Value::Null,
        ),
        Value::Null,
    );
    let answer = response(&validate(&other, &state).await.unwrap());
    assert_eq!(answer["allowed"], false, "{answer}");
    assert_eq!(answer["status"]["code"], 403, "{answer}");
    let message = answer["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("\"alice\"")
            && message.contains("create")
            && message.contains("\"team-b\""),
        "{message}"
    );
    let asked = cluster.asked.lock();
    assert_eq!(asked.len(), 2);
    assert_eq!(
        asked[1].spec.groups,
        Some(vec!["system:authenticated".to_owned()])
    );
    assert_eq!(asked[1].spec.uid.as_deref(), Some("uid-alice"));
    assert_eq!(
        asked[1].spec.extra,
        Some([("scopes.example.com".to_owned(), vec!["storms".to_owned()])].into())
    );
}

#[tokio::test]
async fn an_update_adding_a_namespace_is_asked_as_update_and_refused() {
    let (state, cluster) = state(alice_in_team_a());
    let update = body(
        "UPDATE",
        "alice",
        object(
            json!({"selector": {"namespaces": ["team-a", "team-b"]}}),
            Value::Null,
        ),
        object(json!({}), Value::Null),
    );
    let answer = response(&validate(&update, &state).await.unwrap());
    assert_eq!(answer["allowed"], false, "{answer}");
    let message = answer["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("may not update") && message.contains("team-b"),
        "{message}"
    );
    let verbs: BTreeSet<String> = cluster
        .asked
        .lock()
        .iter()
        .map(|r| r.spec.resource_attributes.clone().unwrap().verb.unwrap())
        .collect();
    assert_eq!(verbs, ["update".to_owned()].into());
}

#[tokio::test]
async fn an_api_server_that_cannot_answer_refuses_the_write() {
    let (state, _) = state(ScriptedCluster {
        down: true,
        ..alice_in_team_a()
    });
    let own = body(
        "CREATE",
        "alice",
        object(json!({}), Value::Null),
        Value::Null,
    );
    let answer = response(&validate(&own, &state).await.unwrap());
    assert_eq!(answer["allowed"], false, "{answer}");
    assert!(
        answer["status"]["message"]
            .as_str()
            .unwrap()
            .contains("connection refused")
    );
}

#[tokio::test]
async fn an_unreadable_mapchaos_is_refused_and_a_non_review_is_an_error() {
    let (state, _) = state(alice_in_team_a());
    let broken = body(
        "CREATE",
        "alice",
        json!({"apiVersion": "mapchaos.io/v1alpha1", "kind": "MapChaos", "metadata": {"name": "x"}, "spec": {"duration": 7}}),
        Value::Null,
    );
    let answer = response(&validate(&broken, &state).await.unwrap());
    assert_eq!(answer["allowed"], false, "{answer}");
    assert!(
        validate(b"{}", &state)
            .await
            .unwrap_err()
            .contains("request.uid")
    );
    assert!(
        validate(b"nope", &state)
            .await
            .unwrap_err()
            .contains("not JSON")
    );
    let answer = response(&stamp_review(&broken).unwrap());
    assert_eq!(answer["allowed"], false, "no MapChaos is written unstamped");
}

#[tokio::test]
async fn the_stamp_review_carries_the_patch_as_json_patch() {
    let create = body(
        "CREATE",
        "alice",
        object(json!({}), Value::Null),
        Value::Null,
    );
    let review = stamp_review(&create).unwrap();
    let wire = crate::webhook::wire(review);
    assert_eq!(wire["response"]["allowed"], true);
    assert_eq!(wire["response"]["patchType"], "JSONPatch");
    let bytes: k8s_openapi::ByteString =
        serde_json::from_value(wire["response"]["patch"].clone()).unwrap();
    let patch: Patch = serde_json::from_slice(&bytes.0).unwrap();
    assert_eq!(
        serde_json::to_value(&patch).unwrap(),
        json!([{"op": "add", "path": "/metadata/annotations", "value": {"mapchaos.io/created-by": "alice"}}])
    );
}

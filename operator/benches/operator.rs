//! The operator at scale (`cargo bench -p mapchaos-operator --bench operator`):
//!
//! 1. Time to storm: a MapChaos selecting 100 pods appears, and the real
//!    reconciler (finalizer, pod list, plan, 100 signed PUTs, Events, status)
//!    runs until every target's storm runs. Each pod has its own in-process
//!    sidecar (real control API and engine) on its own loopback address, one
//!    port for all, as pods share the sidecar port on their own IPs; the
//!    API server is the in-memory one of the controller's scenario tests.
//!    Operator, API and all 100 sidecars share this process and its cores,
//!    so this is an upper bound on the operator's own part.
//! 2. Watch-cache memory: what the controller keeps per object while it
//!    watches 1,000 MapChaos and 5,000 pods — the MapChaos reflector store
//!    and the watch streams' predicate caches, built with the same
//!    kube-runtime adapters as `controller::run` — counted by a counting
//!    global allocator (and RSS from /proc/self/statm as a cross-check).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::events::Reporter;
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use mapchaos_api::MapChaos;
use mapchaos_api::resource::{FINALIZER, TargetPhase};
use mapchaos_api::storm::StormPhase;
use mapchaos_operator::controller::{Context, experiment_trigger, pod_trigger, reconcile};
use mapchaos_operator::kill_switch::KillSwitch;
use mapchaos_operator::metrics::Metrics;
use mapchaos_operator::observe::SIDECAR_CONTAINER;
use mapchaos_operator::signing_key::StormSigner;
use mapchaos_operator::storm_client::StormClient;
use mapchaos_sidecar::engine::{Clock, MapEngine, ShardedEngine};
use serde_json::{Value, json};

#[allow(dead_code)]
#[path = "../src/controller/tests/fake_cluster.rs"]
mod fake_cluster;

use fake_cluster::{FakeApi, LoopbackSidecar};

/// Bytes the process holds from the allocator right now.
static ALLOCATED: AtomicIsize = AtomicIsize::new(0);

/// The system allocator, counting what is live.
struct Counting;

// The only unsafe code in the operator package: a GlobalAlloc must be an
// `unsafe impl`. It forwards to the system allocator unchanged.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const KEY_HEX: &str = "5c5e02bd42bf7e23effceeafacab694269bbe87e15c80ac852cffae8052b0127";
const NAMESPACE: &str = "shop";
const TARGETS: usize = 100;
const ROUNDS: usize = 5;
const EXPERIMENTS: usize = 1_000;
const PODS: usize = 5_000;

fn main() {
    // `cargo bench` passes `--bench`; a filter naming neither part runs both.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |part: &str| args.is_empty() || args.iter().any(|a| part.contains(a.as_str()));
    // Memory first, in a process that has not yet run 100 sidecars.
    if wants("watch_cache_memory") {
        watch_cache_memory();
    }
    if wants("time_to_storm") {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(time_to_storm());
    }
}

// ---- 1. time to storm ----------------------------------------------------

/// Milliseconds from the MapChaos appearing, per round.
struct Round {
    /// The reconcile that sent the storms returned (every PUT answered).
    sent: f64,
    /// Every sidecar reports its storm past preparing (workers on the map).
    storming: f64,
    /// A reconcile has confirmed every target Running in the status.
    confirmed: f64,
}

async fn time_to_storm() {
    let signer = StormSigner::parse(KEY_HEX).unwrap();
    let engines: Vec<Arc<dyn MapEngine>> = (0..TARGETS)
        .map(|_| Arc::new(ShardedEngine::new(1, Clock::System)) as Arc<dyn MapEngine>)
        .collect();
    let (port, sidecars) = fake_cluster::sidecars(30, engines, &signer.public_key_hex(), |i| {
        mapchaos_api::signing::PodIdentity::new(NAMESPACE, format!("cart-{i}"), uid_of_pod(i))
    })
    .await;
    let api = FakeApi::default();
    api.set_pods(
        sidecars
            .iter()
            .enumerate()
            .map(|(i, sidecar)| pod(NAMESPACE, &format!("cart-{i}"), &sidecar.ip, i))
            .collect(),
    );
    let ctx = Arc::new(Context::new(
        api.client(),
        StormClient::new(signer).with_port(port),
        Reporter {
            controller: "mapchaos-operator".into(),
            instance: Some("bench".into()),
        },
        Arc::new(Metrics::new()),
        KillSwitch::fixed(false),
    ));

    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        let name = format!("storm-{round}");
        let mut experiment = experiment(NAMESPACE, &name, round);
        experiment.metadata.finalizers = None;
        experiment.metadata.managed_fields = None;
        experiment.status = None;
        let appeared = Instant::now();
        api.put_experiment(experiment);
        let current = || Arc::new(api.experiment(NAMESPACE, &name).unwrap());

        reconcile(current(), ctx.clone()).await.expect("finalizer");
        assert_eq!(current().finalizers(), [FINALIZER]);
        reconcile(current(), ctx.clone())
            .await
            .expect("storms sent");
        let sent = appeared.elapsed();
        let storms: Vec<(&LoopbackSidecar, String)> = api
            .experiment(NAMESPACE, &name)
            .and_then(|e| e.status)
            .unwrap()
            .targets
            .iter()
            .map(|t| {
                let sidecar = sidecars.iter().find(|s| s.ip == t.ip).unwrap();
                (sidecar, t.storm_id.clone())
            })
            .collect();
        assert_eq!(storms.len(), TARGETS, "every pod is a target");
        wait_storming(&storms).await;
        let storming = appeared.elapsed();
        loop {
            reconcile(current(), ctx.clone())
                .await
                .expect("storms observed");
            let status = api
                .experiment(NAMESPACE, &name)
                .and_then(|e| e.status)
                .unwrap();
            if status
                .targets
                .iter()
                .all(|t| t.phase == TargetPhase::Running)
            {
                break;
            }
        }
        let confirmed = appeared.elapsed();
        rounds.push(Round {
            sent: millis(sent),
            storming: millis(storming),
            confirmed: millis(confirmed),
        });

        // Stop this round's storms the way users do: delete the experiment.
        api.delete_experiment(NAMESPACE, &name);
        reconcile(current(), ctx.clone())
            .await
            .expect("storms stopped");
        assert!(
            api.experiment(NAMESPACE, &name).is_none(),
            "finalizer released"
        );
        for sidecar in &sidecars {
            let storms = sidecar.storms.clone();
            let idle =
                tokio::task::spawn_blocking(move || storms.wait_idle(Duration::from_secs(30)))
                    .await
                    .unwrap();
            assert!(idle, "the storm on {} stopped", sidecar.ip);
        }
    }

    println!();
    println!(
        "Time to storm: 1 MapChaos, mode all, {TARGETS} pods, {TARGETS} in-process sidecars \
         on 127.30.0.x (one process, {} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<58} {:>8} {:>8} {:>8}",
        "from the MapChaos appearing to", "median", "min", "max"
    );
    let row = |what: &str, pick: fn(&Round) -> f64| {
        let mut values: Vec<f64> = rounds.iter().map(pick).collect();
        values.sort_by(f64::total_cmp);
        println!(
            "{what:<58} {:>6.0}ms {:>6.0}ms {:>6.0}ms",
            values[values.len() / 2],
            values[0],
            values[values.len() - 1]
        );
        values[values.len() / 2]
    };
    row("every storm PUT answered (2 reconciles)", |r| r.sent);
    row("every sidecar storming (workers on the map)", |r| {
        r.storming
    });
    let confirmed = row("every target Running in status (3+ reconciles)", |r| {
        r.confirmed
    });
    println!(
        "target: under 1 s to every target Running -> {} ({ROUNDS} rounds)",
        if confirmed < 1000.0 { "MET" } else { "MISSED" }
    );
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Until every sidecar runs its storm past preparing (asked in-process,
/// every 2 ms).
async fn wait_storming(storms: &[(&LoopbackSidecar, String)]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut waiting: Vec<&(&LoopbackSidecar, String)> = storms.iter().collect();
    while !waiting.is_empty() {
        waiting.retain(|(sidecar, id)| {
            !sidecar
                .storms
                .status(id)
                .is_some_and(|s| !matches!(s.phase, StormPhase::Preparing) && !s.phase.is_final())
        });
        assert!(Instant::now() < deadline, "storms did not start");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

// ---- 2. watch-cache memory -----------------------------------------------

fn watch_cache_memory() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let rss_start = rss_bytes();
    let before = allocated();
    // The MapChaos watch, as `controller::run` builds it: reflected into the
    // store, then filtered by what of an experiment can trigger it.
    let (store, writer) = reflector::store::<MapChaos>();
    let experiments = futures::stream::iter(
        std::iter::once(watcher::Event::Init)
            .chain((0..EXPERIMENTS).map(|i| {
                watcher::Event::InitApply(experiment(
                    &format!("team-{}", i % 50),
                    &format!("storm-{i}"),
                    i,
                ))
            }))
            .chain(std::iter::once(watcher::Event::InitDone))
            .map(Ok::<_, watcher::Error>),
    )
    .reflect(writer)
    .applied_objects()
    .predicate_filter(experiment_trigger, Default::default());
    let mut experiments = Box::pin(experiments);
    let seen = runtime.block_on(async {
        let mut seen = 0;
        while let Some(item) = experiments.next().await {
            item.unwrap();
            seen += 1;
        }
        seen
    });
    assert_eq!((seen, store.state().len()), (EXPERIMENTS, EXPERIMENTS));
    let with_filter = allocated() - before;
    drop(experiments);
    let experiment_store = allocated() - before;
    let experiment_filter = with_filter - experiment_store;

    // The pod watch: no store (pods are listed fresh when reconciling), only
    // the predicate cache of what can change a pod's selection.
    let before_pods = allocated();
    let pods = futures::stream::iter(
        std::iter::once(watcher::Event::Init)
            .chain((0..PODS).map(|i| {
                let namespace = format!("team-{}", i % 50);
                watcher::Event::InitApply(pod(&namespace, &format!("cart-{i}"), &ip(i), i))
            }))
            .chain(std::iter::once(watcher::Event::InitDone))
            .map(Ok::<_, watcher::Error>),
    )
    .touched_objects()
    .predicate_filter(pod_trigger, Default::default());
    let mut pods = Box::pin(pods);
    let pods_seen = runtime.block_on(async {
        let mut seen = 0;
        while let Some(item) = pods.next().await {
            item.unwrap();
            seen += 1;
        }
        seen
    });
    assert_eq!(pods_seen, PODS);
    let pod_filter = allocated() - before_pods;
    let total = allocated() - before;
    let rss_delta = rss_bytes().saturating_sub(rss_start);

    // What the MapChaos store would hold if the watch stripped managedFields
    // before reflecting (kube's `WatchStreamExt::modify`); not done today.
    let before_lean = allocated();
    let (lean_store, mut lean_writer) = reflector::store::<MapChaos>();
    lean_writer.apply_watcher_event(&watcher::Event::Init);
    for i in 0..EXPERIMENTS {
        let mut lean = experiment(&format!("team-{}", i % 50), &format!("storm-{i}"), i);
        lean.metadata.managed_fields = None;
        lean_writer.apply_watcher_event(&watcher::Event::InitApply(lean));
    }
    lean_writer.apply_watcher_event(&watcher::Event::InitDone);
    assert_eq!(lean_store.state().len(), EXPERIMENTS);
    let lean_bytes = allocated() - before_lean;

    // For scale only, not held by the operator: a pod store, as an operator
    // that cached pods would keep.
    let before_pod_store = allocated();
    let (pod_store, mut pod_writer) = reflector::store::<Pod>();
    pod_writer.apply_watcher_event(&watcher::Event::Init);
    for i in 0..PODS {
        let namespace = format!("team-{}", i % 50);
        pod_writer.apply_watcher_event(&watcher::Event::InitApply(pod(
            &namespace,
            &format!("cart-{i}"),
            &ip(i),
            i,
        )));
    }
    pod_writer.apply_watcher_event(&watcher::Event::InitDone);
    assert_eq!(pod_store.state().len(), PODS);
    let pod_store_bytes = allocated() - before_pod_store;

    let sample = serde_json::to_vec(&experiment("team-0", "storm-0", 0))
        .unwrap()
        .len();
    let pod_sample = serde_json::to_vec(&pod("team-0", "cart-0", &ip(0), 0))
        .unwrap()
        .len();
    println!();
    println!(
        "Watch-cache memory: {EXPERIMENTS} MapChaos (~{sample} B of JSON each: spec, status of 3 \
         targets and 3 runs, managedFields, last-applied) and {PODS} pods (~{pod_sample} B of JSON each)"
    );
    println!(
        "{:<52} {:>12} {:>12}",
        "what the controller holds", "bytes", "per object"
    );
    let row = |what: &str, bytes: isize, objects: usize| {
        println!("{what:<52} {:>12} {:>12}", bytes, bytes / objects as isize);
    };
    row("MapChaos reflector store", experiment_store, EXPERIMENTS);
    row(
        "MapChaos watch predicate cache",
        experiment_filter,
        EXPERIMENTS,
    );
    row("pod watch predicate cache (no pod store)", pod_filter, PODS);
    row("total (allocator count)", total, EXPERIMENTS + PODS);
    println!(
        "{:<52} {:>12}",
        "total (RSS growth, /proc/self/statm)", rss_delta
    );
    row(
        "if stripped of managedFields: MapChaos store",
        lean_bytes,
        EXPERIMENTS,
    );
    row(
        "for scale, not held: a pod reflector store",
        pod_store_bytes,
        PODS,
    );
    drop((store, lean_store, pod_store, pods));
}

fn allocated() -> isize {
    ALLOCATED.load(Ordering::Relaxed)
}

/// Resident bytes, from /proc/self/statm (0 where there is none).
fn rss_bytes() -> isize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|text| text.split_whitespace().nth(1)?.parse::<isize>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn hash(value: &impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

fn ip(i: usize) -> String {
    format!("10.{}.{}.{}", 10 + i / 65536, (i / 256) % 256, i % 256)
}

fn uid(kind: &str, i: usize) -> String {
    format!(
        "{:08x}-{kind:.4}-4c8e-9c1e-{:012x}",
        i,
        hash(&(kind, i)) >> 16
    )
}

/// A MapChaos as a cluster holds it after a few runs: applied with kubectl
/// (last-applied annotation, managedFields), status written by the operator.
fn experiment(namespace: &str, name: &str, i: usize) -> MapChaos {
    let spec = json!({
        "selector": {"namespaces": [namespace], "labelSelectors": {"app": "cart", "tier": "cache"}},
        "mode": "all",
        "duration": "1m",
        "storm": {
            "workers": 1, "rate": 20,
            "mix": {"del": 60, "get": 25, "set": 10, "scan": 5},
            "keys": {"prefix": "mapchaos:", "count": 100, "distribution": "zipf"},
        },
        "check": {"history": true, "maxOps": 1000, "timeoutPerKey": "10s"},
        "abort": {"maxAnomalies": 0, "maxErrorRate": "0.05"},
    });
    let uid = uid("mapchaos", i);
    let last_applied = json!({
        "apiVersion": "mapchaos.io/v1alpha1", "kind": "MapChaos",
        "metadata": {"name": name, "namespace": namespace}, "spec": spec,
    })
    .to_string();
    let time = "2026-11-21T14:00:00Z";
    let target = |t: usize, phase: &str| {
        json!({
            "pod": format!("cart-{t}"), "namespace": namespace, "podUid": uid_of_pod(t),
            "ip": ip(t), "run": 3, "stormId": format!("{uid}-3-{:012x}", t),
            "phase": phase, "stormPhase": phase, "ops": 1_204_331, "errors": 0,
            "exposures": 48_210, "anomalies": 0,
            "exposureKinds": {"delete-read": 30_112, "scan-delete": 18_098},
            "latency": {"p50": 41, "p99": 310, "p999": 1_200, "max": 9_800},
            "verdict": "Pass", "lastSeen": time,
        })
    };
    let condition = |kind: &str, status: &str, reason: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": reason,
               "observedGeneration": 1, "lastTransitionTime": time})
    };
    let run = |run: u32| {
        json!({"run": run, "startedAt": time, "finishedAt": time, "phase": "Completed",
               "targets": 3, "anomalies": 0, "verdict": "Pass"})
    };
    let status = json!({
        "phase": "Completed", "observedGeneration": 1, "seed": 8_812_731 + i, "run": 3,
        "startedAt": time, "finishedAt": time,
        "conditions": [
            condition("Valid", "True", "SpecValid"),
            condition("Selected", "True", "TargetsSelected"),
            condition("AllInjected", "True", "AllInjected"),
            condition("AllRecovered", "True", "StormsEnded"),
            condition("Paused", "False", "NotPaused"),
        ],
        "targets": [target(0, "Completed"), target(1, "Completed"), target(2, "Completed")],
        "summary": {"targets": 3, "injected": 3, "finished": 3, "ops": 3_612_993, "errors": 0,
                    "exposures": {"delete-read": 90_336, "scan-delete": 54_294},
                    "totalExposures": 144_630, "totalAnomalies": 0,
                    "latency": {"p50": 41, "p99": 310, "p999": 1_200, "max": 9_800},
                    "p99": "310µs", "verdict": "Pass"},
        "runs": [run(1), run(2), run(3)],
    });
    let managed = json!([
        {"manager": "kubectl-client-side-apply", "operation": "Update",
         "apiVersion": "mapchaos.io/v1alpha1", "time": time, "fieldsType": "FieldsV1",
         "fieldsV1": {"f:metadata": {"f:annotations": {".": {},
            "f:kubectl.kubernetes.io/last-applied-configuration": {}}},
            "f:spec": {".": {}, "f:abort": {}, "f:check": {}, "f:duration": {}, "f:mode": {},
                       "f:selector": {}, "f:storm": {}}}},
        {"manager": "mapchaos-operator", "operation": "Update",
         "apiVersion": "mapchaos.io/v1alpha1", "time": time, "fieldsType": "FieldsV1",
         "fieldsV1": {"f:metadata": {"f:finalizers": {".": {}, "v:\"mapchaos.io/storms\"": {}}}}},
        {"manager": "mapchaos-operator", "operation": "Apply", "subresource": "status",
         "apiVersion": "mapchaos.io/v1alpha1", "time": time, "fieldsType": "FieldsV1",
         "fieldsV1": {"f:status": {"f:conditions": {}, "f:phase": {}, "f:run": {}, "f:runs": {},
                      "f:seed": {}, "f:summary": {}, "f:targets": {}, "f:startedAt": {},
                      "f:finishedAt": {}, "f:observedGeneration": {}}}},
    ]);
    let object = json!({
        "apiVersion": "mapchaos.io/v1alpha1", "kind": "MapChaos",
        "metadata": {
            "name": name, "namespace": namespace, "uid": uid, "generation": 1,
            "resourceVersion": (1_000_000 + i).to_string(), "creationTimestamp": time,
            "labels": {"team": namespace, "app.kubernetes.io/part-of": "chaos-suite"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied},
            "finalizers": [FINALIZER], "managedFields": managed,
        },
        "spec": spec,
        "status": status,
    });
    serde_json::from_value(object).expect("a valid MapChaos")
}

fn uid_of_pod(i: usize) -> String {
    uid("pod", i)
}

/// A Deployment's pod with the mapchaos sidecar, Running and Ready, as the
/// API server returns it (managedFields included).
fn pod(namespace: &str, name: &str, pod_ip: &str, i: usize) -> Pod {
    let time = "2026-11-21T13:00:00Z";
    let container = |name: &str, image: &str, port: u16| -> Value {
        json!({
            "name": name, "image": image, "imagePullPolicy": "IfNotPresent",
            "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
            "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
                    {"name": "REDIS_ADDR", "value": "127.0.0.1:6379"}],
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": port, "scheme": "HTTP"},
                               "periodSeconds": 5, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
            "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}],
            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
        })
    };
    let status = |name: &str, image: &str| {
        json!({"name": name, "image": image, "imageID": format!("{image}@sha256:{:064x}", 7),
               "containerID": format!("containerd://{:064x}", hash(&(name, i))),
               "ready": true, "started": true, "restartCount": 0,
               "state": {"running": {"startedAt": time}}})
    };
    let conditions: Vec<Value> = ["Initialized", "Ready", "ContainersReady", "PodScheduled"]
        .iter()
        .map(|kind| json!({"type": kind, "status": "True", "lastTransitionTime": time}))
        .collect();
    let object = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": namespace, "uid": uid_of_pod(i),
            "resourceVersion": (2_000_000 + i).to_string(), "creationTimestamp": time,
            "generateName": "cart-7d9f8c6b5-",
            "labels": {"app": "cart", "tier": "cache", "pod-template-hash": "7d9f8c6b5",
                       "mapchaos.io/sidecar": "true"},
            "annotations": {"mapchaos.io/injected": "true"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "cart-7d9f8c6b5",
                                 "uid": uid("rs", i / 10), "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                               "time": time, "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:metadata": {"f:labels": {}, "f:ownerReferences": {}}, "f:spec": {"f:containers": {}}}},
                              {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "subresource": "status",
                               "time": time, "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:status": {"f:conditions": {}, "f:containerStatuses": {}, "f:podIP": {}}}}],
        },
        "spec": {
            "containers": [container("cart", "ghcr.io/shop/cart:1.42.0", 8080),
                           container(SIDECAR_CONTAINER, "ghcr.io/mapchaos/mapchaos:0.1.0", 9464)],
            "volumes": [{"name": "kube-api-access", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}}],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "cart", "nodeName": format!("node-{}", i % 20),
            "schedulerName": "default-scheduler", "priority": 0, "enableServiceLinks": true,
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
        },
        "status": {
            "phase": "Running", "podIP": pod_ip, "podIPs": [{"ip": pod_ip}], "hostIP": "192.168.1.20",
            "startTime": time, "qosClass": "Burstable",
            "conditions": conditions,
            "containerStatuses": [status("cart", "ghcr.io/shop/cart:1.42.0"),
                                  status(SIDECAR_CONTAINER, "ghcr.io/mapchaos/mapchaos:0.1.0")],
        },
    });
    serde_json::from_value(object).expect("a valid Pod")
}

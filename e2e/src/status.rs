//! Pod status computation: from what the runtime knows about a pod's containers to the
//! `PodStatus` a kubelet would report (phase, conditions, container statuses). Pure.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// The pod conditions the node agent owns; any other condition (readiness gates) belongs
/// to someone else and is passed through untouched.
pub const OWN_CONDITIONS: [&str; 4] = ["Initialized", "Ready", "ContainersReady", "PodScheduled"];

/// How a container ended one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terminated {
    pub exit_code: i32,
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `OOMKilled`... as the kubelet spells them.
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub container_id: String,
}

/// The current state of one container, as the runtime sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunState {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Timestamp,
        container_id: String,
    },
    Terminated(Terminated),
}

/// Everything the status needs to know about one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRuntime {
    pub name: String,
    pub image: String,
    pub image_id: Option<String>,
    pub state: RunState,
    pub last_terminated: Option<Terminated>,
    pub restart_count: i32,
    pub ready: bool,
    pub started: bool,
}

impl ContainerRuntime {
    /// A container the runtime has not tried to start yet.
    pub fn creating(name: &str, image: &str) -> Self {
        Self {
            name: name.to_owned(),
            image: image.to_owned(),
            image_id: None,
            state: RunState::Waiting {
                reason: "ContainerCreating".to_owned(),
                message: None,
            },
            last_terminated: None,
            restart_count: 0,
            ready: false,
            started: false,
        }
    }

    pub fn init_pending(name: &str, image: &str) -> Self {
        Self {
            state: RunState::Waiting {
                reason: "PodInitializing".to_owned(),
                message: None,
            },
            ..Self::creating(name, image)
        }
    }

    fn is_running(&self) -> bool {
        matches!(self.state, RunState::Running { .. })
    }
}

/// The pod-level facts that are not per container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodFacts {
    pub pod_ip: Option<String>,
    pub host_ip: String,
    pub start_time: Option<Timestamp>,
    pub init_containers: Vec<ContainerRuntime>,
    pub containers: Vec<ContainerRuntime>,
}

/// Computes the status to write back. `pod.status` is the last status written, used to keep
/// `lastTransitionTime` stable while a condition does not change.
pub fn compute(pod: &Pod, facts: &PodFacts, now: Timestamp) -> PodStatus {
    let restart_policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    let previous = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or(&[]);
    let phase = phase(restart_policy, &facts.init_containers, &facts.containers);

    let incomplete_init: Vec<&str> = facts
        .init_containers
        .iter()
        .filter(|c| !matches!(&c.state, RunState::Terminated(t) if t.exit_code == 0))
        .map(|c| c.name.as_str())
        .collect();
    let unready: Vec<&str> = facts
        .containers
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let completed = phase == "Succeeded";
    let (ready_reason, ready_message) = if completed {
        (Some("PodCompleted"), None)
    } else if unready.is_empty() {
        (None, None)
    } else {
        (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let initialized = if incomplete_init.is_empty() {
        condition(
            previous,
            "Initialized",
            true,
            completed.then_some("PodCompleted"),
            None,
            now,
        )
    } else {
        condition(
            previous,
            "Initialized",
            false,
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: [{}]",
                incomplete_init.join(" ")
            )),
            now,
        )
    };
    let containers_ready = unready.is_empty() && !completed;
    let gates_ready = readiness_gates_met(pod);
    let pod_ready = containers_ready && gates_ready;
    let mut conditions = vec![
        initialized,
        condition(
            previous,
            "Ready",
            pod_ready,
            ready_reason,
            ready_message.clone(),
            now,
        ),
        condition(
            previous,
            "ContainersReady",
            containers_ready,
            ready_reason,
            ready_message,
            now,
        ),
        condition(previous, "PodScheduled", true, None, None, now),
    ];
    conditions.extend(
        previous
            .iter()
            .filter(|c| !OWN_CONDITIONS.contains(&c.type_.as_str()))
            .cloned(),
    );

    let spec_images = |name: &str, init: bool| -> String {
        let spec = pod.spec.as_ref();
        let list = if init {
            spec.and_then(|s| s.init_containers.as_deref())
        } else {
            spec.map(|s| s.containers.as_slice())
        };
        list.and_then(|cs| cs.iter().find(|c| c.name == name))
            .and_then(|c| c.image.clone())
            .unwrap_or_default()
    };
    let statuses = |list: &[ContainerRuntime], init: bool| -> Vec<ContainerStatus> {
        list.iter()
            .map(|c| container_status(c, &spec_images(&c.name, init)))
            .collect()
    };
    let init_statuses = statuses(&facts.init_containers, true);
    PodStatus {
        phase: Some(phase.to_owned()),
        conditions: Some(conditions),
        host_ip: Some(facts.host_ip.clone()),
        host_ips: Some(vec![HostIP {
            ip: facts.host_ip.clone(),
        }]),
        pod_ip: facts.pod_ip.clone(),
        pod_ips: facts
            .pod_ip
            .as_ref()
            .map(|ip| vec![PodIP { ip: ip.clone() }]),
        start_time: facts.start_time.map(Time),
        container_statuses: Some(statuses(&facts.containers, false)),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        qos_class: pod.status.as_ref().and_then(|s| s.qos_class.clone()),
        ..PodStatus::default()
    }
}

/// The kubelet's `getPhase`, on our container states.
pub fn phase(
    restart_policy: &str,
    init: &[ContainerRuntime],
    containers: &[ContainerRuntime],
) -> &'static str {
    let mut pending_init = 0;
    let mut failed_init = 0;
    for c in init {
        match &c.state {
            RunState::Running { .. } => pending_init += 1,
            RunState::Terminated(t) => {
                if t.exit_code != 0 {
                    failed_init += 1;
                }
            }
            RunState::Waiting { .. } => match &c.last_terminated {
                Some(t) if t.exit_code != 0 => failed_init += 1,
                Some(_) => {}
                None => pending_init += 1,
            },
        }
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in containers {
        match &c.state {
            RunState::Running { .. } => running += 1,
            RunState::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            RunState::Waiting { .. } if c.last_terminated.is_some() => stopped += 1,
            RunState::Waiting { .. } => waiting += 1,
        }
    }
    if failed_init > 0 && restart_policy == "Never" {
        return "Failed";
    }
    if pending_init > 0 || waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        if restart_policy == "Always" {
            "Running"
        } else if stopped == succeeded {
            "Succeeded"
        } else if restart_policy == "Never" {
            "Failed"
        } else {
            "Running"
        }
    } else {
        "Pending"
    }
}

fn readiness_gates_met(pod: &Pod) -> bool {
    let Some(gates) = pod.spec.as_ref().and_then(|s| s.readiness_gates.as_ref()) else {
        return true;
    };
    let conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or(&[]);
    gates.iter().all(|g| {
        conditions
            .iter()
            .any(|c| c.type_ == g.condition_type && c.status == "True")
    })
}

fn condition(
    previous: &[PodCondition],
    type_: &str,
    status: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: Timestamp,
) -> PodCondition {
    let status = if status { "True" } else { "False" };
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    PodCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.map(str::to_owned),
        message,
        last_transition_time: Some(since),
        last_probe_time: None,
        observed_generation: None,
    }
}

fn container_status(c: &ContainerRuntime, spec_image: &str) -> ContainerStatus {
    let container_id = match &c.state {
        RunState::Running { container_id, .. } => Some(container_id.clone()),
        RunState::Terminated(t) => Some(t.container_id.clone()),
        RunState::Waiting { .. } => c.last_terminated.as_ref().map(|t| t.container_id.clone()),
    };
    ContainerStatus {
        name: c.name.clone(),
        image: if spec_image.is_empty() {
            c.image.clone()
        } else {
            spec_image.to_owned()
        },
        image_id: c.image_id.clone().unwrap_or_default(),
        container_id,
        ready: c.ready && c.is_running(),
        restart_count: c.restart_count,
        started: Some(c.started && c.is_running()),
        state: Some(state(&c.state)),
        last_state: Some(
            c.last_terminated
                .as_ref()
                .map(|t| ContainerState {
                    terminated: Some(terminated(t)),
                    ..ContainerState::default()
                })
                .unwrap_or_default(),
        ),
        ..ContainerStatus::default()
    }
}

fn state(s: &RunState) -> ContainerState {
    match s {
        RunState::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..ContainerState::default()
        },
        RunState::Running { started_at, .. } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(*started_at)),
            }),
            ..ContainerState::default()
        },
        RunState::Terminated(t) => ContainerState {
            terminated: Some(terminated(t)),
            ..ContainerState::default()
        },
    }
}

fn terminated(t: &Terminated) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        signal: t.signal,
        reason: Some(t.reason.clone()),
        message: t.message.clone(),
        started_at: Some(Time(t.started_at)),
        finished_at: Some(Time(t.finished_at)),
        container_id: Some(t.container_id.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).expect("valid timestamp")
    }

    fn running(name: &str, ready: bool) -> ContainerRuntime {
        ContainerRuntime {
            state: RunState::Running {
                started_at: ts(1),
                container_id: "mapchaos://42".into(),
            },
            ready,
            started: true,
            image_id: Some("local:///bin/true".into()),
            ..ContainerRuntime::creating(name, "img")
        }
    }

    fn exited(name: &str, code: i32) -> ContainerRuntime {
        let t = Terminated {
            exit_code: code,
            signal: None,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at: ts(1),
            finished_at: ts(2),
            container_id: "mapchaos://7".into(),
        };
        ContainerRuntime {
            state: RunState::Terminated(t),
            ..ContainerRuntime::creating(name, "img")
        }
    }

    fn crash_looping(name: &str) -> ContainerRuntime {
        let mut c = exited(name, 1);
        let RunState::Terminated(t) = c.state.clone() else {
            unreachable!()
        };
        c.last_terminated = Some(t);
        c.restart_count = 2;
        c.state = RunState::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: Some("back-off 20s".into()),
        };
        c
    }

    fn pod(containers: &[&str], restart_policy: &str) -> Pod {
        Pod {
            spec: Some(PodSpec {
                restart_policy: Some(restart_policy.into()),
                containers: containers
                    .iter()
                    .map(|n| Container {
                        name: (*n).into(),
                        image: Some("img:1".into()),
                        ..Container::default()
                    })
                    .collect(),
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    fn cond<'a>(s: &'a PodStatus, t: &str) -> &'a PodCondition {
        s.conditions
            .as_ref()
            .and_then(|cs| cs.iter().find(|c| c.type_ == t))
            .expect("condition present")
    }

    #[test]
    fn all_running_and_ready_pod_is_running_and_ready() {
        let facts = PodFacts {
            pod_ip: Some("10.213.0.2".into()),
            host_ip: "10.213.0.1".into(),
            start_time: Some(ts(0)),
            containers: vec![running("a", true), running("b", true)],
            ..PodFacts::default()
        };
        let s = compute(&pod(&["a", "b"], "Always"), &facts, ts(5));
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "ContainersReady").status, "True");
        assert_eq!(cond(&s, "Initialized").status, "True");
        assert_eq!(cond(&s, "PodScheduled").status, "True");
        assert_eq!(s.pod_ip.as_deref(), Some("10.213.0.2"));
        assert_eq!(s.pod_ips.as_ref().map(Vec::len), Some(1));
        let cs = s.container_statuses.as_ref().expect("statuses");
        assert!(cs.iter().all(|c| c.ready && c.started == Some(true)));
        assert_eq!(cs[0].image, "img:1");
        assert_eq!(cs[0].container_id.as_deref(), Some("mapchaos://42"));
    }

    #[test]
    fn one_unready_container_makes_pod_unready_and_names_it() {
        let facts = PodFacts {
            containers: vec![running("a", true), running("b", false)],
            ..PodFacts::default()
        };
        let s = compute(&pod(&["a", "b"], "Always"), &facts, ts(5));
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let ready = cond(&s, "Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [b]")
        );
    }

    #[test]
    fn unchanged_condition_keeps_its_transition_time() {
        let facts = PodFacts {
            containers: vec![running("a", true)],
            ..PodFacts::default()
        };
        let mut p = pod(&["a"], "Always");
        let first = compute(&p, &facts, ts(5));
        p.status = Some(first.clone());
        let second = compute(&p, &facts, ts(50));
        assert_eq!(
            cond(&second, "Ready").last_transition_time,
            Some(Time(ts(5)))
        );
        assert_eq!(first, second);
    }

    #[test]
    fn creating_containers_keep_pod_pending() {
        let facts = PodFacts {
            containers: vec![ContainerRuntime::creating("a", "img")],
            ..PodFacts::default()
        };
        assert_eq!(
            compute(&pod(&["a"], "Always"), &facts, ts(0))
                .phase
                .as_deref(),
            Some("Pending")
        );
    }

    #[test]
    fn crash_looping_container_leaves_pod_running_with_last_state() {
        let facts = PodFacts {
            containers: vec![crash_looping("a")],
            ..PodFacts::default()
        };
        let s = compute(&pod(&["a"], "Always"), &facts, ts(0));
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let c = &s.container_statuses.as_ref().expect("statuses")[0];
        assert_eq!(c.restart_count, 2);
        assert_eq!(
            c.state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref()),
            Some("CrashLoopBackOff")
        );
        assert_eq!(
            c.last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code),
            Some(1)
        );
        assert!(!c.ready);
    }

    #[test]
    fn phases_follow_restart_policy_when_containers_stop() {
        assert_eq!(phase("Never", &[], &[exited("a", 0)]), "Succeeded");
        assert_eq!(
            phase("Never", &[], &[exited("a", 0), exited("b", 2)]),
            "Failed"
        );
        assert_eq!(phase("OnFailure", &[], &[exited("a", 0)]), "Succeeded");
        assert_eq!(phase("OnFailure", &[], &[exited("a", 1)]), "Running");
        assert_eq!(phase("Always", &[], &[exited("a", 0)]), "Running");
        assert_eq!(
            phase("Always", &[], &[running("a", true), exited("b", 1)]),
            "Running"
        );
    }

    #[test]
    fn failed_init_container_fails_never_pods_and_blocks_others() {
        let init = [exited("init", 3)];
        let app = [ContainerRuntime::init_pending("a", "img")];
        assert_eq!(phase("Never", &init, &app), "Failed");
        assert_eq!(phase("Always", &init, &app), "Pending");
        assert_eq!(phase("Always", &[running("init", false)], &app), "Pending");
        assert_eq!(
            phase("Always", &[exited("init", 0)], &[running("a", true)]),
            "Running"
        );
    }

    #[test]
    fn incomplete_init_containers_are_named_in_initialized_condition() {
        let mut p = pod(&["a"], "Always");
        if let Some(spec) = p.spec.as_mut() {
            spec.init_containers = Some(vec![Container {
                name: "setup".into(),
                image: Some("img:1".into()),
                ..Container::default()
            }]);
        }
        let facts = PodFacts {
            init_containers: vec![running("setup", false)],
            containers: vec![ContainerRuntime::init_pending("a", "img")],
            ..PodFacts::default()
        };
        let s = compute(&p, &facts, ts(0));
        let init = cond(&s, "Initialized");
        assert_eq!(init.status, "False");
        assert_eq!(
            init.message.as_deref(),
            Some("containers with incomplete status: [setup]")
        );
        assert_eq!(s.init_container_statuses.as_ref().map(Vec::len), Some(1));
        assert_eq!(s.phase.as_deref(), Some("Pending"));
    }

    #[test]
    fn succeeded_pod_reports_pod_completed() {
        let facts = PodFacts {
            containers: vec![exited("a", 0)],
            ..PodFacts::default()
        };
        let s = compute(&pod(&["a"], "Never"), &facts, ts(0));
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        assert_eq!(cond(&s, "Ready").reason.as_deref(), Some("PodCompleted"));
        assert_eq!(cond(&s, "Ready").status, "False");
    }
}

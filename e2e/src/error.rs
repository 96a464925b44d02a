//! The agent's error type: why a pod or container could not get to run, phrased so the
//! status can carry it (each kind maps to the waiting reason a kubelet would show).

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image is not in the node's image map, or maps to a missing binary.
    #[error("{0}")]
    ImagePull(String),
    /// Env or volumes refer to ConfigMaps/Secrets/keys that do not exist.
    #[error("{0}")]
    CreateContainerConfig(String),
    /// A volume could not be prepared (the pod stays ContainerCreating and is retried).
    #[error("{0}")]
    Mount(String),
    /// The pod's network or mount namespace could not be set up.
    #[error("{0}")]
    Sandbox(String),
    /// The process could not be started.
    #[error("{0}")]
    Start(String),
}

impl Error {
    /// The container `waiting.reason` this error shows as.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::ImagePull(_) => "ErrImagePull",
            Error::CreateContainerConfig(_) => "CreateContainerConfigError",
            Error::Mount(_) | Error::Sandbox(_) => "ContainerCreating",
            Error::Start(_) => "RunContainerError",
        }
    }

    /// The Event reason a kubelet would record for it.
    pub fn event_reason(&self) -> &'static str {
        match self {
            Error::ImagePull(_) => "Failed",
            Error::CreateContainerConfig(_) => "Failed",
            Error::Mount(_) => "FailedMount",
            Error::Sandbox(_) => "FailedCreatePodSandBox",
            Error::Start(_) => "Failed",
        }
    }
}

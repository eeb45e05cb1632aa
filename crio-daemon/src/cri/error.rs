//! The one mapping from domain errors to gRPC status codes.

use tonic::{Code, Status};

use crate::container::ContainerError;
use crate::error_chain;
use crate::image::ImageError;
use crate::image::auth::AuthError;
use crate::image::manifest::ManifestError;
use crate::image::policy::PolicyError;
use crate::image::registries::RegistriesError;
use crate::image::registry::RegistryError;
use crate::monitor::client::MonitorError;
use crate::node::NodeError;
use crate::oci::OciError;
use crate::sandbox::PodError;
use crate::storage::StoreError;
use crate::tuning::TuningError;

/// Builds a status whose message is the whole error chain.
pub fn status(code: Code, e: &dyn std::error::Error) -> Status {
    Status::new(code, error_chain(e))
}

pub fn image_code(e: &ImageError) -> Code {
    match e {
        ImageError::Reference(_) => Code::InvalidArgument,
        ImageError::Registries(r) => match r {
            RegistriesError::Ambiguous { .. } | RegistriesError::NoSearchRegistries { .. } => Code::InvalidArgument,
            RegistriesError::Blocked { .. } => Code::PermissionDenied,
            RegistriesError::Read { .. } | RegistriesError::Parse { .. } | RegistriesError::Invalid { .. } => Code::FailedPrecondition,
        },
        ImageError::Policy(p) => match p {
            PolicyError::Rejected { .. } => Code::PermissionDenied,
            PolicyError::Unsupported { .. } => Code::Unimplemented,
            PolicyError::Read { .. } | PolicyError::Parse { .. } => Code::FailedPrecondition,
        },
        ImageError::Auth(a) => match a {
            AuthError::BadAuth { origin, .. } if origin == "request" => Code::InvalidArgument,
            _ => Code::FailedPrecondition,
        },
        ImageError::Registry(r) => match r {
            RegistryError::Unreachable { .. } => Code::Unavailable,
            RegistryError::Unauthorized { .. } => Code::Unauthenticated,
            RegistryError::NotFound { .. } => Code::NotFound,
            RegistryError::Status { status, .. } if *status >= 500 => Code::Unavailable,
            RegistryError::Transfer { .. } => Code::Unavailable,
            RegistryError::Stalled { .. } => Code::DeadlineExceeded,
            RegistryError::DigestMismatch { .. } | RegistryError::SizeMismatch { .. } => Code::DataLoss,
            RegistryError::Status { .. } | RegistryError::Io { .. } | RegistryError::Client { .. } => Code::Internal,
            RegistryError::Tls { .. } => Code::FailedPrecondition,
        },
        ImageError::Manifest(m) => match m {
            ManifestError::NoPlatform { .. } => Code::NotFound,
            ManifestError::Unsupported { .. } => Code::Unimplemented,
            ManifestError::Parse { .. } => Code::Internal,
        },
        // A layer past the node's unpack caps: the image is too big for this node's policy.
        ImageError::Unpack { source: StoreError::Unpack(crate::storage::unpack::UnpackError::Cap { .. }), .. } => Code::ResourceExhausted,
        ImageError::Store(s) | ImageError::Unpack { source: s, .. } => store_code(s),
        ImageError::NotFound { .. } => Code::NotFound,
        ImageError::AllFailed { last, .. } => image_code(last),
        ImageError::Config { .. } | ImageError::LayerCount { .. } | ImageError::Task(_) => Code::Internal,
    }
}

pub fn store_code(e: &StoreError) -> Code {
    match e {
        StoreError::ImageNotFound { .. } | StoreError::ContainerNotFound { .. } => Code::NotFound,
        StoreError::ImageInUse { .. } => Code::FailedPrecondition,
        StoreError::ContainerExists { .. } => Code::AlreadyExists,
        StoreError::Unpack(crate::storage::unpack::UnpackError::Hostile { .. }) => Code::InvalidArgument,
        StoreError::Unpack(crate::storage::unpack::UnpackError::DiffId { .. }) => Code::DataLoss,
        _ => Code::Internal,
    }
}

impl From<&ImageError> for Status {
    fn from(e: &ImageError) -> Self {
        status(image_code(e), e)
    }
}

pub fn container_code(e: &ContainerError) -> Code {
    match e {
        ContainerError::InvalidArgument { .. } => Code::InvalidArgument,
        ContainerError::NameInUse { .. } => Code::AlreadyExists,
        ContainerError::PodNotFound { .. } | ContainerError::ContainerNotFound { .. } | ContainerError::ImageNotFound { .. } => {
            Code::NotFound
        }
        ContainerError::WrongState { .. } | ContainerError::Unsupported { .. } => Code::FailedPrecondition,
        ContainerError::Image(i) => image_code(i),
        ContainerError::Store(s) => store_code(s),
        // A container whose init died before its start cannot be started.
        ContainerError::Oci(OciError::InitExited { .. }) => Code::FailedPrecondition,
        ContainerError::Oci(OciError::Timeout { .. }) => Code::DeadlineExceeded,
        ContainerError::Monitor(m) => monitor_code(m),
        ContainerError::Node(n) => node_code(n),
        ContainerError::Tuning(t) => tuning_code(t),
        _ => Code::Internal,
    }
}

pub fn pod_code(e: &PodError) -> Code {
    match e {
        PodError::InvalidArgument { .. } => Code::InvalidArgument,
        PodError::NameInUse { .. } => Code::AlreadyExists,
        PodError::PodNotFound { .. } => Code::NotFound,
        PodError::NoNetwork { .. } | PodError::NotReady { .. } => Code::FailedPrecondition,
        PodError::Dial { .. } => Code::Unavailable,
        PodError::Node(n) => node_code(n),
        PodError::Monitor(m) => monitor_code(m),
        PodError::Container(c) => container_code(c),
        _ => Code::Internal,
    }
}

fn monitor_code(e: &MonitorError) -> Code {
    match e {
        MonitorError::RuntimeTimeout { .. } | MonitorError::Timeout { .. } | MonitorError::StartTimeout { .. } => Code::DeadlineExceeded,
        _ => Code::Internal,
    }
}

fn node_code(e: &NodeError) -> Code {
    match e {
        NodeError::UnknownHandler { .. } => Code::InvalidArgument,
        NodeError::UnsupportedRuntimeType { .. } => Code::FailedPrecondition,
    }
}

fn tuning_code(e: &TuningError) -> Code {
    match e {
        TuningError::Placement { .. } => Code::InvalidArgument,
        TuningError::Hooks { .. } | TuningError::KubeletState { .. } => Code::FailedPrecondition,
    }
}

/// The status of a failed container operation; what the caller cannot have caused is logged.
pub fn container_status(e: &ContainerError) -> Status {
    let code = container_code(e);
    if code == Code::Internal {
        tracing::error!(error = %error_chain(e), "operation failed");
    }
    status(code, e)
}

/// The status of a failed pod operation; what the caller cannot have caused is logged.
pub fn pod_status(e: &PodError) -> Status {
    let code = pod_code(e);
    if code == Code::Internal {
        tracing::error!(error = %error_chain(e), "operation failed");
    }
    status(code, e)
}

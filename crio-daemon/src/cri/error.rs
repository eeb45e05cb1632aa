//! The one mapping from domain errors to gRPC status codes.

use tonic::{Code, Status};

use crate::error_chain;
use crate::image::ImageError;
use crate::image::auth::AuthError;
use crate::image::manifest::ManifestError;
use crate::image::policy::PolicyError;
use crate::image::registries::RegistriesError;
use crate::image::registry::RegistryError;
use crate::oci::OciError;
use crate::sandbox::LifecycleError;
use crate::storage::StoreError;

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

pub fn lifecycle_code(e: &LifecycleError) -> Code {
    match e {
        LifecycleError::InvalidArgument { .. } | LifecycleError::UnknownHandler { .. } => Code::InvalidArgument,
        LifecycleError::NameInUse { .. } => Code::AlreadyExists,
        LifecycleError::PodNotFound { .. } | LifecycleError::ContainerNotFound { .. } | LifecycleError::ImageNotFound { .. } => {
            Code::NotFound
        }
        LifecycleError::WrongState { .. } | LifecycleError::NoNetwork { .. } | LifecycleError::Hooks { .. } => Code::FailedPrecondition,
        LifecycleError::Image(i) => image_code(i),
        LifecycleError::Store(s) => store_code(s),
        // A container whose init died before its start cannot be started.
        LifecycleError::Oci(OciError::InitExited { .. }) => Code::FailedPrecondition,
        LifecycleError::Oci(OciError::Timeout { .. }) => Code::DeadlineExceeded,
        _ => Code::Internal,
    }
}

pub fn lifecycle_status(e: &LifecycleError) -> Status {
    if lifecycle_code(e) == Code::Internal {
        tracing::error!(error = %error_chain(e), "operation failed");
    }
    status(lifecycle_code(e), e)
}

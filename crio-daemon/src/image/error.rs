//! Everything an image operation can fail with; mapped to gRPC codes in `cri::error`.

use super::auth::AuthError;
use super::manifest::ManifestError;
use super::policy::PolicyError;
use super::reference::ReferenceError;
use super::registries::RegistriesError;
use super::registry::RegistryError;
use crate::storage::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Registries(#[from] RegistriesError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("image {name:?} not found")]
    NotFound { name: String },
    #[error("image config {digest} is invalid")]
    Config {
        digest: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("image {reference}: manifest has {layers} layers but its config lists {diff_ids} diff ids")]
    LayerCount { reference: String, layers: usize, diff_ids: usize },
    #[error("failed to unpack layer {digest} of {reference}")]
    Unpack {
        reference: String,
        digest: String,
        #[source]
        source: StoreError,
    },
    #[error("image {name:?} could not be pulled from any of {tried:?}")]
    AllFailed {
        name: String,
        tried: Vec<String>,
        #[source]
        last: Box<ImageError>,
    },
    #[error("a background image task failed")]
    Task(#[source] tokio::task::JoinError),
}

impl ImageError {
    /// "Not there" as opposed to "could not ask": decides whether the next candidate is tried.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            ImageError::NotFound { .. }
                | ImageError::Registry(RegistryError::NotFound { .. })
                | ImageError::Manifest(ManifestError::NoPlatform { .. })
        )
    }
}

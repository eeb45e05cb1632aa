//! ImageService: PullImage, ListImages, ImageStatus, RemoveImage, ImageFsInfo.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::ImageService as CriImageService;
use tonic::{Code, Request, Response, Status};
use tracing::{Instrument, info_span};

use super::Services;
use crate::image::ImageView;
use crate::image::auth::RequestAuth;

pub struct Images {
    services: Services,
}

impl Images {
    pub fn new(services: Services) -> Self {
        Self { services }
    }
}

/// The image name a request names, or InvalidArgument naming the field.
fn image_name(spec: Option<&cri::ImageSpec>, field: &str) -> Result<String, Status> {
    match spec.map(|s| s.image.trim()) {
        Some(name) if !name.is_empty() => Ok(name.to_string()),
        _ => Err(Status::invalid_argument(format!("{field} is required"))),
    }
}

fn to_cri(view: ImageView) -> cri::Image {
    let r = view.record;
    cri::Image {
        spec: Some(cri::ImageSpec { image: r.id.clone(), ..Default::default() }),
        id: r.id,
        repo_tags: r.repo_tags,
        repo_digests: r.repo_digests,
        size: r.size,
        uid: view.uid.map(|value| cri::Int64Value { value }),
        username: view.username,
        pinned: view.pinned,
    }
}

#[tonic::async_trait]
impl CriImageService for Images {
    async fn list_images(&self, request: Request<cri::ListImagesRequest>) -> Result<Response<cri::ListImagesResponse>, Status> {
        let filter = request.into_inner().filter.and_then(|f| f.image).map(|s| s.image);
        let images = self.services.images.list(filter.as_deref()).map_err(|e| Status::from(&e))?;
        Ok(Response::new(cri::ListImagesResponse { images: images.into_iter().map(to_cri).collect() }))
    }

    async fn image_status(&self, request: Request<cri::ImageStatusRequest>) -> Result<Response<cri::ImageStatusResponse>, Status> {
        let req = request.into_inner();
        let name = image_name(req.image.as_ref(), "image.image")?;
        let span = info_span!("image_status", image = %name);
        async move {
            let Some(view) = self.services.images.status(&name).map_err(|e| Status::from(&e))? else {
                return Ok(Response::new(cri::ImageStatusResponse::default()));
            };
            let mut info = HashMap::new();
            if req.verbose {
                let config = self.services.images.config(&view.record.id).await.map_err(|e| Status::from(&e))?;
                let spec: serde_json::Value = serde_json::from_slice(&config).unwrap_or(serde_json::Value::Null);
                let detail = serde_json::json!({
                    "imageSpec": spec,
                    "pinned": view.pinned,
                    "layers": view.record.layers,
                    "manifestDigest": view.record.manifest_digest,
                });
                info.insert("info".to_string(), detail.to_string());
            }
            Ok(Response::new(cri::ImageStatusResponse { image: Some(to_cri(view)), info }))
        }
        .instrument(span)
        .await
    }

    async fn pull_image(&self, request: Request<cri::PullImageRequest>) -> Result<Response<cri::PullImageResponse>, Status> {
        let req = request.into_inner();
        let name = image_name(req.image.as_ref(), "image.image")?;
        let auth = req
            .auth
            .map(|a| RequestAuth {
                username: a.username,
                password: a.password,
                auth: a.auth,
                identity_token: a.identity_token,
                registry_token: a.registry_token,
            })
            .unwrap_or_default();
        let span = info_span!("pull_image", image = %name);
        async move {
            let outcome = self.services.images.pull(&name, auth).await.map_err(|e| {
                tracing::error!(error = %crate::error_chain(&*e), "pull failed");
                Status::from(&*e)
            })?;
            Ok(Response::new(cri::PullImageResponse { image_ref: outcome.id }))
        }
        .instrument(span)
        .await
    }

    async fn remove_image(&self, request: Request<cri::RemoveImageRequest>) -> Result<Response<cri::RemoveImageResponse>, Status> {
        let name = image_name(request.get_ref().image.as_ref(), "image.image")?;
        let span = info_span!("remove_image", image = %name);
        async move {
            self.services.images.remove(&name).await.map_err(|e| Status::from(&e))?;
            Ok(Response::new(cri::RemoveImageResponse {}))
        }
        .instrument(span)
        .await
    }

    async fn image_fs_info(&self, _request: Request<cri::ImageFsInfoRequest>) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        let usage = self.services.images.fs_usage().await.map_err(|e| Status::from(&e))?;
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| super::status(Code::Internal, &e))?.as_nanos() as i64;
        let mountpoint = self.services.images.store().root().display().to_string();
        let fs = cri::FilesystemUsage {
            timestamp,
            fs_id: Some(cri::FilesystemIdentifier { mountpoint }),
            used_bytes: Some(cri::UInt64Value { value: usage.used_bytes }),
            inodes_used: Some(cri::UInt64Value { value: usage.inodes_used }),
        };
        Ok(Response::new(cri::ImageFsInfoResponse { image_filesystems: vec![fs.clone()], container_filesystems: vec![fs] }))
    }
}

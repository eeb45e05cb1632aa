//! ImageService: PullImage, ListImages, ImageStatus, RemoveImage, ImageFsInfo.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cri::v1 as cri;
use tonic::{Code, Status};
use tracing::{Instrument, info_span};

use super::Services;
use crate::image::ImageView;
use crate::image::auth::RequestAuth;

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

pub async fn list_images(s: &Services, req: cri::ListImagesRequest) -> Result<cri::ListImagesResponse, Status> {
    let filter = req.filter.and_then(|f| f.image).map(|s| s.image);
    let images = s.images.list(filter.as_deref()).map_err(|e| Status::from(&e))?;
    Ok(cri::ListImagesResponse { images: images.into_iter().map(to_cri).collect() })
}

pub async fn image_status(s: &Services, req: cri::ImageStatusRequest) -> Result<cri::ImageStatusResponse, Status> {
    let name = image_name(req.image.as_ref(), "image.image")?;
    let span = info_span!("image_status", image = %name);
    async move {
        let Some(view) = s.images.status(&name).map_err(|e| Status::from(&e))? else {
            return Ok(cri::ImageStatusResponse::default());
        };
        let mut info = HashMap::new();
        if req.verbose {
            let config = s.images.config(&view.record.id).await.map_err(|e| Status::from(&e))?;
            let spec: serde_json::Value = serde_json::from_slice(&config).unwrap_or(serde_json::Value::Null);
            let detail = serde_json::json!({
                "imageSpec": spec,
                "pinned": view.pinned,
                "layers": view.record.layers,
                "manifestDigest": view.record.manifest_digest,
            });
            info.insert("info".to_string(), detail.to_string());
        }
        Ok(cri::ImageStatusResponse { image: Some(to_cri(view)), info })
    }
    .instrument(span)
    .await
}

pub async fn pull_image(s: &Services, req: cri::PullImageRequest) -> Result<cri::PullImageResponse, Status> {
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
        let outcome = s.images.pull(&name, auth).await.map_err(|e| {
            tracing::error!(error = %crate::error_chain(&*e), "pull failed");
            Status::from(&*e)
        })?;
        Ok(cri::PullImageResponse { image_ref: outcome.id })
    }
    .instrument(span)
    .await
}

pub async fn remove_image(s: &Services, req: cri::RemoveImageRequest) -> Result<cri::RemoveImageResponse, Status> {
    let name = image_name(req.image.as_ref(), "image.image")?;
    let span = info_span!("remove_image", image = %name);
    async move {
        // Removed containers leave the store's record just after RemoveContainer answers:
        // until then the store counts them as users of their image.
        s.containers.removals_settled().await;
        s.images.remove(&name).await.map_err(|e| Status::from(&e))?;
        Ok(cri::RemoveImageResponse {})
    }
    .instrument(span)
    .await
}

pub async fn image_fs_info(s: &Services, _req: cri::ImageFsInfoRequest) -> Result<cri::ImageFsInfoResponse, Status> {
    let usage = s.images.fs_usage().await.map_err(|e| Status::from(&e))?;
    let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| super::status(Code::Internal, &e))?.as_nanos() as i64;
    let mountpoint = s.images.store().root().display().to_string();
    let fs = |(used_bytes, inodes_used): (u64, u64)| cri::FilesystemUsage {
        timestamp,
        fs_id: Some(cri::FilesystemIdentifier { mountpoint: mountpoint.clone() }),
        used_bytes: Some(cri::UInt64Value { value: used_bytes }),
        inodes_used: Some(cri::UInt64Value { value: inodes_used }),
    };
    // Writable layers live in the same root as the image layers (one filesystem, as CRI-O's
    // graph root): the same mountpoint, so the kubelet sees no split image filesystem, with
    // what the writable layers use.
    let store = s.images.store().clone();
    let writable =
        tokio::task::spawn_blocking(move || store.writable_layers_usage()).await.map_err(|e| super::status(Code::Internal, &e))?;
    Ok(cri::ImageFsInfoResponse {
        image_filesystems: vec![fs((usage.used_bytes, usage.inodes_used))],
        container_filesystems: vec![fs(writable)],
    })
}

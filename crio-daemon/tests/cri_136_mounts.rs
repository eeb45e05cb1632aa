//! The 1.36 CRI's mount and container fields against the real daemon: image volumes (an
//! image's root filesystem, or a directory of it, mounted read-only and kept in use),
//! recursive read-only binds, ContainerStatus' user and resources, one image id everywhere,
//! and what the runtime cannot honour refused by name.

mod common;

use std::process::Command;

use common::image::{ImageBuilder, Layer};
use common::pods::*;
use crio::cri::v1 as cri;

/// A tmpfs mounted for the test, unmounted however the test ends.
struct TmpfsGuard(std::path::PathBuf);

impl TmpfsGuard {
    fn mount(at: &std::path::Path) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(at).status().expect("running mount").success();
        assert!(ok, "mounting a tmpfs at {}", at.display());
        TmpfsGuard(at.into())
    }
}

impl Drop for TmpfsGuard {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mounted(needle: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().any(|l| l.contains(needle))
}

#[tokio::test(flavor = "multi_thread")]
async fn image_volumes_recursive_read_only_user_and_refusals() {
    let extra = "[crio.runtime.runtimes.kata]\nruntime_path = \"/bin/true\"\nruntime_type = \"vm\"\n";
    let (reg, d, image) = host_network_env(extra).await;
    let mut rt = d.runtime().await;
    let mut images = d.images().await;

    // Two layers, so the volume is an overlay of several lowers.
    let content = ImageBuilder::new()
        .layer(Layer::builder().dir("data").file("data/hello", b"hi from the image\n").symlink("data/link", "/etc").build())
        .layer(Layer::builder().file("data/second", b"second layer\n").build());
    reg.push("content", "1", &content).await;
    let pulled = images
        .pull_image(cri::PullImageRequest { image: Some(common::daemon::spec(&format!("{}/content:1", reg.addr))), ..Default::default() })
        .await
        .expect("PullImage")
        .into_inner()
        .image_ref;
    let listed = d.status(&format!("{}/content:1", reg.addr)).await.expect("listed").id;
    assert_eq!(pulled, listed, "PullImageResponse.image_ref is Image.id (1.36)");

    let pc = host_network_pod_config("volumes", &d.dir.path().join("logs/volumes"));
    let pod = run_pod(&d, pc.clone()).await.expect("RunPodSandbox");
    let volume = |sub: &str| cri::Mount {
        container_path: "/vol".into(),
        image: Some(cri::ImageSpec { image: pulled.clone(), ..Default::default() }),
        image_sub_path: sub.into(),
        ..Default::default()
    };
    let mut cc = container_config("reader", &image, "exec sleep 1000");
    cc.mounts = vec![volume("data")];
    let reader = start(&d, &pod, &pc, cc).await;
    let out = rt.exec_sync(sh(&reader, "cat /vol/hello /vol/second")).await.unwrap().into_inner();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi from the image\nsecond layer\n", "{out:?}");
    let write = rt.exec_sync(sh(&reader, "touch /vol/new")).await.unwrap().into_inner();
    assert_ne!(write.exit_code, 0, "image volumes are read-only");
    assert!(mounted(&format!("{reader}/volumes/0")), "the volume is mounted on the host");

    // Kept in use while mounted.
    let err = images.remove_image(cri::RemoveImageRequest { image: Some(common::daemon::spec(&pulled)) }).await.expect_err("in use");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");

    // ContainerStatus: the mount as asked, the ids the process runs with, its resources,
    // and the same image id as the image service.
    let st = status(&d, &reader).await;
    let m = st.mounts.iter().find(|m| m.container_path == "/vol").expect("the volume in status");
    assert_eq!((m.image.as_ref().map(|i| i.image.as_str()), m.image_sub_path.as_str(), m.readonly), (Some(pulled.as_str()), "data", true));
    let user = st.user.and_then(|u| u.linux).expect("ContainerStatus.user");
    assert_eq!((user.uid, user.gid), (0, 0));
    assert!(st.resources.and_then(|r| r.linux).is_some(), "ContainerStatus.resources");
    let image_id = d.status(&image).await.unwrap().id;
    assert_eq!(st.image_id, image_id);

    // A sub path that is missing, or passes through a symbolic link, is refused.
    for (sub, why) in [("nope", "does not exist"), ("data/link", "symbolic link")] {
        let mut cc = container_config(&format!("bad-{}", sub.len()), &image, "exec sleep 1000");
        cc.mounts = vec![volume(sub)];
        let err = create(&d, &pod, &pc, cc).await.expect_err(sub);
        assert!(err.code() == tonic::Code::InvalidArgument && err.message().contains(why), "{sub}: {err:?}");
    }

    // Removing the container frees the image and unmounts the volume (behind RemoveContainer's
    // answer: RemoveImage waits for that).
    rt.stop_container(cri::StopContainerRequest { container_id: reader.clone(), timeout: 0 }).await.unwrap();
    rt.remove_container(cri::RemoveContainerRequest { container_id: reader.clone() }).await.unwrap();
    images.remove_image(cri::RemoveImageRequest { image: Some(common::daemon::spec(&pulled)) }).await.expect("RemoveImage once unused");
    assert!(!mounted(&format!("{reader}/volumes/0")));

    // Recursive read-only: a submount of a read-only bind is read-only too (runc "rro", this
    // kernel has mount_setattr); a plain read-only bind leaves it writable.
    let host = d.dir.path().join("rro");
    std::fs::create_dir_all(&host).unwrap();
    let _sub = TmpfsGuard::mount(&host.join("sub"));
    let handlers = rt.status(cri::StatusRequest { verbose: false }).await.unwrap().into_inner().runtime_handlers;
    let runc = handlers.iter().find(|h| h.name == "runc").expect("the runc handler");
    assert!(runc.features.unwrap().recursive_read_only_mounts, "runc 1.1 on Linux 6.x");
    assert!(!handlers.iter().any(|h| h.name == "kata"), "a vm handler is not offered");
    let bind = |rro: bool| cri::Mount {
        container_path: "/ro".into(),
        host_path: host.display().to_string(),
        readonly: true,
        recursive_read_only: rro,
        ..Default::default()
    };
    for (rro, expect_writable) in [(true, false), (false, true)] {
        let mut cc = container_config(&format!("rro-{rro}"), &image, "exec sleep 1000");
        cc.mounts = vec![bind(rro)];
        let id = start(&d, &pod, &pc, cc).await;
        let top = rt.exec_sync(sh(&id, "touch /ro/top")).await.unwrap().into_inner();
        assert_ne!(top.exit_code, 0, "the bind itself is read-only");
        let sub = rt.exec_sync(sh(&id, "touch /ro/sub/x")).await.unwrap().into_inner();
        assert_eq!(sub.exit_code == 0, expect_writable, "rro={rro}: {sub:?}");
        assert!(status(&d, &id).await.mounts.iter().any(|m| m.container_path == "/ro" && m.recursive_read_only == rro));
    }
    let mut cc = container_config("rro-rw", &image, "exec sleep 1000");
    cc.mounts = vec![cri::Mount { readonly: false, ..bind(true) }];
    let err = create(&d, &pod, &pc, cc).await.expect_err("rro on a writable mount");
    assert!(err.code() == tonic::Code::InvalidArgument && err.message().contains("recursive_read_only"), "{err:?}");

    // What the runtime cannot honour is refused by name: a CDI device no spec describes (the
    // default spec directories have none here; tests/cdi_devices.rs applies real specs).
    let mut cc = container_config("cdi", &image, "exec sleep 1000");
    cc.cdi_devices = vec![cri::CdiDevice { name: "vendor.com/gpu=0".into() }];
    let err = create(&d, &pod, &pc, cc).await.expect_err("CDI devices");
    assert!(err.code() == tonic::Code::FailedPrecondition && err.message().contains("CDI_devices"), "{err:?}");
    let mut cc = container_config("idmap", &image, "exec sleep 1000");
    cc.mounts = vec![cri::Mount { uid_mappings: vec![cri::IdMapping { host_id: 100000, container_id: 0, length: 65536 }], ..bind(false) }];
    let err = create(&d, &pod, &pc, cc).await.expect_err("ID-mapped mount");
    assert!(err.code() == tonic::Code::FailedPrecondition && err.message().contains("uidMappings"), "{err:?}");
    let mut kata = host_network_pod_config("kata", &d.dir.path().join("logs/kata"));
    kata.metadata.as_mut().unwrap().uid = "kata-uid".into();
    let err = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(kata), runtime_handler: "kata".into() })
        .await
        .expect_err("a vm runtime_type");
    assert!(err.code() == tonic::Code::FailedPrecondition && err.message().contains("runtime_type"), "{err:?}");

    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}

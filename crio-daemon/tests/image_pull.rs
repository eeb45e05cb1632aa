//! PullImage, ListImages, ImageStatus, RemoveImage and ImageFsInfo through the real daemon
//! against a real registry.

mod common;

use common::daemon::DaemonConfig;
use common::image::Compression;
use common::{Daemon, ImageBuilder, Layer, Registry};
use crio::cri::v1 as cri;
use tonic::Code;

async fn daemon(reg: &Registry) -> Daemon {
    Daemon::start(DaemonConfig::trusting(reg)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_list_status_remove_round_trip() {
    let reg = Registry::start();
    let img = ImageBuilder::new().layer(Layer::busybox()).layer(Layer::builder().file("hello", b"world").build()).user("1000:1000");
    let pushed = reg.push("team/app", "v1", &img).await;
    let d = daemon(&reg).await;
    let name = format!("{}/team/app:v1", reg.addr);

    let id = d.pull(&name).await.expect("pull");
    assert_eq!(id, pushed.id());
    // A re-pull asks for the manifest again, but neither which scheme the registry speaks nor
    // the config it has.
    assert_eq!(d.pull(&name).await.expect("re-pull"), id);
    let log = reg.log();
    let gets = |path: &str| log.lines().filter(|l| l.contains(&format!("\"GET {path} "))).count();
    let config = format!("/v2/team/app/blobs/{}", pushed.config_digest);
    assert_eq!((gets("/v2/"), gets("/v2/team/app/manifests/v1"), gets(&config)), (1, 2, 1), "{log}");
    let st = d.status(&name).await.expect("image present after pull");
    assert_eq!(st.id, pushed.id());
    assert_eq!(st.repo_tags, std::slice::from_ref(&name));
    assert_eq!(st.repo_digests, [format!("{}/team/app@{}", reg.addr, pushed.manifest_digest)]);
    assert_eq!(st.uid, Some(cri::Int64Value { value: 1000 }));
    let tar_sizes: u64 = img.layers.iter().map(|l| l.tar.len() as u64).sum();
    assert_eq!(st.size, tar_sizes + pushed.manifest_len + pushed.config_len);
    assert!(!st.pinned);

    // The same image by id, id prefix, digest reference and `sha256:` id.
    for alias in [
        pushed.id(),
        pushed.id()[..12].to_string(),
        format!("{}/team/app@{}", reg.addr, pushed.manifest_digest),
        pushed.config_digest.clone(),
    ] {
        assert_eq!(d.status(&alias).await.map(|i| i.id), Some(pushed.id()), "lookup by {alias}");
    }
    let list = d.list().await;
    assert_eq!(list.len(), 1);
    let filtered = d
        .images()
        .await
        .list_images(cri::ListImagesRequest { filter: Some(cri::ImageFilter { image: Some(common::daemon::spec("nothere.example/x:1")) }) })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(filtered.is_empty());

    let fs = d.images().await.image_fs_info(cri::ImageFsInfoRequest {}).await.unwrap().into_inner();
    let used = fs.image_filesystems[0].used_bytes.as_ref().unwrap().value;
    assert!(used >= std::fs::metadata("/bin/busybox").unwrap().len(), "layers counted in ImageFsInfo: {used}");

    d.remove(&name).await.expect("remove by tag");
    assert!(d.status(&name).await.is_none());
    assert!(d.list().await.is_empty());
    d.remove(&name).await.expect("removing a missing image succeeds");
    let layers = std::fs::read_dir(d.root().join("layers")).unwrap().count();
    assert_eq!(layers, 0, "unreferenced layers collected");
}

/// critest's image benchmark runs pull, status and remove of one image from several clients at
/// once: a RemoveImage that finds the image already removed by another succeeds, as the CRI
/// asks of it, instead of failing with NotFound.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_lifecycles_of_one_image_all_succeed() {
    let reg = Registry::start();
    reg.push("team/app", "v1", &ImageBuilder::new().layer(Layer::busybox())).await;
    let d = daemon(&reg).await;
    let name = format!("{}/team/app:v1", reg.addr);
    for round in 0..4 {
        let lifecycles = (0..4).map(|_| async {
            d.pull(&name).await.map_err(|e| format!("pull: {e}"))?;
            d.images()
                .await
                .image_status(cri::ImageStatusRequest { image: Some(common::daemon::spec(&name)), verbose: false })
                .await
                .map_err(|e| format!("status: {e}"))?;
            d.remove(&name).await.map_err(|e| format!("remove: {e}"))
        });
        for outcome in futures::future::join_all(lifecycles).await {
            outcome.unwrap_or_else(|e| panic!("round {round}: {e}"));
        }
    }
    assert!(d.list().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_arch_index_selects_host_platform() {
    let reg = Registry::start();
    let amd = ImageBuilder::new().layer(Layer::builder().file("arch", b"amd64").build()).arch("amd64");
    let arm = ImageBuilder::new().layer(Layer::builder().file("arch", b"arm64").build()).arch("arm64");
    let s390 = ImageBuilder::new().layer(Layer::builder().file("arch", b"s390x").build()).arch("s390x");
    let (index_digest, pushed) = reg.push_index("multi", "1", &[s390, arm, amd]).await;
    let d = daemon(&reg).await;
    let name = format!("{}/multi:1", reg.addr);
    let id = d.pull(&name).await.expect("pull index");
    let host = match std::env::consts::ARCH {
        "x86_64" => 2,
        "aarch64" => 1,
        other => panic!("no test image for {other}"),
    };
    assert_eq!(id, pushed[host].id());
    let st = d.status(&name).await.unwrap();
    assert_eq!(st.repo_digests[0], format!("{}/multi@{index_digest}", reg.addr), "index digest first");
    assert!(st.repo_digests.contains(&format!("{}/multi@{}", reg.addr, pushed[host].manifest_digest)));
}

#[tokio::test(flavor = "multi_thread")]
async fn zstd_uncompressed_and_docker_media_types() {
    let reg = Registry::start();
    let img = ImageBuilder::new()
        .layer(Layer::builder().file("a", b"zstd").build().with(Compression::Zstd))
        .layer(Layer::builder().file("b", b"plain").build().with(Compression::None));
    let z = reg.push("mixed", "1", &img).await;
    let docker = ImageBuilder::new().layer(Layer::builder().file("c", b"docker").build()).docker().user("nobody");
    let dk = reg.push("docker", "1", &docker).await;
    let d = daemon(&reg).await;
    assert_eq!(d.pull(&format!("{}/mixed:1", reg.addr)).await.unwrap(), z.id());
    assert_eq!(d.pull(&format!("{}/docker:1", reg.addr)).await.unwrap(), dk.id());
    let st = d.status(&format!("{}/docker:1", reg.addr)).await.unwrap();
    assert_eq!((st.uid, st.username.as_str()), (None, "nobody"));
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_layers_are_stored_once_and_tags_move() {
    let reg = Registry::start();
    let base = Layer::busybox();
    let a = reg.push("app", "1", &ImageBuilder::new().layer(base.clone()).layer(Layer::builder().file("v", b"1").build())).await;
    let b = reg.push("app", "2", &ImageBuilder::new().layer(base.clone()).layer(Layer::builder().file("v", b"2").build())).await;
    let d = daemon(&reg).await;
    d.pull(&format!("{}/app:1", reg.addr)).await.unwrap();
    d.pull(&format!("{}/app:2", reg.addr)).await.unwrap();
    assert_eq!(std::fs::read_dir(d.root().join("layers")).unwrap().count(), 3, "base layer shared");
    // Retag app:1 to b's manifest: the tag moves, a keeps its digest reference.
    let manifest = reqwest::get(format!("http://{}/v2/app/manifests/2", reg.addr)).await;
    drop(manifest);
    let b_manifest = reg
        .client()
        .get(format!("http://{}/v2/app/manifests/{}", reg.addr, b.manifest_digest))
        .header("Accept", common::image::OCI_MANIFEST)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    reg.push_manifest("app", "1", common::image::OCI_MANIFEST, &b_manifest).await;
    d.pull(&format!("{}/app:1", reg.addr)).await.unwrap();
    let a_st = d.status(&a.id()).await.unwrap();
    assert!(a_st.repo_tags.is_empty(), "tag moved away: {:?}", a_st.repo_tags);
    let b_st = d.status(&b.id()).await.unwrap();
    assert_eq!(b_st.repo_tags.len(), 2);
    // Removing by one of two tags removes the image and both tags (the 1.36 CRI's rule), its
    // own layer with it; the shared base stays for `a`. Again, by id: already gone, success.
    d.remove(&format!("{}/app:2", reg.addr)).await.unwrap();
    assert!(d.status(&b.id()).await.is_none());
    assert!(d.status(&format!("{}/app:1", reg.addr)).await.is_none(), "the other tag went with it");
    d.remove(&b.id()).await.unwrap();
    assert_eq!(std::fs::read_dir(d.root().join("layers")).unwrap().count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_identical_pulls_share_one_download() {
    let reg = Registry::start();
    let big: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let img = ImageBuilder::new().layer(Layer::builder().file("big", &big).build());
    let pushed = reg.push("shared", "1", &img).await;
    let d = daemon(&reg).await;
    let name = format!("{}/shared:1", reg.addr);
    let pulls: Vec<_> = (0..5).map(|_| d.pull(&name)).collect();
    for r in futures::future::join_all(pulls).await {
        assert_eq!(r.expect("pull"), pushed.id());
    }
    let layer = &pushed.layer_digests[0];
    let fetches = reg.log().lines().filter(|l| l.contains(&format!("/blobs/{layer}")) && l.contains("\"GET ")).count();
    assert_eq!(fetches, 1, "the layer was downloaded once for five pulls");
}

#[tokio::test(flavor = "multi_thread")]
async fn status_of_unknown_image_is_empty_and_bad_names_are_invalid() {
    let d = Daemon::start(DaemonConfig::default()).await;
    assert!(d.status("127.0.0.1:1/none:1").await.is_none());
    let err = d.pull("UPPER/Case:1").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("UPPER/Case:1"), "names the reference: {}", err.message());
    let err = d.pull("").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("image.image"), "{}", err.message());
}

//! SIGKILL of the daemon in the middle of a pull: the next start is consistent (no half image,
//! no half layer, no leftover downloads) and the pull can simply be repeated.

mod common;

use std::fs;
use std::time::Duration;

use common::daemon::DaemonConfig;
use common::image::Compression;
use common::{Daemon, ImageBuilder, Layer, Registry};

/// Incompressible content, so the layer takes a while to move and to hash.
fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_during_pull_leaves_a_consistent_store() {
    let reg = Registry::start();
    let mut img = ImageBuilder::new();
    for i in 0..4 {
        img = img.layer(Layer::builder().file("blob", &noise(48 << 20, i)).build().with(Compression::None));
    }
    let pushed = reg.push("big", "1", &img).await;
    let name = format!("{}/big:1", reg.addr);
    let mut d = Daemon::start(DaemonConfig::trusting(&reg)).await;

    let mut client = d.images().await;
    let req = crio::cri::v1::PullImageRequest { image: Some(common::daemon::spec(&name)), ..Default::default() };
    let pull = tokio::spawn(async move { client.pull_image(req).await });
    // Kill once a download is under way: bytes in tmp/, image not yet recorded.
    let tmp = d.root().join("tmp");
    let mut seen = false;
    for _ in 0..2000 {
        let busy = fs::read_dir(&tmp).map(|e| e.count() > 0).unwrap_or(false);
        if busy {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(seen, "the pull never started downloading");
    d.kill9();
    assert!(pull.await.unwrap().is_err(), "the caller sees the daemon die");

    d.restart().await;
    assert!(d.list().await.is_empty(), "no half image is listed");
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0, "partial downloads removed on start");
    for layer in fs::read_dir(d.root().join("layers")).unwrap() {
        let layer = layer.unwrap().path();
        assert!(layer.join("layer.json").exists(), "only whole layers remain: {}", layer.display());
    }
    assert_eq!(d.pull(&name).await.expect("the pull can be repeated"), pushed.id());
    let st = d.status(&name).await.unwrap();
    assert_eq!(st.size, img.layers.iter().map(|l| l.tar.len() as u64).sum::<u64>() + pushed.manifest_len + pushed.config_len);
}

//! Whole-daemon image benchmark: pull + unpack of a large multi-layer image from a local
//! registry, and ImageStatus / ListImages latency with 100 images stored. Writes a markdown
//! table and JSON under `target/bench/`. Run with `cargo xtask bench` (or `cargo bench --bench images`).

#[path = "../crio-daemon/tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::daemon::{DaemonConfig, spec};
use common::image::Compression;
use common::{Daemon, ImageBuilder, Layer, Registry};
use crio::cri::v1 as cri;

const LARGE_LAYERS: u32 = 4;
const LARGE_LAYER_BYTES: usize = 32 << 20;
const SMALL_IMAGES: usize = 100;
const PULL_RUNS: usize = 5;
const STATUS_CALLS: usize = 2000;
const LIST_CALLS: usize = 500;

/// Half random, half repetitive: compresses about 2:1, like real binaries and libraries.
fn content(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|i| {
            if (i / 4096) % 2 == 0 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            } else {
                (i % 251) as u8
            }
        })
        .collect()
}

struct Stats {
    name: String,
    samples: Vec<Duration>,
}

impl Stats {
    fn pct(&self, p: f64) -> Duration {
        crio_benches::percentile(&self.samples, p)
    }

    fn row(&self) -> String {
        let ms = |d: Duration| format!("{:.3}", d.as_secs_f64() * 1e3);
        format!("| {} | {} | {} | {} | {} |", self.name, self.samples.len(), ms(self.pct(0.5)), ms(self.pct(0.95)), ms(self.pct(0.99)))
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name, "n": self.samples.len(),
            "p50_ms": self.pct(0.5).as_secs_f64() * 1e3,
            "p95_ms": self.pct(0.95).as_secs_f64() * 1e3,
            "p99_ms": self.pct(0.99).as_secs_f64() * 1e3,
        })
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // `cargo test --benches` runs this with no `--bench`: build-check only, no long run.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let reg = Registry::start();
    let mut large = ImageBuilder::new();
    for i in 0..LARGE_LAYERS {
        large = large.layer(Layer::builder().file("data", &content(LARGE_LAYER_BYTES, i)).build().with(Compression::Gzip));
    }
    let compressed: usize = large.layers.iter().map(|l| l.blob().len()).sum();
    let uncompressed: usize = large.layers.iter().map(|l| l.tar.len()).sum();
    let pushed = reg.push("bench/large", "1", &large).await;
    for i in 0..SMALL_IMAGES {
        let img = ImageBuilder::new().layer(Layer::builder().file("id", format!("{i}").as_bytes()).build());
        reg.push(&format!("bench/small{i}"), "1", &img).await;
    }
    let d = Daemon::start(DaemonConfig::trusting(&reg)).await;
    let name = format!("{}/bench/large:1", reg.addr);

    let mut pull = Stats { name: format!("PullImage large ({LARGE_LAYERS} layers, {} MiB gzip)", compressed >> 20), samples: vec![] };
    for _ in 0..PULL_RUNS {
        d.remove(&pushed.id()).await.expect("remove");
        let t = Instant::now();
        d.pull(&name).await.expect("pull large");
        pull.samples.push(t.elapsed());
    }
    let mut repull = Stats { name: "PullImage of a present image".into(), samples: vec![] };
    for _ in 0..20 {
        let t = Instant::now();
        d.pull(&name).await.expect("re-pull");
        repull.samples.push(t.elapsed());
    }
    for i in 0..SMALL_IMAGES {
        d.pull(&format!("{}/bench/small{i}:1", reg.addr)).await.expect("pull small");
    }
    let mut images = d.images().await;
    let mut status = Stats { name: format!("ImageStatus ({} images stored)", SMALL_IMAGES + 1), samples: vec![] };
    for i in 0..STATUS_CALLS {
        let req = cri::ImageStatusRequest { image: Some(spec(&format!("{}/bench/small{}:1", reg.addr, i % SMALL_IMAGES))), verbose: false };
        let t = Instant::now();
        let r = images.image_status(req).await.expect("status");
        status.samples.push(t.elapsed());
        assert!(r.into_inner().image.is_some());
    }
    let mut list = Stats { name: format!("ListImages ({} images stored)", SMALL_IMAGES + 1), samples: vec![] };
    for _ in 0..LIST_CALLS {
        let t = Instant::now();
        let r = images.list_images(cri::ListImagesRequest { filter: None }).await.expect("list");
        list.samples.push(t.elapsed());
        assert_eq!(r.into_inner().images.len(), SMALL_IMAGES + 1);
    }

    let p50 = pull.pct(0.5).as_secs_f64();
    let throughput = format!(
        "pull + unpack: {:.0} MiB/s compressed, {:.0} MiB/s unpacked (p50)",
        compressed as f64 / p50 / 1048576.0,
        uncompressed as f64 / p50 / 1048576.0
    );
    let machine = format!(
        "{} cores, kernel {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim()
    );
    let all = [&pull, &repull, &status, &list];
    let mut md = format!("## Image service ({machine})\n\n| operation | n | p50 ms | p95 ms | p99 ms |\n|---|---|---|---|---|\n");
    for s in all {
        md.push_str(&s.row());
        md.push('\n');
    }
    md.push_str(&format!("\n{throughput}\n"));
    print!("{md}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("images.md"), &md).unwrap();
    let json =
        serde_json::json!({"machine": machine, "results": all.iter().map(|s| s.json()).collect::<Vec<_>>(), "throughput": throughput});
    std::fs::write(dir.join("images.json"), serde_json::to_vec_pretty(&json).unwrap()).unwrap();
}

//! The report: per measurement, both runtimes' p50/p95/p99 (or values) and ours/peer, as a
//! markdown table and JSON under target/bench/.

use std::time::Duration;

use super::scenarios::Results;

pub struct Machine {
    pub cores: usize,
    pub kernel: String,
    pub ours: String,
    pub peer: String,
    pub oci: String,
    pub rounds: usize,
}

/// Milliseconds at the `p` quantile.
fn pct(samples: &[Duration], p: f64) -> f64 {
    crio_benches::percentile(samples, p).as_secs_f64() * 1e3
}

/// Fewer samples than this make no honest p95/p99: the tail column shows the maximum.
const TAIL_SAMPLES: usize = 100;

/// The p95 cell: "-" below `TAIL_SAMPLES`.
fn p95_cell(samples: &[Duration]) -> String {
    if samples.len() >= TAIL_SAMPLES { format!("{:.2}", pct(samples, 0.95)) } else { "-".into() }
}

/// The p99 cell, or "max X" below `TAIL_SAMPLES` (the same value, named for what it is).
fn p99_cell(samples: &[Duration]) -> String {
    let v = pct(samples, 0.99);
    if samples.len() >= TAIL_SAMPLES { format!("{v:.2}") } else { format!("max {v:.2}") }
}

/// The tail ratio cell, marked when either side is a maximum.
fn ratio_cell(a: &[Duration], b: &[Duration]) -> String {
    let r = pct(a, 0.99) / pct(b, 0.99);
    if a.len().min(b.len()) >= TAIL_SAMPLES { format!("{r:.2}") } else { format!("{r:.2} (max)") }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn write(m: &Machine, ours: &Results, peer: &Results, untraced: &Results) {
    let mut md = format!(
        "Machine: {} cores, kernel {}; {} vs {}; OCI runtime for both: {}; {} alternating rounds. \
         With fewer than 100 samples a tail cell shows the maximum (\"max\"), not a percentile.\n\n\
         | measurement | n | crio p50 ms | p95 | p99 | containerd p50 ms | p95 | p99 | ratio p50 | ratio p99 |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        m.cores, m.kernel, m.ours, m.peer, m.oci, m.rounds
    );
    let mut json = Vec::new();
    // A row the peer has no sample for (an RPC it lacks) keeps its own numbers, with "-".
    for (name, a) in &ours.samples {
        let (a50, a95, a99) = (pct(a, 0.5), pct(a, 0.95), pct(a, 0.99));
        let Some(b) = peer.samples.get(name) else {
            md += &format!("| {name} | {} | {a50:.2} | {} | {} | - | - | - | - | - |\n", a.len(), p95_cell(a), p99_cell(a));
            json.push(serde_json::json!({"name": name, "n": a.len(), "crio": {"p50_ms": a50, "p95_ms": a95, "p99_ms": a99}}));
            continue;
        };
        let (b50, b95, b99) = (pct(b, 0.5), pct(b, 0.95), pct(b, 0.99));
        md += &format!(
            "| {name} | {} | {a50:.2} | {} | {} | {b50:.2} | {} | {} | {:.2} | {} |\n",
            a.len(),
            p95_cell(a),
            p99_cell(a),
            p95_cell(b),
            p99_cell(b),
            a50 / b50,
            ratio_cell(a, b)
        );
        json.push(serde_json::json!({"name": name, "n": a.len(),
            "crio": {"p50_ms": a50, "p95_ms": a95, "p99_ms": a99},
            "containerd": {"p50_ms": b50, "p95_ms": b95, "p99_ms": b99},
            "ratio_p50": a50 / b50, "ratio_p99": a99 / b99}));
    }
    md += "\n| measurement (median of rounds) | crio | containerd | ratio |\n|---|---|---|---|\n";
    for (name, a) in &ours.values {
        let a = median(a);
        let Some(b) = peer.values.get(name) else {
            md += &format!("| {name} | {a:.3} | - | - |\n");
            json.push(serde_json::json!({"name": name, "crio": a}));
            continue;
        };
        let b = median(b);
        md += &format!("| {name} | {a:.3} | {b:.3} | {:.2} |\n", a / b);
        json.push(serde_json::json!({"name": name, "crio": a, "containerd": b, "ratio": a / b}));
    }
    if untraced.samples.is_empty() && untraced.values.is_empty() {
        save(m, "cri", &md, json);
        return;
    }
    md += "\nThe cost of eBPF tracing: crio with its kernel programs loaded (on) and with \
           `[crio.ebpf] enable = false` (off), same rounds.\n\n\
           | measurement | on p50 ms | on p99 | off p50 ms | off p99 | on/off p50 | on/off p99 |\n|---|---|---|---|---|---|---|\n";
    for (name, b) in &untraced.samples {
        let Some(a) = ours.samples.get(name) else { continue };
        let (a50, a99, b50, b99) = (pct(a, 0.5), pct(a, 0.99), pct(b, 0.5), pct(b, 0.99));
        md += &format!("| {name} | {a50:.2} | {} | {b50:.2} | {} | {:.2} | {} |\n", p99_cell(a), p99_cell(b), a50 / b50, ratio_cell(a, b));
        json.push(serde_json::json!({"name": name, "tracing": "on/off", "on": {"p50_ms": a50, "p99_ms": a99},
            "off": {"p50_ms": b50, "p99_ms": b99}, "ratio_p50": a50 / b50, "ratio_p99": a99 / b99}));
    }
    for (name, b) in &untraced.values {
        let Some(a) = ours.values.get(name) else { continue };
        let (a, b) = (median(a), median(b));
        md += &format!("| {name} (median) | {a:.1} | | {b:.1} | | {:.2} | |\n", a / b);
        json.push(serde_json::json!({"name": name, "tracing": "on/off", "on": a, "off": b, "ratio": a / b}));
    }
    save(m, "cri", &md, json);
}

/// Prints the report and writes it as `target/bench/<stem>.md` and `.json`.
fn save(m: &Machine, stem: &str, md: &str, json: Vec<serde_json::Value>) {
    println!("{md}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{stem}.md")), md).unwrap();
    let doc = serde_json::json!({"machine": {"cores": m.cores, "kernel": m.kernel, "crio": m.ours, "containerd": m.peer,
        "oci_runtime": m.oci, "rounds": m.rounds}, "results": json});
    std::fs::write(dir.join(format!("{stem}.json")), serde_json::to_string_pretty(&doc).unwrap()).unwrap();
}

/// The cost of scheduling tracing: storms and exec storms with it on (with and without the
/// kernel's run-time statistics, `lean`) and off (median of rounds), and each program's
/// kernel-measured time per run.
pub fn write_sched(m: &Machine, on: &Results, lean: &Results, off: &Results) {
    let mut md = format!(
        "Machine: {} cores, kernel {}; {}; {} alternating rounds of scheduling tracing on (with and without \
         the kernel's program statistics) and off.\n\n\
         | measurement (median of rounds) | sched on | on, no statistics | sched off | on/off | no statistics/off |\n\
         |---|---|---|---|---|---|\n",
        m.cores, m.kernel, m.ours, m.rounds
    );
    let mut json = Vec::new();
    for (name, a) in &on.values {
        let a = median(a);
        let l = lean.values.get(name).map(|v| median(v));
        match off.values.get(name) {
            Some(b) => {
                let b = median(b);
                let (lc, lr) = l.map_or(("-".into(), "-".into()), |l| (format!("{l:.1}"), format!("{:.3}", l / b)));
                md += &format!("| {name} | {a:.1} | {lc} | {b:.1} | {:.3} | {lr} |\n", a / b);
                json.push(serde_json::json!({"name": name, "on": a, "on_no_stats": l, "off": b, "ratio": a / b}));
            }
            // Program costs exist only with the programs and their statistics on.
            None => {
                md += &format!("| {name} | {a:.1} | - | - | - | - |\n");
                json.push(serde_json::json!({"name": name, "on": a}));
            }
        }
    }
    md +=
        "\n| measurement | n | on p50 ms | on p99 | off p50 ms | off p99 | on/off p50 | on/off p99 |\n|---|---|---|---|---|---|---|---|\n";
    for (name, a) in &on.samples {
        let Some(b) = off.samples.get(name) else { continue };
        let (a50, a99, b50, b99) = (pct(a, 0.5), pct(a, 0.99), pct(b, 0.5), pct(b, 0.99));
        md += &format!(
            "| {name} | {} | {a50:.2} | {} | {b50:.2} | {} | {:.2} | {} |\n",
            a.len(),
            p99_cell(a),
            p99_cell(b),
            a50 / b50,
            ratio_cell(a, b)
        );
        json.push(serde_json::json!({"name": name, "n": a.len(), "on": {"p50_ms": a50, "p99_ms": a99},
            "off": {"p50_ms": b50, "p99_ms": b99}}));
    }
    save(m, "sched", &md, json);
}

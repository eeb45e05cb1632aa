//! `crioctl top`: containers by their wait for a CPU and the intrusions on their isolated CPUs,
//! from the daemon's `crio.kernel.v1.KernelEvents/Scheduling`. Refreshed, each row shows what
//! happened in the last interval (the difference of two histograms); `--once` shows the totals
//! since each container started.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use crio::api::kernel_v1 as k;
use crio::cri::v1 as cri;
use crio::cri::v1::runtime_service_client::RuntimeServiceClient;
use crio::kernel::quantile;
use tonic::transport::Channel;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SortBy {
    P99,
    P50,
    Waits,
    Intrusions,
}

/// One container's row over an interval.
struct Row {
    id: String,
    name: String,
    waits: u64,
    p50_ns: u64,
    p99_ns: u64,
    /// Intrusions by kind: task, kthread, irq, softirq.
    intrusions: [u64; 4],
    isolated: String,
    top: String,
}

fn kind_index(kind: i32) -> Option<usize> {
    match k::IntrusionKind::try_from(kind).ok()? {
        k::IntrusionKind::Task => Some(0),
        k::IntrusionKind::Kthread => Some(1),
        k::IntrusionKind::Irq => Some(2),
        k::IntrusionKind::Softirq => Some(3),
        k::IntrusionKind::Unspecified => None,
    }
}

fn totals(c: &k::ContainerScheduling) -> [u64; 4] {
    let mut out = [0; 4];
    for i in &c.intrusions {
        if let Some(n) = kind_index(i.kind) {
            out[n] += i.count;
        }
    }
    out
}

/// The row of `now`, minus what `before` had already counted.
fn row(now: &k::ContainerScheduling, before: Option<&k::ContainerScheduling>, names: &HashMap<String, String>) -> Row {
    let slots: Vec<u64> = match (&now.delay, before.and_then(|b| b.delay.as_ref())) {
        (Some(n), Some(b)) => n.slots.iter().zip(b.slots.iter().chain(std::iter::repeat(&0))).map(|(a, b)| a.saturating_sub(*b)).collect(),
        (Some(n), None) => n.slots.clone(),
        (None, _) => Vec::new(),
    };
    let mut intrusions = totals(now);
    if let Some(b) = before {
        for (a, b) in intrusions.iter_mut().zip(totals(b)) {
            *a = a.saturating_sub(b);
        }
    }
    let top = now.top_intruders.iter().take(2).map(|i| format!("{}({})", i.name, i.count)).collect::<Vec<_>>().join(" ");
    let isolated = now.isolated_cpus.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    Row {
        id: now.container_id.chars().take(13).collect(),
        name: names.get(&now.container_id).cloned().unwrap_or_default(),
        waits: slots.iter().sum(),
        p50_ns: quantile(&slots, 0.50),
        p99_ns: quantile(&slots, 0.99),
        intrusions,
        isolated: if isolated.is_empty() { "-".into() } else { isolated },
        top,
    }
}

fn micros(ns: u64) -> String {
    match ns {
        0 => "-".into(),
        n if n < 10_000 => format!("{:.1}us", n as f64 / 1e3),
        n if n < 10_000_000 => format!("{}us", n / 1000),
        n => format!("{}ms", n / 1_000_000),
    }
}

fn print(rows: &mut [Row], sort: SortBy, header: &str) -> std::io::Result<()> {
    rows.sort_by_key(|r| {
        std::cmp::Reverse(match sort {
            SortBy::P99 => r.p99_ns,
            SortBy::P50 => r.p50_ns,
            SortBy::Waits => r.waits,
            SortBy::Intrusions => r.intrusions.iter().sum(),
        })
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{header}")?;
    writeln!(
        out,
        "{:<13} {:<20} {:>8} {:>9} {:>9} {:<8} {:>7} {:>7} {:>7} {:>7}  TOP INTRUDERS",
        "CONTAINER", "NAME", "WAITS", "P50", "P99", "ISOLATED", "TASK", "KTHREAD", "IRQ", "SOFTIRQ"
    )?;
    for r in rows.iter() {
        let name: String = r.name.chars().take(20).collect();
        let [t, kt, irq, sirq] = r.intrusions;
        writeln!(
            out,
            "{:<13} {:<20} {:>8} {:>9} {:>9} {:<8} {:>7} {:>7} {:>7} {:>7}  {}",
            r.id,
            name,
            r.waits,
            micros(r.p50_ns),
            micros(r.p99_ns),
            r.isolated,
            t,
            kt,
            irq,
            sirq,
            r.top
        )?;
    }
    out.flush()
}

async fn names(rt: &mut RuntimeServiceClient<Channel>) -> anyhow::Result<HashMap<String, String>> {
    let list = rt.list_containers(cri::ListContainersRequest { filter: None }).await?.into_inner().containers;
    Ok(list.into_iter().map(|c| (c.id, c.metadata.map(|m| m.name).unwrap_or_default())).collect())
}

pub async fn run(ch: Channel, interval: Duration, once: bool, sort: SortBy) -> anyhow::Result<()> {
    let mut kernel = k::kernel_events_client::KernelEventsClient::new(ch.clone());
    let mut rt = RuntimeServiceClient::new(ch);
    let mut before: HashMap<String, k::ContainerScheduling> = HashMap::new();
    loop {
        let r = kernel.scheduling(k::SchedulingRequest::default()).await?.into_inner();
        if !r.enabled {
            anyhow::bail!("scheduling is not traced: {}", r.off.join("; "));
        }
        let names = names(&mut rt).await?;
        let mut rows: Vec<Row> =
            r.containers.iter().map(|c| row(c, if once { None } else { before.get(&c.container_id) }, &names)).collect();
        let header = match (once, before.is_empty()) {
            (true, _) => "since each container started".to_string(),
            (false, true) => format!("since each container started (next: the last {}s)", interval.as_secs()),
            (false, false) => format!("the last {}s", interval.as_secs()),
        };
        if !once {
            // Clear the terminal and go home, as top does.
            print!("\x1b[2J\x1b[H");
        }
        if let Err(e) = print(&mut rows, sort, &header) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(e.into());
        }
        if once {
            return Ok(());
        }
        before = r.containers.into_iter().map(|c| (c.container_id.clone(), c)).collect();
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_show_the_interval_not_the_total() {
        let mut slots = vec![0u64; 36];
        slots[10] = 5;
        let before = k::ContainerScheduling {
            container_id: "c".repeat(64),
            delay: Some(k::SchedDelay { slots: slots.clone(), count: 5, ..Default::default() }),
            intrusions: vec![k::IntrusionCount { cpu: 1, kind: k::IntrusionKind::Irq as i32, count: 2 }],
            ..Default::default()
        };
        let mut now = before.clone();
        slots[20] = 1;
        now.delay = Some(k::SchedDelay { slots, count: 6, ..Default::default() });
        now.intrusions[0].count = 7;
        let r = row(&now, Some(&before), &HashMap::new());
        assert_eq!((r.waits, r.intrusions), (1, [0, 0, 5, 0]));
        assert!(r.p50_ns >= 1 << 20, "only the new, slow wait: {}", r.p50_ns);
        let total = row(&now, None, &HashMap::new());
        assert_eq!(total.waits, 6);
        assert_eq!(micros(1_500), "1.5us");
        assert_eq!(micros(0), "-");
    }
}

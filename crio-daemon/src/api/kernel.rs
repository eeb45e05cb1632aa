//! `crio.kernel.v1.KernelEvents`: the kernel's container events as a filtered stream, and
//! per-container counts.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::UNIX_EPOCH;

use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use tonic::{Request, Response, Status};

use super::kernel_v1 as pb;
use super::kernel_v1::kernel_events_server::{KernelEvents, KernelEventsServer};
use crate::kernel::{ContainerKernelEvent, Kernel, OomLevel, SchedReport};
use crio_ebpf::EventKind;

pub struct Service {
    kernel: Arc<Kernel>,
}

pub fn server(kernel: Arc<Kernel>) -> KernelEventsServer<Service> {
    KernelEventsServer::new(Service { kernel })
}

/// What a watcher asked for.
struct Filter {
    pod: String,
    container: String,
    kinds: Vec<pb::EventKind>,
}

impl Filter {
    fn matches(&self, e: &ContainerKernelEvent) -> bool {
        (self.pod.is_empty() || e.pod_id == self.pod)
            && (self.container.is_empty() || e.container_id == self.container)
            && (self.kinds.is_empty() || self.kinds.contains(&kind(&e.event.kind)))
    }
}

fn kind(k: &EventKind) -> pb::EventKind {
    match k {
        EventKind::Exec { .. } => pb::EventKind::Exec,
        EventKind::Fork => pb::EventKind::Fork,
        EventKind::Exit { .. } => pb::EventKind::Exit,
        EventKind::Oom { .. } => pb::EventKind::Oom,
        EventKind::Intrusion { .. } => pb::EventKind::Intrusion,
    }
}

fn intrusion_kind(name: &str) -> pb::IntrusionKind {
    match name {
        "task" => pb::IntrusionKind::Task,
        "kthread" => pb::IntrusionKind::Kthread,
        "irq" => pb::IntrusionKind::Irq,
        "softirq" => pb::IntrusionKind::Softirq,
        _ => pb::IntrusionKind::Unspecified,
    }
}

fn scheduling(container_id: String, pod_sandbox_id: String, r: SchedReport) -> pb::ContainerScheduling {
    pb::ContainerScheduling {
        container_id,
        pod_sandbox_id,
        delay: r.delay.map(|d| pb::SchedDelay { slots: d.slots, count: d.count, total_ns: d.total_ns, p50_ns: d.p50_ns, p99_ns: d.p99_ns }),
        isolated_cpus: r.isolated_cpus,
        intrusions: r
            .intrusions
            .into_iter()
            .map(|i| pb::IntrusionCount { cpu: i.cpu, kind: intrusion_kind(i.kind) as i32, count: i.count })
            .collect(),
        top_intruders: r
            .top_intruders
            .into_iter()
            .map(|i| pb::Intruder { kind: intrusion_kind(i.kind) as i32, id: i.id, name: i.name, count: i.count, last_cpu: i.last_cpu })
            .collect(),
        cfs_throttles: r.cfs_throttles,
    }
}

fn message(e: &ContainerKernelEvent, missed: u64) -> pb::Event {
    let ev = &e.event;
    let (filename, exit_code, signal) = match &ev.kind {
        EventKind::Exec { filename } => (filename.clone(), 0, 0),
        EventKind::Exit { code, signal } => (String::new(), *code, signal.unwrap_or(0)),
        _ => (String::new(), 0, 0),
    };
    pb::Event {
        kind: kind(&ev.kind) as i32,
        timestamp: ev.time.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0),
        pod_sandbox_id: e.pod_id.clone(),
        container_id: e.container_id.clone(),
        pid: ev.pid,
        tid: ev.tid,
        ppid: ev.ppid,
        comm: ev.comm.clone(),
        filename,
        exit_code,
        signal,
        oom: e.oom.as_ref().map(|k| pb::OomKill {
            victim_is_init: k.victim_is_init,
            level: match k.level {
                OomLevel::Container => pb::OomLevel::Container,
                OomLevel::Pod => pb::OomLevel::Pod,
                OomLevel::Above => pb::OomLevel::Above,
                OomLevel::Node => pb::OomLevel::Node,
            } as i32,
        }),
        missed,
        intrusion: match ev.kind {
            EventKind::Intrusion { cpu, what } => Some(pb::Intrusion { cpu, kind: intrusion_kind(what.name()) as i32 }),
            _ => None,
        },
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl KernelEvents for Service {
    type WatchStream = EventStream;

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<EventStream>, Status> {
        let req = request.into_inner();
        if !self.kernel.enabled() {
            return Err(Status::failed_precondition(format!("kernel tracing is off: {}", self.kernel.off.join("; "))));
        }
        let mut kinds = Vec::new();
        for k in req.kinds {
            match pb::EventKind::try_from(k) {
                Ok(pb::EventKind::Unspecified) | Err(_) => {
                    return Err(Status::invalid_argument(format!("kinds: {k} is not an event kind")));
                }
                Ok(kind) => kinds.push(kind),
            }
        }
        let filter = Filter { pod: req.pod_sandbox_id, container: req.container_id, kinds };
        let state = (self.kernel.subscribe(), self.kernel.clone(), filter, 0u64);
        let stream = futures::stream::unfold(state, |(mut rx, kernel, filter, mut missed)| async move {
            loop {
                match rx.recv().await {
                    Ok(e) if filter.matches(&e) => {
                        let msg = message(&e, missed);
                        return Some((Ok(msg), (rx, kernel, filter, 0)));
                    }
                    Ok(_) => {}
                    // Too slow: told in the next event, counted for the metrics; others go on.
                    Err(RecvError::Lagged(n)) => {
                        missed += n;
                        kernel.dropped.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn stats(&self, _request: Request<pb::StatsRequest>) -> Result<Response<pb::StatsResponse>, Status> {
        let mut containers: Vec<pb::ContainerCounts> = self
            .kernel
            .counters()
            .into_iter()
            .map(|(id, c)| pb::ContainerCounts { container_id: id, execs: c.execs, forks: c.forks, exits: c.exits, oom_kills: c.oom_kills })
            .collect();
        containers.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        Ok(Response::new(pb::StatsResponse {
            enabled: self.kernel.enabled(),
            off: self.kernel.off.clone(),
            lost: self.kernel.lost(),
            dropped: self.kernel.dropped.load(Ordering::Relaxed),
            containers,
        }))
    }

    async fn scheduling(&self, request: Request<pb::SchedulingRequest>) -> Result<Response<pb::SchedulingResponse>, Status> {
        let wanted = request.into_inner().container_id;
        let kernel = self.kernel.clone();
        let only = wanted.clone();
        let containers = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for (container_id, pod_id) in kernel.tracked_containers() {
                if !only.is_empty() && container_id != only {
                    continue;
                }
                if let Some(r) = kernel.sched_report(&container_id) {
                    out.push(scheduling(container_id, pod_id, r));
                }
            }
            out
        })
        .await
        .map_err(|e| Status::internal(format!("reading the scheduling maps: {e}")))?;
        if !wanted.is_empty() && containers.is_empty() {
            return Err(Status::not_found(format!("container {wanted} is not tracked by the kernel programs")));
        }
        let off = self.kernel.sched_off();
        Ok(Response::new(pb::SchedulingResponse { enabled: self.kernel.scheduling(), off, containers }))
    }
}

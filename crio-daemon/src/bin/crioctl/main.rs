//! `crioctl`: a small CRI client for people and tests, with crictl-like verbs.

mod stream;
mod top;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use crio::cri::v1 as cri;
use crio::cri::v1::image_service_client::ImageServiceClient;
use crio::cri::v1::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

#[derive(Parser)]
#[command(name = "crioctl", version, about = "A small CRI client")]
struct Cli {
    /// CRI socket.
    #[arg(long, short = 'r', env = "CONTAINER_RUNTIME_ENDPOINT", default_value = "/var/run/crio/crio.sock")]
    socket: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runtime name and versions.
    Version,
    /// Runtime conditions (add --verbose for the effective config).
    Info {
        #[arg(long)]
        verbose: bool,
    },
    /// Pull an image.
    Pull {
        image: String,
        /// user:password for the registry.
        #[arg(long)]
        creds: Option<String>,
    },
    /// List images (optionally only those matching a name).
    Images { filter: Option<String> },
    /// Image status as JSON.
    Inspecti {
        image: String,
        #[arg(long)]
        verbose: bool,
    },
    /// Remove images.
    Rmi { images: Vec<String> },
    /// Image filesystem usage.
    Imagefsinfo,
    /// Run a pod sandbox; prints its id.
    Runp {
        name: String,
        #[arg(long, default_value = "default")]
        namespace: String,
        #[arg(long)]
        uid: Option<String>,
        #[arg(long)]
        hostname: Option<String>,
        /// Directory for the pod's container logs.
        #[arg(long)]
        log_dir: Option<String>,
        #[arg(long)]
        host_network: bool,
        /// Runtime handler (RuntimeClass).
        #[arg(long, default_value = "")]
        runtime: String,
    },
    /// List pod sandboxes.
    Pods,
    /// Pod sandbox status as JSON.
    Inspectp { id: String },
    /// Stop pod sandboxes.
    Stopp { ids: Vec<String> },
    /// Remove pod sandboxes.
    Rmp { ids: Vec<String> },
    /// Create a container in a pod; prints its id. The command follows `--`.
    Create {
        pod: String,
        name: String,
        image: String,
        /// Log file, relative to the pod's log directory.
        #[arg(long)]
        log_path: Option<String>,
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Start containers.
    Start { ids: Vec<String> },
    /// List containers (running only unless --all).
    Ps {
        #[arg(long, short)]
        all: bool,
        #[arg(long)]
        pod: Option<String>,
    },
    /// Container status as JSON, verbose (with its scheduling as the kernel saw it).
    Inspect { id: String },
    /// Containers by their wait for a CPU (p50/p99 over each interval) and intrusions on
    /// their isolated CPUs, refreshed until interrupted.
    Top {
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 2)]
        interval: u64,
        /// Print one table (counts since each container started) and exit.
        #[arg(long)]
        once: bool,
        /// Sort by: p99, p50, waits, intrusions.
        #[arg(long, default_value = "p99")]
        sort: top::SortBy,
    },
    /// Stop containers.
    Stop {
        ids: Vec<String>,
        #[arg(long, default_value_t = 10)]
        timeout: i64,
    },
    /// Remove containers.
    Rm { ids: Vec<String> },
    /// Run a command in a container and print its output (ExecSync); with -i or -t, stream
    /// it through this terminal.
    Exec {
        id: String,
        #[arg(long, default_value_t = 0)]
        timeout: i64,
        /// Pass this process's stdin to the command.
        #[arg(long, short)]
        interactive: bool,
        /// Run the command on a terminal (this one, in raw mode).
        #[arg(long, short)]
        tty: bool,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Join a running container's stdio.
    Attach {
        id: String,
        #[arg(long, short)]
        interactive: bool,
        #[arg(long, short)]
        tty: bool,
    },
    /// Forward LOCAL:REMOTE, a port on 127.0.0.1 to a port in the pod, until interrupted.
    PortForward { pod: String, ports: String },
    /// Print a container's log, without the CRI framing.
    Logs { id: String },
    /// Resource use of running containers.
    Stats,
    /// Follow container events until interrupted.
    Events {
        /// The kernel's events instead (exec, fork, exit, OOM kills), from the eBPF programs.
        #[arg(long)]
        kernel: bool,
        /// With --kernel: only this pod's.
        #[arg(long, requires = "kernel")]
        pod: Option<String>,
        /// With --kernel: only this container's.
        #[arg(long, requires = "kernel")]
        container: Option<String>,
        /// With --kernel: only these kinds (exec, fork, exit, oom, intrusion).
        #[arg(long = "kind", requires = "kernel")]
        kinds: Vec<String>,
    },
}

async fn channel(socket: &str) -> anyhow::Result<Channel> {
    let path = PathBuf::from(socket.strip_prefix("unix://").unwrap_or(socket));
    let endpoint = Endpoint::try_from("http://[::1]:0")?;
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(crio::socket_path::connect_async(&path).await?)) }
        }))
        .await
        .with_context(|| format!("connecting to {socket}"))?;
    Ok(channel)
}

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec { image: image.into(), ..Default::default() })
}

// Long by design: one short arm per subcommand.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let ch = channel(&cli.socket).await?;
    if let Command::Events { kernel: true, pod, container, kinds } = cli.command {
        return kernel_events(ch, pod, container, kinds).await;
    }
    if let Command::Top { interval, once, sort } = cli.command {
        return top::run(ch, std::time::Duration::from_secs(interval.max(1)), once, sort).await;
    }
    let mut rt = RuntimeServiceClient::new(ch.clone());
    let mut img = ImageServiceClient::new(ch).max_decoding_message_size(80 * 1024 * 1024);
    match cli.command {
        Command::Version => {
            let v = rt.version(cri::VersionRequest::default()).await?.into_inner();
            println!(
                "Version:  {}\nRuntimeName:  {}\nRuntimeVersion:  {}\nRuntimeApiVersion:  {}",
                v.version, v.runtime_name, v.runtime_version, v.runtime_api_version
            );
        }
        Command::Info { verbose } => {
            let s = rt.status(cri::StatusRequest { verbose }).await?.into_inner();
            println!("{}", serde_json::to_string_pretty(&s)?);
        }
        Command::Pull { image, creds } => {
            let auth = creds.map(|c| {
                let (username, password) = c.split_once(':').unwrap_or((&c, ""));
                cri::AuthConfig { username: username.into(), password: password.into(), ..Default::default() }
            });
            let r = img.pull_image(cri::PullImageRequest { image: spec(&image), auth, sandbox_config: None }).await?.into_inner();
            println!("Image is up to date for {}", r.image_ref);
        }
        Command::Images { filter } => {
            let filter = filter.map(|f| cri::ImageFilter { image: spec(&f) });
            let r = img.list_images(cri::ListImagesRequest { filter }).await?.into_inner();
            println!("{:<50} {:<20} {:<15} {:>10}", "IMAGE", "TAG", "IMAGE ID", "SIZE");
            for i in r.images {
                let tags: Vec<(String, String)> = if i.repo_tags.is_empty() {
                    vec![("<none>".into(), "<none>".into())]
                } else {
                    i.repo_tags
                        .iter()
                        .map(|t| t.rsplit_once(':').map(|(a, b)| (a.into(), b.into())).unwrap_or((t.clone(), String::new())))
                        .collect()
                };
                for (repo, tag) in tags {
                    println!("{:<50} {:<20} {:<15} {:>10}", repo, tag, &i.id[..i.id.len().min(13)], human(i.size));
                }
            }
        }
        Command::Inspecti { image, verbose } => {
            let r = img.image_status(cri::ImageStatusRequest { image: spec(&image), verbose }).await?.into_inner();
            if r.image.is_none() {
                anyhow::bail!("no such image {image}");
            }
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        Command::Rmi { images } => {
            for i in images {
                img.remove_image(cri::RemoveImageRequest { image: spec(&i) }).await?;
                println!("Deleted: {i}");
            }
        }
        Command::Imagefsinfo => {
            let r = img.image_fs_info(cri::ImageFsInfoRequest {}).await?.into_inner();
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        other => pods_and_containers(&mut rt, other).await?,
    }
    Ok(())
}

async fn pods_and_containers(rt: &mut RuntimeServiceClient<Channel>, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Runp { .. } | Command::Pods | Command::Inspectp { .. } | Command::Stopp { .. } | Command::Rmp { .. } => {
            pod_command(rt, command).await
        }
        other => container_command(rt, other).await,
    }
}

async fn pod_command(rt: &mut RuntimeServiceClient<Channel>, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Runp { name, namespace, uid, hostname, log_dir, host_network, runtime } => {
            let config = pod_config(name, namespace, uid, hostname, log_dir, host_network);
            let r = rt.run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(config), runtime_handler: runtime }).await?.into_inner();
            println!("{}", r.pod_sandbox_id);
        }
        Command::Pods => {
            let items = rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }).await?.into_inner().items;
            println!("{:<15} {:<10} {:<25} {:<15}", "POD ID", "STATE", "NAME", "NAMESPACE");
            for p in items {
                let m = p.metadata.unwrap_or_default();
                let state = if p.state == 0 { "Ready" } else { "NotReady" };
                println!("{:<15} {:<10} {:<25} {:<15}", &p.id[..13.min(p.id.len())], state, m.name, m.namespace);
            }
        }
        Command::Inspectp { id } => {
            let r = rt.pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: id, verbose: false }).await?.into_inner();
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        Command::Stopp { ids } => {
            for id in ids {
                rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await?;
                println!("Stopped sandbox {id}");
            }
        }
        Command::Rmp { ids } => {
            for id in ids {
                rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id.clone() }).await?;
                println!("Removed sandbox {id}");
            }
        }
        _ => unreachable!("only pod commands come here"),
    }
    Ok(())
}

// Long by design: one short arm per subcommand.
async fn container_command(rt: &mut RuntimeServiceClient<Channel>, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Create { pod, name, image, log_path, command } => {
            let config = cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata { name: name.clone(), attempt: 0 }),
                image: Some(cri::ImageSpec { image, ..Default::default() }),
                command,
                log_path: log_path.unwrap_or_else(|| format!("{name}.log")),
                ..Default::default()
            };
            let req = cri::CreateContainerRequest { pod_sandbox_id: pod, config: Some(config), sandbox_config: None };
            println!("{}", rt.create_container(req).await?.into_inner().container_id);
        }
        Command::Start { ids } => {
            for id in ids {
                rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await?;
                println!("{id}");
            }
        }
        Command::Ps { all, pod } => {
            let state = (!all).then_some(cri::ContainerStateValue { state: cri::ContainerState::ContainerRunning as i32 });
            let filter = cri::ContainerFilter { state, pod_sandbox_id: pod.unwrap_or_default(), ..Default::default() };
            let list = rt.list_containers(cri::ListContainersRequest { filter: Some(filter) }).await?.into_inner().containers;
            println!("{:<15} {:<20} {:<10} {:<15} IMAGE", "CONTAINER", "NAME", "STATE", "POD ID");
            for c in list {
                let state = ["Created", "Running", "Exited", "Unknown"].get(c.state as usize).copied().unwrap_or("?");
                let name = c.metadata.map(|m| m.name).unwrap_or_default();
                let image = c.image.map(|i| i.image).unwrap_or_default();
                println!(
                    "{:<15} {:<20} {:<10} {:<15} {image}",
                    &c.id[..13.min(c.id.len())],
                    name,
                    state,
                    &c.pod_sandbox_id[..13.min(c.pod_sandbox_id.len())]
                );
            }
        }
        Command::Inspect { id } => {
            let r = rt.container_status(cri::ContainerStatusRequest { container_id: id, verbose: true }).await?.into_inner();
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        Command::Stop { ids, timeout } => {
            for id in ids {
                rt.stop_container(cri::StopContainerRequest { container_id: id.clone(), timeout }).await?;
                println!("{id}");
            }
        }
        Command::Rm { ids } => {
            for id in ids {
                rt.remove_container(cri::RemoveContainerRequest { container_id: id.clone() }).await?;
                println!("{id}");
            }
        }
        Command::Exec { id, interactive, tty, command, .. } if interactive || tty => {
            let req = cri::ExecRequest { container_id: id, cmd: command, tty, stdin: interactive, stdout: true, stderr: !tty };
            let url = rt.exec(req).await?.into_inner().url;
            std::process::exit(stream::session(&url, interactive, tty).await?);
        }
        Command::Attach { id, interactive, tty } => {
            let req = cri::AttachRequest { container_id: id, tty, stdin: interactive, stdout: true, stderr: !tty };
            let url = rt.attach(req).await?.into_inner().url;
            std::process::exit(stream::session(&url, interactive, tty).await?);
        }
        Command::PortForward { pod, ports } => {
            let (local, remote) = ports.split_once(':').unwrap_or(("0", &ports));
            let (local, remote) = (local.parse().context("the local port")?, remote.parse().context("the pod's port")?);
            stream::port_forward(rt.clone(), pod, local, remote).await?;
        }
        Command::Exec { id, timeout, command, .. } => {
            let r = rt.exec_sync(cri::ExecSyncRequest { container_id: id, cmd: command, timeout }).await?.into_inner();
            std::io::Write::write_all(&mut std::io::stdout(), &r.stdout)?;
            std::io::Write::write_all(&mut std::io::stderr(), &r.stderr)?;
            std::process::exit(r.exit_code);
        }
        Command::Logs { id } => {
            let st = rt.container_status(cri::ContainerStatusRequest { container_id: id, verbose: false }).await?.into_inner();
            let path = st.status.map(|s| s.log_path).unwrap_or_default();
            anyhow::ensure!(!path.is_empty(), "the container has no log file (its pod has no log directory)");
            print_log(&path)?;
        }
        Command::Stats => {
            let stats = rt.list_container_stats(cri::ListContainerStatsRequest { filter: None }).await?.into_inner().stats;
            print_stats(stats);
        }
        Command::Events { .. } => {
            let mut stream = rt.get_container_events(cri::GetEventsRequest {}).await?.into_inner();
            while let Some(ev) = stream.message().await? {
                let kind = ["CREATED", "STARTED", "STOPPED", "DELETED"].get(ev.container_event_type as usize).copied().unwrap_or("?");
                if !follow(format_args!("{} {kind} {}", ev.created_at, ev.container_id))? {
                    break;
                }
            }
        }
        _ => unreachable!("image and pod commands are handled before"),
    }
    Ok(())
}

fn pod_config(
    name: String,
    namespace: String,
    uid: Option<String>,
    hostname: Option<String>,
    log_dir: Option<String>,
    host_network: bool,
) -> cri::PodSandboxConfig {
    let uid = uid.unwrap_or_else(|| format!("{namespace}-{name}"));
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata { name: name.clone(), uid, namespace, attempt: 0 }),
        hostname: hostname.unwrap_or(name),
        log_directory: log_dir.unwrap_or_default(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption { network: if host_network { 2 } else { 0 }, ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A CRI log file as the container wrote it: partial pieces joined, without the framing.
fn print_log(path: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    for line in text.lines() {
        // <timestamp> <stream> <P|F> <content>: partial pieces join without a newline.
        let mut parts = line.splitn(4, ' ');
        let (_, _, tag, content) = (parts.next(), parts.next(), parts.next(), parts.next().unwrap_or(""));
        if tag == Some("P") {
            print!("{content}");
        } else {
            println!("{content}");
        }
    }
    Ok(())
}

fn print_stats(stats: Vec<cri::ContainerStats>) {
    println!("{:<15} {:<20} {:>14} {:>12} {:>12}", "CONTAINER", "NAME", "CPU (ns)", "MEM (WS)", "WRITABLE");
    for st in stats {
        let attrs = st.attributes.unwrap_or_default();
        let cpu = st.cpu.and_then(|c| c.usage_core_nano_seconds).map_or(0, |v| v.value);
        let mem = st.memory.and_then(|m| m.working_set_bytes).map_or(0, |v| v.value);
        let fs = st.writable_layer.and_then(|w| w.used_bytes).map_or(0, |v| v.value);
        let name = attrs.metadata.map(|m| m.name).unwrap_or_default();
        println!("{:<15} {:<20} {:>14} {:>12} {:>12}", &attrs.id[..13.min(attrs.id.len())], name, cpu, human(mem), human(fs));
    }
}

/// `events --kernel`: the kernel programs' events, filtered on the daemon's side.
async fn kernel_events(ch: Channel, pod: Option<String>, container: Option<String>, kinds: Vec<String>) -> anyhow::Result<()> {
    use crio::api::kernel_v1 as k;
    let kinds = kinds
        .iter()
        .map(|s| k::EventKind::from_str_name(&format!("EVENT_KIND_{}", s.to_uppercase())).map(|k| k as i32))
        .collect::<Option<Vec<_>>>()
        .context("--kind is one of exec, fork, exit, oom, intrusion")?;
    let req = k::WatchRequest { pod_sandbox_id: pod.unwrap_or_default(), container_id: container.unwrap_or_default(), kinds };
    let mut client = k::kernel_events_client::KernelEventsClient::new(ch);
    let mut stream = client.watch(req).await?.into_inner();
    while let Some(ev) = stream.message().await? {
        if ev.missed > 0 && !follow(format_args!("... {} events missed (this client fell behind)", ev.missed))? {
            break;
        }
        let kind = k::EventKind::try_from(ev.kind).map(|k| k.as_str_name().trim_start_matches("EVENT_KIND_")).unwrap_or("?");
        let detail = match k::EventKind::try_from(ev.kind) {
            Ok(k::EventKind::Exec) => ev.filename.clone(),
            Ok(k::EventKind::Exit) => format!("code {}", ev.exit_code),
            Ok(k::EventKind::Oom) => ev
                .oom
                .map(|o| format!("{:?} init={}", k::OomLevel::try_from(o.level).unwrap_or_default(), o.victim_is_init))
                .unwrap_or_default(),
            Ok(k::EventKind::Intrusion) => ev
                .intrusion
                .map(|i| format!("cpu {} {:?}", i.cpu, k::IntrusionKind::try_from(i.kind).unwrap_or_default()))
                .unwrap_or_default(),
            _ => String::new(),
        };
        let ctr = if ev.container_id.is_empty() { "-" } else { &ev.container_id[..ev.container_id.len().min(13)] };
        if !follow(format_args!("{} {kind:<5} {ctr:<13} pid {} ppid {} {} {detail}", ev.timestamp, ev.pid, ev.ppid, ev.comm))? {
            break;
        }
    }
    Ok(())
}

/// Prints one line of a followed stream, at once; false when the reader went away (`| head`),
/// which ends the stream quietly instead of a panic on the broken pipe.
fn follow(line: std::fmt::Arguments) -> anyhow::Result<bool> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    format!("{v:.3}{}", UNITS[u]).replace(".000", "")
}

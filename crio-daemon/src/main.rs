//! `crio`: the daemon. Reads configuration, opens the store, serves CRI on the socket.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use crio::config::{self, LoadOptions};
use crio::cri::{self, Services};
use crio::image::ImageService;
use crio::storage::Store;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "crio", version, about = "A CRI runtime for latency-sensitive Kubernetes nodes")]
struct Cli {
    /// Main configuration file (default /etc/crio/crio.conf; optional unless given).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Drop-in directory applied after the main file (default /etc/crio/crio.conf.d).
    #[arg(long, global = true)]
    config_dir: Option<PathBuf>,
    /// Image and layer store.
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Volatile state.
    #[arg(long, global = true)]
    runroot: Option<PathBuf>,
    /// CRI socket path.
    #[arg(long, global = true)]
    listen: Option<PathBuf>,
    /// trace, debug, info, warn, error.
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the effective configuration as TOML.
    Config,
    /// Print version information.
    Version,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let opts = LoadOptions {
        config_file: cli.config.clone(),
        config_dir: cli.config_dir.clone(),
        overrides: config::Overrides { root: cli.root, runroot: cli.runroot, listen: cli.listen, log_level: cli.log_level },
    };
    let loaded = match config::load(&opts) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("crio: {}", crio::error_chain(&e));
            std::process::exit(2);
        }
    };
    match cli.command {
        Some(Command::Config) => {
            for (file, key) in &loaded.unknown_keys {
                eprintln!("warning: unknown key {key} in {}", file.display());
            }
            print!("{}", toml::to_string(&loaded.config)?);
            return Ok(());
        }
        Some(Command::Version) => {
            println!("crio {}\nCRI API v1", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        None => {}
    }
    let level = match loaded.config.crio.runtime.log_level.to_ascii_lowercase().as_str() {
        "warning" => "warn".to_string(),
        "fatal" | "panic" => "error".to_string(),
        other => other.to_string(),
    };
    let filter = EnvFilter::try_from_env("CRIO_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    for (file, key) in &loaded.unknown_keys {
        tracing::warn!(file = %file.display(), key, "unknown configuration key ignored");
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(loaded))
}

async fn run(loaded: config::Loaded) -> anyhow::Result<()> {
    // Exec sessions' commands are handed over to us by the exec helper, which exits: as a
    // child subreaper we become their parent (and reap them) instead of init.
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).context("PR_SET_CHILD_SUBREAPER")?;
    let config = Arc::new(loaded.config);
    let c = &config.crio;
    tracing::info!(files = ?loaded.files, root = %c.root.display(), listen = %c.api.listen.display(), "starting crio");
    if c.runtime.cgroup_manager == "systemd" && !crio::cgroups::systemd::running(std::path::Path::new("/run/systemd/system")) {
        anyhow::bail!(
            "crio.runtime.cgroup_manager = \"systemd\" needs systemd running as init (/run/systemd/system is missing); \
             set it to \"cgroupfs\" on this host"
        );
    }
    // Before anything reads or repairs the state: a second daemon on it would tear down the
    // first one's pods as leftovers.
    let _state_lock = crio::state::lock_dir(&c.state_dir).map_err(|e| anyhow::anyhow!(crio::error_chain(&e)))?;
    let router = init(&config).await?;
    let listener = crio::server::bind(&c.api.listen).await.map_err(|e| anyhow::anyhow!(crio::error_chain(&e)))?;
    tracing::info!(socket = %c.api.listen.display(), "serving CRI");
    crio::server::serve(listener, router, shutdown_signal()).await;
    // A clean stop leaves no socket for clients to mistake for a live daemon.
    if let Err(e) = std::fs::remove_file(&c.api.listen) {
        tracing::warn!(socket = %c.api.listen.display(), error = %e, "could not remove the socket");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Everything behind the socket: store, images, kernel tracing, recovered pods and containers.
async fn init(config: &Arc<config::Config>) -> anyhow::Result<axum::Router> {
    let c = &config.crio;
    let (root, runroot) = (c.root.clone(), c.runroot.clone());
    let store = tokio::task::spawn_blocking(move || Store::open(&root, &runroot))
        .await?
        .map_err(|e| anyhow::anyhow!(crio::error_chain(&e)))
        .context("opening the image store")?;
    let images = Arc::new(ImageService::new(&c.image, Arc::new(store)).map_err(|e| anyhow::anyhow!(crio::error_chain(&e)))?);
    // The monitor ships beside the daemon.
    let monitor = std::env::current_exe()?.with_file_name("crio-monitor");
    let ebpf = c.ebpf.clone();
    let kernel = Arc::new(tokio::task::spawn_blocking(move || crio::kernel::Kernel::load(&ebpf)).await?);
    let topology = match tokio::task::spawn_blocking(crio_hooks::topology::Hwloc::from_system).await? {
        Ok(t) => Some(Arc::new(t) as Arc<dyn crio_hooks::topology::Topology>),
        Err(e) => {
            tracing::warn!(error = %e, "no CPU topology: NUMA placement is off");
            None
        }
    };
    let services = Services::new(config.clone(), images, kernel.clone(), monitor, crio::node::HostPaths::default(), topology)
        .map_err(|e| anyhow::anyhow!(crio::error_chain(&e)))?;
    services.pods.recover().await;
    let streaming = crio::streaming::bind(&c.api).await.map_err(|e| anyhow::anyhow!(crio::error_chain(&e)))?;
    services.streams.set_base_url(streaming.base_url().to_string());
    tracing::info!(url = streaming.base_url(), "streaming server listening (exec, attach, port-forward)");
    tokio::spawn(streaming.serve(services.clone()));
    kernel.start();
    if let Err(e) = services.containers.watch_exits() {
        tracing::warn!(error = %e, "cannot watch for container exits; they are seen when status is asked");
    }
    let router = cri::routes(&services).into_axum_router().merge(crio::http::router(services.clone())).fallback(crio::http::fallback);
    if !c.metrics.enable_metrics {
        return Ok(router);
    }
    let metrics = Arc::new(crio::metrics::Metrics::default());
    let server =
        crio::metrics::serve::bind(&c.metrics, metrics.clone(), services).await.map_err(|e| anyhow::anyhow!(crio::error_chain(&e)))?;
    tokio::spawn(server);
    Ok(router.layer(axum::middleware::from_fn_with_state(metrics, crio::metrics::serve::track)))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

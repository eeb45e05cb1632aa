//! `crioctl`: a small CRI client for people and tests, with crictl-like verbs.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
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
}

async fn channel(socket: &str) -> anyhow::Result<Channel> {
    let path = PathBuf::from(socket.strip_prefix("unix://").unwrap_or(socket));
    let endpoint = Endpoint::try_from("http://[::1]:0")?;
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
        .with_context(|| format!("connecting to {socket}"))?;
    Ok(channel)
}

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec { image: image.into(), ..Default::default() })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let ch = channel(&cli.socket).await?;
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
    }
    Ok(())
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

//! A docker-registry process with its own storage directory, plain HTTP or HTTPS with a
//! self-signed CA, optionally with htpasswd basic auth.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use base64::Engine as _;

#[derive(Default, Clone)]
pub struct RegistryOptions {
    pub tls: bool,
    pub basic_auth: Option<(String, String)>,
    /// Token auth: the registry's `auth:` section from a token server; `basic_auth` then holds
    /// the credentials the token server accepts.
    pub token_auth: Option<(String, String)>,
}

pub struct Registry {
    pub addr: String,
    pub dir: tempfile::TempDir,
    pub ca_cert: Option<PathBuf>,
    pub creds: Option<(String, String)>,
    pub token_realm: Option<String>,
    child: Child,
    log: PathBuf,
}

impl Registry {
    pub fn start() -> Self {
        Self::start_with(RegistryOptions::default())
    }

    /// Starts a registry on a free port. The port is only free when probed: another test's
    /// listener or connection may take it before the registry binds, and a bare connect can
    /// reach someone else's listener (or, with an ephemeral source port equal to it, itself). So
    /// readiness is this process's own "listening on" log line, and a lost bind is retried on a
    /// new port.
    pub fn start_with(opts: RegistryOptions) -> Self {
        let dir = tempfile::tempdir().expect("registry temp dir");
        let tls = opts.tls.then(|| private_ca(dir.path()));
        let mut last_log = String::new();
        for _ in 0..5 {
            let addr = format!("127.0.0.1:{}", super::free_port());
            let config_path = dir.path().join("config.yml");
            fs::write(&config_path, config(dir.path(), &addr, &opts, tls.as_ref())).unwrap();
            let log = dir.path().join("registry.log");
            let log_file = fs::File::create(&log).unwrap();
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config_path)
                // The access log (one line per request) goes to stdout.
                .stdout(log_file.try_clone().unwrap())
                .stderr(log_file)
                .spawn()
                .expect("starting docker-registry (apt-get install docker-registry)");
            let ready = format!("listening on {addr}");
            for _ in 0..400 {
                last_log = fs::read_to_string(&log).unwrap_or_default();
                if last_log.contains(&ready) {
                    let creds = opts.basic_auth.clone();
                    let token_realm = opts.token_auth.as_ref().map(|(_, realm)| realm.clone());
                    let ca_cert = tls.map(|(ca, _, _)| ca);
                    return Registry { addr, dir, ca_cert, creds, token_realm, child, log };
                }
                if child.try_wait().expect("polling docker-registry").is_some() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("docker-registry never listened; its last log:\n{last_log}");
    }

    pub fn scheme(&self) -> &'static str {
        if self.ca_cert.is_some() { "https" } else { "http" }
    }

    pub fn client(&self) -> reqwest::Client {
        let mut b = reqwest::Client::builder();
        if let Some(ca) = &self.ca_cert {
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&fs::read(ca).unwrap()).unwrap());
        }
        b.build().unwrap()
    }

    /// What the harness's own pushes to `repo` authenticate with.
    pub async fn auth_header(&self, repo: &str) -> Option<String> {
        let basic =
            self.creds.as_ref().map(|(u, p)| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))));
        let Some(realm) = &self.token_realm else { return basic };
        let url = format!("{realm}?service={}&scope=repository:{repo}:pull,push", super::token::SERVICE);
        let resp = reqwest::Client::new().get(url).header("Authorization", basic?).send().await.expect("token request");
        let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await.expect("token body")).expect("token JSON");
        Some(format!("Bearer {}", body["token"].as_str().expect("token")))
    }

    /// The registry's request log, to count what a pull fetched.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Overwrites a stored blob in place, to make the registry serve corrupt content.
    pub fn corrupt_blob(&self, digest_hex: &str) {
        let p = self.dir.path().join("data/docker/registry/v2/blobs/sha256").join(&digest_hex[..2]).join(digest_hex).join("data");
        let mut bytes = fs::read(&p).expect("blob in registry storage");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&p, bytes).unwrap();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The registry's configuration for `addr`: storage under `dir`, TLS with the given certificate,
/// basic or token auth as asked.
fn config(dir: &Path, addr: &str, opts: &RegistryOptions, tls: Option<&(PathBuf, PathBuf, PathBuf)>) -> String {
    let mut config = format!(
        "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
        dir.join("data").display()
    );
    if let Some((_, cert, key)) = tls {
        config.push_str(&format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display()));
    }
    if let Some((auth_section, _)) = &opts.token_auth {
        config.push_str(auth_section);
    } else if let Some((user, pass)) = &opts.basic_auth {
        let hash = bcrypt::hash(pass, 5).expect("bcrypt");
        let htpasswd = dir.join("htpasswd");
        fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
        config.push_str(&format!("auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n", htpasswd.display()));
    }
    config
}

/// A private CA and a server certificate for 127.0.0.1 signed by it, made with the openssl
/// CLI. Returns (CA certificate, server certificate, server key).
fn private_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |n: &str| dir.join(n);
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("running openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=crio-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "key.pem", "-out", "server.csr"]);
    fs::write(p("server.ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "cert.pem",
    ]);
    (p("ca.pem"), p("cert.pem"), p("key.pem"))
}

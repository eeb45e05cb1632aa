//! registries.conf (short names, aliases, mirrors), TLS with a private CA, and basic auth from
//! the request and from an auth file, against real registries.

mod common;

use base64::Engine as _;
use common::daemon::DaemonConfig;
use common::registry::RegistryOptions;
use common::{Daemon, ImageBuilder, Layer, Registry};
use crio::cri::v1 as cri;
use tonic::Code;

fn tiny(content: &[u8]) -> ImageBuilder {
    ImageBuilder::new().layer(Layer::builder().file("content", content).build())
}

#[tokio::test(flavor = "multi_thread")]
async fn short_names_resolve_through_search_registries_and_aliases() {
    let a = Registry::start();
    let b = Registry::start();
    let pa = a.push("library/tool", "1", &tiny(b"a")).await;
    let pb = b.push("team/app", "1", &tiny(b"b")).await;
    let mut cfg = DaemonConfig::trusting(&a);
    cfg.trust(&b);
    cfg.registries_conf = format!("unqualified-search-registries = [\"{}\"]\n{}", a.addr, cfg.registries_conf);
    let d = Daemon::start(cfg).await;
    // One search registry: the short name resolves to it.
    assert_eq!(d.pull("library/tool:1").await.expect("short name"), pa.id());
    assert_eq!(d.status("library/tool:1").await.unwrap().repo_tags, [format!("{}/library/tool:1", a.addr)]);
    drop(d);

    // Two search registries in enforcing mode: ambiguous, refused with the candidates named.
    let mut cfg = DaemonConfig::trusting(&a);
    cfg.trust(&b);
    let search = format!("unqualified-search-registries = [\"{}\", \"{}\"]\n", a.addr, b.addr);
    cfg.registries_conf = format!("{search}{}[aliases]\n\"app\" = \"{}/team/app\"\n", cfg.registries_conf, b.addr);
    let d = Daemon::start(cfg).await;
    let err = d.pull("library/tool:1").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("ambiguous") && err.message().contains(&b.addr), "{}", err.message());
    // An alias settles it.
    assert_eq!(d.pull("app:1").await.expect("alias"), pb.id());
    assert_eq!(d.status("app:1").await.map(|i| i.id), Some(pb.id()), "lookup by alias");
}

#[tokio::test(flavor = "multi_thread")]
async fn mirror_serves_the_pull_and_the_name_stays_canonical() {
    let mirror = Registry::start();
    let pushed = mirror.push("team/app", "1", &tiny(b"mirrored")).await;
    // The canonical registry does not exist; only the mirror can serve it.
    let registries_conf = format!(
        "[[registry]]\nprefix = \"canonical.invalid/team\"\nlocation = \"canonical.invalid/team\"\n[[registry.mirror]]\nlocation = \"{}/team\"\ninsecure = true\n",
        mirror.addr
    );
    let d = Daemon::start(DaemonConfig { registries_conf, ..Default::default() }).await;
    assert_eq!(d.pull("canonical.invalid/team/app:1").await.expect("pull via mirror"), pushed.id());
    let st = d.status("canonical.invalid/team/app:1").await.unwrap();
    assert_eq!(st.repo_tags, ["canonical.invalid/team/app:1"]);
    assert_eq!(st.repo_digests, [format!("canonical.invalid/team/app@{}", pushed.manifest_digest)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_registry_with_private_ca() {
    let reg = Registry::start_with(RegistryOptions { tls: true, ..Default::default() });
    let pushed = reg.push("secure", "1", &tiny(b"tls")).await;
    // Without the CA the certificate is not trusted.
    let d = Daemon::start(DaemonConfig::default()).await;
    let err = d.pull(&format!("{}/secure:1", reg.addr)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    drop(d);
    let d = Daemon::start(DaemonConfig::trusting(&reg)).await;
    assert_eq!(d.pull(&format!("{}/secure:1", reg.addr)).await.expect("pull over TLS"), pushed.id());
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_from_request_and_auth_file() {
    let creds = ("tester".to_string(), "s3cret".to_string());
    let reg = Registry::start_with(RegistryOptions { tls: true, basic_auth: Some(creds.clone()), ..Default::default() });
    let pushed = reg.push("private", "1", &tiny(b"auth")).await;
    let name = format!("{}/private:1", reg.addr);

    let d = Daemon::start(DaemonConfig::trusting(&reg)).await;
    let err = d.pull(&name).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("private"), "{}", err.message());
    let wrong = cri::AuthConfig { username: "tester".into(), password: "nope".into(), ..Default::default() };
    assert_eq!(d.pull_with(&name, Some(wrong)).await.unwrap_err().code(), Code::Unauthenticated);
    let right = cri::AuthConfig { username: creds.0.clone(), password: creds.1.clone(), ..Default::default() };
    assert_eq!(d.pull_with(&name, Some(right)).await.expect("request credentials"), pushed.id());
    drop(d);

    let mut cfg = DaemonConfig::trusting(&reg);
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", creds.0, creds.1));
    cfg.auth_json = Some(format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, reg.addr));
    let d = Daemon::start(cfg).await;
    assert_eq!(d.pull(&name).await.expect("auth file credentials"), pushed.id());
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_token_auth_through_a_token_server() {
    let creds = ("tokenuser".to_string(), "t0ken".to_string());
    let keys = tempfile::tempdir().unwrap();
    let server = common::token::TokenServer::start(keys.path(), &creds.0, &creds.1).await;
    let reg = Registry::start_with(RegistryOptions {
        tls: true,
        basic_auth: Some(creds.clone()),
        token_auth: Some((server.registry_config(), server.realm.clone())),
    });
    let pushed = reg.push("tokened/app", "1", &tiny(b"bearer")).await;
    let name = format!("{}/tokened/app:1", reg.addr);
    let d = Daemon::start(DaemonConfig::trusting(&reg)).await;
    // Anonymous: the token server refuses, so does the registry.
    let err = d.pull(&name).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let auth = cri::AuthConfig { username: creds.0.clone(), password: creds.1.clone(), ..Default::default() };
    assert_eq!(d.pull_with(&name, Some(auth)).await.expect("token flow"), pushed.id());
    // A registry token handed over as is works too.
    let token = reg.auth_header("tokened/app").await.unwrap().trim_start_matches("Bearer ").to_string();
    d.remove(&name).await.unwrap();
    let auth = cri::AuthConfig { registry_token: token, ..Default::default() };
    assert_eq!(d.pull_with(&name, Some(auth)).await.expect("registry token"), pushed.id());
}

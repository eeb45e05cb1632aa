//! Loading: the main file, then each `*.conf` drop-in in lexical order, each overriding only the
//! keys it sets (tables merge, values replace), then command-line overrides. Every leaf key
//! remembers the file that set it last, so a bad value is reported against the file that holds it.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::Config;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to read config directory {path}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid TOML in {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid config in {origin}: {source}")]
    Type { origin: String, source: toml::de::Error },
    #[error("invalid value {value:?} for {key} in {origin}: allowed {allowed}")]
    Invalid { origin: String, key: &'static str, value: String, allowed: String },
}

/// Where the configuration comes from; `None` means the default path, which may be absent.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub config_file: Option<PathBuf>,
    pub config_dir: Option<PathBuf>,
    pub overrides: Overrides,
}

/// Command-line flags, applied after every file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub root: Option<PathBuf>,
    pub runroot: Option<PathBuf>,
    pub listen: Option<PathBuf>,
    pub log_level: Option<String>,
}

#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// Files read, in the order they were applied.
    pub files: Vec<PathBuf>,
    /// `(file, dotted key)` for keys this daemon does not know; the caller logs them.
    pub unknown_keys: Vec<(PathBuf, String)>,
}

pub fn load(opts: &LoadOptions) -> Result<Loaded, ConfigError> {
    let mut files = Vec::new();
    let main = opts.config_file.clone().unwrap_or_else(|| super::DEFAULT_CONFIG_FILE.into());
    match fs::read_to_string(&main) {
        Ok(text) => files.push((main, text)),
        // An explicitly named file must exist; the default one may not.
        Err(e) if e.kind() == io::ErrorKind::NotFound && opts.config_file.is_none() => {}
        Err(source) => return Err(ConfigError::Read { path: main, source }),
    }
    let dir = opts.config_dir.clone().unwrap_or_else(|| super::DEFAULT_CONFIG_DIR.into());
    for path in drop_ins(&dir, opts.config_dir.is_some())? {
        let text = fs::read_to_string(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
        files.push((path, text));
    }
    let (config, unknown_keys) = from_sources(&files, &opts.overrides)?;
    Ok(Loaded { config, files: files.into_iter().map(|(p, _)| p).collect(), unknown_keys })
}

fn drop_ins(dir: &Path, required: bool) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !required => return Ok(Vec::new()),
        Err(source) => return Err(ConfigError::ReadDir { path: dir.to_path_buf(), source }),
    };
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ConfigError::ReadDir { path: dir.to_path_buf(), source })?;
        let path = entry.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "conf") {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

/// Merges already-read sources and validates the result. Split from `load` for hermetic tests.
pub(super) fn from_sources(files: &[(PathBuf, String)], overrides: &Overrides) -> Result<(Config, Vec<(PathBuf, String)>), ConfigError> {
    // Files apply on top of the defaults, so a drop-in that adds a runtime keeps the built-in ones.
    let mut merged = Table::try_from(Config::default()).expect("defaults serialize to TOML");
    let mut origins = BTreeMap::new();
    let mut unknown_keys = Vec::new();
    for (path, text) in files {
        let table: Table = toml::from_str(text).map_err(|source| ConfigError::Parse { path: path.clone(), source })?;
        // Each file alone must have the right types, so the error can name it.
        let de = toml::Value::Table(table.clone());
        let _: Config = serde_ignored::deserialize(de, |key| {
            unknown_keys.push((path.clone(), key.to_string()));
        })
        .map_err(|source| ConfigError::Type { origin: path.display().to_string(), source })?;
        merge(&mut merged, table, &mut origins, path, "");
    }
    let mut config: Config =
        Value::Table(merged).try_into().map_err(|source| ConfigError::Type { origin: "merged configuration".into(), source })?;
    let c = &mut config.crio;
    let mut flag = |key: &str, flag: &str| origins.insert(key.into(), PathBuf::from(flag));
    if let Some(v) = &overrides.root {
        c.root = v.clone();
        flag("crio.root", "--root");
    }
    if let Some(v) = &overrides.runroot {
        c.runroot = v.clone();
        flag("crio.runroot", "--runroot");
    }
    if let Some(v) = &overrides.listen {
        c.api.listen = v.clone();
        flag("crio.api.listen", "--listen");
    }
    if let Some(v) = &overrides.log_level {
        c.runtime.log_level = v.clone();
        flag("crio.runtime.log_level", "--log-level");
    }
    validate(&config, &origins)?;
    Ok((config, unknown_keys))
}

fn merge(into: &mut Table, from: Table, origins: &mut BTreeMap<String, PathBuf>, file: &Path, prefix: &str) {
    for (key, value) in from {
        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match (into.get_mut(&key), value) {
            (Some(Value::Table(existing)), Value::Table(table)) => merge(existing, table, origins, file, &path),
            (None, Value::Table(table)) => {
                let mut fresh = Table::new();
                merge(&mut fresh, table, origins, file, &path);
                into.insert(key, Value::Table(fresh));
            }
            (_, value) => {
                origins.insert(path, file.to_path_buf());
                into.insert(key, value);
            }
        }
    }
}

const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "warning", "error", "fatal", "panic"];
const CGROUP_MANAGERS: &[&str] = &["cgroupfs", "systemd"];

fn validate(config: &Config, origins: &BTreeMap<String, PathBuf>) -> Result<(), ConfigError> {
    let origin = |key: &str| origins.get(key).map_or_else(|| "embedded defaults".into(), |p| p.display().to_string());
    let invalid = |key: &'static str, value: &str, allowed: String| ConfigError::Invalid {
        origin: origin(key),
        key,
        value: value.to_string(),
        allowed,
    };
    let c = &config.crio;
    let level = c.runtime.log_level.to_ascii_lowercase();
    if !LOG_LEVELS.contains(&level.as_str()) {
        return Err(invalid("crio.runtime.log_level", &c.runtime.log_level, LOG_LEVELS.join(", ")));
    }
    let (bpffs, pins) = (&c.ebpf.bpffs, &c.ebpf.pin_dir);
    if !pins.starts_with(bpffs) || pins == bpffs {
        let allowed = format!("a directory inside crio.ebpf.bpffs ({})", bpffs.display());
        return Err(invalid("crio.ebpf.pin_dir", &pins.display().to_string(), allowed));
    }
    if !CGROUP_MANAGERS.contains(&c.runtime.cgroup_manager.as_str()) {
        return Err(invalid("crio.runtime.cgroup_manager", &c.runtime.cgroup_manager, CGROUP_MANAGERS.join(", ")));
    }
    if !c.runtime.runtimes.contains_key(&c.runtime.default_runtime) {
        let names: Vec<_> = c.runtime.runtimes.keys().cloned().collect();
        return Err(invalid(
            "crio.runtime.default_runtime",
            &c.runtime.default_runtime,
            format!("a configured runtime ({})", names.join(", ")),
        ));
    }
    for (key, path) in [("crio.root", &c.root), ("crio.runroot", &c.runroot), ("crio.api.listen", &c.api.listen)] {
        if !path.is_absolute() {
            return Err(invalid(key, &path.display().to_string(), "an absolute path".into()));
        }
    }
    if c.image.max_parallel_downloads == 0 {
        return Err(invalid("crio.image.max_parallel_downloads", "0", "1 or more".into()));
    }
    let t = &c.image.default_transport;
    if t != "docker://" {
        return Err(invalid("crio.image.default_transport", t, "\"docker://\"".into()));
    }
    if crio_hooks::CpuSet::parse_list(&c.runtime.shared_cpuset).is_err() {
        return Err(invalid("crio.runtime.shared_cpuset", &c.runtime.shared_cpuset, "a CPU list such as \"0-1,8\"".into()));
    }
    let api = &c.api;
    if !api.stream_idle_timeout.is_empty() && super::GoDuration::parse(&api.stream_idle_timeout).is_err() {
        return Err(invalid("crio.api.stream_idle_timeout", &api.stream_idle_timeout, "a duration such as \"4h\"".into()));
    }
    if api.stream_port.parse::<u16>().is_err() {
        return Err(invalid("crio.api.stream_port", &api.stream_port, "a port number, 0 for any free one".into()));
    }
    if api.stream_address.parse::<std::net::IpAddr>().is_err() {
        return Err(invalid("crio.api.stream_address", &api.stream_address, "an IP address".into()));
    }
    if api.stream_enable_tls && (api.stream_tls_cert.as_os_str().is_empty() || api.stream_tls_key.as_os_str().is_empty()) {
        return Err(invalid("crio.api.stream_enable_tls", "true", "only with stream_tls_cert and stream_tls_key set".into()));
    }
    for h in c.runtime.runtimes.values() {
        if !matches!(h.exec_cpu_affinity.as_str(), "" | "first") {
            return Err(invalid("crio.runtime.runtimes.*.exec_cpu_affinity", &h.exec_cpu_affinity, "\"\" or \"first\"".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(name: &str, text: &str) -> (PathBuf, String) {
        (PathBuf::from(name), text.to_string())
    }

    #[test]
    fn defaults_need_no_file() {
        let (config, unknown) = from_sources(&[], &Overrides::default()).unwrap();
        assert_eq!(config, Config::default());
        assert!(unknown.is_empty());
    }

    #[test]
    fn drop_ins_override_only_what_they_set() {
        let files = [
            src("crio.conf", "[crio.image]\npause_image = \"a/pause:1\"\npinned_images = [\"x\"]\n"),
            src("10-b.conf", "[crio.image]\npause_image = \"b/pause:2\"\n"),
        ];
        let (config, _) = from_sources(&files, &Overrides::default()).unwrap();
        assert_eq!(config.crio.image.pause_image, "b/pause:2");
        assert_eq!(config.crio.image.pinned_images, vec!["x".to_string()]);
    }

    #[test]
    fn runtime_tables_merge_by_name() {
        let files = [src(
            "10-rt.conf",
            "[crio.runtime.runtimes.high-performance]\nruntime_path = \"/usr/sbin/runc\"\nallowed_annotations = [\"cpu-load-balancing.crio.io\"]\n",
        )];
        let (config, _) = from_sources(&files, &Overrides::default()).unwrap();
        let names: Vec<_> = config.crio.runtime.runtimes.keys().cloned().collect();
        assert_eq!(names, ["crun", "high-performance", "runc"]);
        assert_eq!(config.crio.runtime.runtimes["high-performance"].runtime_type, "oci");
    }

    #[test]
    fn unknown_keys_are_reported_with_their_file() {
        let files = [src("a.conf", "[crio.runtime]\nconmon = \"/usr/bin/conmon\"\n[crio.nri]\nenable_nri = true\n")];
        let (_, unknown) = from_sources(&files, &Overrides::default()).unwrap();
        let keys: Vec<_> = unknown.iter().map(|(p, k)| format!("{}:{k}", p.display())).collect();
        assert_eq!(keys, ["a.conf:crio.nri", "a.conf:crio.runtime.conmon"]);
    }

    #[test]
    fn invalid_value_names_file_key_and_allowed() {
        let files = [src("crio.conf", ""), src("20-bad.conf", "[crio.runtime]\ncgroup_manager = \"cgroupz\"\n")];
        let err = from_sources(&files, &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("20-bad.conf"), "{err}");
        assert!(err.contains("crio.runtime.cgroup_manager"), "{err}");
        assert!(err.contains("cgroupfs, systemd"), "{err}");
    }

    #[test]
    fn wrong_type_names_file() {
        let files = [src("30-type.conf", "[crio.image]\npull_progress_timeout = \"ten\"\n")];
        let err = from_sources(&files, &Overrides::default()).unwrap_err();
        assert!(matches!(&err, ConfigError::Type { origin, .. } if origin == "30-type.conf"), "{err}");
    }

    #[test]
    fn flags_override_files() {
        let files = [src("crio.conf", "[crio]\nroot = \"/from/file\"\n")];
        let overrides = Overrides { root: Some("/from/flag".into()), log_level: Some("debug".into()), ..Default::default() };
        let (config, _) = from_sources(&files, &overrides).unwrap();
        assert_eq!(config.crio.root, PathBuf::from("/from/flag"));
        assert_eq!(config.crio.runtime.log_level, "debug");
    }

    #[test]
    fn bad_flag_is_named() {
        let overrides = Overrides { log_level: Some("loud".into()), ..Default::default() };
        let err = from_sources(&[], &overrides).unwrap_err().to_string();
        assert!(err.contains("--log-level") && err.contains("loud"), "{err}");
    }

    #[test]
    fn default_runtime_must_exist() {
        let files = [src("crio.conf", "[crio.runtime]\ndefault_runtime = \"kata\"\n")];
        let err = from_sources(&files, &Overrides::default()).unwrap_err().to_string();
        assert!(err.contains("kata") && err.contains("crun, runc"), "{err}");
    }

    #[test]
    fn effective_config_round_trips_through_toml() {
        let text = toml::to_string(&Config::default()).unwrap();
        let (config, unknown) = from_sources(&[src("printed.conf", &text)], &Overrides::default()).unwrap();
        assert_eq!(config, Config::default());
        assert!(unknown.is_empty(), "{unknown:?}");
    }
}

//! CNI network configuration: `*.conflist`, `*.conf` and `*.json` from the network directory
//! in lexical order (a single-plugin `.conf` is read as a list of one), the first valid one the
//! default unless `cni_default_network` names another; without any, an embedded bridge network
//! like CRI-O's packaged one.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read CNI configuration directory {path}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid CNI configuration {path}: {why}")]
    Invalid { path: PathBuf, why: String },
    #[error("CNI network {name:?} (cni_default_network) is not among the configurations in {dir}")]
    NoSuchNetwork { name: String, dir: PathBuf },
}

/// A network: its name, CNI version and plugin configurations in chain order.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<Map<String, Value>>,
    /// The file it came from, or "embedded default".
    pub origin: String,
}

impl NetworkConfig {
    pub fn parse(bytes: &[u8], origin: &str) -> Result<NetworkConfig, ConfigError> {
        let invalid = |why: String| ConfigError::Invalid { path: origin.into(), why };
        let v: Value = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        let obj = v.as_object().ok_or_else(|| invalid("not a JSON object".into()))?;
        let name = obj.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()).ok_or_else(|| invalid("no \"name\"".into()))?;
        let cni_version = obj.get("cniVersion").and_then(Value::as_str).unwrap_or("0.4.0").to_string();
        let plugins: Vec<Map<String, Value>> = match obj.get("plugins") {
            Some(Value::Array(list)) => list.iter().filter_map(|p| p.as_object().cloned()).collect(),
            Some(_) => return Err(invalid("\"plugins\" is not a list".into())),
            None => vec![obj.clone()],
        };
        if plugins.is_empty() {
            return Err(invalid("no plugins".into()));
        }
        if let Some(i) = plugins.iter().position(|p| !p.get("type").is_some_and(Value::is_string)) {
            return Err(invalid(format!("plugin {i} has no \"type\"")));
        }
        Ok(NetworkConfig { name: name.into(), cni_version, plugins, origin: origin.into() })
    }

    /// The configuration a plugin gets on stdin: its own keys, the network's name and version.
    pub fn plugin_input(&self, index: usize) -> Map<String, Value> {
        let mut conf = self.plugins[index].clone();
        conf.insert("name".into(), Value::String(self.name.clone()));
        conf.insert("cniVersion".into(), Value::String(self.cni_version.clone()));
        conf
    }

    pub fn to_json(&self) -> Value {
        json!({"cniVersion": self.cni_version, "name": self.name, "plugins": self.plugins})
    }
}

/// The embedded default: a bridge with host-local addresses, masquerading, hostPorts, and
/// loopback handled separately. `state_dir` keeps IPAM allocations with the daemon's state.
pub fn embedded_default(bridge: &str, subnet: &str, ipam_dir: &Path) -> NetworkConfig {
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "crio",
        "plugins": [
            {
                "type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true, "hairpinMode": true,
                "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}], "ranges": [[{"subnet": subnet}]], "dataDir": ipam_dir},
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    });
    NetworkConfig::parse(list.to_string().as_bytes(), "embedded default").expect("the embedded default is valid")
}

/// Every valid configuration in `dir`, in lexical order; invalid files are returned apart so
/// the caller can log them.
pub fn load_dir(dir: &Path) -> Result<(Vec<NetworkConfig>, Vec<ConfigError>), ConfigError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(source) => return Err(ConfigError::ReadDir { path: dir.into(), source }),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "conflist" || x == "conf" || x == "json"))
        .collect();
    paths.sort();
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for p in paths {
        match fs::read(&p) {
            Ok(bytes) => match NetworkConfig::parse(&bytes, &p.display().to_string()) {
                Ok(c) => ok.push(c),
                Err(e) => bad.push(e),
            },
            Err(e) => bad.push(ConfigError::Invalid { path: p, why: e.to_string() }),
        }
    }
    Ok((ok, bad))
}

/// Picks the network to use: the named one, else the first.
pub fn choose(configs: Vec<NetworkConfig>, name: &str, dir: &Path) -> Result<Option<NetworkConfig>, ConfigError> {
    if name.is_empty() {
        return Ok(configs.into_iter().next());
    }
    match configs.into_iter().find(|c| c.name == name) {
        Some(c) => Ok(Some(c)),
        None => Err(ConfigError::NoSuchNetwork { name: name.into(), dir: dir.into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_conf_is_a_list_of_one() {
        let c = NetworkConfig::parse(br#"{"cniVersion":"0.4.0","name":"n","type":"bridge","bridge":"b0"}"#, "x.conf").unwrap();
        assert_eq!(c.plugins.len(), 1);
        let input = c.plugin_input(0);
        assert_eq!(input["name"], "n");
        assert_eq!(input["bridge"], "b0");
    }

    #[test]
    fn invalid_configs_say_why() {
        for (text, why) in [("[]", "object"), (r#"{"plugins":[]}"#, "name"), (r#"{"name":"n","plugins":[{}]}"#, "type")] {
            let err = NetworkConfig::parse(text.as_bytes(), "f.conflist").unwrap_err().to_string();
            assert!(err.contains(why) && err.contains("f.conflist"), "{err}");
        }
    }

    #[test]
    fn directory_order_and_default_choice() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("20-b.conflist"), r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"}]}"#).unwrap();
        fs::write(t.path().join("10-a.conf"), r#"{"cniVersion":"1.0.0","name":"a","type":"ptp"}"#).unwrap();
        fs::write(t.path().join("05-broken.conflist"), "{").unwrap();
        fs::write(t.path().join("README"), "not a config").unwrap();
        let (ok, bad) = load_dir(t.path()).unwrap();
        assert_eq!(ok.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(bad.len(), 1);
        assert_eq!(choose(ok.clone(), "", t.path()).unwrap().unwrap().name, "a");
        assert_eq!(choose(ok.clone(), "b", t.path()).unwrap().unwrap().name, "b");
        assert!(choose(ok, "c", t.path()).is_err());
    }

    #[test]
    fn embedded_default_is_bridge_and_portmap() {
        let c = embedded_default("crio0", "10.85.0.0/16", Path::new("/var/lib/crio/cni"));
        let types: Vec<_> = c.plugins.iter().map(|p| p["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["bridge", "portmap"]);
    }
}

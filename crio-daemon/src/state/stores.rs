//! The daemon's record stores, shared by the pod and container services: pods, containers,
//! and the unique names they hold.

use std::path::{Path, PathBuf};

use super::{Names, Records, StateError};
use crate::model::{Container, PodSandbox};

pub struct Stores {
    pub pods: Records<PodSandbox>,
    pub containers: Records<Container>,
    pub names: Names,
}

impl Stores {
    /// Loads the records under `state_dir` and re-reserves their names; returns what could not
    /// be read beside them.
    pub fn load(state_dir: &Path) -> Result<(Self, Vec<(PathBuf, String)>), StateError> {
        let (pods, mut bad) = Records::<PodSandbox>::load(&state_dir.join("pods"))?;
        let (containers, bad_ctrs) = Records::<Container>::load(&state_dir.join("containers"))?;
        bad.extend(bad_ctrs);
        let names = Names::default();
        for p in pods.all() {
            let p = p.snapshot();
            let _ = names.reserve(&p.full_name, &p.id);
        }
        for ct in containers.all() {
            let ct = ct.snapshot();
            let _ = names.reserve(&ct.full_name, &ct.id);
        }
        Ok((Self { pods, containers, names }, bad))
    }

    /// The containers of a pod, as recorded.
    pub fn containers_of(&self, pod_id: &str) -> Vec<Container> {
        self.containers.all().into_iter().map(|e| e.get()).filter(|c| c.pod_id == pod_id).collect()
    }
}

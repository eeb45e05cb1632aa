//! CDI devices through the CRI (`ContainerConfig.CDI_devices`): a device described by a spec
//! file in the configured spec directories reaches the container with its node, environment,
//! read-only mount and hook, and its spec's own edits; a later directory overrides an earlier
//! one; a device no spec describes and a malformed name are refused by field.

mod common;

use common::pods::*;
use crio::cri::v1 as cri;

#[tokio::test(flavor = "multi_thread")]
async fn cdi_devices_are_applied_from_the_spec_dirs() {
    let specs = tempfile::tempdir().expect("spec dirs");
    let (early, late) = (specs.path().join("etc-cdi"), specs.path().join("run-cdi"));
    std::fs::create_dir_all(&early).unwrap();
    std::fs::create_dir_all(&late).unwrap();
    let data = specs.path().join("data");
    std::fs::write(&data, "from the CDI spec\n").unwrap();
    let marker = specs.path().join("hook-ran");
    // The earlier directory's null0 is overridden by the later one's.
    std::fs::write(
        early.join("test.json"),
        r#"{"cdiVersion":"0.6.0","kind":"crio-test.example/dev","devices":[{"name":"null0","containerEdits":{"env":["CDI_DEVICE=old"]}}]}"#,
    )
    .unwrap();
    let spec = format!(
        "cdiVersion: 0.6.0\nkind: crio-test.example/dev\n\
         containerEdits:\n  env: [CDI_SPEC=yes]\n  hooks:\n  - hookName: createRuntime\n    path: /bin/sh\n    args: [sh, -c, 'echo $CDI_HOOK > {marker}']\n    env: [CDI_HOOK=ran]\n\
         devices:\n- name: null0\n  containerEdits:\n    env: [CDI_DEVICE=null0]\n    deviceNodes:\n    - path: /dev/cdi-null\n      hostPath: /dev/null\n    mounts:\n    - hostPath: {data}\n      containerPath: /cdi/data\n      options: [ro, bind]\n",
        marker = marker.display(),
        data = data.display()
    );
    std::fs::write(late.join("test.yaml"), spec).unwrap();
    let extra = format!("[crio.runtime]\ncdi_spec_dirs = [\"{}\", \"{}\"]\n", early.display(), late.display());
    let (_reg, d, image) = host_network_env(&extra).await;
    let pc = host_network_pod_config("cdi", &d.dir.path().join("logs/cdi"));
    let pod = run_pod(&d, pc.clone()).await.expect("RunPodSandbox");

    let mut cc = container_config("gpu", &image, "exec sleep 1000");
    cc.cdi_devices = vec![cri::CdiDevice { name: "crio-test.example/dev=null0".into() }];
    let id = create(&d, &pod, &pc, cc).await.expect("CreateContainer with a CDI device");
    assert_eq!(std::fs::read_to_string(&marker).expect("the spec's createRuntime hook ran").trim(), "ran");
    d.runtime().await.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.expect("StartContainer");
    let script = "cat /cdi/data; echo $CDI_SPEC $CDI_DEVICE; [ -c /dev/cdi-null ] && echo x > /dev/cdi-null && echo node-ok; touch /cdi/data || echo ro";
    let out = d.runtime().await.exec_sync(sh(&id, script)).await.expect("ExecSync").into_inner();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout, "from the CDI spec\nyes null0\nnode-ok\nro\n", "stderr: {}", String::from_utf8_lossy(&out.stderr));

    let mut cc = container_config("missing", &image, "exec sleep 1000");
    cc.cdi_devices = vec![cri::CdiDevice { name: "crio-test.example/dev=null1".into() }];
    let err = create(&d, &pod, &pc, cc).await.expect_err("an undescribed device");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("CDI_devices") && err.message().contains("crio-test.example/dev=null1"), "{err:?}");
    let mut cc = container_config("malformed", &image, "exec sleep 1000");
    cc.cdi_devices = vec![cri::CdiDevice { name: "null0".into() }];
    let err = create(&d, &pod, &pc, cc).await.expect_err("a malformed name");
    assert!(err.code() == tonic::Code::InvalidArgument && err.message().contains("config.CDI_devices[0]"), "{err:?}");

    d.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}

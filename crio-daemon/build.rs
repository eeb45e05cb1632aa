//! Generates the server and client of our own gRPC APIs and of the CRI (proto/).

fn main() {
    let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
    println!("cargo:rerun-if-changed={proto}");
    tonic_prost_build::configure()
        .compile_protos(&[format!("{proto}/crio/kernel/v1/kernel.proto")], &[proto.to_string()])
        .expect("compiling proto/crio/kernel/v1/kernel.proto (protoc is in .ci/deps)");

    // The CRI marks credentials `[debug_redact = true]`, an option Debian's protoc (3.21)
    // does not know. A copy without it is compiled, and AuthConfig gets a Debug of our own
    // that redacts those fields (crate::cri::auth_debug), which is what the option asks for.
    let api = std::fs::read_to_string(format!("{proto}/runtime/v1/api.proto")).expect("reading proto/runtime/v1/api.proto");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("cri-proto");
    std::fs::create_dir_all(out.join("runtime/v1")).expect("creating the CRI proto copy's directory");
    std::fs::write(out.join("runtime/v1/api.proto"), api.replace(" [debug_redact = true]", "")).expect("writing the CRI proto copy");
    tonic_prost_build::configure()
        .skip_debug(["runtime.v1.AuthConfig"])
        // crioctl prints responses as JSON.
        .message_attribute(".", "#[derive(serde::Serialize)]")
        .compile_protos(&[out.join("runtime/v1/api.proto")], &[out])
        .expect("compiling proto/runtime/v1/api.proto (protoc is in .ci/deps)");
}

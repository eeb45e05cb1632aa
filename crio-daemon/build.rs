//! Generates the server and client of our own gRPC APIs (proto/); the CRI comes from k8s-cri.

fn main() {
    let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
    println!("cargo:rerun-if-changed={proto}");
    tonic_prost_build::configure()
        .compile_protos(&[format!("{proto}/crio/kernel/v1/kernel.proto")], &[proto.to_string()])
        .expect("compiling proto/crio/kernel/v1/kernel.proto (protoc is in .ci/deps)");
}

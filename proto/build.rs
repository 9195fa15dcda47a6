//! Generates the `chord.v1` messages and services. protoc comes from the
//! `protoc-bin-vendored` registry crate, so a fresh machine needs no system package.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Read by prost-build; this build-script process is the only reader.
    std::env::set_var("PROTOC", protoc);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&["chord/v1/chord.proto"], &["."])?;
    println!("cargo:rerun-if-changed=chord/v1/chord.proto");
    Ok(())
}

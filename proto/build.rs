//! Generates the `chord.v1` messages and services. protoc comes from the
//! `protoc-bin-vendored` registry crate, so a fresh machine needs no system package.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Read by prost-build; this build-script process is the only reader.
    std::env::set_var("PROTOC", protoc);
    tonic_prost_build::configure()
        // Chunk bytes decode as slices of the receive buffer and encode from
        // slices of the sender's chunk, instead of a copy per piece.
        .bytes(".chord.v1.PutChunkRequest.data")
        .bytes(".chord.v1.ChunkPiece.data")
        .build_server(true)
        .build_client(true)
        .compile_protos(&["chord/v1/chord.proto"], &["."])?;
    println!("cargo:rerun-if-changed=chord/v1/chord.proto");
    Ok(())
}

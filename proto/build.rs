fn main() -> Result<(), Box<dyn std::error::Error>> {
    // protoc comes from a crate so that no system install is needed.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment here.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("quire_descriptor.bin"))
        .compile_protos(
            &[
                "quire/v1/common.proto",
                "quire/v1/ingest.proto",
                "quire/v1/query.proto",
            ],
            &["."],
        )?;
    println!("cargo:rerun-if-changed=quire");
    Ok(())
}

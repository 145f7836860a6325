//! Compiles proto/ with protox (pure Rust, no system protoc) and writes the
//! file descriptor set that server reflection serves.
use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/backup/v1/backup.proto";
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile([proto], ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("backup_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .bytes(".backup.v1.DownloadBackupResponse.chunk")
        .compile_fds(fds)?;
    Ok(())
}

//! The two walls around a guest.
//!
//! The first wall is this module: a guest's capabilities, turned into its
//! WASI context. The second is [`os`]: the OS process around it.
//!
//! Deny by default: the guest gets the arguments and environment it is
//! given and nothing of the runner's own, the preopened folders and no other
//! path, and no network. The socket interfaces stay linked (toolchains that
//! import every WASI interface still instantiate) but every use of them is
//! refused.

pub mod os;

use anyhow::Context;
use wasmproc_protocol::LaunchSpec;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// The WASI context builder for `spec`. The guest's stdio is the runner's
/// own stdin/stdout/stderr, which the host set up as the caller asked.
///
/// # Errors
///
/// When a preopened folder cannot be opened.
pub fn wasi_builder(spec: &LaunchSpec) -> anyhow::Result<WasiCtxBuilder> {
    let mut builder = WasiCtxBuilder::new();
    builder.args(&spec.args).inherit_stdio();
    for (key, value) in &spec.env {
        builder.env(key, value);
    }
    for preopen in &spec.preopens {
        let perms = if preopen.read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        builder
            .preopened_dir(&preopen.host_path, &preopen.guest_path, perms)
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!(
                    "cannot open folder {} for the guest (as {})",
                    preopen.host_path, preopen.guest_path
                )
            })?;
    }
    builder
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    Ok(builder)
}

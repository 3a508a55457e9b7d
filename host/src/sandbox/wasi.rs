//! The first wall: a guest's capabilities as its WASI context.

use anyhow::Context;
use wasmproc_protocol::LaunchSpec;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// The WASI context builder for `spec`. The guest's stdio is the runner's
/// own stdin/stdout/stderr, which the host set up as the caller asked.
///
/// # Errors
///
/// When a preopened folder cannot be opened.
pub(crate) fn wasi_builder(spec: &LaunchSpec) -> anyhow::Result<WasiCtxBuilder> {
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

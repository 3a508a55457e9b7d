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

/// What a guest can reach in both walls, as `wasmproc sandbox explain`
/// prints it: derived from the launch spec the runner receives and from the
/// [`os::OsPolicy`] it applies to itself.
pub fn explain(spec: &LaunchSpec) -> String {
    use std::fmt::Write;
    let mib = |bytes: u64| format!("{} MiB", bytes / (1024 * 1024));
    let mut out = String::new();
    let _ = writeln!(out, "first wall (wasm + WASI capabilities):");
    let _ = writeln!(out, "  args:       {:?}", spec.args);
    if spec.env.is_empty() {
        let _ = writeln!(out, "  env:        nothing");
    } else {
        let vars: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "  env:        {} (nothing else)", vars.join(" "));
    }
    if spec.preopens.is_empty() {
        let _ = writeln!(out, "  folders:    none: no path opens");
    }
    for p in &spec.preopens {
        let mode = if p.read_only {
            "read-only"
        } else {
            "read-write"
        };
        let _ = writeln!(
            out,
            "  folders:    {} as {} ({mode})",
            p.host_path, p.guest_path
        );
    }
    let _ = writeln!(
        out,
        "  network:    none (sockets linked, every use refused)"
    );
    let _ = writeln!(out, "  processes:  none (WASI cannot start one)");
    let l = &spec.limits;
    let cpu = l
        .max_cpu_ms
        .map_or_else(|| "none".to_owned(), |ms| format!("{ms} ms"));
    let _ = writeln!(
        out,
        "  limits:     memory {}, message {}, inbox {} items / {}, CPU {cpu}",
        mib(l.max_memory),
        mib(l.max_message_size),
        l.inbox_items,
        mib(l.inbox_bytes),
    );
    let _ = writeln!(out, "second wall (the runner process):");
    let policy = os::OsPolicy::for_spec(spec, 0);
    let _ = write!(out, "{policy}");
    out
}

//! The two walls around a guest.
//!
//! The first wall is `sandbox/wasi`: a guest's capabilities, turned into
//! its WASI context. The second is `sandbox/os`: the OS process around it.
//!
//! Deny by default: the guest gets the arguments and environment it is
//! given and nothing of the runner's own, the preopened folders and no other
//! path, and no network. The socket interfaces stay linked (toolchains that
//! import every WASI interface still instantiate) but every use of them is
//! refused.

mod bpf;
pub(crate) mod os;
mod wasi;

use wasmproc_protocol::LaunchSpec;

pub(crate) use wasi::wasi_builder;

use crate::command::Command;
use crate::host::{Host, SpawnError};

/// What the guest `command` describes could reach in both walls, as
/// `wasmproc sandbox explain` prints it: from the launch spec its runner
/// would receive and the OS policy that runner would apply to itself. The
/// module is compiled (or found in the cache) to tell its kind; nothing runs.
///
/// # Errors
///
/// When the module is missing, not wasm, or does not compile.
pub async fn explain(command: &mut Command) -> Result<String, SpawnError> {
    let spec = Host::new().launch_spec(&command.build()).await?;
    Ok(describe(&spec))
}

/// What a guest with launch spec `spec` can reach in both walls.
fn describe(spec: &LaunchSpec) -> String {
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

//! What the host consumes to start a guest: a built [`Command`](crate::Command).

use std::path::PathBuf;
use std::time::Duration;

use wasmproc_protocol::{GuestId, LaunchSpec, Limits, PROTOCOL_VERSION, Preopen, Walls};

use super::spawner::default_stdio;
use crate::cache::Artifact;
use crate::os::Stdio;

/// A built [`Command`](crate::Command): everything the host consumes to
/// start one guest.
#[derive(Debug)]
pub(crate) struct Spec {
    pub(crate) module: PathBuf,
    /// `argv`, including `argv[0]`.
    pub(crate) argv: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) name: Option<String>,
    pub(crate) group: Option<String>,
    pub(crate) preopens: Vec<Preopen>,
    /// stdin, stdout, stderr; `None`: the default for a fork.
    pub(crate) stdio: [Option<Stdio>; 3],
    pub(crate) limits: Limits,
    pub(crate) timeout: Option<Duration>,
    pub(crate) talks_to: Option<Vec<String>>,
    pub(crate) probe: Option<Walls>,
    /// A standby for a swap: registered under the running guest's name,
    /// which still leads to the running one.
    pub(crate) standby: bool,
}

impl Spec {
    /// Whether the guest keeps the default stdio of a fork (so a pooled
    /// runner, started with it, can take it).
    pub(crate) fn default_stdio(&self) -> bool {
        self.stdio.iter().all(Option::is_none)
    }

    /// The stdio the runner starts with: what was set, else a fork's
    /// default. Taken out of the spec (descriptors are not copied).
    pub(crate) fn take_stdio(&mut self) -> [Stdio; 3] {
        let [stdin, stdout, stderr] = &mut self.stdio;
        let [default_in, default_out, default_err] = default_stdio();
        [
            stdin.take().unwrap_or(default_in),
            stdout.take().unwrap_or(default_out),
            stderr.take().unwrap_or(default_err),
        ]
    }

    /// The launch spec for the runner of guest `id`, running `artifact`.
    pub(crate) fn launch_spec(&self, id: GuestId, artifact: &Artifact) -> LaunchSpec {
        LaunchSpec {
            protocol_version: PROTOCOL_VERSION,
            id,
            name: self.name.clone(),
            artifact: artifact.path.to_string_lossy().into_owned(),
            kind: artifact.kind,
            args: self.argv.clone(),
            env: self.env.clone(),
            preopens: self.preopens.clone(),
            limits: self.limits.clone(),
            probe: self.probe,
        }
    }
}

//! The `wasmproc` command line: flags in, library calls out.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use wasmproc::manifest::GuestLimits;
use wasmproc::{Command, ExitStatus, Pipeline};

#[derive(Debug, Parser)]
#[command(
    name = "wasmproc",
    version,
    about = "Run WebAssembly guests each in its own sandboxed process"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run one module (a WASI core module or component) with the terminal's
    /// stdio, or an app of guests from a manifest (`app.toml`).
    Run(RunArgs),
    /// Run a command line or pipeline (`a.wasm x | b.wasm`), split like a
    /// shell would but never run by one.
    Exec(ExecArgs),
    /// Start a module, call it once with PAYLOAD and print its reply on
    /// stdout (the guest's own stdout goes to stderr), then shut it down.
    Call(CallArgs),
    /// Inspect the sandbox.
    #[command(subcommand)]
    Sandbox(SandboxCmd),
}

#[derive(Debug, Subcommand)]
enum SandboxCmd {
    /// Print what a guest can reach in both walls: `MODULE.wasm` with the
    /// same options as `run`, or `APP.toml NAME` for a manifest entry.
    Explain(ExplainArgs),
}

#[derive(Debug, clap::Args)]
struct ExplainArgs {
    #[command(flatten)]
    options: GuestOptions,
    /// A module, or an app manifest.
    target: PathBuf,
    /// With a manifest: the guest's name (a table, or one of its replicas).
    entry: Option<String>,
}

/// What the guest may reach and how long it may run; shared by `run` and `exec`.
#[derive(Debug, clap::Args)]
struct GuestOptions {
    /// Let the guest read and write a host folder: HOST or HOST::GUEST.
    #[arg(long = "dir", value_name = "HOST[::GUEST]")]
    dirs: Vec<String>,
    /// Let the guest read (not write) a host folder: HOST or HOST::GUEST.
    #[arg(long = "dir-ro", value_name = "HOST[::GUEST]")]
    dirs_ro: Vec<String>,
    /// Set an environment variable for the guest (it sees no other).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Kill the guest after this long (`500ms`, `5s`, `2m`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// The most linear memory the guest may use (`256MiB`; default 512MiB).
    #[arg(long, value_name = "SIZE", value_parser = wasmproc::manifest::parse_size)]
    max_memory: Option<u64>,
    /// The CPU time the guest may use (`10s`; default: no limit).
    #[arg(long, value_name = "DURATION", value_parser = parse_cpu)]
    max_cpu: Option<Duration>,
    /// The largest message the guest may send or receive (`1MiB`; default 16MiB).
    #[arg(long, value_name = "SIZE", value_parser = wasmproc::manifest::parse_size)]
    max_message_size: Option<u64>,
    /// Inbox items the guest's runner holds before the host's mailbox takes
    /// over (default 65536).
    #[arg(long, value_name = "ITEMS")]
    inbox_size: Option<u32>,
    /// The longest a call the guest makes may wait (`10s`; default 60s).
    #[arg(long, value_name = "DURATION", value_parser = parse_call_timeout)]
    max_call_timeout: Option<Duration>,
}

impl GuestOptions {
    fn apply(&self, command: &mut Command) {
        command.envs(self.env.iter().cloned());
        for (dirs, read_only) in [(&self.dirs, false), (&self.dirs_ro, true)] {
            for dir in dirs {
                let (host, guest) = parse_dir(dir);
                command.preopen(host, guest, read_only);
            }
        }
        command.limits(&GuestLimits {
            timeout: self.timeout,
            max_memory: self.max_memory,
            max_cpu: self.max_cpu,
            max_message_size: self.max_message_size,
            inbox_size: self.inbox_size,
            max_call_timeout: self.max_call_timeout,
        });
    }
}

#[derive(Debug, clap::Args)]
struct ExecArgs {
    #[command(flatten)]
    options: GuestOptions,
    /// The line, quoted as one argument: `'a.wasm x "y z" | b.wasm'`.
    line: String,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    options: GuestOptions,
    /// For an app: print one JSON object per event instead of text.
    #[arg(long)]
    json: bool,
    /// The module (`.wasm`) or app manifest (`.toml`) to run.
    module: PathBuf,
    /// Arguments for the guest (after `--`).
    #[arg(last = true)]
    args: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct CallArgs {
    #[command(flatten)]
    options: GuestOptions,
    /// How long to wait for the reply.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_call_timeout)]
    deadline: Duration,
    /// The module (`.wasm`) to start and call.
    module: PathBuf,
    /// The request's bytes (as given, UTF-8).
    payload: String,
    /// Arguments for the guest (after `--`).
    #[arg(last = true)]
    args: Vec<String>,
}

/// A duration that must be above zero; `refusal` says why zero is wrong.
fn above_zero(text: &str, refusal: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text).map_err(|err| err.to_string())? {
        Duration::ZERO => Err(format!("`{text}` {refusal}")),
        limit => Ok(limit),
    }
}

fn parse_cpu(text: &str) -> Result<Duration, String> {
    above_zero(text, wasmproc::manifest::NO_CPU)
}

fn parse_call_timeout(text: &str) -> Result<Duration, String> {
    above_zero(text, wasmproc::manifest::NO_CALL_TIMEOUT)
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{text}` is not K=V")),
    }
}

/// `HOST[::GUEST]`; the guest path defaults to the host path.
fn parse_dir(text: &str) -> (String, String) {
    match text.split_once("::") {
        Some((host, guest)) => (host.to_owned(), guest.to_owned()),
        None => (text.to_owned(), text.to_owned()),
    }
}

/// Parse the command line, run, and return the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WASMPROC_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("wasmproc: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Cmd::Run(args) => run(args).await,
            Cmd::Exec(args) => exec(args).await,
            Cmd::Call(args) => call(args).await,
            Cmd::Sandbox(SandboxCmd::Explain(args)) => explain(args).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("wasmproc: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<u8> {
    if args.module.extension().is_some_and(|e| e == "toml") {
        anyhow::ensure!(
            args.args.is_empty(),
            "an app takes no arguments after `--`: give each guest its `args` in the manifest"
        );
        return run_app(&args.module, args.json).await;
    }
    let mut command = Command::new(&args.module);
    command.args(args.args);
    args.options.apply(&mut command);
    // On a terminal, the guest gets a terminal of its own.
    let status = command
        .status()
        .await
        .with_context(|| format!("cannot run {}", args.module.display()))?;
    report(&args.module.display().to_string(), &status);
    Ok(status.process_code().clamp(0, 255) as u8)
}

/// How long `wasmproc call` waits for the guest to finish after its reply.
const CALL_GRACE: Duration = Duration::from_secs(5);

async fn call(args: CallArgs) -> anyhow::Result<u8> {
    use std::io::Write;
    use std::os::fd::AsFd;
    let module = args.module.display().to_string();
    let mut command = Command::new(&args.module);
    command.args(args.args);
    args.options.apply(&mut command);
    // Stdout carries the reply alone: the guest's own output goes to stderr.
    let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
    command
        .stdin(wasmproc::Stdio::Null)
        .stdout(wasmproc::Stdio::Fd(stderr));
    let child = command
        .fork()
        .await
        .with_context(|| format!("cannot run {module}"))?;
    let answer = child.call(args.payload.into_bytes(), args.deadline).await;
    let status = child.stop(CALL_GRACE).await;
    match answer {
        Ok(reply) => {
            let mut out = std::io::stdout().lock();
            out.write_all(&reply)?;
            out.flush()?;
            if !status.success() {
                report(&module, &status);
            }
            Ok(0)
        }
        Err(error) => {
            eprintln!("wasmproc: call to {module} failed: {error}");
            Ok(EXIT_CALL_FAILED)
        }
    }
}

/// `wasmproc call`'s exit code when no reply came.
const EXIT_CALL_FAILED: u8 = 3;

async fn exec(args: ExecArgs) -> anyhow::Result<u8> {
    let mut pipeline = Pipeline::parse(&args.line)?;
    for stage in pipeline.stages_mut() {
        args.options.apply(stage);
    }
    let modules: Vec<String> = pipeline
        .stages_mut()
        .iter()
        .map(|stage| stage.get_module().display().to_string())
        .collect();
    let statuses = pipeline.status().await?;
    let several = statuses.len() > 1;
    for (i, (status, module)) in statuses.iter().zip(&modules).enumerate() {
        let what = if several {
            format!("stage {} ({module})", i + 1)
        } else {
            module.clone()
        };
        match status {
            // In a pipeline a stage's failure is not visible in the exit code.
            ExitStatus::Exited { code } if several && *code != 0 => {
                eprintln!("wasmproc: {what}: {status}");
            }
            _ => report(&what, status),
        }
    }
    let last = statuses.last().map(ExitStatus::process_code).unwrap_or(0);
    Ok(last.clamp(0, 255) as u8)
}

async fn explain(args: ExplainArgs) -> anyhow::Result<u8> {
    let mut command;
    if args.target.extension().is_some_and(|e| e == "toml") {
        let manifest = wasmproc::manifest::load(&args.target)?;
        let wanted = args
            .entry
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("name the guest: `sandbox explain APP.toml NAME`"))?;
        let def = manifest
            .guests
            .iter()
            .find(|d| d.name == wanted || d.instance_names().iter().any(|n| n == wanted))
            .ok_or_else(|| anyhow::anyhow!("{} has no guest `{wanted}`", args.target.display()))?;
        command = wasmproc::app::command_for(&wasmproc::Host::new(), def, wanted);
        println!("guest `{wanted}` ({})", def.module.display());
    } else {
        command = Command::new(&args.target);
        println!("guest {}", args.target.display());
    }
    args.options.apply(&mut command);
    println!("{}", wasmproc::sandbox::explain(&mut command).await?);
    Ok(0)
}

async fn run_app(path: &std::path::Path, json: bool) -> anyhow::Result<u8> {
    let manifest = wasmproc::manifest::load(path)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(wasmproc::app::EVENT_CAPACITY);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::error!("cannot listen for SIGINT and SIGTERM");
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        signals.cancel();
    });
    let printer = tokio::spawn(async move {
        let mut out = Printer::new(json);
        while let Some(event) = rx.recv().await {
            out.print(&event);
        }
    });
    let result = wasmproc::app::run(&manifest, tx, shutdown).await;
    let _ = printer.await;
    Ok(if result? { 0 } else { 1 })
}

/// Prints app events for people (prefixed, coloured on a terminal) or as JSON lines.
struct Printer {
    json: bool,
    colors: std::collections::HashMap<String, &'static str>,
    tty_out: bool,
    tty_err: bool,
}

const PALETTE: [&str; 6] = ["36", "33", "35", "32", "34", "31"];

impl Printer {
    fn new(json: bool) -> Printer {
        use std::io::IsTerminal;
        Printer {
            json,
            colors: std::collections::HashMap::new(),
            tty_out: std::io::stdout().is_terminal(),
            tty_err: std::io::stderr().is_terminal(),
        }
    }

    fn label(&mut self, guest: &str, tty: bool) -> String {
        if !tty {
            return guest.to_owned();
        }
        let next = PALETTE[self.colors.len() % PALETTE.len()];
        let color = *self.colors.entry(guest.to_owned()).or_insert(next);
        format!("\x1b[{color}m{guest}\x1b[0m")
    }

    fn print(&mut self, event: &wasmproc::app::Event) {
        use wasmproc::app::{Event, Stream};
        if self.json {
            println!("{}", event_json(event));
            return;
        }
        match event {
            Event::Output {
                guest,
                stream: Stream::Stdout,
                line,
            } => {
                println!("{} | {line}", self.label(guest, self.tty_out));
            }
            Event::Output {
                guest,
                stream: Stream::Stderr,
                line,
            } => {
                eprintln!("{} | {line}", self.label(guest, self.tty_err));
            }
            Event::Started { guest, id, pid } => {
                eprintln!(
                    "wasmproc: started {} (id {id}, pid {pid})",
                    self.label(guest, self.tty_err)
                );
            }
            Event::Exited { guest, status, .. } => {
                eprintln!(
                    "wasmproc: {} ended: {status}",
                    self.label(guest, self.tty_err)
                );
            }
            Event::Restarting {
                guest,
                attempt,
                delay,
            } => eprintln!(
                "wasmproc: restarting {} in {delay:?} (restart {attempt})",
                self.label(guest, self.tty_err)
            ),
            Event::GaveUp {
                guest,
                restarts,
                window,
            } => eprintln!(
                "wasmproc: gave up on {}: it kept failing ({restarts} restarts, too many short runs within {window:?})",
                self.label(guest, self.tty_err)
            ),
            Event::Refused { from, to } => {
                eprintln!("wasmproc: refused: {from} may not send to {to}");
            }
            Event::Stopped { dropped_notices } => eprintln!(
                "wasmproc: stopped; {dropped_notices} notices dropped for guests whose mailbox was full"
            ),
        }
    }
}

/// One event as a JSON object.
fn event_json(event: &wasmproc::app::Event) -> serde_json::Value {
    use serde_json::json;
    use wasmproc::app::{Event, Stream};
    match event {
        Event::Started { guest, id, pid } => {
            json!({"event": "started", "guest": guest, "id": id, "pid": pid})
        }
        Event::Output {
            guest,
            stream,
            line,
        } => json!({
            "event": "output",
            "guest": guest,
            "stream": if *stream == Stream::Stdout { "stdout" } else { "stderr" },
            "line": line,
        }),
        Event::Exited {
            guest,
            status,
            uptime,
        } => json!({
            "event": "exited",
            "guest": guest,
            "reason": status.to_string(),
            "code": status.code(),
            "uptime_ms": uptime.as_millis() as u64,
        }),
        Event::Restarting {
            guest,
            attempt,
            delay,
        } => json!({
            "event": "restarted",
            "guest": guest,
            "attempt": attempt,
            "delay_ms": delay.as_millis() as u64,
        }),
        Event::GaveUp {
            guest,
            restarts,
            window,
        } => json!({
            "event": "gave-up",
            "guest": guest,
            "restarts": restarts,
            "window_ms": window.as_millis() as u64,
        }),
        Event::Refused { from, to } => json!({"event": "refused", "from": from, "to": to}),
        Event::Stopped { dropped_notices } => {
            json!({"event": "stopped", "dropped_notices": dropped_notices})
        }
    }
}

/// Say on stderr how a guest ended, unless it simply exited.
fn report(what: &str, status: &ExitStatus) {
    match status {
        ExitStatus::Exited { .. } => {}
        ExitStatus::Trapped { backtrace, .. } => {
            eprintln!("wasmproc: {what}: {status}");
            for (i, frame) in backtrace.iter().enumerate() {
                eprintln!("  {i:>3}: {frame}");
            }
        }
        _ => eprintln!("wasmproc: {what}: {status}"),
    }
}

//! The `wasmproc` command line: flags in, library calls out.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::json;

use wasmproc::manifest::GuestLimits;
use wasmproc::{Command, ExitStatus, Pipeline};

/// `println!` that ignores a closed stdout (`wasmproc ... | head -1`)
/// instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `print!`, likewise.
macro_rules! say_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = write!(out, $($arg)*);
        let _ = out.flush();
    }};
}

/// `eprintln!` that ignores a closed stderr (`... 2>&1 | head -2`).
macro_rules! warn {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `eprint!`, likewise.
macro_rules! warn_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}

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
    /// Call a guest once with PAYLOAD (or @FILE) and print its reply on
    /// stdout: a guest NAME of a running app, or a MODULE.wasm started for
    /// the call (its own stdout goes to stderr) and shut down after.
    Call(CallArgs),
    /// Run an app as a long-lived host with a control socket (`-d`: in the
    /// background).
    Up(UpArgs),
    /// Shut a running app down (as SIGTERM does).
    Down(AppArg),
    /// List a running app's guests.
    Ps(PsArgs),
    /// Print a running app's recent guest output.
    Logs(LogsArgs),
    /// Show each guest's load, refreshed every second (`--json`: once).
    Top(PsArgs),
    /// Plug a new module into a running app.
    Start(StartArgs),
    /// Stop a guest (or every member of a group) of a running app.
    Stop(TargetArgs),
    /// Restart a guest, or a group one member at a time.
    Restart(TargetArgs),
    /// Send PAYLOAD (or @FILE) to a guest of a running app.
    Send(SendArgs),
    /// Replace a guest's module in a running app, losing no message; with
    /// `--node`, move it to that node of the app's cluster the same way.
    Swap(SwapArgs),
    /// Make a running app what its manifest now says, and print what changed.
    Reload(ReloadArgs),
    /// Write a new guest folder NAME (Rust, Python or JavaScript) that
    /// builds with one command, and print that command.
    New {
        /// The folder to create; its name is the guest's.
        name: PathBuf,
        /// The guest's language.
        #[arg(long, value_enum, default_value = "rust")]
        lang: Lang,
    },
    /// Print a shell's completion script (`wasmproc completions bash >
    /// /etc/bash_completion.d/wasmproc`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (`wasmproc man | man -l -`).
    Man,
    /// Compile modules into the artifact cache ahead of their first run.
    Compile {
        /// The modules.
        #[arg(required = true)]
        modules: Vec<PathBuf>,
    },
    /// List the artifact cache, with sizes (`clean`: empty it).
    Cache {
        /// `clean` removes every artifact.
        #[arg(value_parser = ["clean"])]
        action: Option<String>,
    },
    /// Inspect the sandbox.
    #[command(subcommand)]
    Sandbox(SandboxCmd),
}

/// A guest's language, for `new`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Lang {
    Rust,
    Python,
    Js,
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
    /// Set an environment variable for the guest (it sees no other); `K`
    /// alone passes this process's value of `K` on.
    #[arg(long = "env", value_name = "K[=V]", value_parser = parse_env)]
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
    /// The first option that was given, by its flag (for where none apply).
    fn first_given(&self) -> Option<&'static str> {
        [
            (!self.dirs.is_empty(), "--dir"),
            (!self.dirs_ro.is_empty(), "--dir-ro"),
            (!self.env.is_empty(), "--env"),
            (self.timeout.is_some(), "--timeout"),
            (self.max_memory.is_some(), "--max-memory"),
            (self.max_cpu.is_some(), "--max-cpu"),
            (self.max_message_size.is_some(), "--max-message-size"),
            (self.inbox_size.is_some(), "--inbox-size"),
            (self.max_call_timeout.is_some(), "--max-call-timeout"),
        ]
        .into_iter()
        .find_map(|(given, flag)| given.then_some(flag))
    }

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
    /// Arguments for the guest: everything after the module (as `wasmtime
    /// run` takes them), or after `--`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct CallArgs {
    #[command(flatten)]
    options: GuestOptions,
    #[command(flatten)]
    app: AppArg,
    /// How long to wait for the reply.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_call_timeout)]
    deadline: Duration,
    /// A guest of a running app, or a module (`.wasm`) to start and call.
    target: String,
    /// The request's bytes (as given, UTF-8), or @FILE.
    payload: String,
    /// Arguments for a module's guest (after `--`).
    #[arg(last = true)]
    args: Vec<String>,
}

/// Which running app a verb is for.
#[derive(Debug, clap::Args)]
struct AppArg {
    /// The app's name (default: the only one running).
    #[arg(long = "app", value_name = "NAME")]
    app: Option<String>,
    /// Carry the verb out on this node of the app's cluster (the host
    /// asked passes it on over NATS).
    #[arg(long = "node", value_name = "NODE")]
    node: Option<String>,
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    /// Run in the background; the host's own log goes to a file it names.
    #[arg(short = 'd', long)]
    detach: bool,
    /// The app's name (default: the manifest's file name without `.toml`).
    #[arg(long = "app", value_name = "NAME")]
    app: Option<String>,
    /// Print one JSON object per event instead of text.
    #[arg(long)]
    json: bool,
    /// Serve the guests' numbers in the Prometheus text format at
    /// http://ADDR/metrics (`127.0.0.1:9464`; port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Join the app's cluster through this NATS server
    /// (`nats://127.0.0.1:4222`; default: the manifest's `[cluster] url`).
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,
    /// This host's node name in the cluster (default: `[cluster] node`).
    #[arg(long, value_name = "NODE")]
    node: Option<String>,
    /// The app manifest.
    manifest: PathBuf,
}

#[derive(Debug, clap::Args)]
struct PsArgs {
    #[command(flatten)]
    app: AppArg,
    /// The answer as JSON.
    #[arg(long)]
    json: bool,
    /// Every node's guests, not only this host's.
    #[arg(long)]
    cluster: bool,
}

#[derive(Debug, clap::Args)]
struct LogsArgs {
    #[command(flatten)]
    app: AppArg,
    /// How many lines (the last ones).
    #[arg(short = 'n', long = "lines", default_value_t = 100)]
    lines: usize,
    /// The lines as JSON objects.
    #[arg(long)]
    json: bool,
    /// Then keep printing new lines as they come.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Only lines written in the last DURATION (`10m`, `1h`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    since: Option<Duration>,
    /// A guest or a group (default: every guest).
    target: Option<String>,
}

#[derive(Debug, clap::Args)]
struct TargetArgs {
    #[command(flatten)]
    app: AppArg,
    /// A guest or a group.
    target: String,
}

#[derive(Debug, clap::Args)]
struct SendArgs {
    #[command(flatten)]
    app: AppArg,
    /// A guest, or a group (its next member).
    target: String,
    /// The message's bytes (as given, UTF-8), or @FILE.
    payload: String,
}

#[derive(Debug, clap::Args)]
struct SwapArgs {
    #[command(flatten)]
    app: AppArg,
    /// How long the old instance may take to finish what it was delivered.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    drain: Duration,
    /// The guest to swap.
    target: String,
    /// Its new module.
    module: PathBuf,
}

#[derive(Debug, clap::Args)]
struct ReloadArgs {
    #[command(flatten)]
    app: AppArg,
    /// The app manifest.
    manifest: PathBuf,
}

#[derive(Debug, clap::Args)]
struct StartArgs {
    #[command(flatten)]
    options: GuestOptions,
    #[command(flatten)]
    app: AppArg,
    /// The module to run.
    #[arg(long, value_name = "MODULE.wasm")]
    module: PathBuf,
    /// Instances NAME.1 to NAME.N, in the group NAME.
    #[arg(long, default_value_t = 1)]
    replicas: u32,
    /// Join this group (a group of the app's, or a new one).
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// Names and groups it may send to (repeat; default: anyone).
    #[arg(long = "talks-to", value_name = "NAME")]
    talks_to: Vec<String>,
    /// never, on-failure or always.
    #[arg(long, default_value = "never")]
    restart: String,
    /// The new guest's name.
    name: String,
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

/// `K=V`, or `K` alone for this process's own value of `K` (as `wasmtime
/// run --env K` does).
fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        Some(_) => Err(format!("`{text}` is not K=V")),
        None if text.is_empty() => Err("an empty --env".to_owned()),
        None => match std::env::var(text) {
            Ok(value) => Ok((text.to_owned(), value)),
            Err(_) => Err(format!(
                "`{text}` is not set here, so there is no value to pass on: give K=V"
            )),
        },
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
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        show_compiles();
    }
    // A one-shot run drives a single guest: a runtime on the main thread
    // starts no worker threads (nor reads the cgroup's CPU quota to size
    // them) before the runner can start.
    let one_shot = matches!(&cli.command, Cmd::Run(args) if !is_app(&args.module));
    let mut builder = if one_shot {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            warn!("wasmproc: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Cmd::Run(args) => run(args).await,
            Cmd::Exec(args) => exec(args).await,
            Cmd::Call(args) if args.target.ends_with(".wasm") => call(args).await,
            Cmd::Call(args) => app_call(args).await,
            Cmd::Up(args) => up(args).await,
            Cmd::Down(app) => verb(&app, json!({"verb": "down"}), false).await,
            Cmd::Ps(args) => ps(args).await,
            Cmd::Logs(args) => logs(args).await,
            Cmd::Top(args) => top(args).await,
            Cmd::Start(args) => start(args).await,
            Cmd::Stop(args) => {
                let request = json!({"verb": "stop", "target": args.target});
                verb(&args.app, request, false).await
            }
            Cmd::Restart(args) => {
                let request = json!({"verb": "restart", "target": args.target});
                verb(&args.app, request, false).await
            }
            Cmd::Send(args) => {
                let payload = wasmproc::app::encode_bytes(&read_payload(&args.payload)?);
                let request = json!({"verb": "send", "target": args.target, "payload": payload});
                verb(&args.app, request, false).await
            }
            Cmd::Swap(args) => swap(args).await,
            Cmd::Completions { shell } => {
                let mut command = <Cli as clap::CommandFactory>::command();
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut command, "wasmproc", &mut script);
                say_raw!("{}", String::from_utf8_lossy(&script));
                Ok(0)
            }
            Cmd::Compile { modules } => {
                for module in &modules {
                    let artifact = wasmproc::precompile(module).await?;
                    let size = std::fs::metadata(&artifact).map_or(0, |m| m.len());
                    say!(
                        "{} → {} ({})",
                        module.display(),
                        artifact.display(),
                        human_size(size)
                    );
                }
                Ok(0)
            }
            Cmd::Cache { action } => cache(action.is_some()),
            Cmd::New { name, lang } => new_guest(&name, lang),
            Cmd::Man => {
                let command = <Cli as clap::CommandFactory>::command();
                let mut page = Vec::new();
                clap_mangen::Man::new(command).render(&mut page)?;
                say_raw!("{}", String::from_utf8_lossy(&page));
                Ok(0)
            }
            Cmd::Reload(args) => {
                let manifest = std::fs::canonicalize(&args.manifest)
                    .with_context(|| format!("{} not found", args.manifest.display()))?;
                let request = json!({"verb": "reload", "manifest": manifest.display().to_string()});
                verb(&args.app, request, false).await
            }
            Cmd::Sandbox(SandboxCmd::Explain(args)) => explain(args).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            warn!("wasmproc: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether `module` names an app's manifest rather than a module.
fn is_app(module: &std::path::Path) -> bool {
    module.extension().is_some_and(|e| e == "toml")
}

async fn run(args: RunArgs) -> anyhow::Result<u8> {
    if is_app(&args.module) {
        anyhow::ensure!(
            args.args.is_empty(),
            "an app takes no arguments after `--`: give each guest its `args` in the manifest"
        );
        if let Some(flag) = args.options.first_given() {
            anyhow::bail!(
                "`{flag}` does not apply to an app: give each guest its settings in the manifest"
            );
        }
        return run_app(&args.module, args.json).await;
    }
    let mut command = Command::new(&args.module);
    command.args(args.args);
    args.options.apply(&mut command);
    // On a terminal, the guest gets a terminal of its own (in raw mode:
    // lines end in \r\n). What it sends its parent is printed on stderr.
    let end = if std::io::IsTerminal::is_terminal(&std::io::stdin())
        && std::io::IsTerminal::is_terminal(&std::io::stdout())
    {
        "\r\n"
    } else {
        "\n"
    };
    let status = command
        .status_with(|item| {
            if let wasmproc::InboxItem::Message { payload, .. } = item {
                let text = wasmproc::app::encode_bytes(&payload);
                warn_raw!("wasmproc: message to the parent: {text}{end}");
            }
        })
        .await;
    let status = match status {
        Ok(status) => status,
        Err(err) => {
            warn!("wasmproc: cannot run {}: {err}", args.module.display());
            return Ok(wasmproc::exit_code::FAILED_TO_START as u8);
        }
    };
    report(&args.module.display().to_string(), &status);
    Ok(status.process_code().clamp(0, 255) as u8)
}

/// How long `wasmproc call` waits for the guest to finish after its reply.
const CALL_GRACE: Duration = Duration::from_secs(5);

async fn call(args: CallArgs) -> anyhow::Result<u8> {
    use std::io::Write;
    use std::os::fd::AsFd;
    let module = args.target.clone();
    let mut command = Command::new(&args.target);
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
    let answer = child
        .call(read_payload(&args.payload)?, args.deadline)
        .await;
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
            warn!("wasmproc: call to {module} failed: {error}");
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
                warn!("wasmproc: {what}: {status}");
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
        say!("guest `{wanted}` ({})", def.module.display());
    } else {
        command = Command::new(&args.target);
        say!("guest {}", args.target.display());
    }
    args.options.apply(&mut command);
    say!("{}", wasmproc::sandbox::explain(&mut command).await?);
    Ok(0)
}

async fn run_app(path: &std::path::Path, json: bool) -> anyhow::Result<u8> {
    let manifest = wasmproc::manifest::load(path)?;
    let (tx, rx) = tokio::sync::mpsc::channel(wasmproc::app::EVENT_CAPACITY);
    let shutdown = shutdown_on_signals();
    let printer = print_events(rx, json);
    let result = wasmproc::app::run(&manifest, tx, shutdown).await;
    let _ = printer.await;
    Ok(if result? { 0 } else { 1 })
}

/// A token cancelled at the first SIGINT or SIGTERM.
fn shutdown_on_signals() -> tokio_util::sync::CancellationToken {
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
        // A second one does not wait out the grace periods: the runners die
        // with the host.
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        warn!("wasmproc: interrupted again: stopping every guest at once");
        std::process::exit(130);
    });
    shutdown
}

/// Print an app's events until the app ends.
fn print_events(
    mut events: tokio::sync::mpsc::Receiver<wasmproc::app::Event>,
    json: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut out = Printer::new(json);
        while let Some(event) = events.recv().await {
            out.print(&event);
        }
    })
}

/// Set in the background host that `up -d` starts.
const DETACHED_ENV: &str = "WASMPROC_DETACHED";

async fn up(args: UpArgs) -> anyhow::Result<u8> {
    use wasmproc::app::control;
    let app = match &args.app {
        Some(app) => app.clone(),
        None => args
            .manifest
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "app".to_owned()),
    };
    anyhow::ensure!(
        wasmproc::manifest::valid_name(&app),
        "`{app}` is not a valid app name: {}",
        wasmproc::manifest::NAME_RULE
    );
    let manifest = wasmproc::manifest::load(&args.manifest)?;
    let cluster = cluster_of(&args, &manifest, &app)?;
    if args.detach && std::env::var_os(DETACHED_ENV).is_none() {
        return detach(&args, &app).await;
    }
    let (listener, socket) = control::bind(&app).await?;
    let metrics = match args.metrics.or(manifest.app.metrics) {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot serve metrics on {addr}"))?,
        ),
        None => None,
    };
    let (tx, rx) = tokio::sync::mpsc::channel(wasmproc::app::EVENT_CAPACITY);
    let shutdown = shutdown_on_signals();
    let printer = print_events(rx, args.json);
    let started = wasmproc::app::start_in(&manifest, tx, shutdown, true, cluster).await;
    let Ok(Some(live)) = started else {
        let _ = std::fs::remove_file(&socket);
        let _ = printer.await;
        return match started {
            Err(err) => Err(err.into()),
            Ok(_) => Ok(1),
        };
    };
    tracing::info!("app `{app}` is up; control socket {}", socket.display());
    if let Some(metrics) = metrics {
        if let Ok(addr) = metrics.local_addr() {
            warn!("wasmproc: metrics on http://{addr}/metrics");
        }
        tokio::spawn(wasmproc::app::metrics::serve(live.clone(), metrics));
    }
    let server = tokio::spawn(control::serve(live.clone(), listener, socket));
    let clean = wasmproc::app::finish(&live).await;
    let _ = server.await;
    drop(live);
    let _ = printer.await;
    Ok(if clean { 0 } else { 1 })
}

/// The cluster `up` joins: `--cluster` and `--node`, else the manifest's
/// `[cluster]` table; both or neither.
fn cluster_of(
    args: &UpArgs,
    manifest: &wasmproc::manifest::Manifest,
    app: &str,
) -> anyhow::Result<Option<wasmproc::cluster::ClusterConfig>> {
    let url = args
        .cluster
        .clone()
        .or_else(|| manifest.cluster.url.clone());
    let node = args.node.clone().or_else(|| manifest.cluster.node.clone());
    match (url, node) {
        (None, None) => Ok(None),
        (Some(url), None) => anyhow::bail!(
            "joining the cluster at {url} needs this host's node name: give --node NAME (or `node` in [cluster])"
        ),
        (None, Some(node)) => anyhow::bail!(
            "node `{node}` needs a cluster to join: give --cluster nats://HOST:PORT (or `url` in [cluster])"
        ),
        (Some(url), Some(node)) => {
            anyhow::ensure!(
                url.starts_with("nats://"),
                "`{url}` is not a NATS URL like nats://127.0.0.1:4222"
            );
            anyhow::ensure!(
                wasmproc::manifest::valid_node(&node),
                "`{node}` is not a valid node name: {}",
                wasmproc::manifest::NODE_RULE
            );
            Ok(Some(wasmproc::cluster::ClusterConfig {
                url,
                app: app.to_owned(),
                node,
            }))
        }
    }
}

/// Start this `up` again in the background, in a session of its own with
/// its output in a log file, and return once its socket answers.
async fn detach(args: &UpArgs, app: &str) -> anyhow::Result<u8> {
    use std::os::unix::process::CommandExt;
    use wasmproc::app::control;
    let log = control::folder()?.join(format!("{app}.log"));
    let out = std::fs::File::create(&log)
        .with_context(|| format!("cannot write the log file {}", log.display()))?;
    let mut command = std::process::Command::new(std::env::current_exe()?);
    command
        .args(["up", "--app", app])
        .args(args.json.then_some("--json"))
        .args(
            args.metrics
                .iter()
                .flat_map(|addr| ["--metrics".to_owned(), addr.to_string()]),
        )
        .args(args.cluster.iter().flat_map(|url| ["--cluster", url]))
        .args(args.node.iter().flat_map(|node| ["--node", node]))
        .arg(&args.manifest)
        .env(DETACHED_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    // SAFETY: only setsid, which is async-signal-safe, runs between fork and exec.
    unsafe {
        command.pre_exec(control::new_session);
    }
    let mut child = command
        .spawn()
        .context("cannot start the background host")?;
    for _ in 0..1000 {
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            anyhow::bail!("the background host ended at once ({status}):\n{text}");
        }
        if control::request(app, json!({"verb": "ps"})).await.is_ok() {
            say!(
                "app `{app}` is up (pid {}); its log is {}",
                child.id(),
                log.display()
            );
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!(
        "the background host did not answer within 20 s; see {}",
        log.display()
    )
}

fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// On a terminal, a spinner per module being compiled, with its size and
/// the time so far; it is cleared when the compile ends. Nothing is shown
/// for a module found in the cache, nor when stderr is not a terminal.
fn show_compiles() {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use wasmproc::CompileProgress;

    let bars = indicatif::MultiProgress::new();
    let shown: Mutex<HashMap<PathBuf, indicatif::ProgressBar>> = Mutex::new(HashMap::new());
    let style = indicatif::ProgressStyle::with_template("{spinner} compiling {msg} ({elapsed})")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
    wasmproc::on_compile(move |progress| {
        let mut shown = shown.lock().unwrap_or_else(|e| e.into_inner());
        match progress {
            CompileProgress::Started { path, bytes } => {
                let name = path.file_name().map_or_else(
                    || path.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                let bar = bars.add(indicatif::ProgressBar::new_spinner());
                bar.set_style(style.clone());
                bar.set_message(format!("{name} ({})", human_size(bytes)));
                bar.enable_steady_tick(Duration::from_millis(120));
                shown.insert(path, bar);
            }
            CompileProgress::Finished { path, .. } => {
                if let Some(bar) = shown.remove(&path) {
                    bar.finish_and_clear();
                }
            }
        }
    });
}

/// `wasmproc new`: write the folder, then say how to build and run it.
fn new_guest(dir: &Path, lang: Lang) -> anyhow::Result<u8> {
    use wasmproc::scaffold::{self, Language};
    let language = match lang {
        Lang::Rust => Language::Rust,
        Lang::Python => Language::Python,
        Lang::Js => Language::Js,
    };
    let made = scaffold::create(dir, language)?;
    let module = made.dir.join(&made.module);
    let folder = shell_words::quote(&made.dir.to_string_lossy()).into_owned();
    let module = shell_words::quote(&module.to_string_lossy()).into_owned();
    say!(
        "Created the {} guest `{}` in {}/",
        made.language,
        made.name,
        made.dir.display()
    );
    say!("Needs:    {}", made.needs);
    say!("Build it: cd {folder} && {}", made.build);
    say!("Run it:   wasmproc run {module} world");
    say!("Call it:  wasmproc call {module} world");
    Ok(0)
}

/// `wasmproc cache [clean]`.
fn cache(clean: bool) -> anyhow::Result<u8> {
    let dir = wasmproc::cache_dir();
    let mut artifacts: Vec<(String, u64, std::time::SystemTime)> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let meta = e.metadata().ok()?;
                    name.ends_with(".cwasm").then(|| {
                        (
                            name,
                            meta.len(),
                            meta.modified().unwrap_or(std::time::UNIX_EPOCH),
                        )
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    artifacts.sort_by_key(|(_, _, at)| std::cmp::Reverse(*at));
    let total: u64 = artifacts.iter().map(|(_, size, _)| size).sum();
    if clean {
        for (name, _, _) in &artifacts {
            std::fs::remove_file(dir.join(name))?;
        }
        let _ = std::fs::remove_dir_all(dir.join("keys"));
        for lock in std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
        {
            if lock.file_name().to_string_lossy().ends_with(".lock") {
                let _ = std::fs::remove_file(lock.path());
            }
        }
        say!(
            "removed {} artifacts ({}) from {}",
            artifacts.len(),
            human_size(total),
            dir.display()
        );
        return Ok(0);
    }
    for (name, size, at) in &artifacts {
        let age = at
            .elapsed()
            .map_or(Duration::ZERO, |d| Duration::from_secs(d.as_secs()));
        say!(
            "{}  {:>10}  {} ago",
            name.trim_end_matches(".cwasm"),
            human_size(*size),
            humantime::format_duration(age)
        );
    }
    say!(
        "{} artifacts, {} in {}",
        artifacts.len(),
        human_size(total),
        dir.display()
    );
    Ok(0)
}

/// Read a payload argument: the text itself, or the bytes of @FILE.
fn read_payload(text: &str) -> anyhow::Result<Vec<u8>> {
    match text.strip_prefix('@') {
        Some(file) => std::fs::read(file).with_context(|| format!("cannot read {file}")),
        None => Ok(text.as_bytes().to_vec()),
    }
}

/// Send one request to a running app; on success print what the verb
/// says (`json`: the whole answer).
async fn ask(app: &AppArg, mut request: serde_json::Value) -> anyhow::Result<serde_json::Value> {
    let name = wasmproc::app::control::which_app(app.app.as_deref())?;
    if let Some(node) = &app.node {
        request["node"] = json!(node);
    }
    let answer = wasmproc::app::control::request(&name, request).await?;
    if answer["ok"] != true {
        anyhow::bail!(
            "{}",
            answer["error"]
                .as_str()
                .unwrap_or("the app refused the request")
        );
    }
    Ok(answer)
}

/// A verb whose answer is a few lines of text.
async fn verb(app: &AppArg, request: serde_json::Value, json: bool) -> anyhow::Result<u8> {
    let verb = request["verb"].as_str().unwrap_or_default().to_owned();
    let answer = ask(app, request).await?;
    if json {
        say!("{answer}");
        return Ok(0);
    }
    match verb.as_str() {
        "down" => say!("shutting down"),
        "send" => say!("sent"),
        _ => {
            for line in answer["done"].as_array().into_iter().flatten() {
                say!("{}", line.as_str().unwrap_or_default());
            }
        }
    }
    Ok(0)
}

async fn ps(args: PsArgs) -> anyhow::Result<u8> {
    let answer = ask(&args.app, json!({"verb": "ps", "cluster": args.cluster})).await?;
    if args.json && args.cluster {
        let keys = ["guests", "reachable", "silent_nodes"];
        let whole: serde_json::Map<String, serde_json::Value> = keys
            .iter()
            .map(|k| ((*k).to_owned(), answer[*k].clone()))
            .collect();
        say!("{}", serde_json::Value::Object(whole));
        return Ok(0);
    }
    if args.json {
        say!("{}", answer["guests"]);
        return Ok(0);
    }
    for silent in answer["silent_nodes"].as_array().into_iter().flatten() {
        warn!(
            "wasmproc: node `{}` did not answer: {}",
            silent["node"].as_str().unwrap_or_default(),
            silent["error"].as_str().unwrap_or_default()
        );
    }
    let rows: Vec<[String; 9]> = answer["guests"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            let text = |key: &str| match &g[key] {
                serde_json::Value::Null => "-".to_owned(),
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let uptime = g["uptime_ms"].as_u64().map_or("-".to_owned(), |ms| {
                humantime::format_duration(Duration::from_secs(ms / 1000)).to_string()
            });
            [
                text("name"),
                text("node"),
                text("id"),
                text("pid"),
                text("state"),
                uptime,
                text("restarts"),
                text("last_exit"),
                format!("{} ({})", text("module"), text("artifact")),
            ]
        })
        .collect();
    let header = [
        "NAME",
        "NODE",
        "ID",
        "PID",
        "STATE",
        "UPTIME",
        "RESTARTS",
        "LAST EXIT",
        "MODULE",
    ];
    // The NODE column is there only for an app in a cluster.
    let clustered = answer["guests"]
        .as_array()
        .is_some_and(|guests| guests.iter().any(|g| g["node"].is_string()));
    let shown = |cells: &[&str]| -> Vec<String> {
        cells
            .iter()
            .enumerate()
            .filter(|(i, _)| clustered || *i != 1)
            .map(|(_, c)| (*c).to_owned())
            .collect()
    };
    let header = shown(&header);
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| shown(&r.iter().map(String::as_str).collect::<Vec<_>>()))
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        say!("{}", out.trim_end());
    };
    line(header.iter().map(String::as_str).collect());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    let c = &answer["cluster"];
    if c.is_object() {
        say!(
            "node {}: {}; peers {}; unknown outcome {}, slow consumer {}, node conflicts {}",
            c["node"].as_str().unwrap_or_default(),
            if c["connected"] == true {
                "connected"
            } else {
                "NOT CONNECTED"
            },
            c["peers"],
            c["unknown_outcome"],
            c["slow_consumers"],
            c["node_conflicts"],
        );
    }
    Ok(0)
}

async fn top(args: PsArgs) -> anyhow::Result<u8> {
    use std::collections::HashMap;
    if args.json {
        let answer = ask(&args.app, json!({"verb": "top"})).await?;
        say!(
            "{}",
            json!({
                "guests": answer["guests"],
                "late_replies": answer["late_replies"],
                "cluster": answer["cluster"],
            })
        );
        return Ok(0);
    }
    let mut last: HashMap<String, (u64, u64, u64)> = HashMap::new();
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    loop {
        interval.tick().await;
        let answer = ask(&args.app, json!({"verb": "top"})).await?;
        let mut out = String::from("\x1b[H\x1b[2J");
        out.push_str(&format!(
            "{:<16} {:>8} {:>9} {:>9} {:>10} {:>8} {:>6} {:>8} {:>6} {:>9} {:>6}\n",
            "NAME",
            "STATE",
            "IN/s",
            "OUT/s",
            "BYTES IN",
            "MAILBOX",
            "HIGH",
            "UNDELIV",
            "CALLS",
            "RSS",
            "CPU%"
        ));
        for g in answer["guests"].as_array().into_iter().flatten() {
            let name = g["name"].as_str().unwrap_or_default().to_owned();
            let n = |key: &str| g[key].as_u64().unwrap_or(0);
            let now = (n("msgs_in"), n("msgs_out"), n("cpu_ms"));
            let before = last.insert(name.clone(), now).unwrap_or(now);
            out.push_str(&format!(
                "{:<16} {:>8} {:>9} {:>9} {:>10} {:>8} {:>6} {:>8} {:>6} {:>8}K {:>5.1}\n",
                name,
                g["state"].as_str().unwrap_or_default(),
                now.0.saturating_sub(before.0),
                now.1.saturating_sub(before.1),
                n("bytes_in"),
                n("mailbox"),
                n("mailbox_high_water"),
                n("undeliverable"),
                n("calls_to_answer") + n("calls_waiting"),
                n("rss_bytes") / 1024,
                now.2.saturating_sub(before.2) as f64 / 10.0,
            ));
        }
        let c = &answer["cluster"];
        if c.is_object() {
            out.push_str(&format!(
                "\nnode {} ({}), peers {}: sent {}, acked {}, no responders {}, unknown outcome {}, slow consumer {}, node conflicts {}",
                c["node"].as_str().unwrap_or_default(),
                if c["connected"] == true { "connected" } else { "NOT CONNECTED" },
                c["peers"],
                c["sent"],
                c["acked"],
                c["no_responders"],
                c["unknown_outcome"],
                c["slow_consumers"],
                c["node_conflicts"],
            ));
        }
        out.push_str(&format!(
            "\nlate replies: {}   (Ctrl-C to quit)\n",
            answer["late_replies"]
        ));
        say_raw!("{out}");
    }
}

async fn logs(args: LogsArgs) -> anyhow::Result<u8> {
    use std::io::Write;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let print = |line: &serde_json::Value| {
        let mut out = std::io::stdout().lock();
        let _ = if args.json {
            writeln!(out, "{line}")
        } else {
            writeln!(
                out,
                "{} | {}",
                line["guest"].as_str().unwrap_or_default(),
                line["line"].as_str().unwrap_or_default()
            )
        };
        let _ = out.flush();
    };
    // Subscribe first, so that no line falls between the two.
    let app = wasmproc::app::control::which_app(args.app.app.as_deref())?;
    let mut events = None;
    if args.follow
        && let Some(node) = &args.app.node
    {
        anyhow::bail!(
            "`logs --follow` follows this host's own events: run it on node `{node}`'s host (without --follow, --node works from here)"
        );
    }
    if args.follow {
        let stream = wasmproc::app::control::connect(&app).await?;
        let (read, mut write) = stream.into_split();
        write
            .write_all(b"{\"id\":0,\"verb\":\"subscribe\"}\n")
            .await?;
        let mut lines = tokio::io::BufReader::new(read).lines();
        lines.next_line().await?;
        events = Some((lines, write));
    }
    let request = json!({
        "verb": "logs",
        "target": args.target,
        "lines": args.lines,
        "follow": args.follow,
        "since_ms": args.since.map(|ago| {
            wasmproc::app::unix_ms(std::time::SystemTime::now() - ago)
        }),
    });
    let answer = ask(&args.app, request).await?;
    for line in answer["lines"].as_array().into_iter().flatten() {
        print(line);
    }
    let Some((mut lines, _write)) = events else {
        return Ok(0);
    };
    let wanted = |guest: &str| match &args.target {
        None => true,
        Some(target) => {
            guest == target
                || guest
                    .strip_prefix(target.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
        }
    };
    while let Some(line) = lines.next_line().await? {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if event["event"] == "output" && wanted(event["guest"].as_str().unwrap_or_default()) {
            print(&event);
        }
    }
    Ok(0)
}

async fn start(args: StartArgs) -> anyhow::Result<u8> {
    let module = std::fs::canonicalize(&args.module)
        .with_context(|| format!("module {} not found", args.module.display()))?;
    let options = &args.options;
    let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
    let request = json!({
        "verb": "start",
        "target": args.name,
        "module": module.display().to_string(),
        "args": args.args,
        "env": options.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        "replicas": args.replicas,
        "group": args.group,
        "talks_to": (!args.talks_to.is_empty()).then_some(&args.talks_to),
        "restart": args.restart,
        "limits": {
            "timeout_ms": ms(options.timeout),
            "max_memory": options.max_memory,
            "max_cpu_ms": ms(options.max_cpu),
            "max_message_size": options.max_message_size,
            "inbox_size": options.inbox_size,
            "max_call_timeout_ms": ms(options.max_call_timeout),
        },
    });
    anyhow::ensure!(
        options.dirs.is_empty() && options.dirs_ro.is_empty(),
        "`start` takes no --dir or --dir-ro: give folders in the manifest"
    );
    let answer = ask(&args.app, request).await?;
    for name in answer["started"].as_array().into_iter().flatten() {
        say!("started {}", name.as_str().unwrap_or_default());
    }
    Ok(0)
}

async fn swap(args: SwapArgs) -> anyhow::Result<u8> {
    let module = std::fs::canonicalize(&args.module)
        .with_context(|| format!("module {} not found", args.module.display()))?;
    let request = json!({
        "verb": "swap",
        "target": args.target,
        "module": module.display().to_string(),
        "drain_ms": args.drain.as_millis() as u64,
    });
    let answer = ask(&args.app, request).await?;
    let moved_from = match (answer["from"].as_str(), answer["node"].as_str()) {
        (Some(from), Some(node)) => format!(" from node {from} to node {node}"),
        _ => String::new(),
    };
    say!(
        "swapped {}{moved_from}: {} moved, {} drained, {} returned (the old one: {})",
        args.target,
        answer["moved"],
        answer["drained"],
        answer["returned"],
        answer["old"].as_str().unwrap_or_default()
    );
    Ok(0)
}

/// `call NAME PAYLOAD` against a running app.
async fn app_call(args: CallArgs) -> anyhow::Result<u8> {
    use std::io::Write;
    let payload = wasmproc::app::encode_bytes(&read_payload(&args.payload)?);
    let request = json!({
        "verb": "call",
        "target": args.target,
        "payload": payload,
        // For a guest of an app, `--timeout` means the call's deadline too.
        "timeout_ms": args.options.timeout.unwrap_or(args.deadline).as_millis() as u64,
    });
    match ask(&args.app, request).await {
        Ok(answer) => {
            let reply = wasmproc::app::decode_bytes(answer["reply"].as_str().unwrap_or_default())
                .map_err(anyhow::Error::msg)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&reply)?;
            out.flush()?;
            Ok(0)
        }
        Err(err) => {
            warn!("wasmproc: call to {} failed: {err:#}", args.target);
            Ok(EXIT_CALL_FAILED)
        }
    }
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
            say!("{}", event.to_json());
            return;
        }
        match event {
            Event::Output {
                guest,
                stream: Stream::Stdout,
                line,
            } => {
                say!("{} | {line}", self.label(guest, self.tty_out));
            }
            Event::Output {
                guest,
                stream: Stream::Stderr,
                line,
            } => {
                warn!("{} | {line}", self.label(guest, self.tty_err));
            }
            Event::Started { guest, id, pid } => {
                warn!(
                    "wasmproc: started {} (id {id}, pid {pid})",
                    self.label(guest, self.tty_err)
                );
            }
            Event::Exited { guest, status, .. } => {
                warn!(
                    "wasmproc: {} ended: {status}",
                    self.label(guest, self.tty_err)
                );
            }
            Event::Restarting {
                guest,
                attempt,
                delay,
            } => warn!(
                "wasmproc: restarting {} in {delay:?} (restart {attempt})",
                self.label(guest, self.tty_err)
            ),
            Event::GaveUp {
                guest,
                restarts,
                window,
            } => warn!(
                "wasmproc: gave up on {}: it kept failing ({restarts} restarts, too many short runs within {window:?})",
                self.label(guest, self.tty_err)
            ),
            Event::Refused { from, to } => {
                warn!("wasmproc: refused: {from} may not send to {to}");
            }
            Event::Swapped {
                guest,
                moved,
                drained,
                returned,
            } => warn!(
                "wasmproc: swapped {}: {moved} moved, {drained} drained, {returned} returned",
                self.label(guest, self.tty_err)
            ),
            Event::MovedAway { guest, node } => warn!(
                "wasmproc: {} moved to node `{node}`",
                self.label(guest, self.tty_err)
            ),
            Event::Request { verb, target } if verb == "refused" => {
                warn!("wasmproc: refused a control connection from {target}");
            }
            Event::Request { verb, target } => {
                warn!("wasmproc: request: {verb} {target}");
            }
            Event::ShuttingDown => warn!("wasmproc: shutting down"),
            Event::NodeMissing { guest, node } => warn!(
                "wasmproc: guest `{guest}` is placed on node `{node}`, which has not joined the cluster: it runs nowhere until a host joins as `{node}`"
            ),
            Event::ToParent {
                guest,
                payload,
                call,
            } => warn!(
                "wasmproc: {} from {}: {payload}",
                if *call {
                    "call to the parent (the app answers none)"
                } else {
                    "message to the parent"
                },
                self.label(guest, self.tty_err)
            ),
            Event::Returned {
                guest,
                reason,
                bytes,
            } => warn!(
                "wasmproc: a {bytes}-byte message to {} came back: {reason}",
                self.label(guest, self.tty_err)
            ),
            Event::Stopped { dropped_notices } => warn!(
                "wasmproc: stopped; {dropped_notices} notices dropped for guests whose mailbox was full"
            ),
        }
    }
}

/// Say on stderr how a guest ended, unless it simply exited.
fn report(what: &str, status: &ExitStatus) {
    match status {
        ExitStatus::Exited { .. } => {}
        ExitStatus::Trapped { backtrace, .. } => {
            warn!("wasmproc: {what}: {status}");
            for (i, frame) in backtrace.iter().enumerate() {
                warn!("  {i:>3}: {frame}");
            }
        }
        _ => warn!("wasmproc: {what}: {status}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}

//! The control socket of a live app (`wasmproc up`), and its client.
//!
//! The socket is `<dir>/<app>.sock`, where `<dir>` is
//! `$XDG_RUNTIME_DIR/wasmproc`, else `/tmp/wasmproc-<uid>`: a folder of this
//! user's with mode 0700 (anything else is refused, never used). Each
//! connection's peer must have this process's uid (`SO_PEERCRED`); anyone
//! else is refused and logged. A request is one line of JSON with an `id`
//! and a `verb`; the answer is one line with the same `id` and `ok`, then
//! the verb's fields or an `error`. `subscribe` turns the connection into a
//! stream of events, one JSON line each. A socket whose host has died is
//! stale: `up` replaces it, and clients say so.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use wasmproc_manifest::{GuestDef, GuestLimits, RestartPolicy, defaults};

use super::Event;
use super::live::{Answer, Live, decode_bytes};
use crate::os::user::euid;

pub use crate::os::user::new_session;

/// Why the control socket could not be set up or reached.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot use the control folder {}: {reason}", dir.display())]
    Folder { dir: PathBuf, reason: String },
    #[error("an app named `{app}` is running already (its socket is {})", path.display())]
    AlreadyRunning { app: String, path: PathBuf },
    #[error("no app named `{app}` is running (no socket {})", path.display())]
    NotRunning { app: String, path: PathBuf },
    #[error(
        "no app named `{app}` is running: its socket {} is stale (the host that made it has died)",
        path.display()
    )]
    Stale { app: String, path: PathBuf },
    #[error("no app is running (no socket in {})", dir.display())]
    NoneRunning { dir: PathBuf },
    #[error("several apps are running ({0}): name one with --app")]
    Several(String),
    #[error("the app closed the connection before it answered")]
    Closed,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The folder of this user's control sockets.
pub fn socket_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("wasmproc"),
        None => PathBuf::from(format!("/tmp/wasmproc-{}", euid())),
    }
}

/// The socket of app `app`.
pub fn socket_path(app: &str) -> PathBuf {
    socket_dir().join(format!("{app}.sock"))
}

/// Make (or check) the socket folder: this user's, mode 0700, no symlink.
///
/// # Errors
///
/// When it belongs to someone else or is not a folder.
pub fn folder() -> Result<PathBuf, ControlError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let dir = socket_dir();
    let refuse = |reason: String| ControlError::Folder {
        dir: dir.clone(),
        reason,
    };
    if let Err(err) = std::fs::DirBuilder::new().mode(0o700).create(&dir)
        && err.kind() != std::io::ErrorKind::AlreadyExists
    {
        return Err(refuse(err.to_string()));
    }
    let meta = std::fs::symlink_metadata(&dir).map_err(|e| refuse(e.to_string()))?;
    if !meta.is_dir() {
        return Err(refuse("it is not a folder".to_owned()));
    }
    if meta.uid() != euid() {
        return Err(refuse(format!(
            "it belongs to uid {}, not to this user ({})",
            meta.uid(),
            euid()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        // Ours: close it to others before anything is put in it.
        tracing::warn!(
            "{} had mode {:o}; setting it to 700",
            dir.display(),
            meta.permissions().mode() & 0o777
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| refuse(e.to_string()))?;
    }
    Ok(dir)
}

/// Bind app `app`'s socket, replacing a stale one.
///
/// # Errors
///
/// When the folder is unsafe, or a live app has the name.
pub async fn bind(app: &str) -> Result<(UnixListener, PathBuf), ControlError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = folder()?;
    let path = dir.join(format!("{app}.sock"));
    if std::fs::symlink_metadata(&path).is_ok() {
        if UnixStream::connect(&path).await.is_ok() {
            return Err(ControlError::AlreadyRunning {
                app: app.to_owned(),
                path,
            });
        }
        tracing::warn!("replacing the stale socket {}", path.display());
        std::fs::remove_file(&path)?;
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok((listener, path))
}

/// The app a client means: `app`, or the only one running.
///
/// # Errors
///
/// When none or several are running.
pub fn which_app(app: Option<&str>) -> Result<String, ControlError> {
    if let Some(app) = app {
        return Ok(app.to_owned());
    }
    let dir = socket_dir();
    let mut apps: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_suffix(".sock").map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    apps.sort();
    match apps.len() {
        0 => Err(ControlError::NoneRunning { dir }),
        1 => Ok(apps.remove(0)),
        _ => Err(ControlError::Several(apps.join(", "))),
    }
}

/// Connect to app `app`.
///
/// # Errors
///
/// [`ControlError::NotRunning`] or [`ControlError::Stale`].
pub async fn connect(app: &str) -> Result<UnixStream, ControlError> {
    let path = socket_path(app);
    match UnixStream::connect(&path).await {
        Ok(stream) => Ok(stream),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(ControlError::NotRunning {
            app: app.to_owned(),
            path,
        }),
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err(ControlError::Stale {
                app: app.to_owned(),
                path,
            })
        }
        Err(err) => Err(err.into()),
    }
}

/// Send one request to app `app` and read its answer.
///
/// # Errors
///
/// When the app cannot be reached or closes the connection.
pub async fn request(app: &str, request: Value) -> Result<Value, ControlError> {
    let stream = connect(app).await?;
    let (read, mut write) = stream.into_split();
    let mut line = request.to_string();
    line.push('\n');
    // A host that refuses the connection closes it: the write or the read
    // then fails, or the read ends.
    let closed = |err: std::io::Error| match err.kind() {
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => {
            ControlError::Closed
        }
        _ => ControlError::Io(err),
    };
    write.write_all(line.as_bytes()).await.map_err(closed)?;
    let mut answer = String::new();
    if BufReader::new(read)
        .read_line(&mut answer)
        .await
        .map_err(closed)?
        == 0
    {
        return Err(ControlError::Closed);
    }
    serde_json::from_str(&answer).map_err(|e| ControlError::Io(std::io::Error::other(e)))
}

/// Serve the control socket until the app shuts down, then remove it.
pub async fn serve(live: Arc<Live>, listener: UnixListener, path: PathBuf) {
    let me = euid();
    loop {
        let accepted = tokio::select! {
            () = live.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!("control socket: {err}");
                continue;
            }
        };
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == me => {
                tokio::spawn(connection(live.clone(), stream));
            }
            Ok(cred) => {
                tracing::warn!(
                    "refused a control connection from uid {} (pid {}): only uid {me} may control this app",
                    cred.uid(),
                    cred.pid().map_or("unknown".to_owned(), |p| p.to_string())
                );
                live.emit(Event::Request {
                    verb: "refused".to_owned(),
                    target: format!("uid {}", cred.uid()),
                })
                .await;
            }
            Err(err) => tracing::warn!("control socket: cannot tell who connected: {err}"),
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// One client: requests in, answers out; or, after `subscribe`, events out.
async fn connection(live: Arc<Live>, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let request: Value = match serde_json::from_str(&line) {
            Ok(request) => request,
            Err(err) => {
                let answer = json!({"ok": false, "error": format!("not a JSON request: {err}")});
                if send(&mut write, &answer).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        if request["verb"] == "subscribe" {
            let mut events = live.subscribe();
            live.emit(Event::Request {
                verb: "subscribe".to_owned(),
                target: String::new(),
            })
            .await;
            if send(&mut write, &json!({"id": id, "ok": true}))
                .await
                .is_err()
            {
                return;
            }
            loop {
                let event = tokio::select! {
                    () = live.shutdown.cancelled() => return,
                    event = events.recv() => event,
                };
                let line = match event {
                    Ok(event) => event.to_json(),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        json!({"event": "missed", "events": missed})
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                if send(&mut write, &line).await.is_err() {
                    return;
                }
            }
        }
        let answer = respond(&live, &request, id).await;
        if send(&mut write, &answer).await.is_err() {
            return;
        }
    }
}

async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, value: &Value) -> std::io::Result<()> {
    let mut line = value.to_string();
    line.push('\n');
    write.write_all(line.as_bytes()).await
}

fn millis(request: &Value, key: &str, default: u64) -> Duration {
    Duration::from_millis(request[key].as_u64().unwrap_or(default))
}

/// Carry out one request, and answer it as the socket does: its fields,
/// `id` and `ok`, or `ok: false` and the `error`.
pub(crate) async fn respond(live: &Arc<Live>, request: &Value, id: Value) -> Value {
    match handle(live, request).await {
        Ok(Value::Object(mut fields)) => {
            fields.insert("id".into(), id);
            fields.insert("ok".into(), Value::Bool(true));
            Value::Object(fields)
        }
        Ok(other) => json!({"id": id, "ok": true, "value": other}),
        Err(error) => json!({"id": id, "ok": false, "error": error}),
    }
}

/// Carry out one request: here, or on the node it names.
async fn handle(live: &Arc<Live>, request: &Value) -> Answer {
    let verb = request["verb"].as_str().ok_or("a request needs a `verb`")?;
    if let Some(node) = request["node"].as_str() {
        let cluster = live
            .cluster()
            .ok_or_else(|| format!("`--node {node}`: this app is not in a cluster"))?;
        if node != cluster.node() {
            let mut forwarded = request.clone();
            forwarded["node"] = Value::Null;
            let timeout = Duration::from_millis(request["timeout_ms"].as_u64().unwrap_or(60_000))
                + Duration::from_secs(5);
            let mut answer = cluster.forward(node, &forwarded, timeout).await?;
            return match answer["ok"] == true {
                true => {
                    if let Value::Object(fields) = &mut answer {
                        fields.remove("ok");
                        fields.remove("id");
                    }
                    Ok(answer)
                }
                false => Err(answer["error"].as_str().unwrap_or("failed").to_owned()),
            };
        }
    }
    let target = request["target"].as_str();
    let need_target = || target.ok_or_else(|| format!("`{verb}` needs a `target`"));
    let payload = || decode_bytes(request["payload"].as_str().unwrap_or_default());
    if !matches!(verb, "ps" | "logs" | "top") {
        live.emit(Event::Request {
            verb: verb.to_owned(),
            target: target.unwrap_or_default().to_owned(),
        })
        .await;
    }
    match verb {
        "ps" if request["cluster"] == true => live.ps_cluster().await,
        "ps" => live.ps(),
        "top" => live.metrics(),
        "logs" => {
            let lines = request["lines"].as_u64().unwrap_or(100) as usize;
            let since = request["since_ms"]
                .as_u64()
                .map(|ms| std::time::UNIX_EPOCH + Duration::from_millis(ms));
            live.logs(target, lines, since, request["follow"] == true)
        }
        "stop" => live.stop_or_restart(need_target()?, false).await,
        "restart" => live.stop_or_restart(need_target()?, true).await,
        "send" => live.send(need_target()?, payload()?),
        "call" => {
            let timeout = millis(request, "timeout_ms", 60_000);
            live.call(need_target()?, payload()?, timeout).await
        }
        "swap" => {
            let module = module_path(request)?;
            live.swap(need_target()?, module, millis(request, "drain_ms", 5_000))
                .await
        }
        "start" => live.start(guest_def(request)?).await,
        // The two steps a node a guest moves to asks the node it leaves.
        "describe" => live.describe(need_target()?),
        "move-out" => {
            let node = request["to"]
                .as_str()
                .ok_or("`move-out` needs the node `to`")?;
            let id = request["id"]
                .as_u64()
                .ok_or("`move-out` needs the new instance's `id`")?;
            live.move_out(need_target()?, node, id, millis(request, "drain_ms", 5_000))
                .await
        }
        "reload" => {
            let path = request["manifest"]
                .as_str()
                .ok_or("`reload` needs the `manifest`'s path")?;
            let manifest = wasmproc_manifest::load(Path::new(path)).map_err(|e| e.to_string())?;
            live.reload(&manifest).await
        }
        "down" => {
            live.emit(Event::ShuttingDown).await;
            live.shutdown.cancel();
            Ok(json!({"down": true}))
        }
        other => Err(format!(
            "unknown verb `{other}` (ps, top, logs, start, stop, restart, send, call, swap, reload, down, subscribe)"
        )),
    }
}

fn module_path(request: &Value) -> Result<PathBuf, String> {
    let module = request["module"].as_str().ok_or("a `module` is needed")?;
    let path = PathBuf::from(module);
    if !Path::new(&path).is_file() {
        return Err(format!("module `{module}` not found"));
    }
    Ok(path)
}

/// The guest a `start` request describes, with the manifest's defaults.
fn guest_def(request: &Value) -> Result<GuestDef, String> {
    let name = request["target"]
        .as_str()
        .ok_or("`start` needs a `target`: the new guest's name")?
        .to_owned();
    let strings = |key: &str| -> Vec<String> {
        request[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let env = strings("env")
        .into_iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect();
    let restart = match request["restart"].as_str().unwrap_or("never") {
        "never" => RestartPolicy::Never,
        "on-failure" => RestartPolicy::OnFailure,
        "always" => RestartPolicy::Always,
        other => {
            return Err(format!(
                "`{other}` is not a restart policy (never, on-failure, always)"
            ));
        }
    };
    let replicas = request["replicas"].as_u64().unwrap_or(1);
    if !(1..=u64::from(defaults::MAX_REPLICAS)).contains(&replicas) {
        return Err(format!(
            "{replicas} replicas: give 1 to {}",
            defaults::MAX_REPLICAS
        ));
    }
    let limits = &request["limits"];
    let ms = |key: &str| limits[key].as_u64().map(Duration::from_millis);
    Ok(GuestDef {
        name,
        module: module_path(request)?,
        args: strings("args"),
        env,
        dirs: Vec::new(),
        replicas: replicas as u32,
        group: request["group"].as_str().map(str::to_owned),
        talks_to: request["talks_to"].as_array().map(|_| strings("talks_to")),
        restart,
        max_restarts: defaults::MAX_RESTARTS,
        restart_window: defaults::RESTART_WINDOW,
        min_uptime: defaults::MIN_UPTIME,
        backoff: defaults::BACKOFF,
        backoff_max: defaults::BACKOFF_MAX,
        grace: defaults::GRACE,
        limits: GuestLimits {
            timeout: ms("timeout_ms"),
            max_memory: limits["max_memory"].as_u64(),
            max_cpu: ms("max_cpu_ms"),
            max_message_size: limits["max_message_size"].as_u64(),
            inbox_size: limits["inbox_size"].as_u64().map(|n| n as u32),
            max_call_timeout: ms("max_call_timeout_ms"),
        },
        nodes: Vec::new(),
    })
}

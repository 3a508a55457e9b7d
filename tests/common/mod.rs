//! Shared by the integration tests: find built guests, bound every async
//! test in time, read what guests sent.

#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use wasmproc::{Child, InboxItem};

/// The repository root.
pub fn root() -> PathBuf {
    wasmproc::testing::repo_root()
}

/// A guest built from `guests/` for wasm32-wasip2. A missing guest fails the
/// test with the command that builds it.
pub fn guest(name: &str) -> PathBuf {
    wasmproc::testing::guest(name).unwrap_or_else(|err| panic!("{err}"))
}

/// A guest written in Python (`python`) or JavaScript (`js`), built by
/// `make guests`.
pub fn guest_in(language: &str, name: &str) -> PathBuf {
    wasmproc::testing::guest_in(language, name).unwrap_or_else(|err| panic!("{err}"))
}

/// Run `future`, failing the test if it takes longer than `secs` seconds.
pub async fn within<F: Future>(secs: u64, future: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), future).await {
        Ok(output) => output,
        Err(_) => panic!("test did not finish within {secs} s"),
    }
}

/// Run a command to its end, like `Command::output`, but fail the test if
/// it takes longer than `secs` seconds. Past that, the command gets SIGTERM
/// (an app then reports how each of its guests ended), SIGKILL five seconds
/// later, and the failure shows everything it printed.
pub fn output_within(command: &mut std::process::Command, secs: u64) -> std::process::Output {
    use std::io::Read;
    use std::process::Stdio;
    use std::time::Instant;

    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {command:?}: {err}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut status = None;
    while Instant::now() < deadline {
        if let Some(done) = child.try_wait().expect("wait for the command") {
            status = Some(done);
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let Some(status) = status else {
        let pid = libc::pid_t::try_from(child.id()).expect("pid");
        // SAFETY: kill(2) on the child this function started and has not reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let grace = Instant::now() + Duration::from_secs(5);
        while Instant::now() < grace && child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let status = child.wait();
        panic!(
            "{command:?} did not finish within {secs} s (then: {status:?})\n\
             stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&stdout.join().unwrap_or_default()),
            String::from_utf8_lossy(&stderr.join().unwrap_or_default())
        );
    };
    std::process::Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// The next message's payload from `child`, as text; panics on anything else.
pub async fn recv_text(child: &Child) -> String {
    match child.recv().await {
        Some(InboxItem::Message { payload, .. }) => String::from_utf8(payload).expect("utf-8"),
        other => panic!(
            "expected a message from guest {}, got {other:?} (status: {:?})",
            child.id(),
            child.try_wait()
        ),
    }
}

/// A binary built from `tests/helpers` as a cargo example.
pub fn helper(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> → target/<profile>/examples/<name>
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target folder")
        .join("examples")
        .join(name);
    assert!(
        path.is_file(),
        "helper `{name}` is not built: run `cargo test` (which builds examples) or `cargo build --examples`"
    );
    path
}

/// The peak resident set size of a finished process, from the line it printed.
pub fn parse_kib(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in `{line}`"))
}

/// The plain WASI test program, as a wasip1 core module.
pub fn tool_p1() -> PathBuf {
    let path = root().join("guests/target/wasm32-wasip1/release/wasi-tool.wasm");
    assert!(
        path.is_file(),
        "guest `wasi-tool` (wasip1) is not built ({} is missing): run `make guests`",
        path.display()
    );
    path
}

/// The `wasmproc` CLI built with the tests.
pub fn cli() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_wasmproc"))
}

/// `PATH` with `first` ahead of it, and then the pinned componentize-py
/// that `make tools` installs: for following a guide's commands as a
/// reader whose tools are installed would.
pub fn path_with_tools(first: &[PathBuf]) -> std::ffi::OsString {
    let mut dirs = first.to_vec();
    dirs.push(root().join("target/tools/python/bin"));
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).expect("PATH entries without `:`")
}

/// A fresh, empty folder for one test, named after `tag` and this process.
pub fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmproc-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// Run a helper host process to its end and return its stdout; fails the
/// test, with the helper's stderr, if it did not succeed.
pub async fn run_helper<I, S>(name: &str, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = tokio::process::Command::new(helper(name))
        .args(args)
        .output()
        .await
        .expect("run helper");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `GET http://address/metrics` with a real HTTP client: status and body.
pub fn scrape(address: &str) -> (u16, String) {
    use http_body_util::BodyExt;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let uri: hyper::Uri = format!("http://{address}/metrics").parse().unwrap();
        let response = client.get(uri).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    })
}

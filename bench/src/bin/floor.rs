//! The raw floor: the same jobs as the benchmark's scenarios, done by plain
//! processes over plain pipes (1 MiB pipe buffers), with a middle relay
//! process where the scenario has one. No wasm, no framing library.
//!
//! `floor spawn N` · `floor burst N` · `floor rtt N` · `floor stream N SIZE`
//! · `floor primes LO HI`, each printing one JSON object. The other modes are
//! its own children: `hello`, `relay`, `echo`, `sink N SIZE`.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> u64 { args.get(i).and_then(|a| a.parse().ok()).unwrap_or(1000) };
    match args.first().map(String::as_str) {
        Some("spawn") => spawn(num(1)),
        Some("burst") => burst(num(1)),
        Some("rtt") => rtt(num(1)),
        Some("stream") => stream(num(1), num(2) as usize),
        Some("primes") => primes(num(1), num(2)),
        Some("hello") => {
            let _ = std::io::stdout().write_all(b"h");
        }
        Some("relay") => relay(),
        Some("echo") => echo(),
        Some("sink") => sink(num(1), num(2) as usize),
        _ => eprintln!("usage: floor spawn N | burst N | rtt N | stream N SIZE | primes LO HI"),
    }
}

fn me() -> Command {
    Command::new(std::env::current_exe().expect("own path"))
}

fn big_pipe(fd: &impl AsRawFd) {
    // SAFETY: F_SETPIPE_SZ reads its integer argument.
    unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
    }
}

fn child(args: &[&str]) -> (Child, ChildStdin, ChildStdout) {
    let mut c = me()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (i, o) = (
        c.stdin.take().expect("stdin"),
        c.stdout.take().expect("stdout"),
    );
    big_pipe(&i);
    big_pipe(&o);
    (c, i, o)
}

/// Spawn → first byte received, N times, one after another: microseconds each.
fn spawn(n: u64) {
    let mut samples = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let mut c = me()
            .arg("hello")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut byte = [0u8; 1];
        c.stdout
            .as_mut()
            .expect("stdout")
            .read_exact(&mut byte)
            .expect("hello");
        samples.push(t.elapsed().as_secs_f64() * 1e6);
        let _ = c.wait();
    }
    println!("{}", serde_json::json!({"samples_us": samples}));
}

/// N children at once, until every one has sent its first byte: milliseconds.
fn burst(n: u64) {
    let t = Instant::now();
    let mut kids: Vec<Child> = (0..n)
        .map(|_| {
            me().arg("hello")
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for c in &mut kids {
        let mut byte = [0u8; 1];
        c.stdout
            .as_mut()
            .expect("stdout")
            .read_exact(&mut byte)
            .expect("hello");
    }
    let ms = t.elapsed().as_secs_f64() * 1e3;
    for mut c in kids {
        let _ = c.wait();
    }
    println!("{}", serde_json::json!({"ms": ms}));
}

/// A → relay → B → relay → A, 32 bytes, N times: microseconds per round trip.
fn rtt(n: u64) {
    let (mut relay, mut to, mut from) = child(&["relay"]);
    let msg = [7u8; 32];
    let mut back = [0u8; 32];
    // Warm up, then measure.
    for _ in 0..1000 {
        to.write_all(&msg).expect("write");
        from.read_exact(&mut back).expect("read");
    }
    let t = Instant::now();
    for _ in 0..n {
        to.write_all(&msg).expect("write");
        from.read_exact(&mut back).expect("read");
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    drop(to);
    let _ = relay.wait();
    println!("{}", serde_json::json!({"rtt_us": us}));
}

/// The middle process: starts B, copies A→B and B→A.
fn relay() {
    let mode = std::env::var("FLOOR_B").unwrap_or_else(|_| "echo".into());
    let b_args: Vec<&str> = mode.split(' ').collect();
    let (mut b, mut b_in, mut b_out) = child(&b_args);
    let up = std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => {
                    if b_in.write_all(&buf[..k]).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut stdout = std::io::stdout().lock();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match b_out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => {
                if stdout
                    .write_all(&buf[..k])
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    let _ = up.join();
    let _ = b.wait();
}

fn echo() {
    let (mut i, mut o) = (std::io::stdin().lock(), std::io::stdout().lock());
    let mut buf = [0u8; 32];
    while i.read_exact(&mut buf).is_ok() {
        if o.write_all(&buf).and_then(|()| o.flush()).is_err() {
            break;
        }
    }
}

/// B of the stream: count N messages of SIZE bytes, then say done.
fn sink(n: u64, size: usize) {
    let mut i = std::io::stdin().lock();
    let mut buf = vec![0u8; size];
    for _ in 0..n {
        if i.read_exact(&mut buf).is_err() {
            return;
        }
    }
    let _ = std::io::stdout().write_all(b"d");
}

/// A → relay → B, N messages of SIZE bytes, counted as delivered at B.
fn stream(n: u64, size: usize) {
    // SAFETY: setting a variable before any thread starts.
    unsafe { std::env::set_var("FLOOR_B", format!("sink {n} {size}")) };
    let (mut relay, mut to, mut from) = child(&["relay"]);
    let msg = vec![7u8; size];
    let t = Instant::now();
    // Batched writes, as a messaging layer with batching would do.
    let per_write = (64 * 1024 / size).max(1);
    let batch: Vec<u8> = msg.iter().copied().cycle().take(size * per_write).collect();
    let mut sent = 0u64;
    while sent < n {
        let k = (per_write as u64).min(n - sent) as usize;
        to.write_all(&batch[..k * size]).expect("write");
        sent += k as u64;
    }
    let mut done = [0u8; 1];
    from.read_exact(&mut done).expect("done");
    let secs = t.elapsed().as_secs_f64();
    drop(to);
    let _ = relay.wait();
    println!(
        "{}",
        serde_json::json!({"msgs_per_s": n as f64 / secs, "bytes_per_s": (n as f64 * size as f64) / secs})
    );
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// The primes kernel, natively: milliseconds.
fn primes(lo: u64, hi: u64) {
    let t = Instant::now();
    let count = (lo..hi)
        .filter(|&n| is_prime(std::hint::black_box(n)))
        .count();
    println!(
        "{}",
        serde_json::json!({"count": count, "ms": t.elapsed().as_secs_f64() * 1e3})
    );
}

//! A plain WASI program with no wasmproc imports, for spawn/exec tests. It
//! is built both as a wasip2 component and as a wasip1 core module.
//!
//! - `cat`: copy stdin to stdout;
//! - `upper`: copy stdin to stdout in upper case;
//! - `echo WORDS...`: print the words joined by spaces and a newline;
//! - `args`: print each argument (after argv[0]) on its own line, `{:?}`-quoted;
//! - `out TEXT ERR CODE`: print TEXT to stdout, ERR to stderr, exit with CODE;
//! - `exit CODE`: read stdin to the end, then exit with CODE;
//! - `primes N`: print how many primes are below N (the primes guest's
//!   kernel, for running the same code under `wasmtime run`);
//! - `spin`: loop forever without calling the host;
//! - `spam`: print lines forever;
//! - `grow`: allocate memory a mebibyte at a time, forever;
//! - `read PATH`: print the file at PATH; `write PATH TEXT`: write TEXT to PATH;
//! - `env`: print the environment, one `K=V` per line, sorted.
//!
//! A failure prints `wasi-tool: ...` on stderr and exits 1.

use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("wasi-tool: {err}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &[String]) -> std::io::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    match arg(0) {
        "cat" | "upper" => {
            let upper = arg(0) == "upper";
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = stdin.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                if upper {
                    buf[..n].make_ascii_uppercase();
                }
                stdout.write_all(&buf[..n])?;
            }
        }
        "echo" => writeln!(stdout, "{}", args[1..].join(" "))?,
        "args" => {
            for a in &args[1..] {
                writeln!(stdout, "{a:?}")?;
            }
        }
        "out" => {
            write!(stdout, "{}", arg(1))?;
            stdout.flush()?;
            eprint!("{}", arg(2));
            return Ok(ExitCode::from(arg(3).parse::<u8>().unwrap_or(0)));
        }
        "exit" => {
            let mut sink = Vec::new();
            std::io::stdin().read_to_end(&mut sink)?;
            let code: i32 = arg(1).parse().unwrap_or(1);
            std::process::exit(code);
        }
        "primes" => {
            let below: u64 = arg(1).parse().unwrap_or(0);
            writeln!(stdout, "{}", (2..below).filter(|&n| is_prime(n)).count())?;
        }
        "spin" => {
            let mut x = 1u64;
            loop {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        "grow" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1024 * 1024]);
                std::hint::black_box(&hoard);
            }
        }
        "spam" => loop {
            writeln!(stdout, "spam spam spam spam spam spam spam spam")?;
        },
        "read" => {
            let text = std::fs::read(arg(1))?;
            stdout.write_all(&text)?;
        }
        "write" => std::fs::write(arg(1), arg(2))?,
        "env" => {
            let mut vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
            vars.sort();
            for v in vars {
                writeln!(stdout, "{v}")?;
            }
        }
        other => {
            eprintln!("wasi-tool: unknown command {other:?}");
            return Ok(ExitCode::from(2));
        }
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Trial division, as the primes guest counts.
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

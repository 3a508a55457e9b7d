//! The seccomp program, generated from the one table of system calls
//! ([`super::os::SYSCALLS`]) as a single classic-BPF program: a binary
//! search on the call's number, each leaf the call's rule. One short
//! program rather than a chain per filter: the kernel runs it, and when
//! the filter is installed it also emulates it once per system call number
//! to learn which calls it always allows, so its length is paid at every
//! runner's start.

use super::os::{DENIED_IOCTLS, Rule, SYSCALLS};

/// `SECCOMP_RET_*` actions.
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_TRAP: u32 = 0x0003_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
/// The low and high 32-bit halves of argument `n` (little-endian).
fn arg_low(n: u32) -> u32 {
    16 + 8 * n
}
fn arg_high(n: u32) -> u32 {
    16 + 8 * n + 4
}

// Classic BPF opcodes: class | size or operation | source.
/// `BPF_LD | BPF_W | BPF_ABS`: load a 32-bit word of `seccomp_data`.
const LD_W_ABS: u16 = 0x20;
/// `BPF_JMP | BPF_JA`: jump forward by `k`.
const JMP_JA: u16 = 0x05;
/// `BPF_JMP | BPF_JEQ | BPF_K`.
const JMP_JEQ_K: u16 = 0x15;
/// `BPF_JMP | BPF_JGE | BPF_K`.
const JMP_JGE_K: u16 = 0x35;
/// `BPF_JMP | BPF_JSET | BPF_K`.
const JMP_JSET_K: u16 = 0x45;
/// `BPF_RET | BPF_K`.
const RET_K: u16 = 0x06;

fn ins(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn ret(action: u32) -> libc::sock_filter {
    ins(RET_K, 0, 0, action)
}

fn eperm() -> libc::sock_filter {
    ret(RET_ERRNO | libc::EPERM as u32)
}

/// The code for one call, once its number matched; it always returns.
fn block(rule: Rule, pid: u32) -> Vec<libc::sock_filter> {
    match rule {
        Rule::Allow => vec![ret(RET_ALLOW)],
        Rule::Deny => vec![eperm()],
        Rule::Enosys => vec![ret(RET_ERRNO | libc::ENOSYS as u32)],
        // clone without CLONE_THREAD makes a process.
        Rule::ThreadsOnly => vec![
            ins(LD_W_ABS, 0, 0, arg_low(0)),
            ins(JMP_JSET_K, 0, 1, libc::CLONE_THREAD as u32),
            ret(RET_ALLOW),
            eperm(),
        ],
        // The whole 64-bit argument must be the pid (`kill(-pgid)` is not).
        Rule::OnlyToItself(arg) => vec![
            ins(LD_W_ABS, 0, 0, arg_high(arg)),
            ins(JMP_JEQ_K, 0, 3, 0),
            ins(LD_W_ABS, 0, 0, arg_low(arg)),
            ins(JMP_JEQ_K, 0, 1, pid),
            ret(RET_ALLOW),
            eperm(),
        ],
        // The kernel reads an ioctl request as 32 bits.
        Rule::NoTerminalInput => {
            let m = DENIED_IOCTLS.len();
            let mut code = vec![ins(LD_W_ABS, 0, 0, arg_low(1))];
            for (i, (_, request)) in DENIED_IOCTLS.iter().enumerate() {
                code.push(ins(JMP_JEQ_K, (m - i) as u8, 0, *request as u32));
            }
            code.push(ret(RET_ALLOW));
            code.push(eperm());
            code
        }
        Rule::NoSetId(arg) => vec![
            ins(LD_W_ABS, 0, 0, arg_low(arg)),
            ins(JMP_JSET_K, 1, 0, libc::S_ISUID | libc::S_ISGID),
            ret(RET_ALLOW),
            eperm(),
        ],
        Rule::UnixOnly => vec![
            ins(LD_W_ABS, 0, 0, arg_low(0)),
            ins(JMP_JEQ_K, 0, 1, libc::AF_UNIX as u32),
            ret(RET_ALLOW),
            eperm(),
        ],
    }
}

/// The search over `entries` (sorted by number), with the call's number
/// loaded; a number not among them traps.
fn search(entries: &[(u32, Rule)], pid: u32) -> Vec<libc::sock_filter> {
    if entries.len() <= 4 {
        let mut code = Vec::new();
        for (nr, rule) in entries {
            let body = block(*rule, pid);
            code.push(ins(JMP_JEQ_K, 0, body.len() as u8, *nr));
            code.extend(body);
        }
        code.push(ret(RET_TRAP));
        return code;
    }
    let (low, high) = entries.split_at(entries.len() / 2);
    let high_code = search(high, pid);
    let low_code = search(low, pid);
    // number >= the first of `high`: its code, right after the jump over
    // `ja`; else `ja` past it to `low`'s.
    let mut code = vec![
        ins(JMP_JGE_K, 1, 0, high[0].0),
        ins(JMP_JA, 0, 0, high_code.len() as u32),
    ];
    code.extend(high_code);
    code.extend(low_code);
    code
}

/// The whole program for a runner whose pid is `pid`.
pub(crate) fn program(pid: u32) -> Vec<libc::sock_filter> {
    let mut entries: Vec<(u32, Rule)> = SYSCALLS
        .iter()
        .map(|(_, nr, rule)| (*nr as u32, *rule))
        .collect();
    entries.sort_unstable_by_key(|(nr, _)| *nr);
    let mut code = vec![
        ins(LD_W_ABS, 0, 0, ARCH),
        ins(JMP_JEQ_K, 1, 0, AUDIT_ARCH),
        ret(RET_KILL_PROCESS),
        ins(LD_W_ABS, 0, 0, NR),
    ];
    code.extend(search(&entries, pid));
    code
}

/// Install `program` on the calling thread (and the threads it starts).
///
/// # Errors
///
/// When the kernel refuses it.
pub(crate) fn install(program: &[libc::sock_filter]) -> Result<(), String> {
    let prog = libc::sock_fprog {
        len: u16::try_from(program.len()).map_err(|_| "the seccomp program is too long")?,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: prctl reads one sock_fprog pointing at `program`, which lives
    // through the call.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run `program` on a call, as the kernel would: its action.
    fn run(program: &[libc::sock_filter], arch: u32, nr: i64, args: [u64; 6]) -> u32 {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&(nr as u32).to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (i, arg) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_le_bytes());
        }
        let word =
            |k: u32| u32::from_le_bytes(data[k as usize..k as usize + 4].try_into().unwrap());
        let (mut pc, mut a) = (0usize, 0u32);
        loop {
            let i = program[pc];
            pc += 1;
            match i.code {
                LD_W_ABS => a = word(i.k),
                JMP_JA => pc += i.k as usize,
                JMP_JEQ_K | JMP_JGE_K | JMP_JSET_K => {
                    let taken = match i.code {
                        JMP_JEQ_K => a == i.k,
                        JMP_JGE_K => a >= i.k,
                        _ => a & i.k != 0,
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                RET_K => return i.k,
                other => panic!("unknown opcode {other:#x}"),
            }
        }
    }

    const PID: u32 = 4242;
    const EPERM: u32 = RET_ERRNO | libc::EPERM as u32;

    #[test]
    fn every_call_in_the_table_gets_its_rule_and_others_trap() {
        let p = program(PID);
        assert!(p.len() < 1024, "{} instructions", p.len());
        for (name, nr, rule) in SYSCALLS {
            let got = run(&p, AUDIT_ARCH, *nr, [0; 6]);
            let expected = match rule {
                Rule::Allow | Rule::NoTerminalInput | Rule::NoSetId(_) => RET_ALLOW,
                Rule::Deny | Rule::ThreadsOnly | Rule::OnlyToItself(_) | Rule::UnixOnly => EPERM,
                Rule::Enosys => RET_ERRNO | libc::ENOSYS as u32,
            };
            assert_eq!(got, expected, "{name} with zero arguments");
        }
        for nr in [libc::SYS_uname, 999, 0x4000_0000] {
            assert_eq!(run(&p, AUDIT_ARCH, nr, [0; 6]), RET_TRAP, "call {nr}");
        }
        assert_eq!(
            run(&p, AUDIT_ARCH ^ 1, libc::SYS_read, [0; 6]),
            RET_KILL_PROCESS
        );
    }

    #[test]
    fn argument_rules_read_the_right_argument() {
        let p = program(PID);
        let pid = u64::from(PID);
        let call = |nr, args| run(&p, AUDIT_ARCH, nr, args);
        let thread = libc::CLONE_THREAD as u64;
        assert_eq!(call(libc::SYS_clone, [thread, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(call(libc::SYS_kill, [pid, 9, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(call(libc::SYS_kill, [pid + 1, 9, 0, 0, 0, 0]), EPERM);
        // kill(-PID) is a process group, not itself.
        assert_eq!(
            call(libc::SYS_kill, [(-(PID as i64)) as u64, 9, 0, 0, 0, 0]),
            EPERM
        );
        assert_eq!(call(libc::SYS_tgkill, [pid, pid, 6, 0, 0, 0]), RET_ALLOW);
        let sti = libc::TIOCSTI;
        assert_eq!(call(libc::SYS_ioctl, [0, sti, 0, 0, 0, 0]), EPERM);
        // High bits the kernel drops do not hide the request.
        assert_eq!(call(libc::SYS_ioctl, [0, sti | 1 << 40, 0, 0, 0, 0]), EPERM);
        assert_eq!(
            call(libc::SYS_ioctl, [0, libc::TIOCLINUX, 0, 0, 0, 0]),
            EPERM
        );
        assert_eq!(
            call(libc::SYS_ioctl, [0, libc::FIONBIO, 0, 0, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(call(libc::SYS_fchmodat, [0, 0, 0o4755, 0, 0, 0]), EPERM);
        assert_eq!(call(libc::SYS_fchmodat, [0, 0, 0o2755, 0, 0, 0]), EPERM);
        assert_eq!(call(libc::SYS_fchmodat, [0, 0, 0o755, 0, 0, 0]), RET_ALLOW);
        assert_eq!(call(libc::SYS_chmod, [0, 0o4755, 0, 0, 0, 0]), EPERM);
        let unix = libc::AF_UNIX as u64;
        assert_eq!(call(libc::SYS_socketpair, [unix, 1, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(
            call(libc::SYS_socketpair, [libc::AF_INET as u64, 1, 0, 0, 0, 0]),
            EPERM
        );
    }
}

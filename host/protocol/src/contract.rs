//! The host↔runner contract outside the frames: which descriptors carry
//! what, the runner's own exit codes, and what a guest name may be. One
//! definition each, for the host, the runner and any test double.

/// The control pipe from the host to the runner, as the runner sees it.
pub const CONTROL_IN_FD: i32 = 3;
/// The control pipe from the runner to the host, as the runner sees it.
pub const CONTROL_OUT_FD: i32 = 4;
/// The runner's shared memory with the host (a sealed `memfd`): first a
/// page where its `SIGSYS` handler stores the number of a system call its
/// sandbox refused, before it dies (apart from the frames, so the report
/// can never land inside one), then the two rings that carry large
/// payloads, one each way. The runner maps it and closes the descriptor as
/// it starts, before its sandbox goes up.
pub const SANDBOX_REPORT_FD: i32 = 5;
/// The first descriptor a runner does not inherit: everything from here up
/// is closed at spawn and again by the runner's hardening.
pub const FIRST_UNINHERITED_FD: i32 = 6;

/// The runner exits with this when the host is gone (its control pipe
/// closed or broken): nobody is left to read an exit report.
pub const EXIT_HOST_GONE: i32 = 70;
/// The runner exits with this when it could not start or run its guest
/// (bad launch spec, artifact, imports), after reporting why.
pub const EXIT_FAILED: i32 = 71;
/// The runner exits with this when its sandbox refused a system call
/// (reported on the [`SANDBOX_REPORT_FD`] page).
pub const EXIT_SANDBOX_REFUSED: i32 = 72;

/// The longest guest or group name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// What a valid name is, for error messages.
pub const NAME_RULE: &str =
    "use up to 128 letters, digits, `-`, `_` and `.` (but not `.` or `..` alone)";

/// Whether `name` may name a guest or a group: 1 to [`MAX_NAME_LEN`]
/// letters, digits, `-`, `_` and `.`, and not `.` or `..` (which would read
/// as folders wherever a name becomes a path).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `name` cut to at most [`MAX_NAME_LEN`] bytes (at a character boundary,
/// with `…` after it when cut): what the host repeats of a name no guest
/// can have, so a notice about it stays small.
pub fn bounded_name(name: &str) -> String {
    if name.len() <= MAX_NAME_LEN {
        return name.to_owned();
    }
    let mut end = MAX_NAME_LEN;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &name[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_cut_at_a_character_boundary() {
        assert_eq!(bounded_name("short"), "short");
        let long = "é".repeat(100);
        let cut = bounded_name(&long);
        assert_eq!(cut, format!("{}…", "é".repeat(64)));
    }

    #[test]
    fn names_are_short_and_plain() {
        assert!(valid_name("worker-2.a_b"));
        assert!(valid_name(&"x".repeat(MAX_NAME_LEN)));
        assert!(!valid_name(&"x".repeat(MAX_NAME_LEN + 1)));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("."));
        assert!(!valid_name(".."));
        assert!(valid_name("..."));
    }

    #[test]
    fn the_control_pipes_sit_between_stdio_and_the_closed_range() {
        assert_eq!(
            (CONTROL_IN_FD, CONTROL_OUT_FD, SANDBOX_REPORT_FD),
            (3, 4, 5)
        );
        assert_eq!(FIRST_UNINHERITED_FD, SANDBOX_REPORT_FD + 1);
    }
}

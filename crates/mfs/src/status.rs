//! Fields of a `/proc/PID/status` file, which MFS reads of its callers: who they are
//! (`fs.rs`) and which signals they have to take (`signals.rs`).

/// The value of field `name` (without its colon) in status text `status`, trimmed. None: no
/// such field.
pub fn field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_is_found_by_its_whole_name() {
        let status = "Name:\tcat\nTgid:\t42\nGroups:\t4 24 \nTracerPid:\t0\n";
        assert_eq!(field(status, "Tgid"), Some("42"));
        assert_eq!(field(status, "Groups"), Some("4 24"));
        // A name that begins another's is not that one.
        assert_eq!(field(status, "Tracer"), None);
        assert_eq!(field(status, "Pid"), None);
    }
}

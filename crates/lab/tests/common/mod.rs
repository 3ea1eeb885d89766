//! Shared by the lab's integration tests: a stand-in for mosixd.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Stands in for mosixd: checks it got `--map FILE --key FILE --node N` with readable files,
/// says so, and listens on the default socket until killed.
pub const FAKE_MOSIXD: &str = r#"#!/bin/sh
echo "fake mosixd: $*" >&2
if [ "$1" != --map ] || [ ! -r "$2" ] || [ "$3" != --key ] || [ ! -r "$4" ] || [ "$5" != --node ]; then
    echo "fake mosixd: bad arguments" >&2
    exit 2
fi
exec python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind("/run/mosix/mosixd.sock")
s.listen()
print("fake mosixd node", sys.argv[1], "listening", file=sys.stderr, flush=True)
while True:
    s.accept()[0].close()
' "$6"
"#;

/// `CARGO_TARGET_TMPDIR/<name>/mosixd` holding `script`, written atomically (other test
/// processes may be reading it).
pub fn bin_dir_with_daemon(name: &str, script: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    fs::create_dir_all(&dir).expect("create bin dir");
    let staged = dir.join(format!(".mosixd.{}", std::process::id()));
    fs::write(&staged, script).expect("write daemon script");
    fs::set_permissions(&staged, fs::Permissions::from_mode(0o755)).expect("chmod daemon script");
    fs::rename(&staged, dir.join("mosixd")).expect("install daemon script");
    dir
}

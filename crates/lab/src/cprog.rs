//! The C programs that lab tests run, compiled on demand.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Compiles `src` with `gcc -O2 -Wall` and `flags` into `out` (its directory is made), once
/// per test process for each `out`, and returns the program's path. Other test processes may
/// compile the same program at the same time, so it is built aside and renamed into place.
/// Panics with gcc's output if the program does not compile: it is for tests.
pub fn compiled(src: impl AsRef<Path>, out: impl AsRef<Path>, flags: &[&str]) -> String {
    static BUILT: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    let (src, out) = (src.as_ref(), out.as_ref());
    let path = out.to_string_lossy().into_owned();
    // Held while compiling: the tests of one process that need one program wait for it.
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let built = built.get_or_insert_with(HashSet::new);
    if built.contains(out) {
        return path;
    }
    let dir = out.parent().expect("a program's path names its directory");
    fs::create_dir_all(dir).expect("create the programs' dir");
    let name = out.file_name().expect("a program's path names it");
    let staged = dir.join(format!(
        ".{}.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = Command::new("gcc")
        .args(["-O2", "-Wall"])
        .args(flags)
        .arg("-o")
        .arg(&staged)
        .arg(src)
        .output()
        .expect("run gcc (install gcc and libc6-dev)");
    assert!(
        result.status.success(),
        "gcc {} {flags:?} failed:\n{}",
        src.display(),
        String::from_utf8_lossy(&result.stderr)
    );
    fs::rename(&staged, out).expect("install the compiled program");
    built.insert(out.to_owned());
    path
}

//! What `rmosix-package` writes, checked with the tools that will read it: `man` renders every
//! page without a warning and shows every option the program's clap command has, bash loads
//! every completion and completes mosctl's subcommands, `dpkg-deb` finds every file in the
//! package, and `systemd-analyze` accepts the unit. And no program of the workspace is left
//! out of the list they all come from.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rmosix_package::{HAND_WRITTEN_PAGES, PROGRAMS, Program};

const EXE: &str = env!("CARGO_BIN_EXE_rmosix-package");

/// The unit as it is in the source tree, to check against the programs' definitions.
const UNIT: &str = include_str!("../../../packaging/mosixd.service");

/// The workspace's binaries that are not installed: the virtual cluster for tests and demos,
/// and this packager (`cargo install --path crates/package` installs it for those who want it).
const NOT_INSTALLED: &[&str] = &["rmosix-lab", "rmosix-package"];

fn run(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `rmosix-package docs` into a fresh directory.
fn docs() -> tempfile::TempDir {
    let share = tempfile::tempdir().expect("tempdir");
    run(Command::new(EXE).arg("docs").arg("--out").arg(share.path()));
    share
}

/// The page as `man` shows it, on lines wide enough that no option is broken; fails on any
/// warning of groff's.
fn render(page: &Path) -> String {
    let out = run(Command::new("man")
        .args(["--warnings", "-l"])
        .arg(page)
        .env("MANWIDTH", "1000")
        .env("LC_ALL", "C.UTF-8"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "{}: {stderr}", page.display());
    // No terminal: plain text, though a backspace may still mark bold or underlined letters.
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let mut plain = String::new();
    for c in text.chars() {
        if c == '\u{8}' {
            plain.pop();
        } else {
            plain.push(c);
        }
    }
    plain
}

/// How a man page spells each argument of `command`: `--long` and `-s` for options, `<NAME>`
/// and `[NAME]` for required and optional positionals; none for hidden ones.
fn spellings(command: &clap::Command) -> Vec<String> {
    let mut found = Vec::new();
    for arg in command.get_arguments().filter(|arg| !arg.is_hide_set()) {
        if arg.is_positional() {
            let name = arg
                .get_value_names()
                .and_then(|names| names.first())
                .map_or_else(
                    || arg.get_id().as_str().to_uppercase(),
                    |name| name.to_string(),
                );
            if arg.is_required_set() {
                found.push(format!("<{name}>"));
            } else {
                found.push(format!("[{name}]"));
            }
        }
        if let Some(long) = arg.get_long() {
            found.push(format!("--{long}"));
        }
        if let Some(short) = arg.get_short() {
            found.push(format!("-{short}"));
        }
    }
    found
}

fn page_path(share: &Path, program: &Program, name: &str) -> PathBuf {
    let section = program.section();
    share.join(format!("man/man{section}/{name}.{section}"))
}

#[test]
fn every_program_and_subcommand_has_a_page_showing_each_of_its_options() {
    let share = docs();
    for program in PROGRAMS {
        let mut command = program.command();
        command.build();
        let text = render(&page_path(share.path(), program, program.name));
        let spellings = spellings(&command);
        assert!(
            spellings.iter().any(|s| s.starts_with("--")),
            "{}",
            program.name
        );
        for spelling in spellings {
            assert!(
                text.contains(&spelling),
                "{}: no {spelling} in\n{text}",
                program.name
            );
        }
        for sub in command.get_subcommands() {
            let name = format!("{}-{}", program.name, sub.get_name());
            let path = page_path(share.path(), program, &name);
            if sub.is_hide_set() || sub.get_name() == "help" {
                assert!(!path.exists(), "{} is for no one", path.display());
                continue;
            }
            // The program's page lists its subcommands' pages.
            assert!(
                text.contains(&format!("{name}({})", program.section())),
                "{text}"
            );
            let sub_text = render(&path);
            for spelling in self::spellings(sub) {
                assert!(
                    sub_text.contains(&spelling),
                    "{name}: no {spelling} in\n{sub_text}"
                );
            }
            assert!(sub_text.contains(&format!("{} {}", program.name, sub.get_name())));
        }
    }
    assert!(
        PROGRAMS
            .iter()
            .any(|program| program.command().has_subcommands())
    );
    for (name, section, _) in HAND_WRITTEN_PAGES {
        let text = render(&share.path().join(format!("man/man{section}/{name}")));
        // The overview points to every program's page.
        for program in PROGRAMS {
            let reference = format!("{}({})", program.name, program.section());
            assert!(
                text.contains(&reference),
                "{name}: no {reference} in\n{text}"
            );
        }
    }
}

#[test]
fn bash_loads_each_completion_and_completes_subcommands() {
    let share = docs();
    for program in PROGRAMS {
        let script = share
            .path()
            .join("bash-completion/completions")
            .join(program.name);
        let out = run(Command::new("bash")
            .arg("-c")
            .arg(r#"source "$1" && complete -p "$2""#)
            .arg("bash")
            .arg(&script)
            .arg(program.name));
        let line = String::from_utf8_lossy(&out.stdout);
        assert!(line.trim_end().ends_with(program.name), "{line}");
        for (dir, file) in [
            ("zsh/vendor-completions", format!("_{}", program.name)),
            (
                "fish/vendor_completions.d",
                format!("{}.fish", program.name),
            ),
        ] {
            let text = fs::read_to_string(share.path().join(dir).join(file)).expect("read");
            assert!(text.contains(program.name), "{dir}: {text}");
        }
        // What bash offers after `NAME st<TAB>`: each subcommand starting so, as clap names it.
        let mut command = program.command();
        command.build();
        let subs: Vec<&str> = command
            .get_subcommands()
            .filter(|sub| !sub.is_hide_set() && sub.get_name().starts_with("st"))
            .map(|sub| sub.get_name())
            .collect();
        if subs.is_empty() {
            continue;
        }
        let out = run(Command::new("bash")
            .arg("-c")
            .arg(r#"source "$1"; COMP_WORDS=("$2" st); COMP_CWORD=1; "_$2" "$2" st "$2"; echo "${COMPREPLY[*]}""#)
            .arg("bash")
            .arg(&script)
            .arg(program.name));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), subs.join(" "));
    }
}

#[test]
fn the_package_holds_the_programs_pages_completions_and_unit() {
    let out = tempfile::tempdir().expect("tempdir");
    // Stand-ins for the release binaries: this test's own executable, a real ELF that needs
    // glibc as theirs do, stripped and installed in their place.
    let binaries = out.path().join("bin");
    fs::create_dir(&binaries).expect("mkdir");
    let me = std::env::current_exe().expect("current_exe");
    for program in PROGRAMS {
        fs::copy(&me, binaries.join(program.name)).expect("copy");
    }
    let built = run(Command::new(EXE)
        .arg("deb")
        .arg("--binaries")
        .arg(&binaries)
        .arg("--out")
        .arg(out.path()));
    let deb = PathBuf::from(String::from_utf8(built.stdout).expect("utf-8").trim());
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        deb.file_name().and_then(|name| name.to_str()),
        Some(format!("rmosix_{version}_amd64.deb").as_str())
    );

    let info = run(Command::new("dpkg-deb").arg("--info").arg(&deb));
    let info = String::from_utf8_lossy(&info.stdout);
    for field in [
        "Package: rmosix\n".to_owned(),
        format!("Version: {version}\n"),
        "Architecture: amd64\n".to_owned(),
        "Depends: libc6 (>= 2.".to_owned(),
    ] {
        assert!(info.contains(&field), "no {field:?} in\n{info}");
    }

    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    let contents = String::from_utf8_lossy(&contents.stdout);
    let entry = |path: &str| {
        contents
            .lines()
            .find(|line| line.ends_with(&format!(" ./{path}")))
            .unwrap_or_else(|| panic!("no {path} in\n{contents}"))
            .to_owned()
    };
    for program in PROGRAMS {
        let name = program.name;
        let section = program.section();
        let binary = entry(&format!("{}/{name}", program.install_dir()));
        assert!(binary.starts_with("-rwxr-xr-x root/root"), "{binary}");
        entry(&format!("usr/share/man/man{section}/{name}.{section}.gz"));
        entry(&format!("usr/share/bash-completion/completions/{name}"));
        entry(&format!("usr/share/zsh/vendor-completions/_{name}"));
        entry(&format!("usr/share/fish/vendor_completions.d/{name}.fish"));
    }
    for (name, section, _) in HAND_WRITTEN_PAGES {
        entry(&format!("usr/share/man/man{section}/{name}.gz"));
    }
    let unit = entry("usr/lib/systemd/system/mosixd.service");
    assert!(unit.starts_with("-rw-r--r-- root/root"), "{unit}");
    entry("usr/share/doc/rmosix/copyright");
    entry("usr/share/doc/rmosix/examples/mosix.map");
    entry("etc/mosix/");

    // Stripped: this test's executable carries the release profile's line tables.
    let staged = out
        .path()
        .join(format!("rmosix_{version}_amd64/usr/bin/mosctl"));
    let size = |path: &Path| fs::metadata(path).expect("stat").len();
    assert!(
        size(&staged) < size(&me),
        "{} not stripped",
        staged.display()
    );
    // man reads the compressed pages.
    let page = out.path().join(format!(
        "rmosix_{version}_amd64/usr/share/man/man1/mosctl.1.gz"
    ));
    assert!(render(&page).contains("--socket"));
}

#[test]
fn the_unit_starts_the_installed_daemon_with_its_default_files() {
    let daemon = PROGRAMS
        .iter()
        .find(|program| program.daemon)
        .expect("a daemon");
    let exec = format!("/{}/{}", daemon.install_dir(), daemon.name);
    let lines: Vec<&str> = UNIT
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    for line in &lines {
        let section = line.starts_with('[') && line.ends_with(']');
        assert!(
            section || line.contains('='),
            "not a unit file line: {line}"
        );
    }
    let exec_start: Vec<&str> = lines
        .iter()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .expect("an ExecStart= line")
        .split_whitespace()
        .collect();
    assert_eq!(exec_start[0], exec);
    // The node is the whole machine, not the unit's cgroup: jobs run in their users' slices.
    // Parsed with the daemon's own definition, so that a renamed option fails here.
    let matches = daemon
        .command()
        .try_get_matches_from(&exec_start)
        .unwrap_or_else(|e| panic!("{exec_start:?}: {e}"));
    let cgroup: Vec<String> = matches
        .get_raw("cgroup")
        .into_iter()
        .flatten()
        .map(|value| value.to_string_lossy().into_owned())
        .collect();
    assert_eq!(cgroup, ["/"], "{exec_start:?}");
    assert!(lines.contains(&"ExecReload=/bin/kill -HUP $MAINPID"));
    // Stopping the daemon must leave the guests in its cgroup running.
    assert!(lines.contains(&"KillMode=process"));
    // The unit waits for the files the daemon reads when started without options.
    let mut command = daemon.command();
    command.build();
    for option in ["map", "key"] {
        let arg = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(option))
            .unwrap_or_else(|| panic!("{} has no --{option}", daemon.name));
        let default = arg.get_default_values()[0].to_string_lossy().into_owned();
        let condition = format!("ConditionPathExists={default}");
        assert!(lines.contains(&condition.as_str()), "no {condition}");
    }

    // systemd's own reading, with this machine's executables standing in for the daemon
    // (verify wants ExecStart to exist).
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = dir.path().join("mosixd.service");
    let me = std::env::current_exe().expect("current_exe");
    fs::write(&unit, UNIT.replace(&exec, &me.to_string_lossy())).expect("write unit");
    let verified = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output();
    match verified {
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() && stderr.is_empty(), "{stderr}");
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("systemd-analyze not found: the unit got the line checks only");
        }
        Err(e) => panic!("cannot run systemd-analyze: {e}"),
    }
}

#[test]
fn every_binary_of_the_workspace_is_installed_or_said_not_to_be() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let out = run(Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--offline",
            "--format-version",
            "1",
        ])
        .arg("--manifest-path")
        .arg(manifest));
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut binaries: Vec<&str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .flat_map(|package| package["targets"].as_array().expect("targets"))
        .filter(|target| {
            target["kind"]
                .as_array()
                .expect("kind")
                .iter()
                .any(|k| k == "bin")
        })
        .map(|target| target["name"].as_str().expect("name"))
        .filter(|name| !NOT_INSTALLED.contains(name))
        .collect();
    binaries.sort_unstable();
    let mut programs: Vec<&str> = PROGRAMS.iter().map(|program| program.name).collect();
    programs.sort_unstable();
    // A new program goes into rmosix_package::PROGRAMS (its clap definition in a library,
    // as rmosix_tools::cli has them), or into NOT_INSTALLED.
    assert_eq!(binaries, programs);
}

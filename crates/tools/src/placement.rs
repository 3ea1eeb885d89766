//! mosrun's MOSIX options: where the program starts, whether it may start elsewhere, and how
//! the balancer treats its processes. They come before the program, in MOSIX's own syntax,
//! which no option parser speaks (`-3` is a node number, `-j1-3,5` a list, `-m512` a memory
//! need), so clap leaves them in the command and [`MosixOptions::take`] reads them off its
//! front.

use rand::Rng;

use rmosix_wire::{Advice, Decay};

/// What mosrun's MOSIX options asked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MosixOptions {
    /// Where to start: a node (`-N`, or one drawn from `-j`), or home (`-h`, the default).
    pub node: Option<u16>,
    /// `-b`: on the best node, which the daemon picks as the job starts.
    pub best: bool,
    /// `-F`: if that node cannot take it, run at home.
    pub fallback: bool,
    /// `-z`: the program's path, when its argv[0] is given apart.
    pub path: Option<String>,
    /// `-L`/`-l` (locked or not, unlocked by default), `-c -i -n -s -f` or `-d N` (how its
    /// statistics decay) and `-mMB` (memory need), for every process of the job.
    pub advice: Advice,
}

/// A MOSIX option mosrun cannot take; the message is MOSIX's wording where it has one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionError {
    /// `-N` with N not a node number.
    #[error("{0}: bad node number (1 to 65535)")]
    BadNode(String),
    /// `-j` with a list that does not parse.
    #[error("-j{0}: bad node list (e.g. -j1-3,5)")]
    BadList(String),
    /// `-z` without both the path and argv[0].
    #[error("-z needs the program's path and its argv[0]")]
    ZWithoutArgv0,
    /// `-m` with a size that is not a number of MiB.
    #[error("{0}: bad memory size (MiB, e.g. -m512)")]
    BadMemory(String),
    /// `-d` without a portion of 0 to 10000.
    #[error("{0}: bad decay rate (0 to 10000: the statistics kept each second, in 10000ths)")]
    BadDecay(String),
    /// Not a MOSIX option.
    #[error("{0}: unknown option")]
    Unknown(String),
    /// Options and no program.
    #[error("no program to run")]
    NoProgram,
}

impl MosixOptions {
    /// Read the MOSIX options off the front of `command` (mosrun's arguments after its own
    /// long options); what remains is the program's argv. The first argument that is not
    /// such an option is the program (`--` ends the options too).
    pub fn take(command: &mut Vec<String>) -> Result<MosixOptions, OptionError> {
        let mut options = MosixOptions::default();
        let mut used = 0;
        let mut z = false;
        while let Some(arg) = command.get(used) {
            let Some(flag) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
                break;
            };
            used += 1;
            if flag == "-" {
                break;
            }
            // Of the options that say where it starts (-h, -N, -j, -b), the last counts.
            let mut start_at = |node: Option<u16>, best: bool| {
                options.node = node;
                options.best = best;
            };
            match flag {
                "h" => start_at(None, false),
                "b" => start_at(None, true),
                "F" => options.fallback = true,
                "L" => options.advice.locked = true,
                "l" => options.advice.locked = false,
                "c" => options.advice.decay = Decay::CpuBound,
                "i" => options.advice.decay = Decay::IoBound,
                "n" => options.advice.decay = Decay::NoDecay,
                "s" => options.advice.decay = Decay::Slow,
                "f" => options.advice.decay = Decay::Fast,
                "z" => z = true,
                _ if flag.starts_with('d') => {
                    // MOSIX writes it apart (`-d 9000`); `-d9000` is taken too, as `-m` is.
                    let rate = match &flag[1..] {
                        "" => match command.get(used) {
                            Some(apart) => {
                                used += 1;
                                apart.clone()
                            }
                            None => String::new(),
                        },
                        attached => attached.to_owned(),
                    };
                    options.advice.decay = Decay::Keep(
                        rate.parse()
                            .ok()
                            .filter(|&kept| kept <= 10_000)
                            .ok_or_else(|| OptionError::BadDecay(format!("-d {rate}")))?,
                    );
                }
                _ if flag.starts_with('m') => {
                    options.advice.memory_need_mb = flag[1..]
                        .parse()
                        .map_err(|_| OptionError::BadMemory(arg.clone()))?;
                }
                _ if flag.starts_with('j') => {
                    let nodes = node_list(&flag[1..])?;
                    let drawn = rand::rng().random_range(0..nodes.len());
                    start_at(Some(nodes[drawn]), false);
                }
                _ if flag.bytes().all(|b| b.is_ascii_digit()) => {
                    let node =
                        node_number(flag).ok_or_else(|| OptionError::BadNode(arg.clone()))?;
                    start_at(Some(node), false);
                }
                _ => return Err(OptionError::Unknown(arg.clone())),
            }
        }
        command.drain(..used);
        if z {
            if command.len() < 2 {
                return Err(OptionError::ZWithoutArgv0);
            }
            options.path = Some(command.remove(0));
        }
        if command.is_empty() {
            return Err(OptionError::NoProgram);
        }
        Ok(options)
    }
}

/// A node number: 1 to 65535.
fn node_number(text: &str) -> Option<u16> {
    text.parse::<u16>().ok().filter(|&n| n > 0)
}

/// `1-3,5`: the nodes named, ranges included, each once, in order.
fn node_list(list: &str) -> Result<Vec<u16>, OptionError> {
    let bad = || OptionError::BadList(list.to_owned());
    let mut nodes = Vec::new();
    for item in list.split(',') {
        let (first, last) = match item.split_once('-') {
            Some((a, b)) => (
                node_number(a).ok_or_else(bad)?,
                node_number(b).ok_or_else(bad)?,
            ),
            None => {
                let n = node_number(item).ok_or_else(bad)?;
                (n, n)
            }
        };
        if first > last {
            return Err(bad());
        }
        nodes.extend(
            (first..=last)
                .filter(|n| !nodes.contains(n))
                .collect::<Vec<_>>(),
        );
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(args: &[&str]) -> (Result<MosixOptions, OptionError>, Vec<String>) {
        let mut command: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let options = MosixOptions::take(&mut command);
        (options, command)
    }

    #[test]
    fn a_node_number_and_fallback_come_off_the_front_and_the_program_stays() {
        let (options, rest) = take(&["-3", "-F", "prog", "-4", "x"]);
        let options = options.unwrap();
        assert_eq!((options.node, options.fallback), (Some(3), true));
        assert_eq!(
            rest,
            ["prog", "-4", "x"],
            "the program's own options are its own"
        );
        let (options, rest) = take(&["-3", "-h", "--", "-prog"]);
        assert_eq!(options.unwrap().node, None, "the last of -N and -h counts");
        assert_eq!(rest, ["-prog"]);
    }

    #[test]
    fn a_list_draws_one_of_its_nodes() {
        for _ in 0..50 {
            let node = take(&["-j2-4,7", "prog"]).0.unwrap().node.unwrap();
            assert!([2, 3, 4, 7].contains(&node), "{node}");
        }
        assert_eq!(node_list("5,1-2,2"), Ok(vec![5, 1, 2]));
    }

    #[test]
    fn bad_numbers_and_lists_are_named() {
        assert_eq!(take(&["-0", "p"]).0, Err(OptionError::BadNode("-0".into())));
        assert_eq!(
            take(&["-70000", "p"]).0,
            Err(OptionError::BadNode("-70000".into()))
        );
        for list in ["", "3-1", "a", "1,", "1--2"] {
            let flag = format!("-j{list}");
            assert_eq!(
                take(&[&flag, "p"]).0,
                Err(OptionError::BadList(list.into())),
                "{flag}"
            );
        }
        assert_eq!(take(&["-x", "p"]).0, Err(OptionError::Unknown("-x".into())));
        assert_eq!(take(&["-3"]).0, Err(OptionError::NoProgram));
    }

    #[test]
    fn z_gives_the_path_apart_from_argv0() {
        let (options, rest) = take(&["-z", "/bin/sh", "mysh", "-c", "true"]);
        assert_eq!(options.unwrap().path.as_deref(), Some("/bin/sh"));
        assert_eq!(rest, ["mysh", "-c", "true"]);
        assert_eq!(take(&["-z", "/bin/sh"]).0, Err(OptionError::ZWithoutArgv0));
    }

    #[test]
    fn options_of_the_balancer_become_the_jobs_advice() {
        let (options, rest) = take(&["-L", "-c", "-m512", "prog"]);
        let options = options.unwrap();
        assert_eq!(
            options.advice,
            Advice {
                locked: true,
                decay: Decay::CpuBound,
                memory_need_mb: 512,
            }
        );
        assert_eq!(rest, ["prog"]);
        for (flag, decay) in [
            ("-i", Decay::IoBound),
            ("-n", Decay::NoDecay),
            ("-s", Decay::Slow),
            ("-f", Decay::Fast),
        ] {
            assert_eq!(take(&[flag, "p"]).0.unwrap().advice.decay, decay, "{flag}");
        }
        for rate in [["-d", "9000"].as_slice(), &["-d9000"]] {
            let (options, rest) = take(&[rate, &["p"]].concat());
            assert_eq!(options.unwrap().advice.decay, Decay::Keep(9000), "{rate:?}");
            assert_eq!(rest, ["p"]);
        }
        for (bad, said) in [
            (["-d", "10001"].as_slice(), "-d 10001"),
            (&["-dx", "p"], "-d x"),
            (&["-d"], "-d "),
        ] {
            assert_eq!(take(bad).0, Err(OptionError::BadDecay(said.into())));
        }
        assert!(!take(&["-L", "-l", "p"]).0.unwrap().advice.locked);
        for bad in ["-m", "-mx", "-m-1"] {
            assert_eq!(take(&[bad, "p"]).0, Err(OptionError::BadMemory(bad.into())));
        }
    }

    #[test]
    fn b_asks_for_the_best_node_and_the_last_start_option_counts() {
        let options = take(&["-3", "-b", "p"]).0.unwrap();
        assert_eq!((options.node, options.best), (None, true));
        let options = take(&["-b", "-3", "p"]).0.unwrap();
        assert_eq!((options.node, options.best), (Some(3), false));
        let options = take(&["-b", "-h", "p"]).0.unwrap();
        assert_eq!((options.node, options.best), (None, false));
    }
}

//! mosrun's MOSIX options: where the program starts, and whether it may start elsewhere.
//! They come before the program, in MOSIX's own syntax, which no option parser speaks
//! (`-3` is a node number, `-j1-3,5` a list), so clap leaves them in the command and
//! [`MosixOptions::take`] reads them off its front.

use rand::Rng;

/// What mosrun's MOSIX options asked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MosixOptions {
    /// Where to start: a node (`-N`, or one drawn from `-j`), or home (`-h`, the default).
    pub node: Option<u16>,
    /// `-F`: if that node cannot take it, run at home.
    pub fallback: bool,
    /// `-z`: the program's path, when its argv[0] is given apart.
    pub path: Option<String>,
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
    /// A MOSIX option this version does not carry out, and why.
    #[error("{0}: {1}")]
    Unsupported(String, &'static str),
    /// Not a MOSIX option.
    #[error("{0}: unknown option")]
    Unknown(String),
    /// Options and no program.
    #[error("no program to run")]
    NoProgram,
}

/// Why an option MOSIX has is refused here.
const NO_BALANCER: &str = "it steers the automatic load balancing, which this version does \
                           not run yet: processes move only when `migrate` says";

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
            match flag {
                "h" => options.node = None,
                "F" => options.fallback = true,
                // Lock and unlock against automatic moves: with none yet, both hold as asked.
                "L" | "l" => {}
                "z" => z = true,
                "b" => return Err(OptionError::Unsupported(arg.clone(), NO_BALANCER)),
                "c" | "i" | "n" | "s" | "f" => {
                    return Err(OptionError::Unsupported(arg.clone(), NO_BALANCER));
                }
                _ if flag.starts_with('m') && flag[1..].parse::<u64>().is_ok() => {
                    return Err(OptionError::Unsupported(arg.clone(), NO_BALANCER));
                }
                _ if flag.starts_with('j') => {
                    let nodes = node_list(&flag[1..])?;
                    let drawn = rand::rng().random_range(0..nodes.len());
                    options.node = Some(nodes[drawn]);
                }
                _ if flag.bytes().all(|b| b.is_ascii_digit()) => {
                    options.node =
                        Some(node_number(flag).ok_or_else(|| OptionError::BadNode(arg.clone()))?);
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
    fn options_of_the_balancer_say_why_they_are_refused() {
        for flag in ["-b", "-c", "-i", "-n", "-s", "-f", "-m512"] {
            let err = take(&[flag, "p"]).0.unwrap_err();
            assert!(matches!(err, OptionError::Unsupported(..)), "{flag}: {err}");
            assert!(err.to_string().contains("migrate"), "{err}");
        }
        let (options, _) = take(&["-L", "-l", "p"]);
        assert!(options.is_ok(), "lock and unlock hold without a balancer");
    }
}

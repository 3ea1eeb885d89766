//! The remote's half of forwarding: a call the seccomp filter trapped is looked up in the
//! table, its buffers are read from the husk's memory and it is shipped home
//! (`ToHome::Call`), or it is answered here; home's reply is written back into the husk and
//! answers the notification. See docs/forwarding.md.

use std::io;

use rmosix_image::{CpuUse, Usage, write_message, write_pages};
use tracing::{debug, warn};

use crate::cputime;
use crate::dfsa::{self, LocalFiles, Verdict};
use crate::limits;
use crate::mem::{Memory, le_u32, le_u64};
use crate::msg;
use crate::numbers::{self, Free, FreeNumbers};
use crate::pathcache::{self, Answer, Forgotten, Key, Keyed, Listing, PathAnswers};
use crate::pidfd::PidFd;
use crate::ptrace::Pid;
use crate::readahead::{self, Loan, Lookup, ReadCache};
use crate::seccomp::Listener;
use crate::session::{Asking, ReadAsk, Session, ToHome};
use crate::sysfiles::{Candidate, SameAs};
use crate::table::{self, Arg, Len, MAX_BUF, PATH_MAX, Route};

/// The pointer argument of a call whose buffer lies nowhere in the remote's memory as such
/// (the pread64 standing for a file mmap): any non-NULL value, so that home lays a buffer out
/// for it; the guest maps the bytes that come back itself.
const UNPLACED: u64 = 1;

/// The forwarded call the remote waits on.
pub enum Pending {
    /// A call whose buffers come back to where they were.
    Plain { id: u64 },
    /// A wait with a signal mask of its own (pselect6, ppoll, epoll_pwait): home runs it with
    /// `mask`. Interrupted there by a signal the mask lets in, it must run that signal's
    /// handler here with `mask` in force and the process's own mask back after it, as the
    /// kernel does; the guest does that (see `Replied::Interrupted`).
    Masked { id: u64, mask: u64 },
    /// readv: the data comes back in one piece and is scattered into these (address, length).
    Scatter { id: u64, iov: Vec<(u64, u64)> },
    /// recvmsg: the buffers come back to where they were, but for the data, which comes back
    /// addressed to the iovec array at `iov_at` and is scattered into `iov`.
    Message {
        id: u64,
        iov_at: u64,
        iov: Vec<(u64, u64)>,
    },
    /// mmap of a home file: the contents came home-to-remote; map them privately.
    Map {
        id: u64,
        addr: u64,
        len: u64,
        prot: u64,
        flags: u64,
    },
    /// sendmmsg or recvmmsg: message `done` of the array at `args[1]` went home as a
    /// sendmsg or recvmsg (`one`, its own pending reply).
    Batch {
        id: u64,
        batch: Batch,
        done: u64,
        one: Box<Pending>,
    },
    /// exit: the process ends at home.
    Exit { id: u64 },
    /// times: home's answer has the children's times; the process's own, from everywhere it
    /// ran, go into the `struct tms` at `at` on the way back.
    Times { id: u64, at: u64 },
    /// read, readv or pread64 (`at`) of `fd`, asked of home as a `ToHome::Read`: the bytes
    /// are scattered into `iov`, whether home lent them (`ToGuest::Filled`) or ran the call.
    Read {
        id: u64,
        fd: i32,
        at: Option<u64>,
        iov: Vec<(u64, u64)>,
    },
    /// An open of a file here (see `dfsa`): home's shell opened a placeholder, whose number
    /// the program gets for `file`.
    Open {
        id: u64,
        file: std::os::fd::OwnedFd,
        cloexec: bool,
        path: String,
    },
    /// A duplicate of local descriptor `source` (see `dfsa`), asked of home on its
    /// placeholder or copy: home's answer is the number under which `file`, the process's
    /// own open file, goes into the process.
    Dup {
        id: u64,
        file: std::os::fd::OwnedFd,
        source: i32,
        cloexec: bool,
    },
    /// An open of a system file, sent home (see `sysfiles`): the same file here, if it could
    /// be opened, stands in for home's where home says it is the same.
    System {
        id: u64,
        here: Option<Candidate>,
        cloexec: bool,
    },
    /// A call that ran in the shell and, if it succeeded there, now runs here too.
    /// rt_sigprocmask: the shell's mask is the program's, and here it answers with the old
    /// mask; the signals it let in at home were relayed before home's answer, so they are
    /// pending here when it returns. setpriority of the process itself: the nice value it
    /// keeps at home and runs with here.
    Mirror { id: u64 },
}

impl Pending {
    /// The notification the call came from.
    pub fn id(&self) -> u64 {
        match *self {
            Pending::Plain { id }
            | Pending::Masked { id, .. }
            | Pending::Scatter { id, .. }
            | Pending::Message { id, .. }
            | Pending::Batch { id, .. }
            | Pending::Map { id, .. }
            | Pending::Exit { id }
            | Pending::Mirror { id }
            | Pending::Times { id, .. }
            | Pending::Open { id, .. }
            | Pending::Dup { id, .. }
            | Pending::System { id, .. }
            | Pending::Read { id, .. } => id,
        }
    }
}

/// A sendmmsg or recvmmsg, shipped one message at a time.
#[derive(Clone, Copy)]
pub struct Batch {
    /// sendmmsg or recvmmsg.
    nr: i64,
    /// Its arguments: descriptor, array, count, flags, timeout.
    args: [u64; 6],
    /// recvmmsg with a timeout: no message is asked for after this instant.
    deadline: Option<std::time::Instant>,
}

impl Batch {
    fn receiving(&self) -> bool {
        self.nr == libc::SYS_recvmmsg
    }

    /// The flags message `done` goes with. recvmmsg's MSG_WAITFORONE waits for the first
    /// message only: the others are asked for without waiting.
    fn flags(&self, done: u64) -> u64 {
        let flags = self.args[3] & !(msg::MSG_WAITFORONE as u64);
        if self.receiving() && done > 0 && self.args[3] & msg::MSG_WAITFORONE as u64 != 0 {
            flags | libc::MSG_DONTWAIT as u64
        } else {
            flags
        }
    }
}

/// What became of a trapped call.
pub enum Trapped {
    /// Shipped home: home's reply answers it.
    Shipped(Pending),
    /// Answered here already.
    Answered,
    /// Only home can run it (`what` names it): the process goes home.
    GoHome { what: String },
}

/// What a reply from home means.
pub enum Replied {
    /// The call is answered.
    Done,
    /// sendmmsg: the next message is shipped.
    Again(Pending),
    /// A wait with its own mask was interrupted at home by a signal, relayed already: answer
    /// it with EINTR and run the signal's handler with `mask` (see `Pending::Masked`).
    Interrupted { id: u64, ret: i64, mask: u64 },
    /// A file mmap's contents came: map them into the stopped husk, then answer `id`.
    Map {
        id: u64,
        addr: u64,
        len: u64,
        prot: u64,
        flags: u64,
        bytes: Vec<u8>,
    },
}

/// Reads and writes the husk's buffers for the calls it forwards.
pub struct Forwarder {
    pid: Pid,
    mem: Memory,
    /// The process's CPU use when it arrived here (see `cputime`).
    arrived: CpuUse,
    /// Bytes of home files lent to this remote (see `readahead`).
    reads: ReadCache,
    /// Files opened here rather than at home (see `dfsa`).
    local: LocalFiles,
    /// What home said of the file a system open opened (`ToGuest::Same`), by call.
    said: Option<(u64, SameAs)>,
    /// Home's answers to lookups of system paths, kept (see `pathcache`).
    paths: PathAnswers,
    /// Numbers free in home's table, for files opened here (see `numbers`).
    numbers: FreeNumbers,
    /// What home told free with the answer to call `id` (`ToGuest::Numbers`).
    numbered: Option<(u64, Free)>,
    /// What home lent ahead of the answer to an open (`ToGuest::Lent`).
    lent: Option<Lent>,
    /// Opens and closes made here that home's shell has not followed yet (`ToHome::Opened`,
    /// `ToHome::Closed`), by id.
    unfollowed: std::collections::HashSet<u64>,
    /// Home's descriptors home said are no terminal (see [`Terminals`]).
    terminals: Terminals,
    /// The process runs here with the limits it has at home: it reads them here (see
    /// `limits`).
    limits_as_home: bool,
}

/// Home's descriptors that are no terminal, as home's answers to `TCGETS` (what `isatty`
/// asks) said. A compiler asks it of its standard error three times a run, each a round
/// trip. What a descriptor refers to is no terminal for good once home said so (a file,
/// pipe or socket never becomes one), until the number refers to something else: the table
/// changes only by the process's own calls, all of which the remote sees, so the set goes
/// with any call that may change the table ([`numbers::leaves_numbers`]), but a `TCGETS`.
#[derive(Default)]
struct Terminals {
    not: std::collections::BTreeSet<i32>,
    /// The `TCGETS` of this descriptor went home as this call.
    asked: Option<(u64, i32)>,
}

impl Terminals {
    /// The descriptor call `nr` asks whether it is a terminal, if it is a `TCGETS`.
    fn asks(nr: i64, args: &[u64; 6]) -> Option<i32> {
        // The kernel reads the request as an unsigned int.
        (nr == libc::SYS_ioctl && args[1] as u32 == libc::TCGETS as u32)
            .then(|| i32::try_from(args[0]).ok())
            .flatten()
    }
}

/// What home lent ahead of the answer to open `id`, which put the file under `fd`: its
/// status and first bytes (`ToGuest::Lent`).
struct Lent {
    id: u64,
    fd: i32,
    status: Vec<u8>,
    loan: Loan,
}

/// A file opened here for the process, and what home's shell opens under its number.
struct Away<'a> {
    file: &'a std::os::fd::OwnedFd,
    cloexec: bool,
    /// The path and open flags of the shell's copy of the file, or of a placeholder.
    home: (&'a str, u64),
}

/// What became of a file put into the process under a number home told free.
enum Placed {
    /// It is there, under this number.
    At(i32),
    /// The call is gone (a signal ended it): nothing is opened.
    Gone,
    /// Not here: no number is known, or it could not go in (the process's limit here).
    No,
}

impl Forwarder {
    /// For husk `pid`, whose process had used `arrived` when it came and holds `local`.
    pub fn open(pid: Pid, arrived: CpuUse, local: LocalFiles) -> io::Result<Forwarder> {
        Ok(Forwarder {
            pid,
            mem: Memory::open(pid)?,
            arrived,
            reads: ReadCache::default(),
            local,
            said: None,
            paths: PathAnswers::default(),
            numbers: FreeNumbers::default(),
            numbered: None,
            lent: None,
            unfollowed: std::collections::HashSet::new(),
            terminals: Terminals::default(),
            limits_as_home: false,
        })
    }

    /// Whether the process runs here with its limits at home (see `limits`).
    pub fn limits_as_home(&mut self, same: bool) {
        self.limits_as_home = same;
    }

    /// Home told the numbers free once call `id` ran (`ToGuest::Numbers`); its reply follows.
    pub fn home_numbered(&mut self, id: u64, free: Free) {
        self.numbered = Some((id, free));
    }

    /// Home told, ahead of the image, the numbers free in the table of a process stopped
    /// since its exec (`ToGuest::NumbersAhead`): they hold until its first call that may
    /// change the table, as numbers told with an answer do.
    pub fn numbers_ahead(&mut self, free: Free) {
        self.numbers.told(free);
    }

    /// Whether the numbers home tells are of use: the process opens files here (home lists
    /// its shell's table for them, which a process that never does need not cost).
    fn wants_numbers(&self) -> bool {
        self.local.holds_any() || self.paths.keeps_opens()
    }

    /// Put `away`'s file into the process under the lowest number home told free, answering
    /// call `id`, and tell home what its shell opens under that number (`ToHome::Opened`).
    fn place(
        &mut self,
        id: u64,
        away: Away<'_>,
        session: &mut Session,
        listener: &Listener,
    ) -> io::Result<Placed> {
        let Some(fd) = self.numbers.lowest() else {
            return Ok(Placed::No);
        };
        match listener.answer_with_file(id, self.pid, away.file, fd, away.cloexec) {
            Ok(()) => {}
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => return Ok(Placed::Gone),
            Err(err) => {
                debug!(fd, %err, "a file opened here cannot go into the process");
                return Ok(Placed::No);
            }
        }
        self.numbers.take(fd);
        let (path, flags) = (away.home.0.to_owned(), away.home.1);
        // Home needs it only before the process's next call, which flushes it: an open, a
        // read and a close of a file then cost no message of their own (see `deputy`).
        let opened = ToHome::Opened {
            id,
            fd,
            path,
            flags,
        };
        session.send_later(&opened)?;
        self.unfollowed.insert(id);
        Ok(Placed::At(fd))
    }

    /// Home lent ahead what open `id` opened under `fd`: its status and first bytes
    /// (`ToGuest::Lent`), taken in with the open's answer.
    pub fn home_lent(&mut self, id: u64, fd: i32, status: Vec<u8>, loan: Loan) {
        self.lent = Some(Lent {
            id,
            fd,
            status,
            loan,
        });
    }

    /// Home said what the file call `id` opened is (`ToGuest::Same`); its reply follows.
    pub fn home_said(&mut self, id: u64, same: SameAs) {
        self.said = Some((id, same));
    }

    /// Home vouched for lookup `id`'s answer (`ToGuest::Vouched`), with the listing of the
    /// directory a name was missing in; its reply follows.
    pub fn home_vouched(&mut self, id: u64, listing: Option<Listing>, cwd: Option<String>) {
        self.paths.vouched(id, listing, cwd);
    }

    /// Something the kept answers depend on changed at home (`ToGuest::Forget`).
    pub fn forget_lookups(&mut self) {
        self.paths.forget();
    }

    /// Home's word that a change took these answers (`ToGuest::ForgetPart`).
    pub fn forget_part_of_lookups(&mut self, part: &Forgotten) {
        self.paths.forget_part(part);
    }

    /// Home vouched for these answers to the job's other remotes (`ToGuest::Known`).
    pub fn home_knew(&mut self, answers: Vec<(Key, Answer)>, listings: Vec<Listing>) {
        self.paths.known(answers, listings, self.local.system());
    }

    /// The key of call `nr` if it is a lookup whose answer may be kept (see `pathcache`).
    fn lookup_key(&self, nr: i64, args: &[u64; 6]) -> Option<Keyed> {
        self.paths.key(nr, args, &self.mem, self.local.system())
    }

    /// Answer call `id`, lookup `key` with `args`, here if its answer is kept. False: it
    /// is not.
    fn answer_kept(&self, listener: &Listener, id: u64, key: &Key, args: &[u64; 6]) -> bool {
        let Some((ret, out)) = self.paths.answer(key, args) else {
            return false;
        };
        let ret = match out {
            Some((at, bytes)) if self.mem.write(at, bytes).is_err() => -i64::from(libc::EFAULT),
            _ => ret,
        };
        respond(listener, id, ret);
        true
    }

    /// The process leaves: home's descriptors of the system files it holds here take the
    /// offsets its reads reached (`ToHome::Offset`), so that the next node may hand a file
    /// that differs there back to home's. Sent with what goes next.
    pub fn tell_offsets(&self, session: &mut Session) -> io::Result<()> {
        for fd in self.local.system_digests().into_keys() {
            // A descriptor the process no longer holds is in no image either.
            match dfsa::fd_state(self.pid, fd)
                .ok()
                .and_then(|state| state.pos)
            {
                Some(pos) => write_message(&mut session.out, &ToHome::Offset { fd, pos })?,
                None => debug!(fd, "no offset of a system file to tell home"),
            }
        }
        Ok(())
    }

    /// The digests of the system files the process holds here, by descriptor.
    pub fn system_digests(&self) -> std::collections::HashMap<i32, String> {
        self.local.system_digests()
    }

    /// A trapped call on a file here, or that opens one (see `dfsa`): run or answered here,
    /// or home's placeholder asked for. None: not a local file's business.
    /// `nothing_behind`: as for [`Forwarder::trap`].
    pub fn trap_local(
        &mut self,
        id: u64,
        nr: i64,
        args: [u64; 6],
        nothing_behind: bool,
        session: &mut Session,
        listener: &Listener,
    ) -> io::Result<Option<Trapped>> {
        if pathcache::changes_lookups(nr) {
            self.paths.forget();
        }
        Ok(Some(match self.local.judge(nr, &args, &self.mem) {
            Verdict::Pass => return Ok(None),
            Verdict::Run => {
                let_run(listener, id);
                Trapped::Answered
            }
            Verdict::Answer(val) => self.answer(listener, id, val),
            Verdict::GoHome(what) => Trapped::GoHome { what },
            Verdict::Close(fd) => {
                // The kernel closes it in the process; home's placeholder goes meanwhile,
                // before any later call.
                let_run(listener, id);
                self.local.closed(fd);
                self.release(id, fd, session)?;
                Trapped::Answered
            }
            Verdict::Open {
                file,
                cloexec,
                path,
            } => {
                let placeholder = (libc::O_PATH | libc::O_CLOEXEC) as u64;
                let away = Away {
                    file: &file,
                    cloexec,
                    home: ("/", placeholder),
                };
                match self.place(id, away, session, listener)? {
                    Placed::At(fd) => {
                        self.local.opened(fd, path, None);
                        return Ok(Some(Trapped::Answered));
                    }
                    Placed::Gone => return Ok(Some(Trapped::Answered)),
                    Placed::No => {}
                }
                let placeholder = [
                    libc::AT_FDCWD as u64,
                    UNPLACED,
                    (libc::O_PATH | libc::O_CLOEXEC) as u64,
                    0,
                    0,
                    0,
                ];
                self.before_other_call(libc::SYS_openat, &placeholder, session)?;
                self.numbers.stale();
                let root = vec![(UNPLACED, b"/\0".to_vec())];
                let asking = Asking {
                    numbers: true,
                    ..Asking::default()
                };
                send_call(session, id, libc::SYS_openat, placeholder, &root, asking)?;
                Trapped::Shipped(Pending::Open {
                    id,
                    file,
                    cloexec,
                    path,
                })
            }
            Verdict::Dup { source, cloexec } => {
                // What dup2 closes at home under its number cannot come back: the file must
                // be sure to go in here (the process's limit here may be lower than at home).
                if matches!(nr, libc::SYS_dup2 | libc::SYS_dup3)
                    && !limits::takes_descriptor(self.pid, args[1])
                {
                    let what = format!("dup2 over {}, beyond the limit here", args[1]);
                    return Ok(Some(Trapped::GoHome { what }));
                }
                let file = match PidFd::open(self.pid).and_then(|pidfd| pidfd.get_fd(source)) {
                    Ok(file) => file,
                    Err(err) => {
                        let what = format!("a dup of a file opened here ({err})");
                        return Ok(Some(Trapped::GoHome { what }));
                    }
                };
                // Home's table changes as the program's would: dup2 may put the file over
                // one of home's descriptors.
                self.before_other_call(nr, &args, session)?;
                self.numbers.stale();
                self.terminals.not.clear();
                let asking = Asking {
                    numbers: self.wants_numbers(),
                    ..Asking::default()
                };
                send_call(session, id, nr, args, &[], asking)?;
                Trapped::Shipped(Pending::Dup {
                    id,
                    file,
                    source,
                    cloexec,
                })
            }
            Verdict::System { path, flags } => {
                let key = self.lookup_key(nr, &args).filter(|_| nothing_behind);
                if let Some(Keyed { key, .. }) = &key {
                    if self.answer_kept(listener, id, key, &args) {
                        return Ok(Some(Trapped::Answered));
                    }
                    if self.open_kept(id, key, &path, flags, session, listener)? {
                        return Ok(Some(Trapped::Answered));
                    }
                }
                // Home opens it as the process: the one round trip the open costs anyway.
                // The path goes as it was read here, once: the file opened here is that one.
                // Its resolved path is compared with home's all the same.
                let mut raw = path.clone().into_bytes();
                raw.push(0);
                let at = match nr {
                    libc::SYS_open => args[0],
                    _ => args[1],
                };
                let call = [libc::AT_FDCWD as u64, at, flags, 0, 0, 0];
                self.before_other_call(libc::SYS_openat, &call, session)?;
                self.numbers.stale();
                self.said = None;
                let asking = Asking {
                    same: true,
                    vouch: key.is_some(),
                    numbers: key.is_some() || self.wants_numbers(),
                    lend: false,
                };
                send_call(session, id, libc::SYS_openat, call, &[(at, raw)], asking)?;
                if let Some(key) = key {
                    self.paths.asked(id, key, args);
                }
                // Opened and digested here while home does the same.
                let here = Candidate::open(&path, flags)
                    .inspect_err(|err| debug!(path, %err, "a system file is served by home"))
                    .ok();
                let cloexec = flags & libc::O_CLOEXEC as u64 != 0;
                Trapped::Shipped(Pending::System { id, here, cloexec })
            }
        }))
    }

    /// Close home's copy or placeholder `fd` (`ToHome::Closed`, for call `id`), without
    /// waiting for the answer (see `on_stray_reply`): the number is free again for what is
    /// opened next. The close goes with whatever goes home next, which flushes it.
    fn release(&mut self, id: u64, fd: i32, session: &mut Session) -> io::Result<()> {
        session.send_later(&ToHome::Closed { id, fd })?;
        self.unfollowed.insert(id);
        self.numbers.freed(fd);
        Ok(())
    }

    /// Open `path` with `flags` here, for call `id`, lookup `key`, if home vouched for what
    /// that open opens at home and the file here is still the same: under a number home
    /// told free, with no round trip (see `pathcache`, `numbers`). False: it goes home.
    fn open_kept(
        &mut self,
        id: u64,
        key: &Key,
        path: &str,
        flags: u64,
        session: &mut Session,
        listener: &Listener,
    ) -> io::Result<bool> {
        let Some(home) = self.paths.opened(key) else {
            return Ok(false);
        };
        if self.numbers.lowest().is_none() {
            return Ok(false);
        }
        let here = match Candidate::open(path, flags) {
            Ok(here) if here.same == *home => here,
            _ => {
                self.paths.differs(key);
                return Ok(false);
            }
        };
        let away = Away {
            file: &here.file,
            cloexec: flags & libc::O_CLOEXEC as u64 != 0,
            home: (path, flags),
        };
        Ok(match self.place(id, away, session, listener)? {
            Placed::At(fd) => {
                let SameAs { digest, path } = here.same;
                self.local.opened(fd, path, Some(digest));
                true
            }
            Placed::Gone => true,
            Placed::No => false,
        })
    }

    /// The process leaves: home's shell must follow the opens and closes made here first
    /// (see `numbers`); home answers each (`on_stray_reply`).
    pub fn ask_follow(&mut self, session: &mut Session) -> io::Result<()> {
        if self.unfollowed.is_empty() {
            return Ok(());
        }
        session.send(&ToHome::Follow)
    }

    /// Whether an open or close made here waits for home's shell to follow it.
    pub fn follows_owed(&self) -> bool {
        !self.unfollowed.is_empty()
    }

    /// Home's answer to no call the process waits for: an open or close made here that
    /// home's shell followed, or an answer to a call a signal interrupted meanwhile.
    pub fn on_stray_reply(&mut self, id: u64, ret: i64) {
        if self.unfollowed.remove(&id) && ret < 0 {
            warn!(
                errno = -ret,
                "home's shell could not follow a file opened or closed here"
            );
        }
    }

    /// What the process has used in all, wherever it ran.
    fn usage(&self) -> io::Result<Usage> {
        Ok(self.arrived.total.plus(&cputime::used_by(self.pid)?))
    }

    /// Act on trapped call `id`: ship it home, answer it, or say it needs home.
    /// `nothing_behind`: no write waits behind, which a lookup's answer kept here could not
    /// reflect.
    pub fn trap(
        &mut self,
        id: u64,
        nr: i64,
        args: [u64; 6],
        nothing_behind: bool,
        session: &mut Session,
        listener: &Listener,
    ) -> io::Result<Trapped> {
        if let Some(trapped) = self.trap_read(id, nr, args, session, listener)? {
            return Ok(trapped);
        }
        if let Some(trapped) = self.trap_lent(id, nr, args, session, listener)? {
            return Ok(trapped);
        }
        self.before_other_call(nr, &args, session)?;
        let terminal = Terminals::asks(nr, &args);
        if let Some(fd) = terminal
            && self.terminals.not.contains(&fd)
        {
            return Ok(self.answer(listener, id, -i64::from(libc::ENOTTY)));
        }
        if matches!(nr, libc::SYS_chdir | libc::SYS_fchdir) {
            self.paths.forget_cwd();
        }
        let changes_numbers = !numbers::leaves_numbers(nr);
        if changes_numbers {
            self.numbers.stale();
        }
        if changes_numbers && terminal.is_none() {
            self.terminals.not.clear();
        }
        self.terminals.asked = terminal.map(|fd| (id, fd));
        let shipped = match table::route(nr, &args) {
            Route::Forward(_) if nr == libc::SYS_times => {
                // Home's children's times, with the process's own put in on the way back.
                call_home(session, id, nr, args, &[])?;
                Ok(Ok(Pending::Times { id, at: args[0] }))
            }
            // The process's own limits, as home's: read here, no round trip.
            Route::Forward(_) if self.limits_as_home && limits::reads_own(nr, &args) => {
                let_run(listener, id);
                return Ok(Trapped::Answered);
            }
            // The process's own nice value (`nice(3)`) and limits: home's shell keeps them
            // for a return, and the remote runs with them (see `sched`, `limits`). Another
            // process's are home's alone.
            Route::Forward(row)
                if nr == libc::SYS_rt_sigprocmask
                    || limits::sets_own(nr, &args)
                    || (nr == libc::SYS_setpriority
                        && args[0] == libc::PRIO_PROCESS as u64
                        && args[1] == 0) =>
            {
                self.forward(id, nr, args, row.args, Asking::default(), session)
                    .map(|shipped| shipped.map(|_| Pending::Mirror { id }))
            }
            Route::Forward(row) => {
                let key = self.lookup_key(nr, &args).filter(|_| nothing_behind);
                if let Some(Keyed { key, .. }) = &key
                    && self.answer_kept(listener, id, key, &args)
                {
                    return Ok(Trapped::Answered);
                }
                let asking = Asking {
                    same: false,
                    vouch: key.is_some(),
                    numbers: changes_numbers && self.wants_numbers(),
                    lend: key.is_none() && readahead::lends_at_open(nr, &args),
                };
                let shipped = self.forward(id, nr, args, row.args, asking, session)?;
                if let (Some(key), Ok(_)) = (key, &shipped) {
                    self.paths.asked(id, key, args);
                }
                Ok(shipped)
            }
            Route::CpuTime => {
                let usage = self.usage()?;
                let (ret, writes) = cputime::answer(nr, &args, &usage)
                    .unwrap_or((-i64::from(libc::ENOSYS), Vec::new()));
                for (at, bytes) in &writes {
                    if self.mem.write(*at, bytes).is_err() {
                        return Ok(self.answer(listener, id, -i64::from(libc::EFAULT)));
                    }
                }
                return Ok(self.answer(listener, id, ret));
            }
            Route::Vector => self.forward_vector(id, nr, args, session),
            Route::Message => self.forward_message(id, nr, args, session),
            Route::Batch => {
                let deadline = match (nr, args[4]) {
                    (libc::SYS_recvmmsg, ts) if ts != 0 => match self.mem.read_words(ts, 2) {
                        Ok(t) => Some(
                            std::time::Instant::now()
                                + std::time::Duration::new(t[0], t[1].min(999_999_999) as u32),
                        ),
                        Err(_) => return Ok(self.answer(listener, id, -i64::from(libc::EFAULT))),
                    },
                    _ => None,
                };
                let batch = Batch { nr, args, deadline };
                return self.forward_batch(id, batch, 0, session, listener);
            }
            Route::MmapFile => {
                let shared = args[3] & libc::MAP_SHARED as u64 != 0;
                if shared && args[2] & libc::PROT_WRITE as u64 != 0 {
                    let what = "shared writable file mapping".to_owned();
                    return Ok(Trapped::GoHome { what });
                }
                let len = args[1].next_multiple_of(4096);
                if len > MAX_BUF {
                    // Larger mappings of home files are not copied: the process goes home.
                    let what = format!("mmap of {len} bytes of a home file");
                    return Ok(Trapped::GoHome { what });
                }
                let call = [args[4], UNPLACED, len, args[5], 0, 0];
                call_home(session, id, libc::SYS_pread64, call, &[])?;
                Ok(Ok(Pending::Map {
                    id,
                    addr: args[0],
                    len,
                    prot: args[2],
                    flags: args[3],
                }))
            }
            Route::Exit => {
                call_home(session, id, libc::SYS_exit_group, args, &[])?;
                Ok(Ok(Pending::Exit { id }))
            }
            Route::Home => {
                let what = match nr {
                    // The kernel reads the request as an unsigned int.
                    libc::SYS_ioctl => format!("ioctl request {:#x}", args[1] as u32),
                    _ => format!("system call {nr}"),
                };
                return Ok(Trapped::GoHome { what });
            }
            Route::Continue => {
                let_run(listener, id);
                return Ok(Trapped::Answered);
            }
            // The filter lets these through; a notification for one means it changed under us.
            Route::Local => Ok(Err(libc::ENOSYS)),
        }?;
        Ok(match shipped {
            Ok(pending) => Trapped::Shipped(pending),
            Err(errno) => {
                respond(listener, id, -i64::from(errno));
                Trapped::Answered
            }
        })
    }

    /// read, readv and pread64 of a descriptor whose bytes home may lend: served here from
    /// bytes held, or asked of home (`ToHome::Read`). None: an ordinary call (a descriptor
    /// home does not lend, a bad iovec array or offset, which the call reports as usual).
    fn trap_read(
        &mut self,
        id: u64,
        nr: i64,
        args: [u64; 6],
        session: &mut Session,
        listener: &Listener,
    ) -> io::Result<Option<Trapped>> {
        let (fd, at) = match nr {
            libc::SYS_read | libc::SYS_readv => (args[0] as i32, None),
            libc::SYS_pread64 if i64::try_from(args[3]).is_ok() => (args[0] as i32, Some(args[3])),
            _ => return Ok(None),
        };
        let iov = if nr == libc::SYS_readv {
            match self.read_iovecs(args[1], args[2]) {
                Ok(iov) => iov,
                Err(_) => return Ok(None),
            }
        } else {
            vec![(args[1], args[2].min(MAX_BUF))]
        };
        let count = iov.iter().map(|&(_, len)| len).sum();
        match self.reads.lookup(fd, at, count) {
            Lookup::Call => Ok(None),
            Lookup::Here(bytes) => {
                let ret = self.deliver(fd, at, &iov, &bytes);
                Ok(Some(self.answer(listener, id, ret)))
            }
            Lookup::Ask { from, ahead } => {
                self.settle(session)?;
                let buf = args[1];
                session.send(&ToHome::Read(ReadAsk {
                    id,
                    fd,
                    buf,
                    count,
                    at,
                    from,
                    ahead,
                }))?;
                Ok(Some(Trapped::Shipped(Pending::Read { id, fd, at, iov })))
            }
        }
    }

    /// `fstat` of a file home lent ahead at its open, answered from the status it lent; its
    /// `close`, answered at once while the close itself goes home without waiting (see
    /// `readahead`, "Opens lent ahead"). None: an ordinary call.
    fn trap_lent(
        &mut self,
        id: u64,
        nr: i64,
        args: [u64; 6],
        session: &mut Session,
        listener: &Listener,
    ) -> io::Result<Option<Trapped>> {
        let fd = args[0] as i32;
        let (fstat_into, empty_path) = match nr {
            libc::SYS_fstat => (Some(args[1]), true),
            libc::SYS_newfstatat if args[3] & libc::AT_EMPTY_PATH as u64 != 0 => {
                let path = self.mem.read_vec(args[1], 1);
                (Some(args[2]), path.is_ok_and(|first| first == [0]))
            }
            _ => (None, false),
        };
        if let (Some(buf), true) = (fstat_into, empty_path) {
            let Some(status) = self.reads.status(fd) else {
                return Ok(None);
            };
            let ret = match self.mem.write(buf, &status) {
                Ok(()) => 0,
                Err(_) => -i64::from(libc::EFAULT),
            };
            return Ok(Some(self.answer(listener, id, ret)));
        }
        if nr != libc::SYS_close || !self.reads.closes_behind(fd) {
            return Ok(None);
        }
        // What reads here consumed goes first, then the close, which home runs before any
        // later call of the process, whatever moves are asked for; its answer is awaited by
        // nothing but a move.
        self.before_other_call(nr, &args, session)?;
        session.send(&ToHome::CloseBehind { id, fd })?;
        self.unfollowed.insert(id);
        self.numbers.freed(fd);
        Ok(Some(self.answer(listener, id, 0)))
    }

    /// Scatter the bytes a read of `fd` gets into `iov`; a `read` moves the offset on. Its
    /// result.
    fn deliver(&mut self, fd: i32, at: Option<u64>, iov: &[(u64, u64)], bytes: &[u8]) -> i64 {
        if self.scatter(iov, bytes).is_err() {
            return -i64::from(libc::EFAULT);
        }
        if at.is_none() {
            self.reads.consumed(fd, bytes.len() as u64);
        }
        bytes.len() as i64
    }

    /// Home lent bytes of the file for the `Pending::Read` that is `pending` (see
    /// `ToGuest::Filled`). Answer the read from them.
    pub fn on_filled(
        &mut self,
        pending: Pending,
        loan: Loan,
        listener: &Listener,
    ) -> io::Result<()> {
        let Pending::Read { id, fd, at, iov } = pending else {
            return Err(io::Error::other(
                "home lent bytes for a call that is no read",
            ));
        };
        // A pread's loan may begin before its offset (an aligned chunk), a read's where it
        // reads.
        if at.is_some_and(|at| at < loan.start || at - loan.start >= MAX_BUF) {
            return Err(io::Error::other("home lent bytes from another offset"));
        }
        let count = iov.iter().map(|&(_, len)| len).sum();
        let read = self.reads.filled(fd, at, count, loan);
        let ret = self.deliver(fd, at, &iov, &read);
        respond(listener, id, ret);
        Ok(())
    }

    /// Home says the files of `fds` changed (`ToGuest::Stale`): a change told after a loan
    /// ahead of an open's answer and before the answer drops what it lent too.
    pub fn stale(&mut self, fds: &[i32]) {
        self.reads.stale(fds);
        if let Some(lent) = self.lent.as_mut()
            && fds.contains(&lent.fd)
        {
            lent.loan.keep = false;
        }
    }

    /// The process leaves (its image goes home): home's offsets count every read served
    /// here, and nothing lent is kept.
    pub fn leave(&mut self, session: &mut Session) -> io::Result<()> {
        self.settle(session)?;
        self.reads.clear();
        session.out.flush()
    }

    /// Call `nr` is not a read served from lent bytes: home's offsets must count what reads
    /// served here consumed before anything else reaches home, and what the call may change
    /// of the descriptors it names is forgotten (see `readahead`). A call answered here
    /// instead of at home (a write kept here) must pass this point too, and drop every byte
    /// held (`ReadCache::clear`), as no watch at home sees it.
    fn before_other_call(
        &mut self,
        nr: i64,
        args: &[u64; 6],
        session: &mut Session,
    ) -> io::Result<()> {
        self.settle(session)?;
        self.reads.before_call(nr, args);
        Ok(())
    }

    /// Tell home what reads served here consumed (`ToHome::Consumed`), ahead of whatever
    /// goes home next, which flushes it.
    fn settle(&mut self, session: &mut Session) -> io::Result<()> {
        for (fd, bytes) in self.reads.settle() {
            write_message(&mut session.out, &ToHome::Consumed { fd, bytes })?;
        }
        Ok(())
    }

    /// Read the buffers of a forwarded call from the remote and send the call home. Inner
    /// error: the call fails here with that errno.
    fn forward(
        &self,
        id: u64,
        nr: i64,
        mut args: [u64; 6],
        spec: &'static [Arg],
        asking: Asking,
        session: &mut Session,
    ) -> io::Result<Result<Pending, i32>> {
        let row = table::Row {
            args: spec,
            on_copy: false,
        };
        // Lengths first: a length argument over MAX_BUF is shortened in `args`, and home
        // must see the arguments the buffers were read with.
        let mut lens = Vec::new();
        for buf in row.buffers(&args) {
            let len = match buf.kind {
                Arg::In(len) | Arg::Out(len, _) | Arg::InOut(len) => {
                    match self.length(len, &mut args) {
                        Ok(n) => n,
                        Err(errno) => return Ok(Err(errno)),
                    }
                }
                _ => 0,
            };
            lens.push(len);
        }
        let mut data = Vec::new();
        // The mask the call waits with, if it has one (see `Pending::Masked`).
        let mut wait_mask = None;
        for (buf, len) in row.buffers(&args).zip(lens) {
            let ptr = args[buf.arg];
            let read = match buf.kind {
                Arg::Path => self
                    .mem
                    .read_cstr(ptr, PATH_MAX as usize - 1)
                    .map(|mut path| {
                        path.push(0);
                        path
                    }),
                Arg::In(_) | Arg::InOut(_) => self.mem.read_vec(ptr, len as usize),
                Arg::Sigmask => self.mem.read_vec(ptr, table::SIGSET as usize),
                Arg::SigsetPair => match self.mem.read_words(ptr, 2) {
                    Ok(pair) if pair[0] == 0 => Ok(Vec::new()),
                    Ok(pair) if pair[1] != table::SIGSET => return Ok(Err(libc::EINVAL)),
                    Ok(pair) => self.mem.read_vec(pair[0], table::SIGSET as usize),
                    Err(err) => Err(err),
                },
                _ => continue,
            };
            match read {
                Ok(bytes) => {
                    if matches!(buf.kind, Arg::Sigmask | Arg::SigsetPair) && bytes.len() == 8 {
                        wait_mask = Some(le_u64(&bytes, 0));
                    }
                    data.push((ptr, bytes))
                }
                Err(err) if err.raw_os_error() == Some(libc::ENAMETOOLONG) => {
                    return Ok(Err(libc::ENAMETOOLONG));
                }
                Err(_) => return Ok(Err(libc::EFAULT)),
            }
        }
        send_call(session, id, nr, args, &data, asking)?;
        Ok(Ok(match wait_mask {
            Some(mask) => Pending::Masked { id, mask },
            None => Pending::Plain { id },
        }))
    }

    /// Length of a buffer; a length argument above MAX_BUF is lowered to it (a short read or
    /// write, which callers must handle anyway). Others over it fail with EINVAL, as home
    /// would refuse them.
    fn length(&self, len: Len, args: &mut [u64; 6]) -> Result<u64, i32> {
        let n = match len {
            Len::Arg(i) => {
                args[i] = args[i].min(MAX_BUF);
                args[i]
            }
            Len::ArgTimes(i, size) => args[i].saturating_mul(size),
            Len::Fixed(n) => n,
            Len::DerefU32(i) | Len::DerefU32Times(i, _) if args[i] == 0 => 0,
            Len::DerefU32(i) => {
                let raw = self.mem.read_vec(args[i], 4).map_err(|_| libc::EFAULT)?;
                u64::from(le_u32(&raw, 0))
            }
            Len::DerefU32Times(i, size) => {
                let raw = self.mem.read_vec(args[i], 4).map_err(|_| libc::EFAULT)?;
                u64::from(le_u32(&raw, 0)).saturating_mul(size)
            }
            Len::FdSet => table::fd_set_len(args[0]).unwrap_or(u64::MAX),
        };
        if n > MAX_BUF {
            Err(libc::EINVAL)
        } else {
            Ok(n)
        }
    }

    /// The bytes call `nr` would write if it is a write, a writev or a send without flags
    /// or address (which is a write, on a stream socket), and they can be read; for
    /// write-behind (see `writebehind`).
    pub fn written_bytes(&self, nr: i64, args: &[u64; 6]) -> Option<Vec<u8>> {
        let plain = match nr {
            libc::SYS_write => true,
            libc::SYS_sendto => args[3] == 0 && args[4] == 0,
            libc::SYS_writev => {
                let iov = self.read_iovecs(args[1], args[2]).ok()?;
                return self.gather(&iov).ok();
            }
            _ => false,
        };
        if !plain || args[2] > MAX_BUF {
            return None;
        }
        self.mem.read_vec(args[1], args[2] as usize).ok()
    }

    /// readv/writev go home as one read/write of the gathered buffer.
    fn forward_vector(
        &self,
        id: u64,
        nr: i64,
        args: [u64; 6],
        session: &mut Session,
    ) -> io::Result<Result<Pending, i32>> {
        let iov = match self.read_iovecs(args[1], args[2]) {
            Ok(iov) => iov,
            // readv and writev say EINVAL where sendmsg says EMSGSIZE.
            Err(libc::EMSGSIZE) => return Ok(Err(libc::EINVAL)),
            Err(errno) => return Ok(Err(errno)),
        };
        let total: u64 = iov.iter().map(|&(_, len)| len).sum();
        // The iovec array's address stands for the buffer: home lays one out for it.
        let call = [args[0], args[1], total, 0, 0, 0];
        if nr == libc::SYS_writev {
            let gathered = match self.gather(&iov) {
                Ok(gathered) => gathered,
                Err(errno) => return Ok(Err(errno)),
            };
            call_home(session, id, libc::SYS_write, call, &[(args[1], gathered)])?;
            Ok(Ok(Pending::Plain { id }))
        } else {
            call_home(session, id, libc::SYS_read, call, &[])?;
            Ok(Ok(Pending::Scatter { id, iov }))
        }
    }

    /// sendmsg/recvmsg go home with their msghdr and the buffers it points to, the data's
    /// length in argument 3 (see `msg`).
    fn forward_message(
        &self,
        id: u64,
        nr: i64,
        mut args: [u64; 6],
        session: &mut Session,
    ) -> io::Result<Result<Pending, i32>> {
        let Ok(raw) = self.mem.read_vec(args[1], msg::HDR_LEN as usize) else {
            return Ok(Err(libc::EFAULT));
        };
        let Some(hdr) = msg::MsgHdr::parse(&raw) else {
            return Ok(Err(libc::EFAULT));
        };
        let iov = match self.read_iovecs(hdr.iov, hdr.iovlen) {
            Ok(iov) => iov,
            Err(errno) => return Ok(Err(errno)),
        };
        let name_len = if hdr.name == 0 {
            0
        } else {
            u64::from(hdr.namelen)
        };
        let control_len = if hdr.control == 0 { 0 } else { hdr.controllen };
        if name_len > MAX_BUF || control_len > MAX_BUF {
            return Ok(Err(libc::EINVAL));
        }
        args[msg::DATA_LEN_ARG] = iov.iter().map(|&(_, len)| len).sum();
        let mut data = vec![(args[1], raw)];
        let sending = nr == libc::SYS_sendmsg;
        if sending {
            let read = |addr, len: u64| self.mem.read_vec(addr, len as usize);
            let name = read(hdr.name, name_len);
            let gathered = self.gather(&iov);
            let control = read(hdr.control, control_len);
            let (Ok(name), Ok(gathered), Ok(control)) = (name, gathered, control) else {
                return Ok(Err(libc::EFAULT));
            };
            data.extend([
                (hdr.name, name),
                (hdr.iov, gathered),
                (hdr.control, control),
            ]);
        }
        call_home(session, id, nr, args, &data)?;
        Ok(Ok(if sending {
            Pending::Plain { id }
        } else {
            Pending::Message {
                id,
                iov_at: hdr.iov,
                iov,
            }
        }))
    }

    /// sendmmsg/recvmmsg: ship message `done` of the array as a sendmsg/recvmsg, or answer
    /// the call once all `vlen` went, or a recvmmsg's timeout has passed (see `msg`).
    fn forward_batch(
        &self,
        id: u64,
        batch: Batch,
        done: u64,
        session: &mut Session,
        listener: &Listener,
    ) -> io::Result<Trapped> {
        let late = batch
            .deadline
            .is_some_and(|deadline| done > 0 && std::time::Instant::now() >= deadline);
        if done == batch.args[2].min(msg::MAX_BATCH) || late {
            return Ok(self.end_batch(listener, id, &batch, done as i64));
        }
        let at = batch.args[1] + done * msg::MMSGHDR_LEN;
        let one = [batch.args[0], at, batch.flags(done), 0, 0, 0];
        let nr = if batch.receiving() {
            libc::SYS_recvmsg
        } else {
            libc::SYS_sendmsg
        };
        match self.forward_message(id, nr, one, session)? {
            Ok(one) => Ok(Trapped::Shipped(Pending::Batch {
                id,
                batch,
                done,
                one: Box::new(one),
            })),
            // The messages that went are the call's result; the error waits for the next.
            Err(_) if done > 0 => Ok(self.end_batch(listener, id, &batch, done as i64)),
            Err(errno) => Ok(self.answer(listener, id, -i64::from(errno))),
        }
    }

    /// Answer a batch with `val`; a recvmmsg with a timeout gets what is left of it back, as
    /// the kernel writes it.
    fn end_batch(&self, listener: &Listener, id: u64, batch: &Batch, val: i64) -> Trapped {
        if let Some(deadline) = batch.deadline {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let mut timespec = [0u8; 16];
            timespec[..8].copy_from_slice(&left.as_secs().to_le_bytes());
            timespec[8..].copy_from_slice(&u64::from(left.subsec_nanos()).to_le_bytes());
            if self.mem.write(batch.args[4], &timespec).is_err() {
                return self.answer(listener, id, -i64::from(libc::EFAULT));
            }
        }
        self.answer(listener, id, val)
    }

    /// Answer notification `id` with `val` here.
    fn answer(&self, listener: &Listener, id: u64, val: i64) -> Trapped {
        respond(listener, id, val);
        Trapped::Answered
    }

    /// Home answered `pending` with `ret` and these out-buffers. `leaving`: the process is
    /// about to go, so a sendmmsg stops at the messages sent so far.
    pub fn on_reply(
        &mut self,
        pending: Pending,
        ret: i64,
        backs: Vec<(u64, Vec<u8>)>,
        leaving: bool,
        session: &mut Session,
        listener: &Listener,
    ) -> io::Result<Replied> {
        if let Pending::Read { fd, .. } = pending {
            // Home ran the read as a call: it does not lend this descriptor's bytes.
            self.reads.refused(fd);
        }
        if let Some((_, free)) = self.numbered.take_if(|(told, _)| *told == pending.id()) {
            self.numbers.told(free);
        }
        if let Some((_, fd)) = self
            .terminals
            .asked
            .take_if(|(asked, _)| *asked == pending.id())
            && ret == -i64::from(libc::ENOTTY)
        {
            self.terminals.not.insert(fd);
        }
        // What home lent ahead of another call's answer was for one a signal interrupted.
        if let Some(lent) = self.lent.take()
            && lent.id == pending.id()
            && i64::from(lent.fd) == ret
        {
            self.reads.opened(lent.fd, lent.status, lent.loan);
        }
        match pending {
            Pending::Masked { id, mask } if crate::sys::is_restart(ret) => {
                return Ok(Replied::Interrupted { id, ret, mask });
            }
            Pending::Plain { id } | Pending::Masked { id, .. } => {
                self.paths.replied(id, ret, &backs, None);
                for (addr, bytes) in &backs {
                    self.mem.write(*addr, bytes)?;
                }
                respond(listener, id, ret);
            }
            Pending::Scatter { id, iov } | Pending::Read { id, iov, .. } => {
                let bytes = backs.first().map(|d| d.1.as_slice()).unwrap_or(&[]);
                self.scatter(&iov, bytes)?;
                respond(listener, id, ret);
            }
            Pending::Message { id, iov_at, iov } => {
                self.write_message_backs(iov_at, &iov, &backs)?;
                respond(listener, id, ret);
            }
            Pending::Batch { id, done, .. } if ret < 0 => {
                respond(listener, id, if done > 0 { done as i64 } else { ret });
            }
            Pending::Batch {
                id,
                batch,
                done,
                one,
            } => {
                if let Pending::Message { iov_at, iov, .. } = *one {
                    self.write_message_backs(iov_at, &iov, &backs)?;
                }
                let msg_len = batch.args[1] + done * msg::MMSGHDR_LEN + msg::HDR_LEN;
                self.mem.write(msg_len, &(ret as u32).to_le_bytes())?;
                if leaving {
                    // Going away: the messages that went so far are the call's result.
                    respond(listener, id, done as i64 + 1);
                } else {
                    return match self.forward_batch(id, batch, done + 1, session, listener)? {
                        Trapped::Shipped(next) => Ok(Replied::Again(next)),
                        _ => Ok(Replied::Done),
                    };
                }
            }
            Pending::Map { id, .. } if ret < 0 => respond(listener, id, ret),
            Pending::Map {
                id,
                addr,
                len,
                prot,
                flags,
            } => {
                let bytes = backs.into_iter().next().map(|d| d.1).unwrap_or_default();
                return Ok(Replied::Map {
                    id,
                    addr,
                    len,
                    prot,
                    flags,
                    bytes,
                });
            }
            // exit_group came back: a signal stopped the shell before it ran there, and the
            // answer is a restart code. The remote takes the signal, then exits again.
            Pending::Exit { id } => respond(listener, id, ret),
            Pending::Open { id, .. } | Pending::Dup { id, .. } if ret < 0 => {
                respond(listener, id, ret)
            }
            Pending::Dup {
                id,
                file,
                source,
                cloexec,
            } => {
                let fd = ret as i32;
                match listener.answer_with_file(id, self.pid, &file, fd, cloexec) {
                    Ok(()) => self.local.duplicated(source, fd),
                    // As for an open; a number that held a file here holds it still, and
                    // home's placeholder under it stands for it as before.
                    Err(err) => {
                        fail_unplaced(listener, id, &err);
                        if !self.local.holds(fd) {
                            self.release(id, fd, session)?;
                        }
                    }
                }
            }
            Pending::Open {
                id,
                file,
                cloexec,
                path,
            } => {
                let fd = ret as i32;
                match listener.answer_with_file(id, self.pid, &file, fd, cloexec) {
                    Ok(()) => self.local.opened(fd, path, None),
                    Err(err) => {
                        // The placeholder goes.
                        fail_unplaced(listener, id, &err);
                        self.release(id, fd, session)?;
                    }
                }
            }
            Pending::System { id, here, cloexec } => {
                let said = self.said.take().filter(|(said, _)| *said == id);
                let same = match (&here, &said) {
                    (Some(here), Some((_, home))) if ret >= 0 => here.same == *home,
                    _ => false,
                };
                let opened = said.as_ref().map(|(_, home)| home).filter(|_| same);
                self.paths.replied(id, ret, &backs, opened);
                let Some(here) = here.filter(|_| same) else {
                    // Home's file is the answer: the file differs here, or is not here.
                    respond(listener, id, ret);
                    return Ok(Replied::Done);
                };
                let fd = ret as i32;
                match listener.answer_with_file(id, self.pid, &here.file, fd, cloexec) {
                    Ok(()) => self
                        .local
                        .opened(fd, here.same.path, Some(here.same.digest)),
                    // The call is gone (a signal ended it): home's descriptor goes too.
                    Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {
                        self.release(id, fd, session)?
                    }
                    // It could not go in here (the descriptor limit): home's serves.
                    Err(_) => respond(listener, id, ret),
                }
            }
            Pending::Mirror { id } if ret < 0 => respond(listener, id, ret),
            Pending::Mirror { id } => let_run(listener, id),
            Pending::Times { id, at } => {
                let home = backs.first().map_or(&[][..], |(_, bytes)| bytes.as_slice());
                if ret >= 0 && at != 0 {
                    self.mem.write(at, &cputime::tms(&self.usage()?, home))?;
                }
                respond(listener, id, ret);
            }
        }
        Ok(Replied::Done)
    }

    /// What a recvmsg filled, into the remote's buffers: the data, which comes addressed to
    /// the iovec array at `iov_at`, scattered over `iov`; the rest where it is addressed.
    fn write_message_backs(
        &self,
        iov_at: u64,
        iov: &[(u64, u64)],
        backs: &[(u64, Vec<u8>)],
    ) -> io::Result<()> {
        for (addr, bytes) in backs {
            if *addr == iov_at {
                self.scatter(iov, bytes)?;
            } else {
                self.mem.write(*addr, bytes)?;
            }
        }
        Ok(())
    }

    /// Write `bytes` across the remote buffers `iov`, in order.
    fn scatter(&self, iov: &[(u64, u64)], bytes: &[u8]) -> io::Result<()> {
        let mut at = 0usize;
        for &(base, len) in iov {
            let n = (len as usize).min(bytes.len() - at);
            self.mem.write(base, &bytes[at..at + n])?;
            at += n;
        }
        Ok(())
    }

    /// The remote's iovec array of `count` entries at `addr`, as (base, length), the lengths
    /// cut so that they add up to at most MAX_BUF (a short transfer, as callers expect).
    fn read_iovecs(&self, addr: u64, count: u64) -> Result<Vec<(u64, u64)>, i32> {
        // UIO_MAXIOV: Linux refuses more with EMSGSIZE (sendmsg) or EINVAL (readv).
        if count > 1024 {
            return Err(libc::EMSGSIZE);
        }
        let words = self
            .mem
            .read_words(addr, count as usize * 2)
            .map_err(|_| libc::EFAULT)?;
        let mut total = 0u64;
        Ok(words
            .chunks_exact(2)
            .map(|iovec| {
                let len = iovec[1].min(MAX_BUF - total);
                total += len;
                (iovec[0], len)
            })
            .collect())
    }

    /// The remote's buffers `iov`, gathered into one.
    fn gather(&self, iov: &[(u64, u64)]) -> Result<Vec<u8>, i32> {
        let mut gathered = Vec::new();
        for &(base, len) in iov {
            let bytes = self
                .mem
                .read_vec(base, len as usize)
                .map_err(|_| libc::EFAULT)?;
            gathered.extend_from_slice(&bytes);
        }
        Ok(gathered)
    }
}

/// A file home gave a number for could not go into the process for call `id` (`err`): the
/// call is gone (a signal ended it: ENOENT), or it fails with why (the process's descriptor
/// limit here).
fn fail_unplaced(listener: &Listener, id: u64, err: &io::Error) {
    if err.raw_os_error() != Some(libc::ENOENT) {
        let errno = err.raw_os_error().unwrap_or(libc::EMFILE);
        respond(listener, id, -i64::from(errno));
    }
}

/// Send call `id` home with the buffers it reads, each with the remote address it came from.
fn call_home(
    session: &mut Session,
    id: u64,
    nr: i64,
    args: [u64; 6],
    data: &[(u64, Vec<u8>)],
) -> io::Result<()> {
    send_call(session, id, nr, args, data, Asking::default())
}

/// The same, `asking` what home says besides the answer: what a system open opened
/// (`ToGuest::Same`), a vouch for a lookup's answer (`ToGuest::Vouched`), the free numbers
/// (`ToGuest::Numbers`).
fn send_call(
    session: &mut Session,
    id: u64,
    nr: i64,
    args: [u64; 6],
    data: &[(u64, Vec<u8>)],
    asking: Asking,
) -> io::Result<()> {
    let call = call_message(id, nr, args, data.len() as u32, asking);
    write_message(&mut session.out, &call)?;
    for (addr, bytes) in data {
        write_pages(&mut session.out, *addr, bytes)?;
    }
    session.out.flush()
}

/// The message of call `id`, which `sends` buffers follow.
fn call_message(id: u64, nr: i64, args: [u64; 6], sends: u32, asking: Asking) -> ToHome {
    ToHome::Call {
        id,
        nr,
        args,
        sends,
        same: asking.same,
        vouch: asking.vouch,
        numbers: asking.numbers,
        lend: asking.lend,
    }
}

/// Answer notification `id`: the call returns `val` (a negative errno on failure).
pub fn respond(listener: &Listener, id: u64, val: i64) {
    // ENOENT: a signal interrupted the call meanwhile and the kernel dropped it; it will be
    // restarted or fail with EINTR as Linux decides.
    if let Err(err) = listener.respond(id, val)
        && err.raw_os_error() != Some(libc::ENOENT)
    {
        warn!(%err, "cannot answer a trapped call");
    }
}

/// Let notification `id`'s call go on in the process.
fn let_run(listener: &Listener, id: u64) {
    // ENOENT: as for `respond`.
    if let Err(err) = listener.let_run(id)
        && err.raw_os_error() != Some(libc::ENOENT)
    {
        warn!(%err, "cannot let a trapped call run");
    }
}

//! The guest supervisor: runs on the target node, restores an image into a husk, and serves the
//! remote: forwards its environment calls home, delivers the signals home sends, sends it home
//! when it makes a call that must run there.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use rmosix_image::{Frame, FrameReader, write_message, write_pages};
use tracing::{debug, info, warn};

use crate::dump;
use crate::inject::Injector;
use crate::mem::{Memory, le_u32};
use crate::msg;
use crate::ptrace::{self, Pid, Stop};
use crate::seccomp::{self, Listener};
use crate::session::{Back, Backs, BufSpec, Channel, SessionRead, ToGuest, ToHome};
use crate::syscalls::{self, Arg, Len, Route, Valid};
use crate::throttle::Duty;
use crate::track::Tracker;
use crate::{facts, restore, spawn, sys};

/// Largest buffer one forwarded call moves; larger reads and writes are shortened, which
/// read(2) and write(2) allow.
pub const MAX_BUF: u64 = 4 << 20;
const PATH_MAX: usize = 4096;

/// Serve one guest session on `stream` until the remote leaves.
pub fn serve_guest(channel: Channel) -> io::Result<()> {
    let facts = facts::probe()?;
    let mut frames = FrameReader::new(channel.reader);
    let mut out = channel.writer;
    let ToGuest::Hello { facts: home } = frames.message().map_err(io::Error::other)? else {
        return Err(io::Error::other("session did not start with Hello"));
    };
    if let Some(reason) = home.incompatibility(&facts) {
        send(
            &mut out,
            &ToHome::Refused {
                reason: reason.clone(),
            },
        )?;
        info!(%reason, "refused a process");
        return Ok(());
    }
    send(&mut out, &ToHome::Ready)?;
    let husk = spawn::spawn_husk(false)?;
    let restored = receive(husk, &mut frames, &mut out)
        .and_then(|inj| seccomp::install(husk, &inj).map(|l| (inj, l)));
    let (inj, listener) = match restored {
        Ok(done) => done,
        Err(err) => {
            kill(husk);
            send(
                &mut out,
                &ToHome::Failed {
                    reason: err.to_string(),
                },
            )?;
            return Err(err);
        }
    };
    let sigchld = SigChld::new()?;
    ptrace::cont(husk, 0)?;
    send(&mut out, &ToHome::Running)?;
    info!(pid = husk, "remote running");
    let mut guest = Guest {
        husk,
        inj,
        mem: Memory::open(husk)?,
        listener,
        frames,
        out,
        pending: None,
        leaving: false,
    };
    let result = guest.serve(&sigchld);
    kill(husk);
    result
}

/// Restore the image that follows `Ready` into `husk`: whole, or in the two rounds of a
/// pre-copy.
fn receive(
    husk: Pid,
    frames: &mut FrameReader<Box<dyn SessionRead>>,
    out: &mut impl Write,
) -> io::Result<crate::inject::Injector> {
    match frames.message::<ToGuest>().map_err(io::Error::other)? {
        ToGuest::Image => {
            let header = restore::read_header(frames)?;
            restore::restore_into(husk, &header, frames)
        }
        ToGuest::Precopy { areas } => {
            let inj = restore::restore_first_round(husk, &areas, frames)?;
            send(out, &ToHome::Prepared)?;
            let header = restore::read_header(frames)?;
            restore::restore_final_round(husk, &inj, &areas, &header, frames)?;
            Ok(inj)
        }
        other => Err(io::Error::other(format!(
            "expected an image, got {other:?}"
        ))),
    }
}

fn send(out: &mut impl Write, msg: &ToHome) -> io::Result<()> {
    write_message(out, msg)?;
    out.flush()
}

fn kill(pid: Pid) {
    // SAFETY: plain kill of our own tracee; it may already be gone.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = ptrace::wait(pid, 0);
}

/// The forwarded call the remote waits on.
enum Pending {
    /// A call whose buffers come back to where they were.
    Plain { id: u64 },
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
    /// sendmmsg: message `done` of the array at `args[1]` went home as a sendmsg.
    Batch { id: u64, args: [u64; 6], done: u64 },
    /// exit: the process ends at home.
    Exit { id: u64 },
}

impl Pending {
    /// The notification the call came from.
    fn id(&self) -> u64 {
        match *self {
            Pending::Plain { id }
            | Pending::Scatter { id, .. }
            | Pending::Message { id, .. }
            | Pending::Batch { id, .. }
            | Pending::Map { id, .. }
            | Pending::Exit { id } => id,
        }
    }
}

struct Guest {
    husk: Pid,
    inj: Injector,
    mem: Memory,
    listener: Listener,
    frames: FrameReader<Box<dyn SessionRead>>,
    out: Box<dyn Write + Send>,
    pending: Option<Pending>,
    /// Home asked us to send the process away while a call was in flight: go once its answer
    /// is in, so that the call is neither lost nor run twice.
    leaving: bool,
}

/// What ended the remote.
enum Leave {
    Home,
    Done,
}

impl Guest {
    fn serve(&mut self, sigchld: &SigChld) -> io::Result<()> {
        loop {
            let mut fds = [
                poll_in(self.listener.as_raw_fd()),
                poll_in(self.frames.get_ref().raw_fd()),
                poll_in(sigchld.fd.as_raw_fd()),
            ];
            let buffered = self.frames.get_ref().buffered();
            let timeout = if buffered { 0 } else { -1 };
            // SAFETY: fds is a live array of pollfd.
            if unsafe { libc::poll(fds.as_mut_ptr(), 3, timeout) } < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            let left = if fds[2].revents != 0 {
                sigchld.drain();
                self.on_husk_event()?
            } else if buffered || fds[1].revents != 0 {
                self.on_home_message()?
            } else if fds[0].revents != 0 {
                self.on_notification()?
            } else {
                None
            };
            match left {
                Some(Leave::Home) => return Ok(()),
                Some(Leave::Done) => return Ok(()),
                None => {}
            }
        }
    }

    fn on_husk_event(&mut self) -> io::Result<Option<Leave>> {
        while let Some((_, stop)) = ptrace::wait(self.husk, libc::WNOHANG)? {
            match stop {
                Stop::Signal(sig) => ptrace::cont(self.husk, sig)?,
                Stop::Group(sig) => {
                    ptrace::listen(self.husk)?;
                    send(&mut self.out, &ToHome::Stopped { sig })?;
                }
                Stop::Killed(sig) => {
                    send(&mut self.out, &ToHome::Died { sig })?;
                    return Ok(Some(Leave::Done));
                }
                Stop::Exited(code) => {
                    warn!(code, "remote exited without forwarding its exit");
                    return Ok(Some(Leave::Done));
                }
                Stop::Interrupted | Stop::Trap | Stop::Event(_) => ptrace::cont(self.husk, 0)?,
            }
        }
        Ok(None)
    }

    fn on_home_message(&mut self) -> io::Result<Option<Leave>> {
        let msg: ToGuest = match self.frames.message() {
            Ok(msg) => msg,
            Err(err) => {
                warn!(%err, "home link lost; dropping the remote");
                return Ok(Some(Leave::Done));
            }
        };
        match msg {
            ToGuest::Reply { id, ret, backs } => {
                let data = self.read_backs(backs)?;
                if self.pending.as_ref().is_none_or(|p| p.id() != id) {
                    // An answer to a call a signal interrupted; the remote has moved on.
                    return Ok(None);
                }
                // Leaving, and home did not run the call: do not answer it (a restart code
                // would reach the program, as no signal is pending); going home rewinds it.
                if self.leaving && sys::is_restart(ret) {
                    return self.first_round(Some(id));
                }
                self.on_reply(ret, data)?;
                if self.leaving {
                    return self.first_round(None);
                }
            }
            ToGuest::Signal { sig } => {
                // SAFETY: plain kill of our own tracee.
                unsafe { libc::kill(self.husk, sig) };
            }
            ToGuest::SendImage => match self.pending {
                None => return self.first_round(None),
                // Ending anyway: home will see the exit.
                Some(Pending::Exit { .. }) => {}
                Some(_) => self.leaving = true,
            },
            ToGuest::Ended => return Ok(Some(Leave::Done)),
            other => return Err(io::Error::other(format!("unexpected {other:?}"))),
        }
        Ok(None)
    }

    /// The buffers that follow a reply, as (remote address, bytes).
    fn read_backs(&mut self, backs: u32) -> io::Result<Backs> {
        let mut data = Vec::new();
        for _ in 0..backs {
            match self.frames.next_frame().map_err(io::Error::other)? {
                Frame::Pages { addr, data: bytes } => data.push((addr, bytes)),
                Frame::Message(_) => return Err(io::Error::other("reply is missing its buffers")),
            }
        }
        Ok(data)
    }

    fn on_reply(&mut self, ret: i64, data: Backs) -> io::Result<()> {
        match self.pending.take() {
            Some(Pending::Plain { id }) => {
                for (addr, bytes) in &data {
                    self.mem.write(*addr, bytes)?;
                }
                respond(&self.listener, id, ret);
            }
            Some(Pending::Scatter { id, iov }) => {
                let bytes = data.first().map(|d| d.1.as_slice()).unwrap_or(&[]);
                self.scatter(&iov, bytes)?;
                respond(&self.listener, id, ret);
            }
            Some(Pending::Message { id, iov_at, iov }) => {
                for (addr, bytes) in &data {
                    if *addr == iov_at {
                        self.scatter(&iov, bytes)?;
                    } else {
                        self.mem.write(*addr, bytes)?;
                    }
                }
                respond(&self.listener, id, ret);
            }
            Some(Pending::Batch { id, done, .. }) if ret < 0 => {
                respond(&self.listener, id, if done > 0 { done as i64 } else { ret });
            }
            Some(Pending::Batch { id, args, done }) => {
                let msg_len = args[1] + done * msg::MMSGHDR_LEN + msg::HDR_LEN;
                self.mem.write(msg_len, &(ret as u32).to_le_bytes())?;
                if self.leaving {
                    // Going away: the messages sent so far are the call's result.
                    respond(&self.listener, id, done as i64 + 1);
                } else {
                    self.forward_batch(id, args, done + 1)?;
                }
            }
            Some(Pending::Map { id, .. }) if ret < 0 => respond(&self.listener, id, ret),
            Some(Pending::Map {
                id,
                addr,
                len,
                prot,
                flags,
            }) => {
                let bytes = data.first().map(|d| d.1.as_slice()).unwrap_or(&[]);
                self.stop_husk(Some(id))?;
                let result = self.map_copy(addr, len, prot, flags, bytes)?;
                self.finish_interrupted_call(result)?;
            }
            // exit_group came back: a signal stopped the shell before it ran there, and the
            // answer is a restart code. The remote takes the signal, then exits again.
            Some(Pending::Exit { id }) => respond(&self.listener, id, ret),
            None => {}
        }
        Ok(())
    }

    /// Emulate mmap of a home file in the stopped husk: anonymous memory filled with its
    /// contents.
    fn map_copy(
        &mut self,
        addr: u64,
        len: u64,
        prot: u64,
        flags: u64,
        bytes: &[u8],
    ) -> io::Result<i64> {
        let keep = flags & (libc::MAP_FIXED | libc::MAP_FIXED_NOREPLACE) as u64;
        let anon = keep | (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let got = self.inj.call(
            self.husk,
            libc::SYS_mmap,
            [addr, len, rw, anon, u64::MAX, 0],
        )?;
        if got < 0 {
            return Ok(got);
        }
        self.mem
            .write(got as u64, &bytes[..bytes.len().min(len as usize)])?;
        self.inj.call(
            self.husk,
            libc::SYS_mprotect,
            [got as u64, len, prot, 0, 0, 0],
        )?;
        Ok(got)
    }

    /// Interrupt the husk and wait for it to stop. If it waits on notification `notif` (which
    /// a signal cannot interrupt once received, see WAIT_KILLABLE_RECV), the call is answered
    /// with ERESTARTNOINTR after the interrupt is queued, so the husk stops with the call
    /// still to be restarted (dump rewinds it; an emulation overwrites the result).
    ///
    /// Returns whether the husk is in a group stop (job control), where it must stay when it
    /// goes on (see `resume_husk`).
    fn stop_husk(&mut self, notif: Option<u64>) -> io::Result<bool> {
        ptrace::interrupt(self.husk)?;
        if let Some(id) = notif {
            respond(&self.listener, id, sys::ERESTARTNOINTR);
        }
        loop {
            match ptrace::wait(self.husk, 0)? {
                Some((_, Stop::Interrupted)) => return Ok(false),
                Some((_, Stop::Group(_))) => return Ok(true),
                Some((_, Stop::Signal(sig))) => ptrace::cont(self.husk, sig)?,
                Some((_, Stop::Exited(_) | Stop::Killed(_))) => {
                    return Err(io::Error::other("remote died"));
                }
                Some(_) => ptrace::cont(self.husk, 0)?,
                None => {}
            }
        }
    }

    /// Let the husk go on after `stop_husk`: running, or still job-stopped if it was.
    fn resume_husk(&self, job_stopped: bool) -> io::Result<()> {
        if job_stopped {
            ptrace::listen(self.husk)
        } else {
            ptrace::cont(self.husk, 0)
        }
    }

    /// The husk was stopped inside a trapped call: make that call return `result` and go on.
    fn finish_interrupted_call(&mut self, result: i64) -> io::Result<()> {
        let mut regs = ptrace::get_regs(self.husk)?;
        regs.rax = result as u64;
        regs.orig_rax = u64::MAX;
        ptrace::set_regs(self.husk, &regs)?;
        ptrace::cont(self.husk, 0)
    }

    fn on_notification(&mut self) -> io::Result<Option<Leave>> {
        let notif = match self.listener.recv() {
            Ok(n) => n,
            // The call was interrupted before we read it (ENOENT): nothing to do.
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(err) => return Err(err),
        };
        let nr = i64::from(notif.data.nr);
        let args = notif.data.args;
        let id = notif.id;
        match syscalls::route(nr, &args) {
            Route::Forward(spec) => match self.forward(id, nr, args, spec) {
                Ok(()) => self.pending = Some(Pending::Plain { id }),
                Err(errno) => respond(&self.listener, id, -i64::from(errno)),
            },
            Route::Vector => self.forward_vector(id, nr, args)?,
            Route::Message => match self.forward_message(id, nr, args) {
                Ok(pending) => self.pending = Some(pending),
                Err(errno) => respond(&self.listener, id, -i64::from(errno)),
            },
            Route::Batch => self.forward_batch(id, args, 0)?,
            Route::MmapFile => {
                let shared = args[3] & libc::MAP_SHARED as u64 != 0;
                if shared && args[2] & libc::PROT_WRITE as u64 != 0 {
                    let what = "shared writable file mapping".to_owned();
                    return self.go_home(Homeward::Call { id, what }, None);
                }
                let len = args[1].next_multiple_of(4096);
                let bufs = vec![BufSpec {
                    arg: 1,
                    len,
                    send: false,
                    back: Some(Back::Ret),
                }];
                let call = [args[4], 0, len, args[5], 0, 0];
                self.call_home(id, libc::SYS_pread64, call, bufs, &[])?;
                self.pending = Some(Pending::Map {
                    id,
                    addr: args[0],
                    len,
                    prot: args[2],
                    flags: args[3],
                });
            }
            Route::Exit => {
                self.call_home(id, libc::SYS_exit_group, args, Vec::new(), &[])?;
                self.pending = Some(Pending::Exit { id });
            }
            Route::Home => {
                let what = format!("system call {nr}");
                return self.go_home(Homeward::Call { id, what }, None);
            }
            Route::Continue => {
                if let Err(err) = self.listener.let_run(id)
                    && err.raw_os_error() != Some(libc::ENOENT)
                {
                    warn!(%err, "cannot let a trapped call run");
                }
            }
            // The filter lets these through; a notification for one means it changed under us.
            Route::Local => respond(&self.listener, id, -i64::from(libc::ENOSYS)),
        }
        Ok(None)
    }

    /// Read the buffers of a forwarded call from the remote and send the call home.
    fn forward(&mut self, id: u64, nr: i64, mut args: [u64; 6], spec: &[Arg]) -> Result<(), i32> {
        let mut bufs = Vec::new();
        let mut data = Vec::new();
        for (i, arg) in spec.iter().enumerate() {
            let ptr = args[i];
            if ptr == 0 || matches!(arg, Arg::Val) {
                continue;
            }
            let (len, send, back) = match *arg {
                Arg::Path => {
                    let mut path = self
                        .mem
                        .read_cstr(ptr, PATH_MAX)
                        .map_err(|_| libc::EFAULT)?;
                    path.push(0);
                    let len = path.len() as u64;
                    data.push(path);
                    (len, true, None)
                }
                Arg::In(len) => (self.length(len, &mut args)?, true, None),
                Arg::Out(len, valid) => (self.length(len, &mut args)?, false, Some(back_of(valid))),
                Arg::InOut(len) => (self.length(len, &mut args)?, true, Some(Back::All)),
                Arg::Val => unreachable!("skipped above"),
            };
            if send && !matches!(arg, Arg::Path) {
                data.push(
                    self.mem
                        .read_vec(ptr, len as usize)
                        .map_err(|_| libc::EFAULT)?,
                );
            }
            bufs.push(BufSpec {
                arg: i as u8,
                len,
                send,
                back,
            });
        }
        self.call_home(id, nr, args, bufs, &data)
            .map_err(|_| libc::EIO)
    }

    /// Length of a buffer; a length argument above MAX_BUF is lowered to it (a short read or
    /// write, which callers must handle anyway).
    fn length(&self, len: Len, args: &mut [u64; 6]) -> Result<u64, i32> {
        let n = match len {
            Len::Arg(i) => {
                args[i] = args[i].min(MAX_BUF);
                args[i]
            }
            Len::ArgTimes(i, size) => args[i].saturating_mul(size),
            Len::Fixed(n) => n,
            Len::DerefU32(i) if args[i] == 0 => 0,
            Len::DerefU32(i) => {
                let raw = self.mem.read_vec(args[i], 4).map_err(|_| libc::EFAULT)?;
                u64::from(le_u32(&raw, 0))
            }
            Len::FdSet => args[0].div_ceil(64) * 8,
        };
        if n > MAX_BUF {
            Err(libc::EINVAL)
        } else {
            Ok(n)
        }
    }

    fn call_home(
        &mut self,
        id: u64,
        nr: i64,
        args: [u64; 6],
        bufs: Vec<BufSpec>,
        data: &[Vec<u8>],
    ) -> io::Result<()> {
        // Page frames carry the remote address for the record; a buffer a msghdr points to
        // has none among the arguments.
        let sends: Vec<u64> = bufs
            .iter()
            .filter(|b| b.send)
            .map(|b| args.get(usize::from(b.arg)).copied().unwrap_or(0))
            .collect();
        write_message(&mut self.out, &ToHome::Call { id, nr, args, bufs })?;
        for (addr, bytes) in sends.iter().zip(data) {
            write_pages(&mut self.out, *addr, bytes)?;
        }
        self.out.flush()
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

    /// sendmmsg: send message `done` of the array as a sendmsg, or answer the call once all
    /// `vlen` went (see `msg`).
    fn forward_batch(&mut self, id: u64, args: [u64; 6], done: u64) -> io::Result<()> {
        if done == args[2].min(msg::MAX_BATCH) {
            respond(&self.listener, id, done as i64);
            return Ok(());
        }
        let at = args[1] + done * msg::MMSGHDR_LEN;
        match self.forward_message(id, libc::SYS_sendmsg, [args[0], at, args[3], 0, 0, 0]) {
            Ok(_) => self.pending = Some(Pending::Batch { id, args, done }),
            Err(_) if done > 0 => respond(&self.listener, id, done as i64),
            Err(errno) => respond(&self.listener, id, -i64::from(errno)),
        }
        Ok(())
    }

    /// sendmsg/recvmsg go home with their msghdr and the buffers it points to (see `msg`).
    fn forward_message(&mut self, id: u64, nr: i64, args: [u64; 6]) -> Result<Pending, i32> {
        let raw = self
            .mem
            .read_vec(args[1], msg::HDR_LEN as usize)
            .map_err(|_| libc::EFAULT)?;
        let hdr = msg::MsgHdr::parse(&raw).ok_or(libc::EFAULT)?;
        let iov = self.read_iovecs(hdr.iov, hdr.iovlen)?;
        let total: u64 = iov.iter().map(|&(_, len)| len).sum();
        let name_len = if hdr.name == 0 {
            0
        } else {
            u64::from(hdr.namelen)
        };
        let control_len = if hdr.control == 0 { 0 } else { hdr.controllen };
        if name_len > MAX_BUF || control_len > MAX_BUF {
            return Err(libc::EINVAL);
        }
        let sending = nr == libc::SYS_sendmsg;
        let back = |valid| (!sending).then_some(valid);
        let nested = |len, valid| BufSpec {
            arg: msg::NESTED,
            len,
            send: sending,
            back: back(valid),
        };
        let bufs = vec![
            BufSpec {
                arg: 1,
                len: msg::HDR_LEN,
                send: true,
                back: back(Back::All),
            },
            nested(name_len, Back::All),
            nested(total, Back::Ret),
            nested(control_len, Back::All),
        ];
        let mut data = vec![raw];
        if sending {
            let read = |addr, len: u64| self.mem.read_vec(addr, len as usize);
            data.push(read(hdr.name, name_len).map_err(|_| libc::EFAULT)?);
            data.push(self.gather(&iov)?);
            data.push(read(hdr.control, control_len).map_err(|_| libc::EFAULT)?);
        }
        self.call_home(id, nr, args, bufs, &data)
            .map_err(|_| libc::EIO)?;
        Ok(if sending {
            Pending::Plain { id }
        } else {
            Pending::Message {
                id,
                iov_at: hdr.iov,
                iov,
            }
        })
    }

    /// readv/writev go home as one read/write of the gathered buffer.
    fn forward_vector(&mut self, id: u64, nr: i64, args: [u64; 6]) -> io::Result<()> {
        let iov = match self.read_iovecs(args[1], args[2]) {
            Ok(iov) => iov,
            Err(errno) => {
                // readv and writev say EINVAL where sendmsg says EMSGSIZE.
                let errno = if errno == libc::EMSGSIZE {
                    libc::EINVAL
                } else {
                    errno
                };
                respond(&self.listener, id, -i64::from(errno));
                return Ok(());
            }
        };
        let total: u64 = iov.iter().map(|&(_, len)| len).sum();
        if nr == libc::SYS_writev {
            let gathered = match self.gather(&iov) {
                Ok(gathered) => gathered,
                Err(errno) => {
                    respond(&self.listener, id, -i64::from(errno));
                    return Ok(());
                }
            };
            let bufs = vec![BufSpec {
                arg: 1,
                len: total,
                send: true,
                back: None,
            }];
            self.call_home(
                id,
                libc::SYS_write,
                [args[0], 0, total, 0, 0, 0],
                bufs,
                &[gathered],
            )?;
            self.pending = Some(Pending::Plain { id });
        } else {
            let bufs = vec![BufSpec {
                arg: 1,
                len: total,
                send: false,
                back: Some(Back::Ret),
            }];
            let call = [args[0], 0, total, 0, 0, 0];
            self.call_home(id, libc::SYS_read, call, bufs, &[])?;
            self.pending = Some(Pending::Scatter { id, iov });
        }
        Ok(())
    }

    /// Home asked for the image: pre-copy's first round. Arm write tracking on the husk, send
    /// its pages while it runs, and wait for home's word. `Prepared`: freeze and send the final
    /// round (see `go_home`). `Stay`: home or the next node failed; the process runs on here.
    /// Where tracking cannot be armed, the whole image goes frozen. `restart` is a forwarded
    /// call that home did not run: the process makes it again, wherever it goes on.
    fn first_round(&mut self, restart: Option<u64>) -> io::Result<Option<Leave>> {
        let job_stopped = self.stop_husk(restart)?;
        self.pending = None;
        self.leaving = false;
        let opened = dump::image_areas(self.husk)
            .and_then(|areas| Ok((Tracker::open(self.husk, &self.inj)?, areas)));
        self.resume_husk(job_stopped)?;
        let (tracker, areas) = match opened {
            Ok(opened) => opened,
            Err(err) => {
                info!(%err, "no pre-copy: the process goes frozen");
                return self.go_home(Homeward::Asked { restart: None }, None);
            }
        };
        tracker.protect(&areas);
        send(
            &mut self.out,
            &ToHome::Precopy {
                areas: areas.clone(),
            },
        )?;
        // This thread traces the husk: it runs the throttle's duty cycle while the rounds
        // stream, and holds a husk it slowed down until the final round (see Duty).
        let mut duty = Duty::new(self.husk);
        let sent = dump::dump_first_round(self.husk, &areas, &tracker, &mut duty, &mut self.out)
            .and_then(|_| duty.hold_if_slowed());
        if let Err(err) = sent {
            duty.release()?;
            return Err(err);
        }
        loop {
            let Some(msg) = self.word_during_move() else {
                return Ok(Some(Leave::Done));
            };
            match msg {
                ToGuest::Prepared => {
                    duty.release()?;
                    let first = FirstRound { tracker, areas };
                    return self.go_home(Homeward::Asked { restart: None }, Some(first));
                }
                ToGuest::Stay { reason } => {
                    duty.release()?;
                    warn!(%reason, "the move failed; the process runs on here");
                    return Ok(None);
                }
                // The husk runs, or takes them when it is let go.
                // SAFETY: plain kill of our own tracee.
                ToGuest::Signal { sig } => unsafe {
                    libc::kill(self.husk, sig);
                },
                ToGuest::Reply { backs, .. } => drop(self.read_backs(backs)?),
                ToGuest::SendImage => {}
                ToGuest::Ended => return Ok(Some(Leave::Done)),
                other => return Err(io::Error::other(format!("unexpected {other:?}"))),
            }
        }
    }

    /// Home's next word while the process moves; None (logged) when the link is gone, and the
    /// process with it.
    fn word_during_move(&mut self) -> Option<ToGuest> {
        match self.frames.message::<ToGuest>() {
            Ok(msg) => Some(msg),
            Err(err) => {
                warn!(%err, "home link lost during a move; dropping the process");
                None
            }
        }
    }

    /// Stop the remote, dump it home, and wait for home's word. A pending call is rewound so
    /// that it runs again wherever the process goes on (see dump::read_header). Home takes the
    /// process: leave. Home cannot restore it: the remote runs on here, so that nothing is
    /// lost, and a call that only home can run fails with ENOMEM, as a fork or an exec does
    /// when memory is short.
    fn go_home(&mut self, trip: Homeward, first: Option<FirstRound>) -> io::Result<Option<Leave>> {
        let (reason, notif) = match &trip {
            Homeward::Asked { restart } => ("asked by home".to_owned(), *restart),
            Homeward::Call { id, what } => (what.clone(), Some(*id)),
        };
        debug!(reason, "sending the image");
        let job_stopped = self.stop_husk(notif)?;
        self.pending = None;
        self.leaving = false;
        let needs_home = matches!(trip, Homeward::Call { .. });
        send(&mut self.out, &ToHome::Going { reason, needs_home })?;
        let facts = facts::probe()?;
        match &first {
            Some(first) => {
                let (areas, tracker) = (&first.areas, &first.tracker);
                dump::dump_final_round(self.husk, &facts, areas, tracker, &mut self.out)?
            }
            None => dump::dump(self.husk, &facts, &mut self.out)?,
        };
        // Tracking ends with the final round.
        drop(first);
        // Signals home relayed before it saw `Going`: the image does not hold them.
        let mut late = Vec::new();
        loop {
            let Some(msg) = self.word_during_move() else {
                return Ok(Some(Leave::Done));
            };
            match msg {
                ToGuest::Ended => {
                    if !late.is_empty() {
                        send(&mut self.out, &ToHome::Late { signals: late })?;
                    }
                    return Ok(Some(Leave::Home));
                }
                ToGuest::Stay { reason } => {
                    warn!(%reason, "home cannot take the process back; it runs on here");
                    for sig in late {
                        // SAFETY: plain kill of our own tracee.
                        unsafe { libc::kill(self.husk, sig) };
                    }
                    match trip {
                        Homeward::Call { .. } => {
                            self.finish_interrupted_call(-i64::from(libc::ENOMEM))?
                        }
                        // The rewound call restarts and is forwarded again.
                        Homeward::Asked { .. } => self.resume_husk(job_stopped)?,
                    }
                    return Ok(None);
                }
                ToGuest::Signal { sig } => late.push(sig),
                // The answer to a call a signal interrupted before the move.
                ToGuest::Reply { backs, .. } => drop(self.read_backs(backs)?),
                ToGuest::SendImage => {}
                other => return Err(io::Error::other(format!("unexpected {other:?}"))),
            }
        }
    }
}

/// What pre-copy's first round left for the final one.
struct FirstRound {
    tracker: Tracker,
    areas: Vec<rmosix_image::Area>,
}

/// Why a remote goes home.
enum Homeward {
    /// Home asked for it. `restart` is a forwarded call that home did not run: the process
    /// makes it again wherever it goes on.
    Asked { restart: Option<u64> },
    /// The process made call `id`, which only home can run (`what` names it).
    Call { id: u64, what: String },
}

fn back_of(valid: Valid) -> Back {
    match valid {
        Valid::All => Back::All,
        Valid::Ret => Back::Ret,
        Valid::RetTimes(n) => Back::RetTimes(n),
    }
}

fn respond(listener: &Listener, id: u64, val: i64) {
    // ENOENT: a signal interrupted the call meanwhile and the kernel dropped it; it will be
    // restarted or fail with EINTR as Linux decides.
    if let Err(err) = listener.respond(id, val)
        && err.raw_os_error() != Some(libc::ENOENT)
    {
        warn!(%err, "cannot answer a trapped call");
    }
}

fn poll_in(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// SIGCHLD as a readable fd, so ptrace stops wake the poll loop.
pub struct SigChld {
    fd: OwnedFd,
}

impl SigChld {
    /// Block SIGCHLD in this (single-threaded) process and open a signalfd for it.
    pub fn new() -> io::Result<SigChld> {
        // SAFETY: sigset operations on a local; signalfd returns a fresh fd we own.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGCHLD);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(SigChld {
                fd: OwnedFd::from_raw_fd(fd),
            })
        }
    }

    /// The fd to poll.
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Consume pending notifications (several SIGCHLDs may merge into one).
    pub fn drain(&self) {
        let mut buf = [0u8; 128 * 4];
        // SAFETY: reading into a live buffer from our own non-blocking fd.
        while unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }
}

//! Dump a running program and restore it into a husk on this machine: the core of a migration
//! without the network.

use rmosix_engine::{
    Carry, Stop, dump, probe, read_header, restore_into, spawn_husk, spawn_program, trace,
};

#[test]
fn python_continues_in_a_husk() {
    let facts = probe().unwrap();
    let script = "import time,sys\nt=0\nfor i in range(50):\n    t+=i\n    time.sleep(0.01)\nsys.exit(t%256)\n";
    let argv: [String; 3] = ["/usr/bin/python3".into(), "-c".into(), script.into()];
    let pid = spawn_program(&argv[0], &argv).unwrap();
    trace::cont(pid, 0).unwrap();
    let start = std::time::Instant::now();
    loop {
        match trace::wait(pid, libc::WNOHANG).unwrap() {
            Some((_, Stop::Event(_))) => trace::cont(pid, 0).unwrap(),
            Some((_, Stop::Signal(s))) => trace::cont(pid, s).unwrap(),
            Some((_, other)) => panic!("{other:?}"),
            None if start.elapsed().as_millis() > 200 => break,
            None => std::thread::yield_now(),
        }
    }
    trace::interrupt(pid).unwrap();
    loop {
        match trace::wait(pid, 0).unwrap().unwrap().1 {
            Stop::Interrupted => break,
            Stop::Signal(s) => trace::cont(pid, s).unwrap(),
            other => panic!("{other:?}"),
        }
    }
    let mut image = Vec::new();
    let away = Carry::Home {
        away: Default::default(),
    };
    let (_, bytes) = dump(pid, &facts, &away, &mut image, false).unwrap();
    eprintln!("image {} bytes of pages, {} total", bytes, image.len());
    // SAFETY: killing our own traced child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = trace::wait(pid, 0);
    let husk = spawn_husk(true).unwrap();
    let mut frames = rmosix_image::FrameReader::new(&image[..]);
    let header = read_header(&mut frames).unwrap();
    restore_into(husk, &header, &mut frames).unwrap();
    let comm = std::fs::read_to_string(format!("/proc/{husk}/comm")).unwrap();
    assert_eq!(
        comm.trim_end(),
        "python3",
        "the husk takes the process's name"
    );
    trace::cont(husk, 0).unwrap();
    loop {
        match trace::wait(husk, 0).unwrap().unwrap().1 {
            Stop::Exited(code) => {
                assert_eq!(code, 201);
                break;
            }
            Stop::Signal(s) => {
                eprintln!(
                    "husk signal {s} at {:#x?}",
                    trace::get_regs(husk).map(|r| r.rip)
                );
                trace::cont(husk, s).unwrap()
            }
            other => panic!("{other:?}"),
        }
    }
}

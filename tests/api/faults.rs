//! Faults of the machine under signed traffic, on the real binary: the
//! database file cannot grow (a full disk, as a file-size limit set on the
//! running process with prlimit, which needs neither root nor a mount), and
//! the database made read-only under the running process (immutable files,
//! `chattr +i`).
//! Throughout: 503 `unavailable`, never a 200 without a recorded nonce, a
//! log that does not grow with the request rate, and service back by
//! itself once the fault clears.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::helpers::*;

/// Sets the soft file-size limit only (`N:`): lowering the hard one too
/// could not be undone without CAP_SYS_RESOURCE.
fn prlimit(pid: u32, fsize: &str) {
    let set = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--fsize={fsize}:")])
        .status()
        .expect("prlimit (util-linux) is installed");
    assert!(set.success(), "prlimit --fsize={fsize} failed");
}

fn file_size(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn a_full_disk_costs_503s_a_bounded_log_and_no_unrecorded_accept() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keygate.db");
    let server = Binary::serve(&db, &[("KEYGATE_LOG", "info")]);
    let app = server.app();
    let key = app.create_key();
    assert_eq!(app.signed(&key, "GET", "/v1/whoami", b"").status, 200);

    // No file of the process may grow past a little more than now.
    let wal = dir.path().join("keygate.db-wal");
    let room = file_size(&db).max(file_size(&wal)) + 128 * 1024;
    prlimit(server.child.id(), &room.to_string());
    let log_before = server.log.lock().unwrap().lines().count();

    let load = Load::start(app.public, &key, 4);
    // Until the disk is full, and three seconds more of refusals.
    let deadline = Instant::now() + Duration::from_secs(60);
    let full_since = loop {
        let refused = load
            .answers
            .lock()
            .unwrap()
            .iter()
            .any(|(_, s, _)| *s == 503);
        if refused {
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "the limit was never reached");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_secs(3));
    let during_fault = server.log.lock().unwrap().lines().count() - log_before;
    let refused_while_full = load
        .answers
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, s, _)| *s == 503)
        .count();

    prlimit(server.child.id(), "unlimited");
    let back_by = Instant::now() + Duration::from_secs(15);
    loop {
        if app.signed(&key, "GET", "/v1/whoami", b"").status == 200 {
            break;
        }
        assert!(
            Instant::now() < back_by,
            "not serving again after the room came back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let answers = load.finish();

    for (_, status, code) in &answers {
        assert!(
            *status == 200 || (*status == 503 && code == "unavailable"),
            "{status} {code}"
        );
    }
    // The refusals' own log lines are capped (a burst of 100, then 20 a
    // second) and the failing writer says so once: with thousands of
    // refusals, the log grew by a few hundred lines at most.
    let seconds = full_since.elapsed().as_secs() as usize + 1;
    assert!(
        refused_while_full > 100,
        "only {refused_while_full} refusals"
    );
    assert!(
        during_fault <= 100 + 20 * seconds + 20,
        "{during_fault} log lines for {refused_while_full} refusals in {seconds} s"
    );
    let log = server.log.lock().unwrap().clone();
    let writer_lines = log.matches("recording nonces").count();
    assert!(
        (1..=3).contains(&writer_lines),
        "the writer's failure logged {writer_lines} times:\n{log}"
    );
    // Nothing accepted was lost: every accepted request is a replay now.
    for (authorization, _, _) in answers.iter().filter(|(_, s, _)| *s == 200) {
        let replay = app.send("POST", "/v1/echo", b"load", Some(authorization));
        assert_eq!(replay.code(), "nonce_reused");
    }
}

/// Makes files immutable (or mutable again) with `chattr`: unlike a
/// chmod, which only stops new opens, an immutable file refuses writes
/// through descriptors that are already open, as a read-only remount
/// would (and a remount is refused while a writer has the file open).
/// Needs CAP_LINUX_IMMUTABLE: root, as CI runs, or passwordless sudo.
fn immutable(paths: &[std::path::PathBuf], on: bool) {
    let flag = if on { "+i" } else { "-i" };
    let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    let mut command = if root {
        Command::new("chattr")
    } else {
        let mut sudo = Command::new("sudo");
        sudo.args(["-n", "chattr"]);
        sudo
    };
    let status = command
        .arg(flag)
        .args(paths)
        .status()
        .expect("chattr (e2fsprogs) is installed");
    assert!(
        status.success(),
        "chattr {flag} failed: this test needs root or passwordless sudo, and a file system \
         with immutable files (ext4, xfs, btrfs) under the temporary directory"
    );
}

#[test]
fn a_read_only_database_costs_503s_a_bounded_log_and_no_unrecorded_accept() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keygate.db");
    let server = Binary::serve(&db, &[("KEYGATE_LOG", "info")]);
    let app = server.app();
    let key = app.create_key();
    assert_eq!(app.signed(&key, "GET", "/v1/whoami", b"").status, 200);
    let files = vec![db.clone(), dir.path().join("keygate.db-wal")];
    let log_before = server.log.lock().unwrap().lines().count();

    let load = Load::start(app.public, &key, 4);
    std::thread::sleep(Duration::from_millis(500));
    immutable(&files, true);
    let deadline = Instant::now() + Duration::from_secs(30);
    let read_only_since = loop {
        let refused = load
            .answers
            .lock()
            .unwrap()
            .iter()
            .any(|(_, s, _)| *s == 503);
        if refused {
            break Instant::now();
        }
        if Instant::now() > deadline {
            immutable(&files, false);
            panic!("no 503 while the database was read-only");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_secs(3));
    let during_fault = server.log.lock().unwrap().lines().count() - log_before;
    immutable(&files, false);

    let back_by = Instant::now() + Duration::from_secs(15);
    loop {
        if app.signed(&key, "GET", "/v1/whoami", b"").status == 200 {
            break;
        }
        assert!(Instant::now() < back_by, "not serving again once writable");
        std::thread::sleep(Duration::from_millis(100));
    }
    let answers = load.finish();
    for (_, status, code) in &answers {
        assert!(
            *status == 200 || (*status == 503 && code == "unavailable"),
            "{status} {code}"
        );
    }
    let seconds = read_only_since.elapsed().as_secs() as usize + 1;
    assert!(
        during_fault <= 100 + 20 * seconds + 20,
        "{during_fault} log lines in {seconds} s"
    );
    // Nothing accepted was lost: every accepted request is a replay now,
    // also to a fresh process that reads the window from the file.
    drop(server);
    let again = Binary::serve(&db, &[]);
    let fresh = again.app();
    for (authorization, _, _) in answers.iter().filter(|(_, s, _)| *s == 200) {
        let replay = fresh.send("POST", "/v1/echo", b"load", Some(authorization));
        assert_eq!(replay.code(), "nonce_reused");
    }
}

//! Faults of the machine under signed traffic, on the real binary:
//!
//! - a full disk (the database cannot grow: a file-size limit set on the
//!   running process with prlimit, which needs neither root nor a mount);
//! - the database made read-only under the running process (immutable
//!   files, `chattr +i`);
//! - another connection holding the database's exclusive lock.
//!
//! Each runs the same course (`run_fault`): throughout the fault, 503
//! `unavailable` and never a 200 without a recorded nonce; a log that does
//! not grow with the request rate; service back by itself once the fault
//! clears; and every request accepted before, during or after it is a
//! replay afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::helpers::*;

/// Starts keygate on a fresh SQLite file with `env`, runs signed traffic
/// on 4 threads, calls `inject` once traffic flows and `clear` after 3 s of
/// refusals, and checks everything the module comment promises.
/// `inject` gets the server and the database's directory; what it returns
/// is handed to `clear`.
fn run_fault<S>(
    env: &[(&str, &str)],
    inject: impl FnOnce(&Binary, &Path) -> S,
    clear: impl FnOnce(&Binary, &Path, S),
) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keygate.db");
    let mut env = env.to_vec();
    env.push(("KEYGATE_LOG", "info"));
    let server = Binary::serve(&db, &env);
    let app = server.app();
    let key = app.create_key();
    assert_eq!(app.signed(&key, "GET", "/v1/whoami", b"").status, 200);
    let log_before = server.log.lock().unwrap().lines().count();

    let load = Load::start(app.public, &key, 4);
    // Real load on the real binary before the fault.
    std::thread::sleep(Duration::from_millis(500));
    let fault = inject(&server, dir.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    let refused_since = loop {
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
            clear(&server, dir.path(), fault);
            panic!("no 503 within 60 s of the fault");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Three seconds of refusals from the real binary, to count its log.
    std::thread::sleep(Duration::from_secs(3));
    let log_during = server.log.lock().unwrap().lines().count() - log_before;
    let refusals = load
        .answers
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, s, _)| *s == 503)
        .count();
    clear(&server, dir.path(), fault);

    let back_by = Instant::now() + Duration::from_secs(15);
    loop {
        if app.signed(&key, "GET", "/v1/whoami", b"").status == 200 {
            break;
        }
        assert!(
            Instant::now() < back_by,
            "not serving again after the fault cleared"
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
    // second) and the failing writer says so once, then once a minute.
    let seconds = refused_since.elapsed().as_secs() as usize + 1;
    assert!(
        log_during <= 100 + 20 * seconds + 20,
        "{log_during} log lines for {refusals} refusals in {seconds} s"
    );
    // The recovery is logged once the writer has succeeded for 2 s.
    let logged_by = Instant::now() + Duration::from_secs(10);
    while !server.log.lock().unwrap().contains("recovered") && Instant::now() < logged_by {
        app.signed(&key, "GET", "/v1/whoami", b"");
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = server.log.lock().unwrap().clone();
    let writer_lines = log.matches("recording nonces").count();
    assert!(
        (1..=3).contains(&writer_lines),
        "the writer's failure logged {writer_lines} times:\n{log}"
    );
    assert!(log.contains("recovered"), "the recovery is logged:\n{log}");

    // Nothing accepted was lost: every accepted request is a replay now,
    // to a fresh process too, which reads the window from the file.
    drop(server);
    let again = Binary::serve(&db, &[]);
    let fresh = again.app();
    let accepted: Vec<_> = answers.iter().filter(|(_, s, _)| *s == 200).collect();
    assert!(accepted.len() > 10, "only {} accepted", accepted.len());
    for (authorization, _, _) in accepted {
        let replay = fresh.send("POST", "/v1/echo", b"load", Some(authorization));
        assert_eq!(replay.code(), "nonce_reused");
    }
}

/// Sets the soft file-size limit only (`N:`): lowering the hard one too
/// could not be undone without CAP_SYS_RESOURCE.
fn prlimit(pid: u32, fsize: &str) {
    let set = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--fsize={fsize}:")])
        .status()
        .expect("prlimit (util-linux) is installed");
    assert!(set.success(), "prlimit --fsize={fsize} failed");
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn a_full_disk_costs_503s_a_bounded_log_and_no_unrecorded_accept() {
    run_fault(
        &[],
        |server, dir| {
            // No file of the process may grow past a little more than now.
            let largest =
                file_size(&dir.join("keygate.db")).max(file_size(&dir.join("keygate.db-wal")));
            prlimit(server.child.id(), &(largest + 128 * 1024).to_string());
        },
        |server, _, ()| prlimit(server.child.id(), "unlimited"),
    );
}

/// Makes files immutable (or mutable again) with `chattr`: unlike a
/// chmod, which only stops new opens, an immutable file refuses writes
/// through descriptors that are already open, as a read-only remount
/// would (and a remount is refused while a writer has the file open).
/// Needs CAP_LINUX_IMMUTABLE: root, as CI runs, or passwordless sudo.
fn immutable(paths: &[PathBuf], on: bool) {
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
    let files = |dir: &Path| vec![dir.join("keygate.db"), dir.join("keygate.db-wal")];
    run_fault(
        &[],
        |_, dir| immutable(&files(dir), true),
        |_, dir, ()| immutable(&files(dir), false),
    );
}

#[test]
fn a_lock_held_by_another_connection_costs_503s_a_bounded_log_and_no_unrecorded_accept() {
    run_fault(
        // Short, so that each of the load's threads is refused many times.
        &[("KEYGATE_DB_BUSY_TIMEOUT_MS", "200")],
        |_, dir| {
            let holder = rusqlite::Connection::open(dir.join("keygate.db")).unwrap();
            holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
            holder
        },
        |_, _, holder| holder.execute_batch("ROLLBACK").unwrap(),
    );
}

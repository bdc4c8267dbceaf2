//! A soak, bounded in time, on the real binary: valid, forged, replayed,
//! malformed and slow requests all at once for a while, then quiet. The
//! process must end with its open file descriptors back at their starting
//! count and its memory near where it started: nothing a client sends is
//! kept once it is over.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::helpers::*;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Runs `work` in a loop on its own thread until `stop`, counting rounds.
fn keep_doing(
    stop: &Arc<AtomicBool>,
    count: &Arc<AtomicUsize>,
    work: impl Fn() + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let (stop, count) = (stop.clone(), count.clone());
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            work();
            count.fetch_add(1, Ordering::Relaxed);
        }
    })
}

fn send_raw(addr: SocketAddr, bytes: &[u8]) {
    if let Ok(mut stream) = TcpStream::connect(addr) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.write_all(bytes);
        let _ = std::io::Read::read(&mut stream, &mut [0u8; 4096]);
    }
}

#[test]
fn after_a_mixed_soak_descriptors_and_memory_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::serve(
        &dir.path().join("keygate.db"),
        &[
            // A short replay window and timeouts, so that everything the
            // soak puts in memory may be let go within seconds of its end.
            ("KEYGATE_SKEW_SECS", "2"),
            ("KEYGATE_BODY_TIMEOUT_SECS", "2"),
        ],
    );
    let pid = server.child.id();
    let app = server.app();
    let key = app.create_key();
    let target = app.public;

    // Warm up every path once, then let the window empty.
    Load::start(target, &key, 2).finish_after(Duration::from_secs(2));
    // The real binary's window empties on its own clock.
    std::thread::sleep(Duration::from_secs(5));
    let (rss_before, fds_before) = (rss_kib(pid), open_fds(pid));

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let load = Load::start(target, &key, 2);
    let mut workers = Vec::new();
    // Forged: a valid-looking header with a wrong signature.
    let forged_key = key.clone();
    workers.push(keep_doing(&stop, &done, move || {
        let header = Signing::new(&forged_key, "GET", "/v1/whoami", b"")
            .authorization()
            .replace("Signature=", "Signature=0");
        let _ = ureq::get(&format!("http://{target}/v1/whoami"))
            .set("Authorization", &header)
            .call();
    }));
    // Replayed: one accepted request, sent again and again.
    let replayed = Signing::new(&key, "GET", "/v1/whoami", b"").authorization();
    assert_eq!(
        app.send("GET", "/v1/whoami", b"", Some(&replayed)).status,
        200
    );
    workers.push(keep_doing(&stop, &done, move || {
        let _ = ureq::get(&format!("http://{target}/v1/whoami"))
            .set("Authorization", &replayed)
            .call();
    }));
    // Malformed: not HTTP, a broken header, an oversized head.
    workers.push(keep_doing(&stop, &done, move || {
        send_raw(target, b"\x16\x03\x01\x02\x00garbage\r\n\r\n");
        send_raw(target, b"GET /v1/whoami HTTP/1.1\r\nBroken header\r\n\r\n");
        send_raw(
            target,
            format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(40_000)).as_bytes(),
        );
    }));
    // Slow: heads that never end and bodies that stop half-way, held open.
    let slow_key = key.clone();
    workers.push(keep_doing(&stop, &done, move || {
        let mut held = Vec::new();
        for i in 0..20 {
            if let Ok(mut stream) = TcpStream::connect(target) {
                let request = if i % 2 == 0 {
                    "GET /v1/whoami HTTP/1.1\r\nHost: x\r\n".to_owned()
                } else {
                    let auth = Signing::new(&slow_key, "POST", "/v1/echo", b"").authorization();
                    format!(
                        "POST /v1/echo HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\
                         Content-Length: 100000\r\n\r\npartial"
                    )
                };
                let _ = stream.write_all(request.as_bytes());
                held.push(stream);
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }));

    let soak = Duration::from_secs(12);
    let started = Instant::now();
    let mut peak_fds = 0;
    while started.elapsed() < soak {
        peak_fds = peak_fds.max(open_fds(pid));
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().unwrap();
    }
    let answers = load.finish();
    let accepted = answers.iter().filter(|(_, s, _)| *s == 200).count();
    assert!(
        accepted > 100,
        "only {accepted} valid requests were accepted"
    );
    for (_, status, code) in &answers {
        assert_eq!(*status, 200, "a valid request got {status} {code}");
    }
    assert!(
        peak_fds > fds_before + 10,
        "the slow connections were never open at once"
    );

    // The window (skew 2 s) expires, the slow connections time out (the
    // head after 5 s, bodies after 2 s), and memory goes back.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut rss_after, mut fds_after);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        rss_after = rss_kib(pid);
        fds_after = open_fds(pid);
        if fds_after <= fds_before && rss_after <= rss_before + 16 * 1024 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the soak: {fds_after} descriptors (from {fds_before}, peak {peak_fds}), \
             RSS {rss_after} KiB (from {rss_before} KiB), {accepted} requests accepted, \
             {} rounds of hostile traffic",
            done.load(Ordering::Relaxed)
        );
    }
    eprintln!(
        "soak: {accepted} accepted, {} hostile rounds; fds {fds_before} -> peak {peak_fds} -> \
         {fds_after}; RSS {rss_before} -> {rss_after} KiB",
        done.load(Ordering::Relaxed)
    );
}

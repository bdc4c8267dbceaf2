//! Exactly-once on PostgreSQL whatever the instances' clocks say
//! (CONTRACT.md section 7, issue 28): instances run under libfaketime
//! (Debian's `faketime` package) with their clocks shifted from the
//! database's. Pairs are purged by the database's clock with a margin of
//! the skew, and an instance further off than the skew refuses signed
//! requests until its clock is back.

use std::path::PathBuf;
use std::time::Duration;

use crate::helpers::*;

/// libfaketime's preload library, as Debian installs it.
fn libfaketime() -> PathBuf {
    let found = std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(Result::ok)
        .map(|dir| dir.path().join("faketime/libfaketime.so.1"))
        .chain([PathBuf::from("/usr/lib/faketime/libfaketime.so.1")])
        .find(|path| path.exists());
    found.expect("libfaketime is installed (scripts/test installs Debian's faketime)")
}

/// `keygate serve` with its clock `offset` seconds from the real one (and
/// the database's); its monotonic clock is left alone.
fn serve_shifted(db: &TestDb, offset: i64, skew: &str) -> Binary {
    let preload = libfaketime();
    let shift = format!("{offset:+}");
    Binary::serve_on(
        db,
        &[
            ("LD_PRELOAD", preload.to_str().unwrap()),
            ("FAKETIME", &shift),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ("KEYGATE_SKEW_SECS", skew),
        ],
    )
}

/// Instance B runs 3 s behind A and the database, within the skew of 4 s.
/// A pair A accepted (signed by B's clock) expires by A's clock 2 s after
/// signing; purged by A's clock, as before, it was gone while B still
/// accepted its timestamp, and B accepted the replay.
#[test]
fn an_instance_behind_the_others_refuses_replays_of_old_pairs() {
    let db = TestDb::new(Backend::Postgres);
    let a = Binary::serve_on(&db, &[("KEYGATE_SKEW_SECS", "4")]);
    let b = serve_shifted(&db, -3, "4");
    let key = a.app().create_key();
    // B's clock is the one that reads 3 s behind the database's.
    let offset = b.app().metrics()["keygate_database_clock_offset_seconds"];
    assert!((2.5..3.5).contains(&offset), "B measured {offset} s");

    let signed = Signing {
        timestamp: (now() - 3).to_string(),
        ..Signing::new(&key, "POST", "/v1/echo", b"once")
    };
    let authorization = signed.authorization();
    let first = a
        .app()
        .send("POST", "/v1/echo", b"once", Some(&authorization));
    assert_eq!(first.status, 200, "{:?}", first.body);
    // Past the pair's expiry by A's clock (signing + 4 + 1 s), while B's
    // clock still accepts the timestamp (signing + 4 s by B's clock).
    std::thread::sleep(Duration::from_millis(3300));
    let replay = b
        .app()
        .send("POST", "/v1/echo", b"once", Some(&authorization));
    assert_eq!(
        (replay.status, replay.code()),
        (401, "nonce_reused"),
        "{:?}",
        replay.body
    );
    // And later the timestamp alone refuses it, everywhere. Timestamps
    // are whole seconds: signed at floor(t0) - 3, checked by B at
    // floor(t0 + elapsed - 3), they differ by floor(frac(t0) + elapsed),
    // which passes the skew of 4 until 5 s have elapsed whatever t0's
    // fraction. 1.5 s here (4.8 s in all) failed when t0 fell in the
    // first fifth of a second.
    std::thread::sleep(Duration::from_millis(2000));
    for instance in [&a, &b] {
        let late = instance
            .app()
            .send("POST", "/v1/echo", b"once", Some(&authorization));
        assert_eq!(late.code(), "timestamp_out_of_range", "{:?}", late.body);
    }
}

/// An instance 20 s behind the database, with a skew of 5 s: it serves the
/// admin API, exports its offset, says why in its log, and refuses every
/// signed request with 503 `unavailable`, signed by its clock or the
/// database's.
#[test]
fn an_instance_off_by_more_than_the_skew_refuses_signed_requests() {
    let db = TestDb::new(Backend::Postgres);
    let off = serve_shifted(&db, -20, "5");
    let app = off.app();
    let key = app.create_key();
    let offset = app.metrics()["keygate_database_clock_offset_seconds"];
    assert!((19.0..21.0).contains(&offset), "measured {offset} s");
    for timestamp in [now(), now() - 20] {
        let signed = Signing {
            timestamp: timestamp.to_string(),
            ..Signing::new(&key, "GET", "/v1/whoami", b"")
        };
        let answer = app.send("GET", "/v1/whoami", b"", Some(&signed.authorization()));
        assert_eq!(
            (answer.status, answer.code()),
            (503, "unavailable"),
            "{:?}",
            answer.body
        );
    }
    let log = off.log.lock().unwrap().clone();
    assert!(log.contains("from the database's"), "{log}");
    // An instance on time serves the same key.
    let on_time = Binary::serve_on(&db, &[("KEYGATE_SKEW_SECS", "5")]);
    assert_eq!(
        on_time.app().signed(&key, "GET", "/v1/whoami", b"").status,
        200
    );
}

//! The nonce window's promises: an accepted pair survives kill -9, two
//! processes on one database file never both accept a pair, the request
//! is refused (503) when the pair cannot be recorded, and expired pairs are
//! purged.

use std::time::Duration;

use keygate::clock::Clock;
use rusqlite::Connection;

use crate::helpers::*;

#[test]
fn accepted_nonce_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keygate.db");

    let server = Binary::serve(&db, &[]);
    let app = server.app();
    let key = app.create_key();
    let signed = Signing::new(&key, "POST", "/v1/echo", b"transfer 100");
    let first = app.send(
        "POST",
        "/v1/echo",
        b"transfer 100",
        Some(&signed.authorization()),
    );
    assert_eq!(first.status, 200, "{:?}", first.body);
    // No graceful shutdown: whatever was acknowledged must already be on disk.
    server.kill_9();

    let restarted = Binary::serve(&db, &[]);
    let app = restarted.app();
    let replay = app.send(
        "POST",
        "/v1/echo",
        b"transfer 100",
        Some(&signed.authorization()),
    );
    assert_eq!(
        (replay.status, replay.code()),
        (401, "nonce_reused"),
        "{:?}",
        replay.body
    );
    // And the key itself survived, secret and all.
    assert_eq!(app.signed(&key, "GET", "/v1/whoami", b"").status, 200);
}

#[test]
fn two_processes_on_one_database_accept_a_pair_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keygate.db");
    let a = Binary::serve(&db, &[]);
    let b = Binary::serve(&db, &[]);
    let key = a.app().create_key();
    for round in 0..5 {
        let signed = Signing::new(&key, "POST", "/v1/echo", b"once");
        let results = send_at_once(&[a.public, b.public], 20, &signed.authorization());
        assert_eq!(
            accepted_and_replays(&results),
            (1, 19),
            "round {round}: {results:?}"
        );
    }
}

#[test]
fn refuses_with_503_when_the_nonce_cannot_be_recorded() {
    let app = spawn_app_with(|c| c.store.busy_timeout = Duration::from_millis(200));
    let key = app.create_key();
    assert_eq!(app.signed(&key, "GET", "/v1/whoami", b"").status, 200);

    // Another connection takes the database's write lock and keeps it
    // longer than keygate's busy timeout.
    let mut blocker = Connection::open(&app.db_path).unwrap();
    let tx = blocker
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .unwrap();
    let signed = Signing::new(&key, "GET", "/v1/whoami", b"");
    let refused = app.send("GET", "/v1/whoami", b"", Some(&signed.authorization()));
    assert_eq!(
        (refused.status, refused.code()),
        (503, "unavailable"),
        "{:?}",
        refused.body
    );
    tx.rollback().unwrap();
    let metrics = app.metrics();
    // At least this request's transaction; the 2 s flush of last-used
    // times may have failed against the same lock.
    assert!(metrics["keygate_nonce_failed_commits_total"] >= 1.0);
    assert_eq!(
        metrics["keygate_signed_requests_total{result=\"unavailable\"}"],
        1.0
    );

    // Fail closed means nothing was recorded either: the same request is
    // accepted once the database is writable again.
    let retried = app.send("GET", "/v1/whoami", b"", Some(&signed.authorization()));
    assert_eq!(retried.status, 200, "{:?}", retried.body);
}

/// A reader that keeps a snapshot open (a backup, an operator's sqlite3
/// shell) stops the WAL from being rewound, but must never hold up the
/// nonce writer: requests keep being accepted across many maintenance
/// ticks. (A checkpoint that waited for the reader held off every commit
/// past the busy timeout: 503s.)
#[test]
fn a_long_reader_does_not_hold_up_signed_requests() {
    let app = spawn_app_with(|c| c.store.busy_timeout = Duration::from_millis(500));
    let key = app.create_key();
    assert_eq!(app.signed(&key, "GET", "/v1/whoami", b"").status, 200);

    let mut reader = Connection::open(&app.db_path).unwrap();
    let snapshot = reader.transaction().unwrap();
    let _: i64 = snapshot
        .query_row("SELECT count(*) FROM nonce_batches", [], |r| r.get(0))
        .unwrap();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        let answer = app.signed(&key, "GET", "/v1/whoami", b"");
        assert_eq!(answer.status, 200, "{:?}", answer.body);
    }
    snapshot.rollback().unwrap();
}

/// A replay of a pair already in the window is refused from memory: it
/// never waits for the writer, so it is answered even while the database
/// cannot take a write (where a fresh nonce gets 503).
#[test]
fn replays_are_refused_without_waiting_for_the_database() {
    let app = spawn_app_with(|c| c.store.busy_timeout = Duration::from_millis(200));
    let key = app.create_key();
    let first = Signing::new(&key, "GET", "/v1/whoami", b"");
    assert_eq!(
        app.send("GET", "/v1/whoami", b"", Some(&first.authorization()))
            .status,
        200
    );

    let mut blocker = Connection::open(&app.db_path).unwrap();
    let tx = blocker
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .unwrap();
    let replay = app.send("GET", "/v1/whoami", b"", Some(&first.authorization()));
    assert_eq!(
        (replay.status, replay.code()),
        (401, "nonce_reused"),
        "{:?}",
        replay.body
    );
    let fresh = Signing::new(&key, "GET", "/v1/whoami", b"");
    let refused = app.send("GET", "/v1/whoami", b"", Some(&fresh.authorization()));
    assert_eq!((refused.status, refused.code()), (503, "unavailable"));
    tx.rollback().unwrap();
}

#[test]
fn expired_nonces_are_purged() {
    let app = spawn_app_with(|c| {
        c.skew_secs = 1;
        c.clock = Clock::manual(now());
    });
    let key = app.create_key();
    for _ in 0..20 {
        assert_eq!(app.signed(&key, "GET", "/v1/whoami", b"").status, 200);
    }
    // Pairs in the window: one line each in the batches' entries.
    let count = || -> i64 {
        Connection::open(&app.db_path)
            .unwrap()
            .query_row(
                "SELECT coalesce(sum(length(entries) - length(replace(entries, char(10), ''))), 0) FROM nonce_batches",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert!(count() >= 20);
    // Rows live until ts + skew + 1 (here 2 s): moved past that, the
    // maintenance thread's next tick (every 200 ms, a real thread: this
    // waits for it, not for time to pass) purges them. The requests were
    // signed by the real clock, which may have reached the next second
    // after the server's was set (ts up to start + skew is accepted), so
    // the rows may live until start + 3 s: 3 s was not always past that
    // (CI, 2026-12-07).
    app.clock.advance(Duration::from_secs(4));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "nonces were not purged"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The database timeout bounds each request's whole wait. Requests that
/// queue behind a batch stuck on another connection's lock get their 503
/// within the timeout (plus a small margin), not after also waiting for
/// that batch: they used to wait up to twice the timeout, or more.
#[test]
fn the_busy_timeout_bounds_each_request_s_whole_wait() {
    use std::time::Instant;
    let timeout = Duration::from_millis(1000);
    let app = spawn_app_with(|c| c.store.busy_timeout = timeout);
    let key = app.create_key();
    assert_eq!(app.signed(&key, "GET", "/v1/whoami", b"").status, 200);

    let mut blocker = Connection::open(&app.db_path).unwrap();
    let tx = blocker
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .unwrap();
    // One request every 300 ms: each arrives while earlier ones' batches
    // are still waiting for the lock.
    let requests: Vec<_> = (0..6u64)
        .map(|i| {
            let (public, key) = (app.public, key.clone());
            std::thread::spawn(move || {
                // Requests spread over the real lock's hold time.
                std::thread::sleep(Duration::from_millis(300 * i));
                let app = TestApp {
                    public,
                    admin: public,
                    db_path: Default::default(),
                    _db: None,
                    clock: Clock::system(),
                };
                let started = Instant::now();
                let answer = app.signed(&key, "GET", "/v1/whoami", b"");
                (answer.status, answer.code().to_owned(), started.elapsed())
            })
        })
        .collect();
    let answers: Vec<_> = requests.into_iter().map(|r| r.join().unwrap()).collect();
    tx.rollback().unwrap();
    for (i, (status, code, waited)) in answers.iter().enumerate() {
        assert_eq!(
            (*status, code.as_str()),
            (503, "unavailable"),
            "request {i}"
        );
        assert!(
            *waited < timeout + Duration::from_millis(250),
            "request {i} waited {waited:?}: {answers:?}"
        );
    }
}

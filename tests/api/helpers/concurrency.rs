//! Many requests at once: the same signed request from many threads, and a
//! steady signed load that records every answer.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::http::*;

/// Sends the same signed `POST /v1/echo` (body "once") from `count` threads
/// released together, spread over `servers`; returns each (status, code).
pub fn send_at_once(
    servers: &[SocketAddr],
    count: usize,
    authorization: &str,
) -> Vec<(u16, String)> {
    let barrier = Arc::new(std::sync::Barrier::new(count));
    let threads: Vec<_> = (0..count)
        .map(|i| {
            let url = format!("http://{}/v1/echo", servers[i % servers.len()]);
            let (authorization, barrier) = (authorization.to_owned(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let answer = answer(
                    ureq::post(&url)
                        .set("Authorization", &authorization)
                        .send_bytes(b"once"),
                );
                (answer.status, answer.code().to_owned())
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// (accepted, refused as replays) among `send_at_once` results.
pub fn accepted_and_replays(results: &[(u16, String)]) -> (usize, usize) {
    (
        results.iter().filter(|(s, _)| *s == 200).count(),
        results.iter().filter(|(_, c)| c == "nonce_reused").count(),
    )
}

/// Signed requests sent one after another on `threads` threads until
/// `stop`; every answer is kept with the request that got it.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// (Authorization, status, error code) of every request so far.
    pub answers: Arc<Mutex<Vec<(String, u16, String)>>>,
}

impl Load {
    pub fn start(target: std::net::SocketAddr, key: &TestKey, threads: usize) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|_| {
                let (stop, answers, key) = (stop.clone(), answers.clone(), key.clone());
                std::thread::spawn(move || {
                    let agent = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(10))
                        .build();
                    let url = format!("http://{target}/v1/echo");
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let authorization =
                            Signing::new(&key, "POST", "/v1/echo", b"load").authorization();
                        let (status, code) = match agent
                            .post(&url)
                            .set("Authorization", &authorization)
                            .send_bytes(b"load")
                        {
                            Ok(r) => (r.status(), String::new()),
                            Err(ureq::Error::Status(s, r)) => {
                                let body: serde_json::Value = r
                                    .into_string()
                                    .ok()
                                    .and_then(|t| serde_json::from_str(&t).ok())
                                    .unwrap_or_default();
                                (s, body["error"]["code"].as_str().unwrap_or("").to_owned())
                            }
                            // The instance was killed mid-request.
                            Err(_) => (0, "transport".into()),
                        };
                        answers.lock().unwrap().push((authorization, status, code));
                    }
                })
            })
            .collect();
        Load {
            stop,
            threads,
            answers,
        }
    }

    /// Lets the load run for `duration`, then finishes it.
    pub fn finish_after(self, duration: Duration) -> Vec<(String, u16, String)> {
        std::thread::sleep(duration);
        self.finish()
    }

    pub fn finish(self) -> Vec<(String, u16, String)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        Arc::try_unwrap(self.answers).unwrap().into_inner().unwrap()
    }
}

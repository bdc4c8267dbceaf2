//! An upstream made of a raw socket: it records each request exactly as it
//! arrived (request line and header lines; the body is read and dropped) and answers with bytes a
//! test scripts, written in pieces with pauses between them. What a
//! framework would parse, fix or refuse reaches the test as it was.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub request_line: String,
    /// (name as sent, value), in order.
    pub headers: Vec<(String, String)>,
}

impl Received {
    /// The target on the request line.
    pub fn target(&self) -> &str {
        self.request_line.split(' ').nth(1).unwrap_or("")
    }

    /// Every value of a field, by name (case-insensitive).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// How the upstream answers: pieces of bytes, each written after its
/// pause, then the connection closed.
pub type Script = Vec<(Duration, Vec<u8>)>;

pub struct RawUpstream {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl RawUpstream {
    /// Answers every request with `answer(request)`, one connection at a
    /// time, each closed after its answer.
    pub fn start(answer: impl Fn(&Received) -> Script + Send + 'static) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let Some(request) = read_request(&mut stream) else {
                    continue;
                };
                log.lock().unwrap().push(request.clone());
                for (pause, bytes) in answer(&request) {
                    std::thread::sleep(pause);
                    if stream.write_all(&bytes).is_err() {
                        break;
                    }
                    let _ = stream.flush();
                }
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        });
        RawUpstream { addr, received }
    }

    /// Answers every request `200` with a small fixed body.
    pub fn ok() -> RawUpstream {
        Self::start(|_| {
            vec![(
                Duration::ZERO,
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"
                    .to_vec(),
            )]
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

fn read_request(stream: &mut std::net::TcpStream) -> Option<Received> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Received {
        request_line: request_line.trim_end().to_owned(),
        headers,
    })
}

/// Splits a raw HTTP/1.1 response into its head (status line and fields,
/// without the blank line) and the rest.
pub fn split_response(raw: &[u8]) -> (String, Vec<u8>) {
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(raw)));
    (
        String::from_utf8_lossy(&raw[..at]).into_owned(),
        raw[at + 4..].to_vec(),
    )
}

/// The body of a chunked message, de-chunked (a test's own reading, so
/// that what keygate wrote is checked, not what a client library forgave).
pub fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = std::str::from_utf8(&raw[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
        raw = &raw[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[..size]);
        assert_eq!(&raw[size..size + 2], b"\r\n", "a chunk ends with CRLF");
        raw = &raw[size + 2..];
    }
}

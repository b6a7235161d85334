//! A minimal imitation of the Hugging Face hub's file endpoints on 127.0.0.1, for tests
//! (feature `mock-hub`). It serves what hf-hub 0.5 reads:
//!
//! * `GET /{org}/{repo}/resolve/{revision}/{file}` with `x-repo-commit` and `etag`, honouring
//!   `Range: bytes=a-b` (206 + `content-range`). LFS files (`.safetensors`) answer like the
//!   real hub: `302` to an absolute CDN URL with `x-linked-etag` (the sha256) and
//!   `x-linked-size`.
//! * `GET /lfs/{sha256}`: the CDN, with ranges.
//!
//! Every connection is counted, so a test can prove that a cache hit made no request.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::verify::sha256_hex;

/// One file of one repo at one commit, reachable by branch name or commit.
#[derive(Debug, Clone)]
pub struct MockFile {
    /// `ORG/REPO`.
    pub repo: String,
    /// The branch that points at `commit`.
    pub branch: String,
    /// The 40-hex commit.
    pub commit: String,
    /// Path of the file inside the repo.
    pub path: String,
    /// The file's contents.
    pub bytes: Vec<u8>,
}

impl MockFile {
    /// `path` of `repo` on branch `main` at `commit`.
    pub fn on_main(repo: &str, commit: &str, path: &str, bytes: &[u8]) -> Self {
        Self {
            repo: repo.into(),
            branch: "main".into(),
            commit: commit.into(),
            path: path.into(),
            bytes: bytes.to_vec(),
        }
    }
}

#[derive(Default)]
struct State {
    files: Vec<MockFile>,
    /// LFS payloads by sha256 (what `/lfs/` serves).
    lfs: HashMap<String, Vec<u8>>,
    corrupt_lfs: bool,
}

/// A running mock hub; stops when dropped.
pub struct MockHub {
    port: u16,
    state: Arc<Mutex<State>>,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MockHub {
    /// Serve `files` on an ephemeral port.
    pub fn start(files: Vec<MockFile>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let lfs = files
            .iter()
            .filter(|f| is_lfs(&f.path))
            .map(|f| (sha256_hex(&f.bytes), f.bytes.clone()))
            .collect();
        let state = Arc::new(Mutex::new(State {
            files,
            lfs,
            corrupt_lfs: false,
        }));
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, rq, sp) = (state.clone(), requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                rq.fetch_add(1, Ordering::SeqCst);
                // One request per connection keeps the server trivial; clients reconnect.
                let _ = handle(conn, &st, port);
            }
        });
        Ok(Self {
            port,
            state,
            requests,
            stop,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`, the value for `HF_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Connections served so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Flip one byte of every LFS payload in transit (a corrupted transfer).
    pub fn corrupt_lfs_transfers(&self, on: bool) {
        self.state.lock().unwrap().corrupt_lfs = on;
    }

    /// Stop listening; later connections are refused.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MockHub {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn is_lfs(path: &str) -> bool {
    path.ends_with(".safetensors")
}

fn handle(conn: TcpStream, state: &Mutex<State>, port: u16) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.trim().eq_ignore_ascii_case("range")
        {
            range = v.trim().strip_prefix("bytes=").map(str::to_string);
        }
    }
    let st = state.lock().unwrap();
    let mut out = conn;
    if let Some(sha) = target.strip_prefix("/lfs/") {
        return match st.lfs.get(sha) {
            Some(bytes) => {
                let mut body = bytes.clone();
                if st.corrupt_lfs {
                    let mid = body.len() / 2;
                    body[mid] ^= 0xff;
                }
                send_body(
                    &mut out,
                    &body,
                    range.as_deref(),
                    &[("etag", format!("\"{sha}\""))],
                )
            }
            None => send(&mut out, "404 Not Found", &[], b""),
        };
    }
    // /{org}/{repo}/resolve/{revision}/{file}
    let parts: Vec<&str> = target.trim_start_matches('/').splitn(5, '/').collect();
    let found = match parts.as_slice() {
        [org, repo, "resolve", rev, file] => st.files.iter().find(|f| {
            f.repo == format!("{org}/{repo}")
                && (f.branch == *rev || f.commit == *rev)
                && f.path == *file
        }),
        _ => None,
    };
    let Some(f) = found else {
        return send(
            &mut out,
            "404 Not Found",
            &[("x-error-code", "EntryNotFound".into())],
            b"",
        );
    };
    let commit = ("x-repo-commit", f.commit.clone());
    if is_lfs(&f.path) {
        let sha = sha256_hex(&f.bytes);
        let headers = [
            commit,
            ("x-linked-etag", format!("\"{sha}\"")),
            ("x-linked-size", f.bytes.len().to_string()),
            ("etag", "\"redirect\"".into()),
            ("location", format!("http://127.0.0.1:{port}/lfs/{sha}")),
        ];
        send(&mut out, "302 Found", &headers, b"")
    } else {
        // Stand-in for the git blob id the real hub sends for small files.
        let etag = sha256_hex(&f.bytes)[..40].to_string();
        send_body(
            &mut out,
            &f.bytes,
            range.as_deref(),
            &[commit, ("etag", format!("\"{etag}\""))],
        )
    }
}

fn send_body(
    out: &mut TcpStream,
    body: &[u8],
    range: Option<&str>,
    headers: &[(&str, String)],
) -> std::io::Result<()> {
    let mut hs = headers.to_vec();
    let Some(range) = range else {
        return send(out, "200 OK", &hs, body);
    };
    let (a, b) = range.split_once('-').unwrap_or((range, ""));
    let start: usize = a.parse().unwrap_or(0);
    let end = b
        .parse::<usize>()
        .map(|e| e.min(body.len().saturating_sub(1)))
        .unwrap_or(body.len().saturating_sub(1));
    if start > end || start >= body.len() {
        hs.push(("content-range", format!("bytes */{}", body.len())));
        return send(out, "416 Range Not Satisfiable", &hs, b"");
    }
    hs.push((
        "content-range",
        format!("bytes {start}-{end}/{}", body.len()),
    ));
    send(out, "206 Partial Content", &hs, &body[start..=end])
}

fn send(
    out: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(body)?;
    out.flush()
}

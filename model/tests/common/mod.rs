//! Shared by the command-line and Explorer tests: the properties every
//! check reports, a running `raft-model explore`, and a minimal HTTP/1.1
//! client for it and for ChromeDriver (std only; every request goes to
//! 127.0.0.1).

#![allow(dead_code)] // each test file uses a different part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `always` properties every configuration checks, by their names in
/// the paper (Figure 3's five) and the client history's.
pub const PAPER_PROPERTIES: [&str; 6] = [
    "Election Safety",
    "Leader Append-Only",
    "Log Matching",
    "Leader Completeness",
    "State Machine Safety",
    "Linearizability",
];

/// A `raft-model explore` process on a free port, killed when dropped.
pub struct Explorer {
    child: Child,
    /// Where it serves, e.g. `127.0.0.1:41234`.
    pub addr: SocketAddr,
    /// The URL it printed, e.g. `http://127.0.0.1:41234/`.
    pub url: String,
}

impl Explorer {
    /// Starts `raft-model explore <config_flags> --addr 127.0.0.1:0` and
    /// waits until it answers.
    pub fn start(config_flags: &[&str]) -> Explorer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_raft-model"))
            .arg("explore")
            .args(config_flags)
            .args(["--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start raft-model explore");
        let stdout = child.stdout.take().expect("explore's stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read explore's first line");
        let url = line
            .split_whitespace()
            .last()
            .filter(|u| u.starts_with("http://"))
            .unwrap_or_else(|| panic!("explore printed no URL: {line:?}"))
            .to_string();
        let addr: SocketAddr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("bad URL {url}: {e}"));
        let explorer = Explorer { child, addr, url };
        // It prints the URL just before it binds: wait until it answers.
        for _ in 0..100 {
            if TcpStream::connect(explorer.addr).is_ok() {
                return explorer;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("explore does not answer at {}", explorer.url);
    }

    /// GETs a path of the Explorer: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        request(self.addr, "GET", path, None).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// GETs a path that must answer 200 with JSON.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }
}

impl Drop for Explorer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request (`Connection: close`): (status, body).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json_body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = json_body.unwrap_or("");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if json_body.is_some() {
        head.push_str("Content-Type: application/json; charset=utf-8\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    // Read the headers, then the body: by its length, its chunks, or to the
    // end (a server may keep the connection open despite `Connection: close`).
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let split = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(bad("connection closed before the end of the headers"));
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let headers = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status: u16 = headers
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let mut body = raw.split_off(split + 4);
    let header = |name: &str| {
        headers
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    let chunked = header("transfer-encoding:").is_some_and(|v| v.contains("chunked"));
    if let Some(len) = header("content-length:").and_then(|v| v.parse::<usize>().ok()) {
        while body.len() < len {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Err(bad("connection closed before the end of the body"));
            }
            body.extend_from_slice(&buf[..n]);
        }
        body.truncate(len);
    } else if chunked {
        while dechunk(&body).is_none() {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Err(bad("connection closed before the last chunk"));
            }
            body.extend_from_slice(&buf[..n]);
        }
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    } else {
        stream.read_to_end(&mut body)?;
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_field = std::str::from_utf8(&raw[..eol]).ok()?;
        let size = usize::from_str_radix(size_field.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

/// A free TCP port on 127.0.0.1 (free when this returns).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The `/.states` entry reached by the last index of `encoded` (an
/// Explorer path `init/a1/a2/...`): the response for the prefix, at that
/// action index.
pub fn state_at(explorer: &Explorer, encoded: &str) -> serde_json::Value {
    let (prefix, last) = match encoded.rsplit_once('/') {
        Some((p, l)) => (format!("/.states/{p}"), l),
        None => ("/.states".to_string(), encoded),
    };
    let last: u64 = last.parse().expect("an action index");
    let steps = explorer.get_json(&prefix);
    steps
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|s| s["actionIndex"].as_u64() == Some(last))
                .cloned()
        })
        .unwrap_or_else(|| panic!("no action {last} at {prefix}: {steps}"))
}

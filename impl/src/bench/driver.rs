//! The load of one measurement: `c` clients, each its own connection and
//! session with one request in flight (a closed loop: the next request
//! leaves when the previous one's answer came), all driven from one thread
//! that waits on their sockets at once, as load generators do (a thread
//! per client would spend the machine's cores on its own wake-ups, which
//! the nodes share).

use crate::client::random_client_id;
use crate::transport;
use crate::wire::{self, Filled, Frame, FrameBuf, Response, Sender, DEFAULT_MAX_FRAME};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use raft_spec::{Ack, ClientId, KvCommand, ReadMode};
use std::io::{self, Write};
use std::time::{Duration, Instant};

/// What one client asks, given its number and the request's.
pub(super) type Requests<'a> = dyn Fn(usize, u64) -> (KvCommand, Ack, Option<ReadMode>) + 'a;

/// Latencies of the answered requests sent within the window, and the
/// requests that failed (an answer other than a result, or a connection
/// lost).
#[derive(Debug, Default)]
pub(super) struct Load {
    pub latencies: Vec<Duration>,
    pub errors: u64,
}

struct Client {
    stream: TcpStream,
    id: ClientId,
    request_no: u64,
    sent_at: Instant,
    input: FrameBuf,
    output: Vec<u8>,
    written: usize,
}

impl Client {
    fn send(&mut self, number: usize, requests: &Requests) -> io::Result<()> {
        self.request_no += 1;
        let (command, ack, read) = requests(number, self.request_no);
        let frame = Frame::Request {
            client_id: self.id,
            request_no: self.request_no,
            command,
            ack,
            read,
        };
        self.output.clear();
        self.written = 0;
        wire::write_frame(&mut self.output, &frame)?;
        self.sent_at = Instant::now();
        self.flush()
    }

    fn flush(&mut self) -> io::Result<()> {
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Runs client `t` against `addresses[t]` for `warm_up` (not counted),
/// then for `window` (counted: every request sent within it and answered).
pub(super) fn drive(
    addresses: &[String],
    cluster_id: &str,
    requests: &Requests,
    warm_up: Duration,
    window: Duration,
) -> Result<Load, String> {
    let poll = Poll::new().map_err(|e| format!("bench: {e}"));
    let mut poll = poll?;
    let mut clients = Vec::with_capacity(addresses.len());
    for (t, addr) in addresses.iter().enumerate() {
        let stream = transport::connect(
            addr,
            cluster_id,
            Sender::Client,
            Duration::from_secs(5),
            DEFAULT_MAX_FRAME,
        )?;
        stream
            .set_nonblocking(true)
            .map_err(|e| format!("bench: {e}"))?;
        let mut stream = TcpStream::from_std(stream);
        poll.registry()
            .register(
                &mut stream,
                Token(t),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| format!("bench: {e}"))?;
        clients.push(Some(Client {
            stream,
            id: random_client_id(),
            request_no: 0,
            sent_at: Instant::now(),
            input: FrameBuf::default(),
            output: Vec::new(),
            written: 0,
        }));
    }
    let mut load = Load::default();
    let started = Instant::now();
    let (counted_from, end) = (started + warm_up, started + warm_up + window);
    for (t, slot) in clients.iter_mut().enumerate() {
        if let Some(c) = slot {
            if c.send(t, requests).is_err() {
                load.errors += 1;
                *slot = None;
            }
        }
    }
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 64 << 10];
    loop {
        let now = Instant::now();
        if now >= end || clients.iter().all(Option::is_none) {
            break;
        }
        if let Err(e) = poll.poll(&mut events, Some(end - now)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(format!("bench: {e}"));
            }
        }
        for event in &events {
            let t = event.token().0;
            let Some(Some(c)) = clients.get_mut(t) else {
                continue;
            };
            let mut failed = event.is_writable() && c.flush().is_err();
            let filled = c.input.fill(&mut c.stream, &mut scratch, usize::MAX);
            loop {
                let answer = match c.input.next_frame(DEFAULT_MAX_FRAME) {
                    Ok(Some(Frame::Response(answer))) => answer,
                    Ok(None) => break,
                    Ok(_) | Err(_) => {
                        failed = true;
                        break;
                    }
                };
                let answered = Instant::now();
                let counted = c.sent_at >= counted_from && answered <= end;
                match answer {
                    Response::Ok(_) | Response::Accepted { .. } if counted => {
                        load.latencies.push(answered - c.sent_at);
                    }
                    Response::Ok(_) | Response::Accepted { .. } => {}
                    _ if counted => load.errors += 1,
                    _ => {}
                }
                if c.send(t, requests).is_err() {
                    failed = true;
                    break;
                }
            }
            if failed || !matches!(filled, Ok(Filled::WouldBlock)) {
                load.errors += 1;
                clients[t] = None;
            }
        }
    }
    Ok(load)
}

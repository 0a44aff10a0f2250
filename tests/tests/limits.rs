//! Clients that stall or pile up: they are closed, capped, and never keep a viewer out.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use onair_tests::daemon::Daemon;
use onair_tests::viewer::{Watch, watch};

const SMALL: &str = "[video]\nwidth = 320\nheight = 240\nfps = 15\n";

fn host_port(base_url: &str) -> String {
    base_url.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection; returns what it sent and whether it closed
/// within `limit`.
fn read_to_close(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (String::from_utf8_lossy(&got).into_owned(), false);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&got).into_owned(), true);
            }
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_hundred_stalled_connections_neither_keep_viewers_out_nor_stay() {
    let daemon = Daemon::start(SMALL).unwrap();
    let addr = host_port(&daemon.base_url);
    let opened = Instant::now();
    // Half say nothing; half start a request and never finish its headers.
    let mut stalled: Vec<TcpStream> = (0..600)
        .map(|i| {
            let mut stream = TcpStream::connect(&addr).unwrap();
            if i % 2 == 1 {
                stream
                    .write_all(b"GET /api/status HTTP/1.1\r\nHost: x\r\n")
                    .unwrap();
            }
            stream
        })
        .collect();
    eprintln!("600 stalled connections open after {:?}", opened.elapsed());

    let report = watch(
        &format!("{}/whep", daemon.base_url),
        Watch::decoding(10, Duration::from_secs(60)),
    )
    .await
    .unwrap();
    assert!(report.frames_decoded >= 10, "{report:?}");
    eprintln!(
        "a new viewer beside them: first frame after {:?}",
        report.time_to_first_frame
    );

    let closed = tokio::task::spawn_blocking(move || {
        let mut slowest = Duration::ZERO;
        for stream in &mut stalled {
            let (_, closed) = read_to_close(stream, Duration::from_secs(60));
            assert!(
                closed,
                "a stalled connection still open 60 s after it opened"
            );
            slowest = opened.elapsed();
        }
        slowest
    })
    .await
    .unwrap();
    eprintln!("all 600 closed by the server {closed:?} after they opened");
    assert!(closed <= Duration::from_secs(60));
}

#[test]
fn a_body_that_stops_arriving_is_answered_408() {
    let daemon = Daemon::start(SMALL).unwrap();
    let addr = host_port(&daemon.base_url);
    let mut stream = TcpStream::connect(&addr).unwrap();
    let head = format!(
        "POST /whep HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/sdp\r\nContent-Length: 1000\r\n\r\nv=0\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let started = Instant::now();
    let (answer, closed) = read_to_close(&mut stream, Duration::from_secs(45));
    eprintln!(
        "answered after {:?}: {:?}",
        started.elapsed(),
        answer.lines().next()
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(closed);
}

#[test]
fn a_body_over_64_kib_is_answered_413_on_any_route() {
    let daemon = Daemon::start(SMALL).unwrap();
    let addr = host_port(&daemon.base_url);
    for path in ["/whep", "/api/status", "/whep/nonexistent"] {
        let mut stream = TcpStream::connect(&addr).unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/sdp\r\nContent-Length: 10000000\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).unwrap();
        // The server may answer and close before all of it is sent.
        let _ = stream.write_all(&vec![b'a'; 100_000]);
        let (answer, _) = read_to_close(&mut stream, Duration::from_secs(20));
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "POST {path}: {answer:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_connections_are_capped() {
    let daemon = Daemon::start(SMALL).unwrap();
    let url = format!("{}/ws", daemon.base_url.replacen("http://", "ws://", 1));
    let mut open = Vec::new();
    let refused = loop {
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((socket, _)) => open.push(socket),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                break response.status().as_u16();
            }
            Err(err) => panic!("after {} connections: {err}", open.len()),
        }
        assert!(open.len() <= 1000, "no cap");
    };
    eprintln!(
        "{} WebSocket connections, the next answered {refused}",
        open.len()
    );
    assert_eq!(refused, 503);
    assert_eq!(open.len(), 200);
    // A slot frees when one closes.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(err) => panic!("no slot freed: {err}"),
        }
    }
}

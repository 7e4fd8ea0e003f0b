//! The HTTP listener itself (issue 6, items 2 and 15): TCP_NODELAY on accepted sockets, the
//! header-read, keep-alive and request-body timeouts, and the connection limits, over raw
//! sockets so that the test controls every byte and its timing.

use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::helpers::{TestApp, spawn_app_with};

pub fn addr(app: &TestApp) -> SocketAddr {
    app.url
        .trim_start_matches("http://")
        .parse()
        .expect("the app's address")
}

/// TCP_NODELAY of every socket in this process that the server accepted on `server` (local
/// address `server`, connected to a peer). The server runs in this process, so its sockets
/// are among our file descriptors.
pub fn accepted_sockets_nodelay(server: SocketAddr) -> Vec<bool> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        // SAFETY: only socket options and addresses are read. Another test may close this
        // descriptor meanwhile; the calls then fail (EBADF) or describe an unrelated socket,
        // which the address match below filters out.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        let (Ok(local), Ok(_)) = (socket.local_addr(), socket.peer_addr()) else {
            continue;
        };
        if local.as_socket() == Some(server) {
            found.push(socket.tcp_nodelay().unwrap_or(false));
        }
    }
    found
}

/// Connect from `local` (another loopback address, say) to `server`.
async fn connect_from(local: &str, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{local}:0").parse().unwrap())?;
    socket.connect(server).await
}

/// Read one HTTP/1.1 response with a `Content-Length`; its status and body.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.expect("read a response");
        assert!(n > 0, "connection closed before a complete response");
        data.extend_from_slice(&chunk[..n]);
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        if data.len() >= end + 4 + length {
            let status = head[9..12].parse().unwrap();
            let body = String::from_utf8_lossy(&data[end + 4..end + 4 + length]).into_owned();
            return (status, body);
        }
    }
}

/// Wait until the server closes `stream` (EOF or reset); how long that took, or `None` if
/// it was still open after `limit`.
pub async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((start + limit).into(), stream.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

#[tokio::test]
async fn accepted_sockets_have_tcp_nodelay() {
    let app = spawn_app_with(|_| {}).await;
    // reqwest keeps the connection open in its pool after the response.
    let r = app
        .http
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let sockets = accepted_sockets_nodelay(addr(&app));
    assert!(!sockets.is_empty(), "found the accepted socket");
    assert!(
        sockets.iter().all(|&nodelay| nodelay),
        "TCP_NODELAY on every accepted socket: {sockets:?}"
    );
}

#[tokio::test]
async fn a_connection_that_sends_no_complete_request_head_is_closed_after_the_header_timeout() {
    let app = spawn_app_with(|raw| raw.http.header_read_timeout_seconds = 1).await;
    let server = addr(&app);
    let mut silent = TcpStream::connect(server).await.unwrap();
    let mut slow = TcpStream::connect(server).await.unwrap();
    let trickle = tokio::spawn(async move {
        slow.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        let start = Instant::now();
        // One header byte every 200 ms: never a complete head.
        for byte in b"Host: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
            if slow.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut probe = [0u8; 64];
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(Duration::from_millis(1), slow.read(&mut probe)).await
            {
                return Some(start.elapsed());
            }
        }
        None
    });
    let silent_closed = closed_within(&mut silent, Duration::from_secs(5)).await;
    let slow_closed = trickle.await.unwrap();
    for (name, closed) in [("silent", silent_closed), ("trickling", slow_closed)] {
        let after = closed.unwrap_or_else(|| panic!("the {name} connection is closed"));
        assert!(
            after >= Duration::from_millis(800) && after < Duration::from_millis(2_500),
            "the {name} connection is closed at the 1 s header timeout, not {after:?}"
        );
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_outlives_the_header_timeout_and_closes_at_the_keep_alive_timeout()
 {
    let app = spawn_app_with(|raw| {
        raw.http.header_read_timeout_seconds = 1;
        raw.http.keep_alive_timeout_seconds = 3;
    })
    .await;
    let mut conn = TcpStream::connect(addr(&app)).await.unwrap();
    conn.write_all(HEALTHZ).await.unwrap();
    assert_eq!(read_response(&mut conn).await.0, 200);
    // Idle for twice the header timeout: still open, the next request is served.
    tokio::time::sleep(Duration::from_secs(2)).await;
    conn.write_all(HEALTHZ).await.unwrap();
    assert_eq!(
        read_response(&mut conn).await.0,
        200,
        "an idle keep-alive connection is not cut at the header timeout"
    );
    let closed = closed_within(&mut conn, Duration::from_secs(6))
        .await
        .expect("the idle connection is closed");
    assert!(
        closed >= Duration::from_millis(2_500) && closed < Duration::from_millis(4_500),
        "closed at the 3 s keep-alive timeout, not {closed:?}"
    );
}

#[tokio::test]
async fn a_stalled_request_body_is_answered_408_and_the_connection_closed() {
    let app = spawn_app_with(|raw| raw.http.request_body_timeout_seconds = 1).await;
    let mut conn = TcpStream::connect(addr(&app)).await.unwrap();
    let start = Instant::now();
    conn.write_all(
        b"POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\n\
          Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n\
          grant_type=",
    )
    .await
    .unwrap();
    let (status, _) = tokio::time::timeout(Duration::from_secs(5), read_response(&mut conn))
        .await
        .expect("an answer although the body never completes");
    assert_eq!(status, 408);
    assert!(
        start.elapsed() < Duration::from_millis(2_500),
        "answered at the 1 s body timeout, not {:?}",
        start.elapsed()
    );
    assert!(
        closed_within(&mut conn, Duration::from_secs(2))
            .await
            .is_some(),
        "the connection is closed after the 408"
    );
}

#[tokio::test]
async fn hundreds_of_slow_connections_do_not_stop_healthz() {
    const SLOW: usize = 300;
    let app = spawn_app_with(|raw| {
        raw.http.header_read_timeout_seconds = 2;
        raw.http.max_connections = 100;
        raw.http.max_connections_per_ip = 50;
    })
    .await;
    let server = addr(&app);
    let start = Instant::now();
    // Each slow client sends a request line, then a header byte every 300 ms, and reports
    // how long its connection stayed open (a burst of connects can wait for SYN retries in
    // the kernel, so this is counted from the connect, not from the start).
    let slow: Vec<_> = (0..SLOW)
        .map(|_| {
            tokio::spawn(async move {
                let mut conn = TcpStream::connect(server).await.ok()?;
                let connected = Instant::now();
                let _ = conn.write_all(b"GET /healthz HTTP/1.1\r\n").await;
                let mut chunk = [0u8; 64];
                loop {
                    if conn.write_all(b"X").await.is_err() {
                        return Some(connected.elapsed());
                    }
                    let read =
                        tokio::time::timeout(Duration::from_millis(300), conn.read(&mut chunk));
                    if let Ok(Ok(0) | Err(_)) = read.await {
                        return Some(connected.elapsed());
                    }
                    if start.elapsed() > Duration::from_secs(10) {
                        return None;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Another address is served at once: one peer cannot take more than its share.
    let other = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let asked = Instant::now();
    let r = other
        .get(format!("{}/healthz", app.url))
        .send()
        .await
        .expect("/healthz from 127.0.0.2 while 127.0.0.1 holds its limit");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "answered at once, not after {:?}",
        asked.elapsed()
    );

    // The slow clients' own address is served once the header timeout has cut them.
    let deadline = start + Duration::from_secs(5);
    loop {
        let fresh = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        match fresh.get(format!("{}/healthz", app.url)).send().await {
            Ok(r) if r.status() == StatusCode::OK => break,
            _ if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!(
                "/healthz from 127.0.0.1 answered within 5 s of the attack: {other:?} after {:?}",
                start.elapsed()
            ),
        }
    }

    let mut refused_at_once = 0;
    for task in slow {
        let closed = task
            .await
            .unwrap()
            .expect("every slow connection is closed by the server");
        assert!(
            closed < Duration::from_millis(3_000),
            "closed by the 2 s header timeout at the latest, not after {closed:?}"
        );
        if closed < Duration::from_millis(500) {
            refused_at_once += 1;
        }
    }
    assert!(
        refused_at_once >= SLOW - 50 - 10,
        "connections beyond the per-IP limit of 50 are closed at once: {refused_at_once} of {SLOW}"
    );
}

#[tokio::test]
async fn at_the_connection_limit_new_connections_wait_until_one_closes() {
    let app = spawn_app_with(|raw| {
        raw.http.header_read_timeout_seconds = 2;
        raw.http.max_connections = 5;
    })
    .await;
    let server = addr(&app);
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.push(TcpStream::connect(server).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    let mut waiting = TcpStream::connect(server).await.unwrap();
    waiting.write_all(HEALTHZ).await.unwrap();
    let (status, _) = tokio::time::timeout(Duration::from_secs(6), read_response(&mut waiting))
        .await
        .expect("served once the idle connections time out");
    assert_eq!(status, 200);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1_300) && waited < Duration::from_secs(4),
        "not accepted while 5 connections are open, then served when they are cut; waited {waited:?}"
    );
}

#[tokio::test]
async fn trusted_proxies_are_exempt_from_the_per_ip_limit() {
    let app = spawn_app_with(|raw| {
        raw.http.max_connections_per_ip = 2;
        raw.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    let server = addr(&app);
    let mut proxy_connections = Vec::new();
    for _ in 0..5 {
        proxy_connections.push(connect_from("127.0.0.1", server).await.unwrap());
    }
    for conn in &mut proxy_connections {
        conn.write_all(HEALTHZ).await.unwrap();
        assert_eq!(read_response(conn).await.0, 200, "a proxy is not limited");
    }

    // From an untrusted address the third connection is closed at once.
    let mut direct = Vec::new();
    for _ in 0..3 {
        direct.push(connect_from("127.0.0.3", server).await.unwrap());
    }
    let third = direct.last_mut().unwrap();
    let closed = closed_within(third, Duration::from_secs(1)).await;
    assert!(
        closed.is_some(),
        "the third connection from one address is closed"
    );
    let first = &mut direct[0];
    first.write_all(HEALTHZ).await.unwrap();
    assert_eq!(
        read_response(first).await.0,
        200,
        "the first two are served"
    );
}

#[tokio::test]
async fn shutdown_finishes_requests_in_progress_closes_idle_connections_and_stops_accepting() {
    use mcp_oauth::clock::Clock;
    use mcp_oauth::config::RawSettings;
    use mcp_oauth::startup::{Application, connect_db};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    let db_path = std::env::temp_dir().join(format!(
        "mcp_oauth_it_shutdown_{}.db",
        mcp_oauth::random::id()
    ));
    let settings = RawSettings {
        public_url: format!("http://{server}"),
        listen: server.to_string(),
        database_url: format!("sqlite://{}?mode=rwc", db_path.display()).into(),
        ..RawSettings::default()
    }
    .validate()
    .unwrap();
    let db = connect_db(&settings.database_url).await.unwrap();
    let app = Application::build_on(settings, Clock::system(), db, listener)
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));

    let mut idle = TcpStream::connect(server).await.unwrap();
    idle.write_all(HEALTHZ).await.unwrap();
    assert_eq!(read_response(&mut idle).await.0, 200);
    let mut busy = TcpStream::connect(server).await.unwrap();
    let body = b"grant_type=client_credentials";
    busy.write_all(
        format!(
            "POST /token HTTP/1.1\r\nHost: {server}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    busy.write_all(&body[..5]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    stop.send(()).unwrap();
    assert!(
        closed_within(&mut idle, Duration::from_secs(2))
            .await
            .is_some(),
        "an idle connection is closed at once"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        TcpStream::connect(server).await.is_err(),
        "no new connections are accepted"
    );
    busy.write_all(&body[5..]).await.unwrap();
    let (status, _) = read_response(&mut busy).await;
    assert!(
        (400..500).contains(&status),
        "the request in progress is answered (refused: no client), not cut: {status}"
    );
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the server stops once its requests are done")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db_path.display()));
    }
}

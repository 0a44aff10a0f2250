//! ICE-TCP on the port's number, for viewers whose network blocks UDP (RFC 6544 passive
//! candidates, RFC 4571 framing).
//!
//! webrtc-rs 0.21 binds a TCP listener per peer connection (`with_tcp_addrs`) and announces
//! a passive candidate on it. As with UDP ([`super::port`]), the runtime closes that
//! listener at once and hands the connection a [`VirtualListener`] instead: one real
//! listener per bind address, on `webrtc.port`, accepts every viewer's connection, reads its
//! first frame (a STUN check, whose USERNAME names the connection it is for), and passes the
//! stream, with those bytes still to be read, to that connection's listener.
//!
//! A connection that sends no such check within [`FIRST_FRAME_WITHIN`] is closed, and at
//! most [`PENDING`] wait at once: an idle client cannot hold sockets open.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, warn};
use webrtc::runtime::{AsyncTcpListener, AsyncTcpStream};

use super::port::stun;

/// How long a new TCP connection may take to send its first STUN check.
pub const FIRST_FRAME_WITHIN: Duration = Duration::from_secs(5);
/// TCP connections waiting for their first check at most; more are closed at once.
pub const PENDING: usize = 64;
/// The largest first frame taken: a connectivity check is a few hundred bytes.
const MAX_FIRST_FRAME: usize = 2048;
/// Streams waiting for one connection's driver to accept them.
const LOBBY: usize = 4;

/// A stream accepted for a connection, and who it is from.
type Arrival = (Arc<dyn AsyncTcpStream>, SocketAddr);

/// Where one connection's TCP streams wait for its driver.
struct Lobby {
    /// The address webrtc-rs bound (its passive candidate, and the local address of every
    /// stream it is given).
    key: SocketAddr,
    /// The connection's name (see [`super::port::Routes::answer_as`]).
    conn: String,
    tx: mpsc::Sender<Arrival>,
}

/// Connections by name, and by the ICE username fragment each answers to.
#[derive(Default)]
struct Lobbies {
    conn_of_ufrag: HashMap<String, String>,
    by_conn: HashMap<String, Vec<Weak<Lobby>>>,
}

impl Lobbies {
    /// The lobby of the connection answering to `ufrag`, for a stream that arrived at
    /// `local`.
    fn find(&self, ufrag: &str, local: IpAddr) -> Option<Arc<Lobby>> {
        let lobbies = self.by_conn.get(self.conn_of_ufrag.get(ufrag)?)?;
        let alive = || lobbies.iter().filter_map(Weak::upgrade);
        alive()
            .find(|l| l.key.ip() == local)
            .or_else(|| alive().find(|l| l.key.ip().is_ipv4() == local.is_ipv4()))
    }
}

/// The TCP side of the port: its listeners and the connections waiting on them.
pub struct TcpPort {
    listeners: Vec<SocketAddr>,
    lobbies: Arc<Mutex<Lobbies>>,
}

impl fmt::Debug for TcpPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpPort")
            .field("listeners", &self.listeners)
            .finish()
    }
}

impl TcpPort {
    /// Listens on every address of `addrs` and starts accepting.
    pub fn listen(addrs: &[SocketAddr]) -> io::Result<TcpPort> {
        let lobbies = Arc::new(Mutex::new(Lobbies::default()));
        let pending = Arc::new(Semaphore::new(PENDING));
        let mut listeners = Vec::new();
        for addr in addrs {
            let listener = bind(*addr).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("webrtc.port: listening on TCP {addr}: {e}"),
                )
            })?;
            listeners.push(listener.local_addr()?);
            tokio::spawn(accept(listener, lobbies.clone(), pending.clone()));
        }
        Ok(TcpPort { listeners, lobbies })
    }

    /// Checks addressed to `ufrag` go to connection `conn` from now on.
    pub(super) fn answer_as(&self, conn: &str, ufrag: &str) {
        let mut lobbies = self.lobbies.lock().unwrap_or_else(|e| e.into_inner());
        lobbies.conn_of_ufrag.retain(|_, c| c != conn);
        lobbies
            .conn_of_ufrag
            .insert(ufrag.to_owned(), conn.to_owned());
    }

    /// A listener in place of `bound` (one webrtc-rs bound for the connection `conn`), or
    /// `None` when no real listener serves its address.
    pub(super) fn listener_for(&self, bound: SocketAddr, conn: &str) -> Option<VirtualListener> {
        self.listeners.iter().find(|a| {
            a.ip() == bound.ip() || (a.ip().is_unspecified() && a.is_ipv4() == bound.is_ipv4())
        })?;
        let (tx, rx) = mpsc::channel(LOBBY);
        let lobby = Arc::new(Lobby {
            key: bound,
            conn: conn.to_owned(),
            tx,
        });
        self.lobbies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_conn
            .entry(conn.to_owned())
            .or_default()
            .push(Arc::downgrade(&lobby));
        Some(VirtualListener {
            lobby,
            arrivals: tokio::sync::Mutex::new(rx),
            lobbies: self.lobbies.clone(),
        })
    }
}

fn bind(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    tokio::net::TcpListener::from_std(socket.into())
}

/// Accepts every connection and hands it to [`first_frame`], [`PENDING`] at a time.
async fn accept(
    listener: tokio::net::TcpListener,
    lobbies: Arc<Mutex<Lobbies>>,
    pending: Arc<Semaphore>,
) {
    let at = listener.local_addr().ok();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors and the like: pause rather than spin.
            Err(err) => {
                warn!("webrtc.port TCP {at:?}: accept: {err}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            debug!(%peer, "ICE-TCP: {PENDING} connections already wait for a check; closed");
            continue;
        };
        let lobbies = lobbies.clone();
        tokio::spawn(async move {
            let handed =
                tokio::time::timeout(FIRST_FRAME_WITHIN, hand_over(stream, peer, &lobbies)).await;
            drop(permit);
            match handed {
                Ok(Ok(ufrag)) => debug!(%peer, %ufrag, "ICE-TCP connection handed over"),
                Ok(Err(why)) => debug!(%peer, "ICE-TCP connection closed: {why}"),
                Err(_) => debug!(%peer, "ICE-TCP connection closed: no check within 5 s"),
            }
        });
    }
}

/// Reads the stream's first frame and hands the stream to the connection its check names.
async fn hand_over(
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    lobbies: &Mutex<Lobbies>,
) -> Result<String, String> {
    let mut length = [0u8; 2];
    stream
        .read_exact(&mut length)
        .await
        .map_err(|e| e.to_string())?;
    let len = usize::from(u16::from_be_bytes(length));
    if len > MAX_FIRST_FRAME {
        return Err(format!("first frame of {len} bytes"));
    }
    let mut frame = vec![0u8; 2 + len];
    frame[..2].copy_from_slice(&length);
    stream
        .read_exact(&mut frame[2..])
        .await
        .map_err(|e| e.to_string())?;
    let ufrag = stun(&frame[2..])
        .filter(|s| s.request)
        .and_then(|s| s.ufrag)
        .ok_or("the first frame is not a STUN check")?;
    let local = stream.local_addr().map_err(|e| e.to_string())?;
    let lobby = lobbies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .find(&ufrag, local.ip())
        .ok_or_else(|| format!("no connection has ufrag {ufrag}"))?;
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let stream = VirtualStream {
        unread: Mutex::new(frame),
        read,
        write,
        local: lobby.key,
        peer,
    };
    lobby
        .tx
        .try_send((Arc::new(stream), peer))
        .map_err(|_| format!("connection {ufrag} has {LOBBY} streams waiting already"))?;
    Ok(ufrag)
}

/// What a peer connection accepts from instead of a listener of its own.
pub struct VirtualListener {
    lobby: Arc<Lobby>,
    arrivals: tokio::sync::Mutex<mpsc::Receiver<Arrival>>,
    lobbies: Arc<Mutex<Lobbies>>,
}

impl fmt::Debug for VirtualListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VirtualListener")
            .field("key", &self.lobby.key)
            .field("conn", &self.lobby.conn)
            .finish()
    }
}

impl Drop for VirtualListener {
    fn drop(&mut self) {
        let mut lobbies = self.lobbies.lock().unwrap_or_else(|e| e.into_inner());
        let conn = &self.lobby.conn;
        if let Some(list) = lobbies.by_conn.get_mut(conn) {
            list.retain(|l| l.strong_count() > 0 && !l.ptr_eq(&Arc::downgrade(&self.lobby)));
            if list.is_empty() {
                lobbies.by_conn.remove(conn);
                lobbies.conn_of_ufrag.retain(|_, c| c != conn);
            }
        }
    }
}

impl AsyncTcpListener for VirtualListener {
    fn accept<'a>(
        &'a self,
    ) -> Pin<Box<dyn Future<Output = io::Result<(Arc<dyn AsyncTcpStream>, SocketAddr)>> + Send + 'a>>
    {
        Box::pin(async move {
            // The lobby holds a sender, so this waits rather than ending.
            self.arrivals
                .lock()
                .await
                .recv()
                .await
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.lobby.key)
    }
}

/// An accepted TCP stream that first gives back the bytes read to route it.
#[derive(Debug)]
struct VirtualStream {
    unread: Mutex<Vec<u8>>,
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
    /// The connection's listener address (where ICE has its passive candidate).
    local: SocketAddr,
    peer: SocketAddr,
}

impl VirtualStream {
    /// Moves what is left of the first frame into `buf`.
    fn take_unread(&self, buf: &mut [u8]) -> usize {
        let mut unread = self.unread.lock().unwrap_or_else(|e| e.into_inner());
        let n = unread.len().min(buf.len());
        buf[..n].copy_from_slice(&unread[..n]);
        unread.drain(..n);
        n
    }
}

impl AsyncTcpStream for VirtualStream {
    fn read<'a, 'b>(
        &'a self,
        buf: &'b mut [u8],
    ) -> Pin<Box<dyn Future<Output = io::Result<usize>> + Send + 'b>>
    where
        'a: 'b,
    {
        Box::pin(async move {
            let n = self.take_unread(buf);
            if n > 0 {
                return Ok(n);
            }
            loop {
                self.read.readable().await?;
                match self.read.try_read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    read => return read,
                }
            }
        })
    }

    fn write_all<'a, 'b>(
        &'a self,
        buf: &'b [u8],
    ) -> Pin<Box<dyn Future<Output = io::Result<()>> + Send + 'b>>
    where
        'a: 'b,
    {
        Box::pin(async move {
            let mut rest = buf;
            while !rest.is_empty() {
                self.write.writable().await?;
                match self.write.try_write(rest) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => rest = &rest[n..],
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.peer)
    }
}

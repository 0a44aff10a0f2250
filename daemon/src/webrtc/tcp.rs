//! ICE-TCP on the port's number, for viewers whose network blocks UDP (RFC 6544 passive
//! candidates, RFC 4571 framing).
//!
//! One listener per bind address, on `webrtc.port`, accepts every viewer's connection and
//! reads its first frame (a STUN check, whose USERNAME names the connection it is for).
//! The stream then gets one task that passes its frames to the engine and writes the
//! engine's frames to it ([`TcpArrival`]); the engine keeps only the sending end of a
//! bounded queue, so a stalled viewer never holds it up (its frames are dropped, as UDP
//! would lose them).
//!
//! A connection that sends no such check within [`FIRST_FRAME_WITHIN`] is closed, and at
//! most [`PENDING`] wait at once, [`PENDING_PER_SOURCE`] from one address: an idle client
//! cannot hold sockets open, nor keep other viewers' connections out. A stream the engine
//! does not take (nobody has that ufrag) is closed.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rtc::shared::tcp_framing::frame_packet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::pending::PendingBudget;
use super::port::Arrival;
use crate::lifecycle::Lifecycle;

/// How long a new TCP connection may take to send its first STUN check.
pub const FIRST_FRAME_WITHIN: Duration = Duration::from_secs(5);
/// TCP connections waiting for their first check at most; more are closed at once.
pub const PENDING: usize = 64;
/// ... from one address (a viewer opens one per candidate pair it checks over TCP).
pub const PENDING_PER_SOURCE: usize = 8;
/// The largest first frame taken: a connectivity check is a few hundred bytes.
const MAX_FIRST_FRAME: usize = 2048;
/// Frames waiting to be written to one stream; more are dropped.
pub const OUTGOING: usize = 512;

/// A stream, by its two ends.
pub type StreamKey = (SocketAddr, SocketAddr);

/// What an ICE-TCP stream tells the engine.
pub enum TcpArrival {
    /// A new stream and its first frame (a STUN check). The engine keeps `out` to write
    /// to it, or drops it to close the stream.
    Opened {
        /// (the listener's address, the viewer's).
        key: StreamKey,
        /// The first frame, unframed.
        first: BytesMut,
        /// Frames for the stream, unframed.
        out: mpsc::Sender<Bytes>,
    },
    /// A later frame, unframed.
    Frame {
        /// The stream.
        key: StreamKey,
        /// The frame.
        data: BytesMut,
    },
    /// The viewer closed the stream, or it failed.
    Closed(StreamKey),
}

/// Listens on every address of `addrs` and starts accepting, for the engine at `to`, until
/// `lifecycle`'s stop.
pub fn listen(
    addrs: &[SocketAddr],
    to: &mpsc::Sender<Arrival>,
    lifecycle: &Lifecycle,
) -> io::Result<()> {
    let pending = PendingBudget::new(PENDING, PENDING_PER_SOURCE);
    for addr in addrs {
        let listener = bind(*addr).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("webrtc.port: listening on TCP {addr}: {e}"),
            )
        })?;
        lifecycle.spawn(accept(
            listener,
            to.clone(),
            pending.clone(),
            lifecycle.clone(),
        ));
    }
    Ok(())
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

/// Accepts every connection and serves it ([`serve`]), [`PENDING`] waiting for their first
/// frame at a time ([`PENDING_PER_SOURCE`] from one address).
async fn accept(
    listener: tokio::net::TcpListener,
    to: mpsc::Sender<Arrival>,
    pending: PendingBudget,
    lifecycle: Lifecycle,
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
        let permit = match pending.take(Some(peer.ip())) {
            Ok(permit) => permit,
            Err(crowded) => {
                debug!(%peer, "ICE-TCP: {crowded} (waiting for their first check); closed");
                continue;
            }
        };
        let to = to.clone();
        lifecycle.spawn(async move {
            let mut stream = stream;
            let first = tokio::time::timeout(FIRST_FRAME_WITHIN, read_frame(&mut stream)).await;
            drop(permit);
            match first {
                Ok(Ok(Some(frame))) => serve(stream, peer, frame, to).await,
                Ok(Ok(None)) => debug!(%peer, "ICE-TCP connection closed before its first check"),
                Ok(Err(why)) => debug!(%peer, "ICE-TCP connection closed: {why}"),
                Err(_) => debug!(%peer, "ICE-TCP connection closed: no check within 5 s"),
            }
        });
    }
}

/// Reads one RFC 4571 frame; `None` at the end of the stream.
async fn read_frame<R: AsyncReadExt + Unpin>(read: &mut R) -> io::Result<Option<BytesMut>> {
    let mut length = [0u8; 2];
    match read.read_exact(&mut length).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut frame = BytesMut::zeroed(usize::from(u16::from_be_bytes(length)));
    read.read_exact(&mut frame).await?;
    Ok(Some(frame))
}

/// Hands the stream to the engine with its first frame, then carries frames both ways
/// until either side ends it.
async fn serve(stream: TcpStream, peer: SocketAddr, first: BytesMut, to: mpsc::Sender<Arrival>) {
    if first.len() > MAX_FIRST_FRAME {
        debug!(%peer, "ICE-TCP connection closed: first frame of {} bytes", first.len());
        return;
    }
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let key = (local, peer);
    let _ = stream.set_nodelay(true);
    let (tx, mut rx) = mpsc::channel(OUTGOING);
    let opened = TcpArrival::Opened {
        key,
        first,
        out: tx,
    };
    if to.send(Arrival::Tcp(opened)).await.is_err() {
        return;
    }
    let (mut read, mut write) = stream.into_split();
    let ended = loop {
        tokio::select! {
            frame = read_frame(&mut read) => match frame {
                Ok(Some(data)) => {
                    // A full engine queue drops the frame, as for UDP.
                    let _ = to.try_send(Arrival::Tcp(TcpArrival::Frame { key, data }));
                }
                Ok(None) => break "closed by the viewer".to_owned(),
                Err(err) => break err.to_string(),
            },
            out = rx.recv() => match out {
                Some(data) => {
                    if let Err(err) = write.write_all(&frame_packet(&data)).await {
                        break err.to_string();
                    }
                }
                // The engine let go: the connection is closed, or nobody had its ufrag.
                None => return,
            },
        }
    };
    debug!(%peer, "ICE-TCP stream ended: {ended}");
    let _ = to.try_send(Arrival::Tcp(TcpArrival::Closed(key)));
}

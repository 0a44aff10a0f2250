//! The webrtc-rs runtime each peer connection is built with: webrtc-rs's own tokio runtime,
//! except for the sockets it binds. Each UDP socket becomes a view onto the one port
//! ([`super::port`]), and hands its agent a browser's first nomination again
//! ([`super::nomination`]); each TCP listener, a queue of the streams the port's listener
//! accepted for the connection ([`super::tcp`]). onaird never dials out over TCP.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime,
    TokioRuntime,
};

use super::nomination::nominating;
use super::port::Port;

/// One peer connection's runtime.
#[derive(Debug)]
pub struct PeerRuntime {
    tokio: TokioRuntime,
    port: Arc<Port>,
    /// The connection's name on the port (random, fixed for its life).
    conn: String,
}

/// The runtime for a new connection.
pub fn for_peer(port: Arc<Port>) -> Arc<PeerRuntime> {
    use rand::distr::{Alphanumeric, SampleString};
    Arc::new(PeerRuntime {
        tokio: TokioRuntime,
        port,
        conn: Alphanumeric.sample_string(&mut rand::rng(), 16),
    })
}

impl PeerRuntime {
    /// The connection's local description has ICE username fragment `ufrag`: checks
    /// addressed to it (and no longer to the one before) reach the connection.
    pub fn answer_as(&self, ufrag: &str) {
        self.port.answer_as(&self.conn, ufrag);
    }
}

impl Runtime for PeerRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.tokio.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        self.tokio.spawn_reactor(reactor_pool_size, future)
    }

    /// The socket webrtc-rs bound is closed; the connection gets a view onto the port
    /// instead. A socket the port does not serve (another address) stays as it is.
    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let bound = socket.local_addr()?;
        let inner: Arc<dyn AsyncUdpSocket> = match self.port.socket_for(bound, &self.conn) {
            Some(view) => Arc::new(view),
            None => self.tokio.wrap_udp_socket(socket)?,
        };
        Ok(nominating(inner))
    }

    /// The listener webrtc-rs bound is closed; the connection gets the streams the port's
    /// TCP listener accepts for it instead.
    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        let bound = listener.local_addr()?;
        match self.port.listener_for(bound, &self.conn) {
            Some(view) => Ok(Arc::new(view)),
            None => self.tokio.wrap_tcp_listener(listener),
        }
    }

    /// Viewers dial the camera (our candidates are passive), never the other way: a camera
    /// does not open connections to whatever a remote description names.
    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        Box::pin(async move {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("ICE-TCP: not dialling {remote_addr}: onaird only accepts"),
            ))
        })
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        self.tokio.resolve_host(host)
    }

    fn now(&self) -> Instant {
        self.tokio.now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.tokio.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.tokio.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.tokio.block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.tokio.yield_now()
    }

    fn name(&self) -> &'static str {
        "tokio (onair: one port, ICE nominations kept)"
    }
}

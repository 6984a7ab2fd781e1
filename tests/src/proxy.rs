//! A TCP proxy in front of a real server, to simulate "PostgreSQL/Redis lost mid-run": [`cut`]
//! drops every open connection and closes the listening socket (new connections are refused, as
//! with a dead server); [`restore`] listens again on the same port.
//!
//! [`cut`]: TcpProxy::cut
//! [`restore`]: TcpProxy::restore

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// A running proxy; dropping it stops it and drops its connections.
pub struct TcpProxy {
    addr: SocketAddr,
    target: SocketAddr,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    acceptor: Option<JoinHandle<()>>,
    connections: Vec<JoinHandle<()>>,
    accepted: u64,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panicking connection task cannot leave the list inconsistent; keep going.
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl TcpProxy {
    /// Listens on `127.0.0.1:0` and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> io::Result<TcpProxy> {
        let listener = bind("127.0.0.1:0".parse().map_err(io::Error::other)?)?;
        let addr = listener.local_addr()?;
        let proxy = TcpProxy {
            addr,
            target,
            state: Arc::new(Mutex::new(State::default())),
        };
        proxy.serve(listener);
        Ok(proxy)
    }

    /// Like [`TcpProxy::start`] with the target given as a URL (`redis://127.0.0.1:6379/0`,
    /// `postgres://user@127.0.0.1:5432/db`).
    pub async fn for_url(url: &str) -> io::Result<TcpProxy> {
        let u = url::Url::parse(url).map_err(io::Error::other)?;
        let host = u
            .host_str()
            .ok_or_else(|| io::Error::other("URL has no host"))?;
        let port = u
            .port_or_known_default()
            .ok_or_else(|| io::Error::other("URL has no port"))?;
        let target = tokio::net::lookup_host((host, port))
            .await?
            .next()
            .ok_or_else(|| io::Error::other("host did not resolve"))?;
        Self::start(target).await
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server behind the proxy.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url_for(&self, url: &str) -> String {
        match url::Url::parse(url) {
            Ok(mut u) => {
                let _ = u.set_host(Some(&self.addr.ip().to_string()));
                let _ = u.set_port(Some(self.addr.port()));
                u.to_string()
            }
            Err(_) => url.to_owned(),
        }
    }

    /// Connections accepted so far (since start, across cuts).
    pub fn accepted(&self) -> u64 {
        lock(&self.state).accepted
    }

    /// Connections currently forwarded.
    pub fn open_connections(&self) -> usize {
        lock(&self.state)
            .connections
            .iter()
            .filter(|c| !c.is_finished())
            .count()
    }

    /// True while the proxy refuses connections.
    pub fn is_cut(&self) -> bool {
        lock(&self.state).acceptor.is_none()
    }

    /// Drops every open connection and stops listening: new connections are refused. Returns
    /// once the sockets are closed.
    pub async fn cut(&self) {
        let (acceptor, connections) = self.abort_all();
        // An aborted task's handle resolves once its future (and so its sockets) is dropped.
        if let Some(a) = acceptor {
            let _ = a.await;
        }
        for c in connections {
            let _ = c.await;
        }
    }

    fn abort_all(&self) -> (Option<JoinHandle<()>>, Vec<JoinHandle<()>>) {
        let mut st = lock(&self.state);
        let acceptor = st.acceptor.take();
        if let Some(a) = &acceptor {
            a.abort();
        }
        let connections: Vec<_> = st.connections.drain(..).collect();
        for c in &connections {
            c.abort();
        }
        (acceptor, connections)
    }

    /// Listens again on the same port (no-op when not cut).
    pub fn restore(&self) -> io::Result<()> {
        if !self.is_cut() {
            return Ok(());
        }
        let listener = bind(self.addr)?;
        self.serve(listener);
        Ok(())
    }

    fn serve(&self, listener: TcpListener) {
        let state = self.state.clone();
        let target = self.target;
        let acceptor = tokio::spawn(async move {
            loop {
                let client = match listener.accept().await {
                    Ok((client, _)) => client,
                    Err(_) => {
                        // Out of descriptors or similar: do not spin.
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let conn = tokio::spawn(forward(client, target));
                let mut st = lock(&state);
                st.accepted += 1;
                st.connections.retain(|c| !c.is_finished());
                st.connections.push(conn);
            }
        });
        lock(&self.state).acceptor = Some(acceptor);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        let _ = self.abort_all();
    }
}

/// Binds with `SO_REUSEADDR` so a cut proxy can listen on its port again at once.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

async fn forward(mut client: TcpStream, target: SocketAddr) {
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    // Ends when either side closes; an abort (cut) drops both sockets.
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    async fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> io::Result<Vec<u8>> {
        s.write_all(msg).await?;
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf).await?;
        Ok(buf)
    }

    #[tokio::test]
    async fn forwards_cuts_and_restores() {
        let proxy = TcpProxy::start(echo_server().await).await.unwrap();
        let mut a = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut a, b"ping").await.unwrap(), b"ping");
        assert_eq!(proxy.accepted(), 1);

        proxy.cut().await;
        assert!(proxy.is_cut());
        // The open connection is gone: the read sees EOF or a reset.
        let r = roundtrip(&mut a, b"again").await;
        assert!(r.is_err(), "connection survived the cut: {r:?}");
        // New connections are refused outright.
        let e = TcpStream::connect(proxy.addr()).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);

        proxy.restore().unwrap();
        let mut b = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut b, b"back").await.unwrap(), b"back");
        assert_eq!(proxy.accepted(), 2);
        assert_eq!(proxy.open_connections(), 1);
    }

    #[test]
    fn url_points_at_the_proxy() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let proxy = TcpProxy::start("127.0.0.1:9".parse().unwrap())
                .await
                .unwrap();
            let port = proxy.addr().port();
            assert_eq!(
                proxy.url_for("postgres://keeper:pw@db.example:5432/app?sslmode=disable"),
                format!("postgres://keeper:pw@127.0.0.1:{port}/app?sslmode=disable")
            );
        });
    }
}

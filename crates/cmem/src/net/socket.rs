//! The listening socket and every accepted socket, set up through `socket2` the same way on
//! every platform.
//!
//! - Listening: on Windows `SO_EXCLUSIVEADDRUSE`, never `SO_REUSEADDR` — there the latter lets
//!   another process bind the same port and take connections meant for us. Elsewhere
//!   `SO_REUSEADDR`, which on Unix only lets a restarted server bind past sockets in
//!   `TIME_WAIT`; a second live listener is refused either way.
//! - Accepted: `TCP_NODELAY` (events are small and latency matters), and TCP keepalive when
//!   configured (on by default in the Windows profile), so peers that vanished without a FIN —
//!   a sleeping laptop, a VPN that switched — are noticed by the kernel.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};

/// Keepalive timings for accepted sockets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Keepalive {
    /// Idle time before the first probe.
    pub idle: Duration,
    /// Time between probes.
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped.
    pub retries: u32,
}

/// Binds a listening socket (see the module notes for the address-reuse options).
pub fn bind_std(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    #[cfg(windows)]
    exclusive_address_use(&socket)?;
    #[cfg(not(windows))]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// [`bind_std`] for tokio.
pub fn bind(addr: SocketAddr, backlog: i32) -> io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::from_std(bind_std(addr, backlog)?)
}

/// `SO_EXCLUSIVEADDRUSE`, which socket2 does not offer.
#[cfg(windows)]
fn exclusive_address_use(socket: &Socket) -> io::Result<()> {
    use std::os::windows::io::AsRawSocket;
    use windows_sys::Win32::Networking::WinSock::{SO_EXCLUSIVEADDRUSE, SOL_SOCKET, setsockopt};
    let on: i32 = 1;
    // SAFETY: the socket handle is valid for the duration of the call (we own `socket`), and
    // the option value points at a live i32 whose size we pass.
    let rc = unsafe {
        setsockopt(
            socket.as_raw_socket() as usize,
            SOL_SOCKET,
            SO_EXCLUSIVEADDRUSE,
            (&on as *const i32).cast(),
            std::mem::size_of::<i32>() as i32,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Tunes an accepted socket: `TCP_NODELAY`, and keepalive if given. Where the retry count
/// cannot be set (Windows before 10 1703, Wine), keepalive is set with the timings alone and
/// the system's retry count applies.
pub fn tune(stream: &tokio::net::TcpStream, keepalive: Option<&Keepalive>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    if let Some(k) = keepalive {
        let base = TcpKeepalive::new()
            .with_time(k.idle)
            .with_interval(k.interval);
        let sock = SockRef::from(stream);
        #[cfg(any(target_os = "linux", target_os = "macos", target_os = "windows"))]
        if sock
            .set_tcp_keepalive(&base.clone().with_retries(k.retries))
            .is_ok()
        {
            return Ok(());
        }
        sock.set_tcp_keepalive(&base)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_listener_on_the_same_port_is_refused() {
        let first = bind_std("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = first.local_addr().unwrap();
        let second = bind_std(addr, 16).unwrap_err();
        assert_eq!(
            crate::net::classify::classify(&second).class,
            crate::net::classify::ErrorClass::AddressInUse,
            "{second:?}"
        );
        // and plain std (what other programs use) cannot take it either
        assert!(std::net::TcpListener::bind(addr).is_err());
    }

    #[tokio::test]
    async fn accepted_sockets_get_nodelay_and_keepalive() {
        let l = bind("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = l.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        let k = Keepalive {
            idle: Duration::from_secs(30),
            interval: Duration::from_secs(5),
            retries: 4,
        };
        tune(&server, Some(&k)).unwrap();
        assert!(server.nodelay().unwrap());
        // Windows sets keepalive timings with an ioctl that cannot be read back (and Wine
        // refuses getsockopt(SO_KEEPALIVE)), so there the successful `tune` is the check
        #[cfg(not(windows))]
        assert!(SockRef::from(&server).keepalive().unwrap());
        #[cfg(target_os = "linux")]
        {
            let s = SockRef::from(&server);
            assert_eq!(s.tcp_keepalive_time().unwrap(), Duration::from_secs(30));
            assert_eq!(s.tcp_keepalive_interval().unwrap(), Duration::from_secs(5));
            assert_eq!(s.tcp_keepalive_retries().unwrap(), 4);
        }
        drop(client);
    }
}

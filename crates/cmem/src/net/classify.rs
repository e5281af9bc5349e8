//! OS error codes to something a person can act on. Windows reports WinSock codes
//! (`WSAECONNRESET` 10054…), Linux and macOS their own `errno` values (different numbers on
//! each); both map to one set of classes, each with a cause in plain words and a fix.
//! WinSock codes are recognised on every platform, so a report from a Windows client or log
//! can be read anywhere; `errno` values are read with the meaning they have where we run.

use std::io;

use serde::Serialize;

/// What kind of failure an OS error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    ConnectionReset,
    ConnectionAborted,
    BrokenPipe,
    TimedOut,
    ConnectionRefused,
    NetworkUnreachable,
    HostUnreachable,
    NetworkDown,
    AccessDenied,
    AddressInUse,
    AddressNotAvailable,
    WouldBlock,
    Other,
}

/// A classified error: what it is, why it usually happens, what to do.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Diagnosis {
    pub class: ErrorClass,
    /// The OS code's symbolic name where known (`WSAECONNRESET`, `ECONNRESET`).
    pub name: &'static str,
    pub cause: &'static str,
    pub fix: &'static str,
}

/// The Windows command that lists the port ranges Hyper-V, WSL or WinNAT reserved.
pub const EXCLUDED_RANGES_CMD: &str = "netsh interface ipv4 show excludedportrange protocol=tcp";

impl ErrorClass {
    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::ConnectionReset => "connection_reset",
            ErrorClass::ConnectionAborted => "connection_aborted",
            ErrorClass::BrokenPipe => "broken_pipe",
            ErrorClass::TimedOut => "timed_out",
            ErrorClass::ConnectionRefused => "connection_refused",
            ErrorClass::NetworkUnreachable => "network_unreachable",
            ErrorClass::HostUnreachable => "host_unreachable",
            ErrorClass::NetworkDown => "network_down",
            ErrorClass::AccessDenied => "access_denied",
            ErrorClass::AddressInUse => "address_in_use",
            ErrorClass::AddressNotAvailable => "address_not_available",
            ErrorClass::WouldBlock => "would_block",
            ErrorClass::Other => "other",
        }
    }

    fn cause_and_fix(self) -> (&'static str, &'static str) {
        match self {
            ErrorClass::ConnectionReset => (
                "the other side, or something between (proxy, VPN, firewall, antivirus), dropped the connection abruptly",
                "clients reconnect and resume from their last event id; if it happens often, look at proxy or VPN idle timeouts and turn on tcp_keepalive",
            ),
            ErrorClass::ConnectionAborted => (
                "this machine's network stack gave up on the connection (often a VPN switch, sleep, or a local firewall or antivirus)",
                "clients reconnect and resume; if it repeats, check local security software and VPN clients",
            ),
            ErrorClass::BrokenPipe => (
                "the client went away while data was being sent to it",
                "nothing to do: it resumes from its cursor when it comes back",
            ),
            ErrorClass::TimedOut => (
                "the other side stopped answering (sleeping laptop, lost route, a proxy holding the connection)",
                "clients reconnect and resume; shorter keepalive (tcp_keepalive_idle_s) notices dead peers sooner",
            ),
            ErrorClass::ConnectionRefused => (
                "nothing listens at that address and port (server not running, wrong port, or a firewall rejecting)",
                "start the server, check the URL's port against `cmem config`, or open the port in the firewall (`cmem firewall`)",
            ),
            ErrorClass::NetworkUnreachable => (
                "no route to that network (cable, Wi-Fi or VPN down, or a VPN that took over the routes)",
                "check the network connection and VPN; on loopback this should never happen",
            ),
            ErrorClass::HostUnreachable => (
                "the host cannot be reached (it is down, or a firewall drops the traffic)",
                "check that the host is up and that firewalls on the way allow the port",
            ),
            ErrorClass::NetworkDown => (
                "the network interface is down",
                "reconnect the network; clients resume once it is back",
            ),
            ErrorClass::AccessDenied => (
                "the operating system refused the port: on Windows it is often inside a range reserved by Hyper-V, WSL or WinNAT; elsewhere ports below 1024 need privileges",
                "list reserved ranges with `netsh interface ipv4 show excludedportrange protocol=tcp` and pick a port outside them, or use --port-fallback N",
            ),
            ErrorClass::AddressInUse => (
                "another process already listens on this port (or an earlier cmem is still running)",
                "stop the other process, pick another port with --bind, or let cmem try the next ones with --port-fallback N",
            ),
            ErrorClass::AddressNotAvailable => (
                "the address does not belong to this machine",
                "bind to 127.0.0.1, 0.0.0.0 or an address this machine has",
            ),
            ErrorClass::WouldBlock => (
                "the socket was not ready (a transient condition the server retries)",
                "nothing to do unless it repeats constantly",
            ),
            ErrorClass::Other => (
                "an operating-system error without a known meaning for connections",
                "look up the code; report it if it repeats",
            ),
        }
    }
}

/// WinSock codes we know, with their names.
const WSA: [(i32, &str, ErrorClass); 12] = [
    (10013, "WSAEACCES", ErrorClass::AccessDenied),
    (10035, "WSAEWOULDBLOCK", ErrorClass::WouldBlock),
    (10048, "WSAEADDRINUSE", ErrorClass::AddressInUse),
    (10049, "WSAEADDRNOTAVAIL", ErrorClass::AddressNotAvailable),
    (10050, "WSAENETDOWN", ErrorClass::NetworkDown),
    (10051, "WSAENETUNREACH", ErrorClass::NetworkUnreachable),
    (10053, "WSAECONNABORTED", ErrorClass::ConnectionAborted),
    (10054, "WSAECONNRESET", ErrorClass::ConnectionReset),
    (10058, "WSAESHUTDOWN", ErrorClass::BrokenPipe),
    (10060, "WSAETIMEDOUT", ErrorClass::TimedOut),
    (10061, "WSAECONNREFUSED", ErrorClass::ConnectionRefused),
    (10065, "WSAEHOSTUNREACH", ErrorClass::HostUnreachable),
];

/// The class of an `io::ErrorKind`, for errno values and errors without a code.
fn from_kind(kind: io::ErrorKind) -> (ErrorClass, &'static str) {
    use io::ErrorKind as K;
    match kind {
        K::ConnectionReset => (ErrorClass::ConnectionReset, "ECONNRESET"),
        K::ConnectionAborted => (ErrorClass::ConnectionAborted, "ECONNABORTED"),
        K::BrokenPipe => (ErrorClass::BrokenPipe, "EPIPE"),
        K::TimedOut => (ErrorClass::TimedOut, "ETIMEDOUT"),
        K::ConnectionRefused => (ErrorClass::ConnectionRefused, "ECONNREFUSED"),
        K::NetworkUnreachable => (ErrorClass::NetworkUnreachable, "ENETUNREACH"),
        K::HostUnreachable => (ErrorClass::HostUnreachable, "EHOSTUNREACH"),
        K::NetworkDown => (ErrorClass::NetworkDown, "ENETDOWN"),
        K::PermissionDenied => (ErrorClass::AccessDenied, "EACCES"),
        K::AddrInUse => (ErrorClass::AddressInUse, "EADDRINUSE"),
        K::AddrNotAvailable => (ErrorClass::AddressNotAvailable, "EADDRNOTAVAIL"),
        K::WouldBlock => (ErrorClass::WouldBlock, "EWOULDBLOCK"),
        _ => (ErrorClass::Other, ""),
    }
}

/// Classifies an OS error code.
pub fn classify_code(code: i32) -> Diagnosis {
    let (class, name) = match WSA.iter().find(|(c, _, _)| *c == code) {
        Some((_, name, class)) => (*class, *name),
        None => from_kind(io::Error::from_raw_os_error(code).kind()),
    };
    let (cause, fix) = class.cause_and_fix();
    Diagnosis {
        class,
        name,
        cause,
        fix,
    }
}

/// Classifies an I/O error: by its OS code when it has one, else by its kind.
pub fn classify(e: &io::Error) -> Diagnosis {
    match e.raw_os_error() {
        Some(code) => classify_code(code),
        None => {
            let (class, name) = from_kind(e.kind());
            let (cause, fix) = class.cause_and_fix();
            Diagnosis {
                class,
                name,
                cause,
                fix,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn winsock_codes_classify_everywhere() {
        for (code, class) in [
            (10013, ErrorClass::AccessDenied),
            (10035, ErrorClass::WouldBlock),
            (10048, ErrorClass::AddressInUse),
            (10050, ErrorClass::NetworkDown),
            (10051, ErrorClass::NetworkUnreachable),
            (10053, ErrorClass::ConnectionAborted),
            (10054, ErrorClass::ConnectionReset),
            (10060, ErrorClass::TimedOut),
            (10061, ErrorClass::ConnectionRefused),
            (10065, ErrorClass::HostUnreachable),
        ] {
            let d = classify_code(code);
            assert_eq!(d.class, class, "{code}");
            assert!(d.name.starts_with("WSAE"));
            assert!(!d.cause.is_empty() && !d.fix.is_empty());
        }
        assert!(classify_code(10013).fix.contains("excludedportrange"));
    }

    #[test]
    fn real_errors_from_this_os() {
        // a port nobody listens on: bind one, note it, close it, connect
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_err();
        assert_eq!(classify(&e).class, ErrorClass::ConnectionRefused, "{e:?}");
        // a port already taken
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let e = crate::net::socket::bind_std(l.local_addr().unwrap(), 16).unwrap_err();
        assert_eq!(classify(&e).class, ErrorClass::AddressInUse, "{e:?}");
        #[cfg(unix)]
        {
            for (errno, class) in [
                (104, ErrorClass::ConnectionReset),
                (32, ErrorClass::BrokenPipe),
                (110, ErrorClass::TimedOut),
                (111, ErrorClass::ConnectionRefused),
                (98, ErrorClass::AddressInUse),
                (13, ErrorClass::AccessDenied),
            ] {
                if cfg!(target_os = "linux") {
                    assert_eq!(classify_code(errno).class, class, "errno {errno}");
                }
            }
        }
    }
}

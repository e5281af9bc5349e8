//! How many TCP connections one source address may hold.
//!
//! Every accepted socket costs a file descriptor, and a process has a fixed number of them
//! (20,000 here). Without a cap, one machine opening idle sockets takes them all and nobody
//! else gets in. [`PerAddress`] counts the sockets each source address holds; the accept loop
//! asks it for a [`Slot`] before serving a connection and refuses the connection when the
//! address is at `max_connections_per_address`. The slot lives inside the socket's stream
//! wrapper, so it is released when the socket closes, wherever it went (a WebSocket upgrade
//! carries it into the session's task).
//!
//! Loopback sources are not capped unless asked (`connection_cap_loopback`): a reverse proxy
//! on the same machine brings every client from one loopback address, and local processes can
//! read the data folder anyway.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The count of open sockets per source address, and the cap.
#[derive(Debug, Default)]
pub struct PerAddress {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    open: Mutex<HashMap<IpAddr, u32>>,
    /// 0: no cap.
    max: AtomicU64,
    cap_loopback: AtomicBool,
    open_total: AtomicU64,
    refused: AtomicU64,
}

/// One accepted socket's place in the count; dropping it gives the place back.
#[derive(Debug)]
pub struct Slot {
    inner: Arc<Inner>,
    ip: IpAddr,
}

/// The address is at its cap.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "{ip} already holds {max} connections (max_connections_per_address); close some or raise the limit"
)]
pub struct AtCap {
    pub ip: IpAddr,
    pub max: u64,
}

impl PerAddress {
    /// Sets the cap (0: none) and whether loopback sources are capped too.
    pub fn configure(&self, max: u64, cap_loopback: bool) {
        self.inner.max.store(max, Ordering::Relaxed);
        self.inner
            .cap_loopback
            .store(cap_loopback, Ordering::Relaxed);
    }

    /// A place for one more socket from `ip`, or why not.
    pub fn admit(&self, ip: IpAddr) -> Result<Slot, AtCap> {
        let ip = canonical(ip);
        let max = self.inner.max.load(Ordering::Relaxed);
        let capped =
            max > 0 && (!ip.is_loopback() || self.inner.cap_loopback.load(Ordering::Relaxed));
        let mut open = self.inner.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if capped && u64::from(*n) >= max {
            self.inner.refused.fetch_add(1, Ordering::Relaxed);
            return Err(AtCap { ip, max });
        }
        *n += 1;
        self.inner.open_total.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            inner: self.inner.clone(),
            ip,
        })
    }

    /// Sockets open now, from every address.
    pub fn open(&self) -> u64 {
        self.inner.open_total.load(Ordering::Relaxed)
    }

    /// Connections refused at the cap since start.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// Sockets `ip` holds now.
    pub fn held_by(&self, ip: IpAddr) -> u32 {
        let open = self.inner.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&canonical(ip)).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.inner.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
        self.inner.open_total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An IPv4 client on a dual-stack socket arrives as `::ffff:a.b.c.d`: count it as `a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_up_to_its_cap_and_slots_give_places_back() {
        let p = PerAddress::default();
        p.configure(2, false);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = p.admit(a).unwrap();
        let _s2 = p.admit(a).unwrap();
        assert_eq!(p.admit(a).unwrap_err(), AtCap { ip: a, max: 2 });
        let _s3 = p.admit(b).unwrap();
        assert_eq!((p.open(), p.refused(), p.held_by(a)), (3, 1, 2));
        drop(s1);
        let _s4 = p.admit(a).unwrap();
        // the same client through a dual-stack socket is the same address
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert!(p.admit(mapped).is_err());
        assert_eq!(p.refused(), 2);
    }

    #[test]
    fn loopback_is_capped_only_when_asked_and_zero_means_no_cap() {
        let p = PerAddress::default();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        p.configure(1, false);
        let held: Vec<_> = (0..5).map(|_| p.admit(lo).unwrap()).collect();
        p.configure(1, true);
        assert!(p.admit(lo).is_err());
        p.configure(0, true);
        assert!(p.admit(lo).is_ok());
        drop(held);
        assert_eq!(p.held_by(lo), 0);
        assert_eq!(p.open(), 0);
    }
}

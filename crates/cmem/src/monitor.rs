//! The system monitor: a producer that samples the machine (sysinfo) and the server (clients,
//! journal, index) and publishes `system_status` to everyone every `status_interval_s`
//! seconds, and on demand (`POST /system/status`).
//!
//! CPU usage is a difference between two samples, so the monitor keeps one `System` and
//! refreshes it; the first sample after start reads 0 until a second refresh has happened.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use sysinfo::{Disks, Pid, ProcessesToUpdate, System};

use crate::envelope::{NewEvent, Scope};
use crate::hub::Hub;
use crate::hub::PublishError;
use crate::memory::Memory;

struct Probe {
    system: Option<System>,
    disks: Option<Disks>,
    pid: Option<Pid>,
    /// CPU sampling works here (not under Wine, see [`under_wine`]).
    cpu: bool,
}

/// Whether this Windows build runs under Wine, whose `pdh.dll` lacks `PdhEnumObjectsW`: the
/// CPU sampling sysinfo does on Windows would abort the process there. Wine's ntdll exports
/// `wine_get_version`; Windows' does not.
#[cfg(windows)]
fn under_wine() -> bool {
    use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};
    // SAFETY: both calls take NUL-terminated static strings and only look up symbols; the
    // module handle of ntdll stays valid for the life of the process.
    unsafe {
        let ntdll = GetModuleHandleA(c"ntdll.dll".as_ptr().cast());
        !ntdll.is_null() && GetProcAddress(ntdll, c"wine_get_version".as_ptr().cast()).is_some()
    }
}

#[cfg(not(windows))]
fn under_wine() -> bool {
    false
}

/// Samples and publishes the server's status.
pub struct Monitor {
    /// Seconds between `system_status` events (`status_interval_s`; 0: never).
    interval_s: u64,
    hub: Arc<Hub>,
    memory: Arc<Memory>,
    probe: Mutex<Probe>,
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 * 1000.0 / whole as f64).round() / 10.0
}

/// The disk holding `path`: the mounted disk with the longest mount point that is a prefix.
fn disk_of<'a>(disks: &'a Disks, path: &Path) -> Option<&'a sysinfo::Disk> {
    disks
        .iter()
        .filter(|d| path.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
}

impl Monitor {
    /// A monitor; sysinfo that cannot start on this platform leaves the machine figures at 0.
    pub fn new(hub: Arc<Hub>, memory: Arc<Memory>, interval_s: u64) -> Arc<Monitor> {
        let system = System::new()
            .map_err(|e| tracing::warn!(error = %e, "system figures unavailable"))
            .ok();
        let disks = Disks::new_with_refreshed_list()
            .map_err(|e| tracing::warn!(error = %e, "disk figures unavailable"))
            .ok();
        let pid = sysinfo::get_current_pid().ok();
        let cpu = !under_wine();
        if !cpu {
            tracing::warn!(
                "running under Wine: CPU usage is not sampled (cpu_usage_available: false)"
            );
        }
        Arc::new(Monitor {
            hub,
            memory,
            interval_s,
            probe: Mutex::new(Probe {
                system,
                disks,
                pid,
                cpu,
            }),
        })
    }

    /// The status now: machine, process, clients, journal and index. Reads `/proc` and the
    /// like, so call it off the async threads when it matters.
    pub fn sample(&self) -> Value {
        let mut machine = json!({
            "cpu_usage": 0.0, "cpu_usage_available": false, "memory_usage": 0.0, "memory_used_bytes": 0, "memory_total_bytes": 0,
            "process_memory_bytes": 0, "disk_usage": 0.0, "disk_total_bytes": 0, "disk_available_bytes": 0,
        });
        if let Ok(mut p) = self.probe.lock() {
            let (pid, cpu) = (p.pid, p.cpu);
            if let Some(sys) = p.system.as_mut() {
                if cpu {
                    sys.refresh_cpu_usage();
                    machine["cpu_usage"] = json!((sys.global_cpu_usage() * 10.0).round() / 10.0);
                    machine["cpu_usage_available"] = json!(true);
                }
                sys.refresh_memory();
                machine["memory_usage"] = json!(percent(sys.used_memory(), sys.total_memory()));
                machine["memory_used_bytes"] = json!(sys.used_memory());
                machine["memory_total_bytes"] = json!(sys.total_memory());
                if let Some(pid) = pid {
                    sys.refresh_processes(ProcessesToUpdate::Some(&[pid]), false);
                    if let Some(proc_) = sys.process(pid) {
                        machine["process_memory_bytes"] = json!(proc_.memory());
                    }
                }
            }
            if let Some(disks) = p.disks.as_mut() {
                disks.refresh(false);
                if let Some(d) = disk_of(disks, &self.memory.root) {
                    let (total, avail) = (d.total_space(), d.available_space());
                    machine["disk_usage"] = json!(percent(total.saturating_sub(avail), total));
                    machine["disk_total_bytes"] = json!(total);
                    machine["disk_available_bytes"] = json!(avail);
                }
            }
        }
        let info = self.hub.journal.info();
        let mut status = json!({
            "indexing": self.memory.indexing_state(),
            "connected_clients": self.hub.registry.len(),
            "connections_by_transport": self.hub.registry.by_transport(),
            "uptime_s": self.hub.uptime_s(),
            "index_docs": self.memory.doc_count(),
            "index_bytes": self.memory.index_bytes(),
            "journal": { "epoch": info.epoch, "head": info.head, "oldest": info.oldest },
            "events_published": self.hub.published_total(),
            // how many, never who or what: a user's search events go to their own scope
            "searches_total": self.memory.searches_total.load(std::sync::atomic::Ordering::Relaxed),
        });
        if let (Some(s), Some(m)) = (status.as_object_mut(), machine.as_object()) {
            s.extend(m.clone());
        }
        status
    }

    /// Samples and publishes one `system_status` to everyone; returns what it published.
    pub async fn publish_now(self: &Arc<Self>) -> Result<Value, PublishError> {
        let me = self.clone();
        let status = tokio::task::spawn_blocking(move || me.sample())
            .await
            .unwrap_or_else(|e| json!({"error": e.to_string()}));
        self.hub
            .publish(vec![NewEvent::new(
                "system_status",
                Scope::Global,
                status.clone(),
            )])
            .await?;
        Ok(status)
    }

    /// Publishes every `status_interval_s` until shutdown (not at all when it is 0, and not
    /// while no client is connected).
    pub fn start(self: &Arc<Self>) {
        let every = self.interval_s;
        if every == 0 {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(every));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate; clients get a status on connect
            loop {
                tokio::select! {
                    _ = me.hub.shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                // nobody to tell: a status is news only while it is fresh, and every client
                // gets a current one when it connects, so the journal is spared
                if me.hub.registry.is_empty() {
                    continue;
                }
                if let Err(e) = me.publish_now().await {
                    tracing::warn!(error = %e, "could not publish system_status");
                }
            }
        });
    }
}

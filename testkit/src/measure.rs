//! Measuring a child process: its CPU time (wait4) and its own peak RSS.

use std::process::Command;
use std::time::Instant;

/// CPU seconds and peak RSS of one finished child process.
pub struct ChildUsage {
    pub cpu_seconds: f64,
    /// CPU time of the measuring process itself (the benchmark's in-process server) while the
    /// child ran: with the child's, it tells whether the machine's cores were saturated.
    pub own_cpu_seconds: f64,
    pub max_rss_mib: f64,
    pub wall_seconds: f64,
    pub status: std::process::ExitStatus,
    pub stdout: String,
}

/// Runs a command and measures it with wait4, so the figures are the child's alone.
// The child is reaped by wait4 below, which std cannot see.
#[allow(clippy::zombie_processes)]
pub fn measure(command: &mut Command) -> ChildUsage {
    let started = Instant::now();
    let own_before = own_cpu_seconds();
    let child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    let stdout_pipe = child.stdout;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = stdout_pipe {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
        }
        text
    });
    // ru_maxrss would count the bench's own pages, which the child shares between fork and exec;
    // VmHWM is the peak of the child's own address space.
    let peak = std::thread::spawn(move || {
        let mut peak_kib = 0u64;
        while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let Some(line) = status.lines().find(|l| l.starts_with("VmHWM:")) else {
                break;
            };
            let kib = line
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            peak_kib = peak_kib.max(kib);
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        peak_kib
    });
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data that wait4 fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting on our own child with valid pointers.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4 failed");
    let wall_seconds = started.elapsed().as_secs_f64();
    ChildUsage {
        cpu_seconds: seconds(usage.ru_utime) + seconds(usage.ru_stime),
        own_cpu_seconds: own_cpu_seconds() - own_before,
        max_rss_mib: peak.join().unwrap_or(0) as f64 / 1024.0,
        wall_seconds,
        status: std::os::unix::process::ExitStatusExt::from_raw(status),
        stdout: reader.join().unwrap_or_default(),
    }
}

fn seconds(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

/// User+system CPU seconds of this process so far, all threads.
fn own_cpu_seconds() -> f64 {
    // SAFETY: rusage is plain data that getrusage fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to our own rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

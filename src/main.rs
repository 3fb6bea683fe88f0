//! The `s3bundler` binary: parse the command line, run the command, map the outcome to an exit code.

use clap::Parser;
use s3bundler::cli::Cli;

/// The static (musl) build would spend its time in musl's allocator; mimalloc keeps it as fast
/// as the glibc build.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// glibc raises its mmap threshold each time a large block is freed; blocks of that size then
/// come from per-thread arenas and stay there. Grouping with several reader threads measured
/// up to 2x the peak RSS that a fixed 4 MiB threshold gives (manifests, ORC windows and whole
/// row groups are mapped, and returned when freed). 1 MiB saved another fifth of the RSS for a
/// fifth more CPU (the 2 MiB Parquet column windows mapped and faulted in each time).
/// glibc's own MALLOC_MMAP_THRESHOLD_ overrides it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_large_blocks_to_the_system() {
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some() {
        return;
    }
    // SAFETY: mallopt only sets an allocator parameter; called before any thread is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_large_blocks_to_the_system() {}

fn main() -> std::process::ExitCode {
    return_large_blocks_to_the_system();
    let cli = Cli::parse();
    cli.log.init();
    let code = s3bundler::commands::main(cli);
    std::process::ExitCode::from(code.code() as u8)
}

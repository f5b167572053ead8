//! Giving memory back after a burst. glibc's allocator keeps what a burst
//! freed (a storm of a thousand connections holds about 20 KiB each) in its
//! per-thread arenas, so a process's RSS ratchets up storm after storm
//! without any live allocation behind it. A background thread asks it to
//! return free pages every [`TRIM_EVERY`] (`malloc_trim`, which takes each
//! arena's lock briefly). Elsewhere than glibc this is a no-op.

use std::time::Duration;

/// How often free memory is returned to the system.
pub const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Starts the trimming thread (once, from `main`, for `serve`).
pub fn start_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let _ = std::thread::Builder::new().name("settlegate-trim".into()).spawn(|| {
            loop {
                std::thread::sleep(TRIM_EVERY);
                // SAFETY: malloc_trim only returns free pages to the kernel;
                // it has no preconditions and touches no live allocation.
                unsafe {
                    libc::malloc_trim(0);
                }
            }
        });
    }
}

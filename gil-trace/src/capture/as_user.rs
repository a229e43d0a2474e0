//! File operations as the invoking user. Under sudo the recorder runs as root, but the trace
//! it writes belongs to the user who asked for it, and must go only where they may write: it
//! is created and renamed on a short-lived thread whose filesystem identity (fsuid, fsgid and
//! supplementary groups) is theirs. Linux keeps credentials per thread and the raw syscalls
//! change only the calling thread's (glibc's wrappers would change every thread's), so the
//! rest of the recorder keeps root's; the thread's identity ends with it.
use nix::unistd::{Gid, Uid};

use super::{child::Identity, CaptureError};

/// Runs `f` with `id`'s filesystem identity (as is, without one).
pub fn as_user<R: Send>(
    id: Option<&Identity>,
    f: impl FnOnce() -> R + Send,
) -> Result<R, CaptureError> {
    let Some(id) = id else {
        return Ok(f());
    };
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("gil-trace-as-user".into())
            .spawn_scoped(scope, move || {
                become_user(id.uid, id.gid, &id.groups)?;
                Ok(f())
            })
            .map_err(|source| CaptureError::Io {
                what: "starting a thread to act as the invoking user".into(),
                source,
            })?;
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// This thread's filesystem identity becomes `uid`/`gid` with `groups`.
fn become_user(uid: Uid, gid: Gid, groups: &[Gid]) -> Result<(), CaptureError> {
    let failed = |what: &str| CaptureError::Identity(format!("{what} for this thread failed"));
    let raw: Vec<libc::gid_t> = groups.iter().map(|g| g.as_raw()).collect();
    // SAFETY: a pointer to `raw.len()` gids; the raw syscall changes this thread only.
    if unsafe { libc::syscall(libc::SYS_setgroups, raw.len(), raw.as_ptr()) } != 0 {
        return Err(failed("setgroups"));
    }
    // setfsgid/setfsuid return the previous value and cannot report failure: the new value is
    // read back (an invalid id leaves it unchanged).
    // SAFETY: plain integer arguments; changes this thread only.
    unsafe {
        libc::syscall(libc::SYS_setfsgid, gid.as_raw());
        libc::syscall(libc::SYS_setfsuid, uid.as_raw());
    }
    // SAFETY: as above; -1 is invalid, so these only read the current values.
    let (fsgid, fsuid) = unsafe {
        (
            libc::syscall(libc::SYS_setfsgid, u32::MAX),
            libc::syscall(libc::SYS_setfsuid, u32::MAX),
        )
    };
    if fsgid != i64::from(gid.as_raw()) || fsuid != i64::from(uid.as_raw()) {
        return Err(failed("setfsuid/setfsgid"));
    }
    Ok(())
}

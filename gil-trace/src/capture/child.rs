//! Starting the traced command so that nothing is missed from its first instruction:
//! fork, let the caller add the child to the in-kernel filter, then let it exec.
//!
//! Under sudo the command runs as the invoking user (SUDO_UID/SUDO_GID, their supplementary
//! groups and a matching HOME/USER/LOGNAME), never silently as root.
use std::{
    ffi::{CString, OsStr, OsString},
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::ffi::{OsStrExt, OsStringExt},
    },
    path::{Path, PathBuf},
};

use nix::{
    errno::Errno,
    unistd::{self, ForkResult, Gid, Pid, Uid, User},
};

use super::CaptureError;

/// Who the command runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: Uid,
    pub gid: Gid,
    pub groups: Vec<Gid>,
    pub user: String,
    pub home: PathBuf,
    pub shell: PathBuf,
}

impl Identity {
    /// The invoking user when running as root through sudo; `None` otherwise (the command
    /// then runs with gil-trace's own credentials).
    pub fn from_sudo() -> Result<Option<Identity>, CaptureError> {
        if !unistd::geteuid().is_root() {
            return Ok(None);
        }
        let Some(uid) = std::env::var("SUDO_UID").ok() else {
            return Ok(None);
        };
        let uid: u32 = uid
            .parse()
            .map_err(|_| CaptureError::Identity(format!("SUDO_UID={uid} is not a uid")))?;
        if uid == 0 {
            return Ok(None);
        }
        let user = User::from_uid(Uid::from_raw(uid))
            .map_err(|e| CaptureError::Identity(format!("looking up uid {uid}: {e}")))?;
        let gid = match std::env::var("SUDO_GID").ok() {
            Some(g) => Gid::from_raw(
                g.parse()
                    .map_err(|_| CaptureError::Identity(format!("SUDO_GID={g} is not a gid")))?,
            ),
            None => user.as_ref().map_or(Gid::from_raw(uid), |u| u.gid),
        };
        let (name, home, shell) = match &user {
            Some(u) => (u.name.clone(), u.dir.clone(), u.shell.clone()),
            None => (
                std::env::var("SUDO_USER").unwrap_or_else(|_| uid.to_string()),
                PathBuf::from("/"),
                PathBuf::from("/bin/sh"),
            ),
        };
        let groups = match CString::new(name.clone()) {
            Ok(cname) if user.is_some() => {
                unistd::getgrouplist(&cname, gid).unwrap_or_else(|_| vec![gid])
            }
            _ => vec![gid],
        };
        Ok(Some(Identity {
            uid: Uid::from_raw(uid),
            gid,
            groups,
            user: name,
            home,
            shell,
        }))
    }
}

/// Finds `program` like execvp would (PATH search when it has no slash), as `identity`
/// would: only directories it may search and files it may execute count, so the command the
/// child execs as that user is one it could have found itself.
pub fn resolve(program: &OsStr, identity: Option<&Identity>) -> Result<PathBuf, CaptureError> {
    let not_found = || CaptureError::CommandNotFound {
        command: program.to_string_lossy().into_owned(),
    };
    let program = program.to_os_string();
    let found = super::as_user::as_user(identity, move || {
        let executable = |p: &Path| {
            let Ok(c_path) = CString::new(p.as_os_str().as_bytes()) else {
                return false;
            };
            // AT_EACCESS: checked with this thread's (the user's) identity, not the real uid.
            // SAFETY: a NUL-terminated path.
            let ok = unsafe {
                libc::faccessat(
                    libc::AT_FDCWD,
                    c_path.as_ptr(),
                    libc::X_OK,
                    libc::AT_EACCESS,
                )
            } == 0;
            ok && p.is_file()
        };
        if program.as_bytes().contains(&b'/') {
            let p = PathBuf::from(&program);
            return executable(&p).then_some(p);
        }
        let path = std::env::var_os("PATH")
            .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
        std::env::split_paths(&path)
            .map(|dir| dir.join(&program))
            .find(|p| executable(p))
    })?;
    found.ok_or_else(not_found)
}

/// A forked child blocked before exec until [`PausedChild::release`].
pub struct PausedChild {
    pid: Pid,
    command: String,
    go: Option<OwnedFd>,
    exec_status: OwnedFd,
}

fn cstring(bytes: Vec<u8>, what: &str) -> Result<CString, CaptureError> {
    CString::new(bytes).map_err(|_| CaptureError::Spawn {
        command: what.into(),
        reason: "argument contains a NUL byte".into(),
    })
}

/// Forks a child that will exec `path` with `argv` as `identity` (`path` from [`resolve`]).
/// Everything the child needs is prepared before fork: after it, the child only makes
/// async-signal-safe calls.
pub fn spawn_paused(
    path: &Path,
    argv: &[OsString],
    identity: Option<&Identity>,
) -> Result<PausedChild, CaptureError> {
    let command = argv
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    let c_path = cstring(path.as_os_str().as_bytes().to_vec(), &command)?;
    let c_argv = argv
        .iter()
        .map(|a| cstring(a.clone().into_vec(), &command))
        .collect::<Result<Vec<_>, _>>()?;
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    if let Some(id) = identity {
        env.retain(|(k, _)| {
            !matches!(
                k.to_str(),
                Some("HOME" | "USER" | "LOGNAME" | "SHELL" | "MAIL")
            )
        });
        env.push(("HOME".into(), id.home.clone().into_os_string()));
        env.push(("USER".into(), id.user.clone().into()));
        env.push(("LOGNAME".into(), id.user.clone().into()));
        env.push(("SHELL".into(), id.shell.clone().into_os_string()));
    }
    let c_env = env
        .into_iter()
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            cstring(kv, &command)
        })
        .collect::<Result<Vec<_>, _>>()?;

    let pipe_err = |e: Errno| CaptureError::Spawn {
        command: command.clone(),
        reason: format!("pipe: {e}"),
    };
    let (go_read, go_write) = unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(pipe_err)?;
    let (status_read, status_write) =
        unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(pipe_err)?;

    // SAFETY: the child only calls async-signal-safe functions (signal, read, write,
    // setgroups, setgid, setuid, execve, _exit) on data prepared above.
    match unsafe { unistd::fork() } {
        Err(e) => Err(CaptureError::Spawn {
            command,
            reason: format!("fork: {e}"),
        }),
        Ok(ForkResult::Child) => {
            // The recorder's handlers are not the command's: a Ctrl-C on the terminal while
            // it waits to be released ends it, as it would end the command itself.
            for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGCHLD] {
                // SAFETY: signal(2) is async-signal-safe; SIG_DFL is a valid disposition.
                unsafe { libc::signal(signal, libc::SIG_DFL) };
            }
            drop(go_write);
            drop(status_read);
            let fail = |stage: u8, errno: Errno| -> ! {
                let code = errno as i32;
                let mut msg = [stage, 0, 0, 0, 0];
                msg[1..].copy_from_slice(&code.to_le_bytes());
                let _ = unistd::write(&status_write, &msg);
                // SAFETY: _exit is async-signal-safe and ends the forked child at once.
                unsafe { libc::_exit(127) }
            };
            let mut byte = [0u8; 1];
            match unistd::read(go_read.as_raw_fd(), &mut byte) {
                Ok(1) => {}
                // The tracer went away before releasing us: do not run untraced.
                // SAFETY: _exit is async-signal-safe and ends the forked child at once.
                _ => unsafe { libc::_exit(127) },
            }
            if let Some(id) = identity {
                if let Err(e) = unistd::setgroups(&id.groups) {
                    fail(1, e);
                }
                if let Err(e) = unistd::setgid(id.gid) {
                    fail(1, e);
                }
                if let Err(e) = unistd::setuid(id.uid) {
                    fail(1, e);
                }
            }
            let Err(e) = unistd::execve(&c_path, &c_argv, &c_env);
            fail(2, e)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(go_read);
            drop(status_write);
            Ok(PausedChild {
                pid: child,
                command,
                go: Some(go_write),
                exec_status: status_read,
            })
        }
    }
}

impl PausedChild {
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Lets the child exec; returns once exec succeeded, or the reason it failed.
    pub fn release(mut self) -> Result<Pid, CaptureError> {
        let go = self.go.take().expect("released once");
        let _ = unistd::write(&go, &[1u8]);
        drop(go);
        let mut msg = [0u8; 5];
        let mut got = 0;
        while got < msg.len() {
            match unistd::read(self.exec_status.as_raw_fd(), &mut msg[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        if got == 0 {
            return Ok(self.pid); // CLOEXEC pipe closed by a successful exec
        }
        let _ = nix::sys::wait::waitpid(self.pid, None);
        let errno = Errno::from_raw(i32::from_le_bytes(msg[1..5].try_into().unwrap()));
        let reason = match msg[0] {
            1 => format!("switching to the invoking user failed: {errno}"),
            _ => format!("exec failed: {errno}"),
        };
        Err(CaptureError::Spawn {
            command: self.command.clone(),
            reason,
        })
    }
}

impl Drop for PausedChild {
    fn drop(&mut self) {
        if self.go.take().is_some() {
            // Never released: closing the pipe makes the child exit without exec; reap it.
            let _ = nix::sys::wait::waitpid(self.pid, None);
        }
    }
}

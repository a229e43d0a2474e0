//! Root-only: these tests really load the eBPF programs and record real programs.
//! They skip (saying so) only when the process lacks the privilege to load eBPF.
mod common;

use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::{MetadataExt, PermissionsExt},
};

use common::*;
use gil_trace::{
    capture::{as_user::as_user, child::Identity},
    trace::{Event, EventData, IoClass, TraceReader},
};
use nix::{
    sys::signal::Signal,
    unistd::{Gid, Uid},
};

fn read_events(path: &std::path::Path) -> (TraceReader, Vec<Event>) {
    let reader = TraceReader::open(path).unwrap();
    let again = TraceReader::open(path).unwrap();
    let events: Vec<Event> = again.events().map(|e| e.unwrap()).collect();
    (reader, events)
}

#[derive(serde::Deserialize)]
struct PingPong {
    pid: u32,
    futex_addr: u64,
    datagrams: u64,
    threads: Vec<ThreadId>,
}

#[derive(serde::Deserialize)]
struct ThreadId {
    tid: u32,
    name: String,
}

#[test]
fn records_futex_contention_wakeups_and_every_datagram() {
    if skip_without_privilege("records_futex_contention_wakeups_and_every_datagram") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("pingpong.trace");
    let out = gil_trace()
        .arg("record")
        .arg("-o")
        .arg(&trace)
        .arg("--quiet")
        .arg("--")
        .arg(workspace_bin("workload"))
        .args([
            "pingpong",
            "--lockers",
            "4",
            "--rounds",
            "200",
            "--datagrams",
            "100",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "record failed: {}", stderr(&out));
    let truth: PingPong = serde_json::from_str(stdout(&out).trim()).expect("pingpong report");
    let (reader, events) = read_events(&trace);

    // Nothing lost at this rate, and the header/trailer say what ran.
    assert_eq!(
        reader.trailer().lost.total,
        0,
        "lost events: {:?}",
        reader.trailer().lost
    );
    assert_eq!(reader.meta().root_pid, truth.pid);
    assert_eq!(reader.trailer().exit.as_ref().and_then(|e| e.code), Some(0));
    assert!(
        events.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns),
        "events are time-ordered"
    );

    // Every thread seen, with its name.
    let table: HashMap<u32, String> = reader
        .trailer()
        .threads
        .iter()
        .map(|t| (t.tid, t.name.clone()))
        .collect();
    for t in &truth.threads {
        assert_eq!(
            table.get(&t.tid),
            Some(&t.name),
            "thread {} ({}) missing or misnamed: {table:?}",
            t.tid,
            t.name
        );
    }
    let subjects: HashSet<u32> = events.iter().map(|e| e.tid).collect();
    for t in &truth.threads {
        assert!(
            subjects.contains(&t.tid),
            "no events from {} ({})",
            t.tid,
            t.name
        );
    }

    // Futex waits and wakes on the contended word; each wake's sched_waking names the waker
    // (the thread inside the FUTEX_WAKE) and a wakee that was waiting on that word.
    let lockers: HashSet<u32> = truth
        .threads
        .iter()
        .filter(|t| t.name.starts_with("locker"))
        .map(|t| t.tid)
        .collect();
    let mut in_wake: HashMap<u32, bool> = HashMap::new();
    let mut waiting: HashSet<u32> = HashSet::new();
    let (mut waits, mut wakes, mut futex_wakeups) = (0, 0, 0);
    for e in &events {
        match e.data {
            EventData::FutexEnter(call) if call.uaddr == truth.futex_addr => {
                assert!(
                    lockers.contains(&e.tid),
                    "futex on the word from non-locker {}",
                    e.tid
                );
                if call.is_wait() {
                    waits += 1;
                    waiting.insert(e.tid);
                }
                if call.is_wake() {
                    wakes += 1;
                    in_wake.insert(e.tid, true);
                }
            }
            EventData::FutexExit { .. } => {
                in_wake.remove(&e.tid);
                waiting.remove(&e.tid);
            }
            EventData::Waking { wakee, .. } if in_wake.contains_key(&e.tid) => {
                futex_wakeups += 1;
                assert!(
                    lockers.contains(&wakee),
                    "FUTEX_WAKE by {} woke non-locker {wakee}",
                    e.tid
                );
                assert!(
                    waiting.contains(&wakee),
                    "FUTEX_WAKE by {} woke {wakee}, which was not waiting on the word",
                    e.tid
                );
            }
            _ => {}
        }
    }
    assert!(
        waits > 10,
        "too few futex waits on the contended word: {waits}"
    );
    assert!(
        wakes > 10,
        "too few futex wakes on the contended word: {wakes}"
    );
    assert!(
        futex_wakeups > 10,
        "too few wakeups attributed to a futex waker: {futex_wakeups}"
    );

    // Every datagram: the server received `datagrams`, the client as many echoes; each with an
    // arrival time no later than the end of the recv syscall that returned it.
    let tid_of = |name: &str| truth.threads.iter().find(|t| t.name == name).unwrap().tid;
    for receiver in [tid_of("udp-server"), tid_of("udp-client")] {
        let mut pending_arrival: Option<u64> = None;
        let mut received = 0;
        for e in events.iter().filter(|e| e.tid == receiver) {
            match e.data {
                EventData::NetRecv {
                    arrival_ns, len, ..
                } => {
                    assert_eq!(len, 512);
                    let arrival = arrival_ns.expect("datagram without arrival time");
                    assert!(arrival <= e.ts_ns);
                    pending_arrival = Some(arrival);
                }
                EventData::IoExit {
                    class: IoClass::Recv,
                    ret,
                    ..
                } if ret > 0 => {
                    let arrival = pending_arrival
                        .take()
                        .expect("recv returned without a datagram event");
                    assert!(arrival <= e.ts_ns, "arrival after recv exit");
                    received += 1;
                }
                _ => {}
            }
        }
        assert_eq!(received, truth.datagrams, "thread {receiver} datagrams");
    }
}

#[test]
fn report_json_has_the_documented_counts() {
    if skip_without_privilege("report_json_has_the_documented_counts") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.trace");
    let out = record_workload(
        &trace,
        &[],
        &["pingpong", "--rounds", "50", "--datagrams", "20"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = gil_trace()
        .arg("report")
        .arg("--json")
        .arg(&trace)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for kind in ["sched_switch", "sched_wakeup", "futex", "udp_recv"] {
        assert!(
            v["counts"][kind].as_u64().unwrap() > 0,
            "counts.{kind} is zero: {}",
            v["counts"]
        );
    }
    for kind in ["udp_send", "fork", "exit"] {
        assert!(
            v["counts"][kind].as_u64().is_some(),
            "counts.{kind} missing"
        );
    }
    assert_eq!(
        v["counts"]["udp_recv"].as_u64(),
        Some(40),
        "20 datagrams each way"
    );
    assert_eq!(v["lost"].as_u64(), Some(0));
    assert!(v["meta"]["duration_ns"].as_u64().unwrap() > 0);
    assert!(v["meta"]["command"].as_array().unwrap().len() >= 2);
    let threads = v["threads"].as_array().unwrap();
    assert!(
        threads.iter().any(|t| t["name"] == "udp-server"),
        "{threads:?}"
    );
    assert!(threads.iter().all(|t| t["tid"].as_u64().is_some()));
}

#[test]
fn exit_status_passes_through_and_missing_command_fails_cleanly() {
    if skip_without_privilege("exit_status_passes_through_and_missing_command_fails_cleanly") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.trace");
    let out = record_cmd(&trace, &[])
        .args(["sh", "-c", "exit 7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(TraceReader::open(&trace).is_ok());

    let missing = dir.path().join("missing.trace");
    let out = record_cmd(&missing, &[])
        .arg("/nonexistent/program")
        .output()
        .unwrap();
    assert_one_line_error(&out, "command not found");
    assert_eq!(
        out.status.code(),
        Some(127),
        "not found: as env and sudo say it"
    );
    assert!(!missing.exists());

    let out = gil_trace()
        .args([
            "record",
            "--quiet",
            "-o",
            "/nonexistent-dir/t.trace",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert_one_line_error(&out, "not a directory");
    assert_eq!(out.status.code(), Some(125), "gil-trace's own failure");
}

#[test]
fn a_second_recording_keeps_the_first_as_old() {
    if skip_without_privilege("a_second_recording_keeps_the_first_as_old") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.trace");
    let first = record_cmd(&trace, &[])
        .args(["sh", "-c", "exit 3"])
        .output()
        .unwrap();
    assert_eq!(first.status.code(), Some(3), "{}", stderr(&first));
    let first_bytes = std::fs::read(&trace).unwrap();
    let second = record_cmd(&trace, &[]).arg("true").output().unwrap();
    assert!(second.status.success(), "{}", stderr(&second));
    let old = dir.path().join("t.trace.old");
    assert_eq!(std::fs::read(&old).unwrap(), first_bytes);
    assert_ne!(std::fs::read(&trace).unwrap(), first_bytes);
    let (reader, _) = read_events(&old);
    assert_eq!(reader.trailer().exit.as_ref().and_then(|e| e.code), Some(3));
}

#[test]
fn attaches_to_a_running_process_and_refuses_a_missing_pid() {
    if skip_without_privilege("attaches_to_a_running_process_and_refuses_a_missing_pid") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("attached.trace");
    // A process that is already running (and keeps contending) when we attach.
    let mut target = std::process::Command::new(workspace_bin("workload"))
        .args([
            "pingpong",
            "--lockers",
            "3",
            // Far more work than the 1 s the test looks at (it is killed after): the threads
            // must still be running when gil-trace attaches (~1.5 s at 4000/20000).
            "--rounds",
            "40000",
            "--datagrams",
            "200000",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Attached once its threads run (3 lockers and more beside the main thread).
    let tasks = format!("/proc/{}/task", target.id());
    assert!(poll_until(std::time::Duration::from_mins(1), || {
        std::fs::read_dir(&tasks).map_or(0, Iterator::count) >= 4
    }));
    let out = gil_trace()
        .args(["record", "--quiet", "--duration", "1", "-p"])
        .arg(target.id().to_string())
        .arg("-o")
        .arg(&trace)
        .output()
        .unwrap();
    let _ = target.kill();
    let _ = target.wait();
    assert!(out.status.success(), "{}", stderr(&out));
    let reader = TraceReader::open(&trace).unwrap();
    assert!(reader.meta().attached);
    assert_eq!(reader.meta().root_pid, target.id());
    assert_eq!(reader.trailer().stop_reason, "duration");
    // Every thread of the target was seen, and nothing from other processes.
    let threads = &reader.trailer().threads;
    assert!(threads.len() >= 5, "{threads:?}");
    assert!(
        threads.iter().all(|t| t.tgid == target.id() || t.tgid == 0),
        "foreign thread: {threads:?}"
    );
    assert!(threads.iter().any(|t| t.name == "udp-server"));
    let events: Vec<Event> = reader.events().map(|e| e.unwrap()).collect();
    assert!(events
        .iter()
        .any(|e| matches!(e.data, EventData::FutexEnter(_))));
    assert!(events.iter().all(|e| e.tgid == target.id()
        || e.tgid == 0
        || matches!(e.data, EventData::Switch { .. } | EventData::Waking { .. })));

    let out = gil_trace()
        .args(["record", "--quiet", "-p", "999999999", "-o"])
        .arg(dir.path().join("x.trace"))
        .output()
        .unwrap();
    assert_one_line_error(&out, "no process with pid 999999999");
}

#[test]
fn attaching_to_a_process_that_exited_but_is_not_reaped_is_refused() {
    // A zombie still has /proc/PID/task: traced, it would never exit, and the recording (or
    // a `monitor`/`top` window) would wait for it forever.
    if skip_without_privilege("attaching_to_a_process_that_exited_but_is_not_reaped_is_refused") {
        return;
    }
    let mut zombie = std::process::Command::new("true").spawn().unwrap();
    let pid = zombie.id();
    let exited = poll_until(std::time::Duration::from_secs(30), || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
    });
    assert!(exited, "pid {pid} never became a zombie");
    let dir = tempfile::tempdir().unwrap();
    let out = gil_trace()
        // Bounded, so that a regression fails here instead of hanging.
        .args([
            "record",
            "--quiet",
            "--duration",
            "10s",
            "-p",
            &pid.to_string(),
            "-o",
        ])
        .arg(dir.path().join("z.trace"))
        .output()
        .unwrap();
    assert_one_line_error(&out, &format!("no process with pid {pid}"));
    zombie.wait().unwrap();
}

#[test]
fn sigterm_stops_recording_forwards_to_the_command_and_keeps_a_valid_trace() {
    if skip_without_privilege(
        "sigterm_stops_recording_forwards_to_the_command_and_keeps_a_valid_trace",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.trace");
    let child = record_cmd(&trace, &[])
        .args(["sleep", "30"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for_descendant(
        child.id(),
        "sleep",
        std::time::Duration::from_mins(1)
    ));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    // sleep died of the forwarded SIGTERM: 128 + 15, like a shell reports it.
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    let reader = TraceReader::open(&trace).expect("a finished, valid trace");
    assert_eq!(reader.trailer().stop_reason, "signal SIGTERM");
    assert_eq!(
        reader.trailer().exit.as_ref().and_then(|e| e.signal),
        Some(15)
    );
}

#[test]
fn under_sudo_the_command_runs_as_the_invoking_user_who_owns_the_trace() {
    if skip_without_privilege("under_sudo_the_command_runs_as_the_invoking_user_who_owns_the_trace")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A directory the user may write to.
    std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
    let trace = dir.path().join("t.trace");
    // What sudo sets for the user who ran it (here: nobody).
    let out = record_cmd(&trace, &[])
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534")
        .env("SUDO_USER", "nobody")
        .args(["sh", "-c", "id -u; id -g; id -G; echo $HOME"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(lines[0], "65534", "uid: {lines:?}");
    assert_eq!(lines[1], "65534", "gid: {lines:?}");
    assert!(
        !lines[2].split_whitespace().any(|g| g == "0"),
        "root's groups leaked: {lines:?}"
    );
    assert_ne!(lines[3], "/root", "HOME is root's: {lines:?}");
    let meta = std::fs::metadata(&trace).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (65534, 65534),
        "trace not owned by the invoking user"
    );
    assert_eq!(
        meta.mode() & 0o777,
        0o600,
        "a trace is private to its owner"
    );
    // A directory only root may write to is refused, before anything runs.
    let root_only = dir.path().join("root-only");
    std::fs::create_dir(&root_only).unwrap();
    std::fs::set_permissions(&root_only, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = record_cmd(&root_only.join("t.trace"), &[])
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534")
        .env("SUDO_USER", "nobody")
        .args(["sh", "-c", "echo ran"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "nobody may not create files in");
    assert!(!stdout(&out).contains("ran"), "the command ran");
    assert_eq!(std::fs::read_dir(&root_only).unwrap().count(), 0);
}

/// A directory anyone may write to, like /tmp (sticky).
fn shared_dir(parent: &std::path::Path) -> std::path::PathBuf {
    let dir = parent.join("shared");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

/// A root-only file outside the output directory, with known content.
fn victim(parent: &std::path::Path) -> std::path::PathBuf {
    let dir = parent.join("private");
    std::fs::create_dir(&dir).unwrap();
    let victim = dir.join("victim");
    std::fs::write(&victim, b"root's own data\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    victim
}

fn assert_untouched(victim: &std::path::Path) {
    let meta = std::fs::symlink_metadata(victim).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "the victim changed owner");
    assert_eq!(meta.mode() & 0o7777, 0o600, "the victim changed mode");
    assert_eq!(std::fs::read(victim).unwrap(), b"root's own data\n");
}

#[test]
fn links_planted_for_the_temporary_name_never_redirect_the_trace() {
    if skip_without_privilege("links_planted_for_the_temporary_name_never_redirect_the_trace") {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let dir = shared_dir(base.path());
    let victim = victim(base.path());
    // What an earlier recorder's predictable names were, for the next pids; and names in this
    // one's pattern, in case it ever becomes guessable.
    let next: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1000);
    for pid in next..next + 400 {
        std::os::unix::fs::symlink(&victim, dir.join(format!(".t.trace.tmp-{pid}"))).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(format!(".t.trace.{pid:06}.tmp"))).unwrap();
    }
    let trace = dir.join("t.trace");
    let out = record_cmd(&trace, &[]).arg("true").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_untouched(&victim);
    let meta = std::fs::symlink_metadata(&trace).unwrap();
    assert!(meta.file_type().is_file(), "the trace is a regular file");
    TraceReader::open(&trace).expect("a valid trace");
}

/// Records `read line` as nobody into `dir/t.trace`, swapping the final name for a link to
/// `victim` (made by another user) while it runs; the recorder's output.
fn record_while_the_final_name_is_swapped(
    dir: &std::path::Path,
    victim: &std::path::Path,
) -> std::process::Output {
    let trace = dir.join("t.trace");
    let mut child = record_cmd(&trace, &[])
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534")
        .env("SUDO_USER", "nobody")
        .args(["sh", "-c", "read line || true"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Recording has begun once its temporary file exists.
    let started = poll_until(std::time::Duration::from_secs(30), || {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".t.trace."))
    });
    assert!(started, "no temporary file appeared");
    // Another local user swaps the final name for a link to a root-only file...
    std::os::unix::fs::symlink(victim, &trace).unwrap();
    std::os::unix::fs::lchown(&trace, Some(65533), Some(65533)).unwrap();
    // ...and the command ends.
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

#[test]
fn a_final_name_swapped_for_a_link_during_the_run_changes_no_other_file() {
    if skip_without_privilege(
        "a_final_name_swapped_for_a_link_during_the_run_changes_no_other_file",
    ) {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    // Where the user may replace another's link: the link is replaced, never followed.
    let open_dir = base.path().join("open");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let victim = victim(base.path());
    let out = record_while_the_final_name_is_swapped(&open_dir, &victim);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_untouched(&victim);
    let trace = open_dir.join("t.trace");
    let meta = std::fs::symlink_metadata(&trace).unwrap();
    assert!(
        meta.file_type().is_file(),
        "the link was replaced, not followed"
    );
    assert_eq!((meta.uid(), meta.mode() & 0o777), (65534, 0o600));
    assert!(
        !open_dir.join("t.trace.old").exists(),
        "a link is no previous trace to keep"
    );
    // Where it may not (sticky, like /tmp): the trace stays under its temporary name.
    let sticky = shared_dir(base.path());
    let out = record_while_the_final_name_is_swapped(&sticky, &victim);
    assert_one_line_error(&out, "cannot put the finished trace in place");
    assert!(stderr(&out).contains("it was kept as"), "{}", stderr(&out));
    assert_untouched(&victim);
    let kept: Vec<_> = std::fs::read_dir(&sticky)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".t.trace."))
        .collect();
    assert_eq!(kept.len(), 1, "the trace is kept");
    TraceReader::open(&kept[0].path()).expect("a valid trace");
    assert_eq!(kept[0].metadata().unwrap().uid(), 65534);
}

#[test]
fn without_privileges_the_error_says_what_is_missing() {
    // Needs root to drop to nobody; as an ordinary user this is the situation already.
    if skip_without_privilege("without_privileges_the_error_says_what_is_missing") {
        return;
    }
    let Ok(setpriv) = which("setpriv") else {
        panic!("setpriv (util-linux) is required for this test");
    };
    let out = std::process::Command::new(setpriv)
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_gil-trace"))
        .args(["record", "-o", "/tmp/never.trace", "--", "true"])
        .output()
        .unwrap();
    assert_one_line_error(
        &out,
        "needs root or the capabilities CAP_BPF and CAP_PERFMON",
    );
    assert!(stderr(&out).contains("sudo"), "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(125));
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .or_else(|| {
            ["/usr/bin", "/bin", "/usr/sbin"]
                .iter()
                .map(|d| std::path::Path::new(d).join(name))
                .find(|p| p.is_file())
        })
        .ok_or(())
}

#[test]
fn a_full_disk_is_a_one_line_error_and_leaves_no_file() {
    if skip_without_privilege("a_full_disk_is_a_one_line_error_and_leaves_no_file") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    let _tmpfs = Tmpfs::mount(&mnt, "256k");
    let trace = mnt.join("t.trace");
    let out = record_workload(
        &trace,
        &[],
        &[
            "pingpong",
            "--lockers",
            "4",
            "--rounds",
            "3000",
            "--datagrams",
            "5000",
        ],
    );
    assert_one_line_error(&out, "No space left on device");
    assert!(stderr(&out).contains("t.trace"), "{}", stderr(&out));
    let left: Vec<_> = std::fs::read_dir(&mnt).unwrap().collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
}

#[test]
fn a_tiny_ring_buffer_counts_drops_and_the_report_marks_them() {
    if skip_without_privilege("a_tiny_ring_buffer_counts_drops_and_the_report_marks_them") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.trace");
    let out = record_workload(
        &trace,
        &["--buffer-size", "4K"],
        &["storm", "--seconds", "0.5"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let reader = TraceReader::open(&trace).unwrap();
    let lost = reader.trailer().lost.clone();
    assert!(lost.total > 0, "no drops with a 4 KiB buffer: {lost:?}");
    assert_eq!(lost.by_kind.values().sum::<u64>(), lost.total);
    let per_cpu: u64 = lost.by_cpu.iter().flat_map(|m| m.values()).sum();
    assert_eq!(per_cpu, lost.total);
    let out = gil_trace()
        .args(["report", "--json"])
        .arg(&trace)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["lost"].as_u64(), Some(lost.total));
    assert!(
        !v["lost_spans"].as_array().unwrap().is_empty(),
        "no lost span markers"
    );
    assert!(
        v["warnings"].to_string().contains("lost"),
        "{}",
        v["warnings"]
    );
    let text = gil_trace().arg("report").arg(&trace).output().unwrap();
    assert!(
        stdout(&text).contains("lost"),
        "text report hides the drops"
    );
}

#[test]
fn a_command_that_cannot_exec_is_a_one_line_error() {
    if skip_without_privilege("a_command_that_cannot_exec_is_a_one_line_error") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("not-a-program");
    std::fs::write(&bogus, [0x7f, b'E', b'L', b'F', 0, 0, 0, 0]).unwrap();
    std::fs::set_permissions(&bogus, std::fs::Permissions::from_mode(0o755)).unwrap();
    let trace = dir.path().join("t.trace");
    let out = record_cmd(&trace, &[]).arg(&bogus).output().unwrap();
    assert_one_line_error(&out, "exec failed");
    assert_eq!(out.status.code(), Some(126), "a command that cannot run");
    assert!(!trace.exists());
}

#[test]
fn descendants_that_outlive_the_command_are_followed_to_the_end() {
    if skip_without_privilege("descendants_that_outlive_the_command_are_followed_to_the_end") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.trace");
    // The shell exits at once; the program it started in the background (which also execs:
    // sh → workload) keeps running, and must be recorded until it ends.
    let script = format!(
        "{} pingpong --rounds 100 --datagrams 50 > /dev/null & exit 0",
        workspace_bin("workload").display()
    );
    let out = record_cmd(&trace, &[])
        .args(["sh", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let reader = TraceReader::open(&trace).unwrap();
    assert_eq!(
        reader.trailer().exit.as_ref().and_then(|e| e.code),
        Some(0),
        "the shell's status"
    );
    let threads = &reader.trailer().threads;
    assert!(
        threads.iter().any(|t| t.name == "udp-server"),
        "background program not followed: {threads:?}"
    );
    let events: Vec<Event> = reader.events().map(|e| e.unwrap()).collect();
    let datagrams = events
        .iter()
        .filter(|e| matches!(e.data, EventData::NetRecv { .. }))
        .count();
    assert_eq!(
        datagrams, 100,
        "50 datagrams each way, all recorded after the shell exited"
    );
}

/// Starts `record -- ARGS` in the background (stdin not a terminal, so SIGINT is forwarded).
fn spawn_record(trace: &std::path::Path, args: &[&str]) -> std::process::Child {
    record_cmd(trace, &[])
        .args(args)
        .stdin(std::process::Stdio::null())
        // Not piped: the command's children inherit them and would hold a pipe open.
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn signal(child: &std::process::Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

#[test]
fn sigint_and_sighup_are_forwarded_and_the_trace_is_finalized() {
    if skip_without_privilege("sigint_and_sighup_are_forwarded_and_the_trace_is_finalized") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (sig, name, code) in [
        (Signal::SIGINT, "SIGINT", 130),
        (Signal::SIGHUP, "SIGHUP", 129),
    ] {
        let trace = dir.path().join(format!("{name}.trace"));
        let child = spawn_record(&trace, &["sleep", "30"]);
        // The command runs (not still held until traced): the signal reaches it.
        assert!(wait_for_descendant(
            child.id(),
            "sleep",
            std::time::Duration::from_mins(1)
        ));
        signal(&child, sig);
        let signalled = std::time::Instant::now();
        let mut child = child;
        let status = child.wait().unwrap();
        let took = signalled.elapsed();
        assert_eq!(status.code(), Some(code), "{name}");
        let reader = TraceReader::open(&trace).expect("a finished, valid trace");
        assert_eq!(reader.trailer().stop_reason, format!("signal {name}"));
        assert_eq!(
            reader.trailer().exit.as_ref().and_then(|e| e.signal),
            Some(sig as i32),
            "{name}: the command's exit (recording stopped {took:?} after the signal)"
        );
    }
}

#[test]
fn a_signal_while_the_programs_load_still_finishes_the_trace() {
    // Ctrl-C as soon as the output file exists, while the programs are still loading: taken
    // (not the default death, which would leave a half-written temporary file), passed on to
    // the command once it runs, and the trace finished.
    if skip_without_privilege("a_signal_while_the_programs_load_still_finishes_the_trace") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.trace");
    let child = spawn_record(&trace, &["sleep", "30"]);
    let temp_exists = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
    };
    assert!(poll_until(std::time::Duration::from_mins(1), temp_exists));
    signal(&child, Signal::SIGINT);
    let mut child = child;
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status}");
    let reader = TraceReader::open(&trace).expect("a finished, valid trace");
    assert_eq!(reader.trailer().stop_reason, "signal SIGINT");
    assert!(!temp_exists(), "a temporary file was left");
}

#[test]
fn a_second_signal_stops_at_once_with_a_valid_trace() {
    if skip_without_privilege("a_second_signal_stops_at_once_with_a_valid_trace") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.trace");
    // A command that ignores the forwarded SIGTERM and would outlast the grace period.
    let child = spawn_record(
        &trace,
        &["sh", "-c", "trap '' TERM; sleep 20 & wait; sleep 20"],
    );
    // The shell ignores SIGTERM by the time it starts its first sleep.
    assert!(wait_for_descendant(
        child.id(),
        "sleep",
        std::time::Duration::from_mins(1)
    ));
    signal(&child, Signal::SIGTERM);
    // The first signal is taken (forwarded, the grace period begun) before the second.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let second = std::time::Instant::now();
    signal(&child, Signal::SIGTERM);
    let mut child = child;
    let status = child.wait().unwrap();
    assert!(
        second.elapsed() < std::time::Duration::from_secs(2),
        "second signal did not stop it fast"
    );
    assert_eq!(status.code(), Some(143));
    let reader = TraceReader::open(&trace).expect("a finished, valid trace");
    assert_eq!(reader.trailer().stop_reason, "signal SIGTERM");
    assert!(
        reader.trailer().exit.is_none(),
        "the command was still running"
    );
    let _ = std::process::Command::new("pkill")
        .args(["-KILL", "-f", "trap '' TERM; sleep 20"])
        .status();
}

#[test]
fn output_removed_mid_run_is_an_error_and_leaves_nothing() {
    if skip_without_privilege("output_removed_mid_run_is_an_error_and_leaves_nothing") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.trace");
    let child = record_cmd(&trace, &[])
        .arg(workspace_bin("workload"))
        .args(["storm", "--seconds", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Polled, not slept for: a first run on a busy machine may still be loading.
    let temporary = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".t.trace."))
            .count()
    };
    let started = poll_until(std::time::Duration::from_mins(1), || temporary() > 0);
    assert!(started, "no temporary file appeared");
    assert_eq!(temporary(), 1, "the recorder writes to one temporary file");
    for e in std::fs::read_dir(dir.path()).unwrap().flatten() {
        std::fs::remove_file(e.path()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_one_line_error(&out, "t.trace");
    assert!(!trace.exists(), "a file appeared under the final name");
}

#[test]
fn many_new_threads_are_all_followed() {
    if skip_without_privilege("many_new_threads_are_all_followed") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.trace");
    // 32 threads started at once, each calling futex from its first instant, at a pace the
    // recorder keeps up with on a busy machine: a flat-out pairs storm overflowed the ring in
    // CI while the other root tests ran beside it, and a drop would hide a missed thread.
    let out = record_workload(
        &trace,
        &[],
        &[
            "futex-storm",
            "--threads",
            "32",
            "--rate",
            "20000",
            "--seconds",
            "0.3",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let reader = TraceReader::open(&trace).unwrap();
    assert_eq!(reader.trailer().lost.total, 0);
    let storm: Vec<u32> = reader
        .trailer()
        .threads
        .iter()
        .filter(|t| t.name.starts_with("futex-storm-"))
        .map(|t| t.tid)
        .collect();
    assert_eq!(
        storm.len(),
        32,
        "every one of the 32 new threads is followed"
    );
    let events: Vec<Event> = reader.events().map(|e| e.unwrap()).collect();
    for tid in storm {
        assert!(
            events
                .iter()
                .any(|e| e.tid == tid && matches!(e.data, EventData::FutexEnter(_))),
            "no futex events from {tid}"
        );
    }
}

#[test]
fn record_cost_times_the_programs_and_keeps_the_figures_in_the_trailer() {
    if skip_without_privilege("record_cost_times_the_programs_and_keeps_the_figures_in_the_trailer")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.trace");
    let out = record_workload(&trace, &["--cost"], &["storm", "--seconds", "0.3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("capture cost: eBPF"),
        "{}",
        stderr(&out)
    );
    let reader = TraceReader::open(&trace).unwrap();
    let events = reader.trailer().events;
    let cost = reader.trailer().capture_cost.clone().expect("capture_cost");
    // Every emitted event is one program run; filtered-out runs only add to that.
    assert!(
        cost.bpf_runs.unwrap() >= events,
        "{cost:?} vs {events} events"
    );
    assert!(
        cost.bpf_run_ns.unwrap() > 0 && cost.recorder_cpu_ns > 0,
        "{cost:?}"
    );
    // Recording is part of the recorder's CPU, and loading the programs is the rest's
    // larger share (it reads the kernel's BTF and has every program verified).
    let recording = cost.recording_cpu_ns.expect("recording CPU kept");
    assert!(
        recording > 0 && recording < cost.recorder_cpu_ns,
        "{cost:?}"
    );
    let switch = cost
        .bpf_programs
        .iter()
        .find(|p| p.program == "sched_sched_switch")
        .expect("sched_switch timed");
    assert!(switch.runs > 0 && switch.run_ns > 0);
}

#[test]
fn every_futex_call_is_recorded_by_the_typed_and_the_plain_syscall_programs() {
    // The syscall programs come as BTF-typed raw tracepoints (the default where the kernel
    // has BTF) and as plain ones (the fallback): each must record every call, enter and exit.
    if skip_without_privilege("every_futex_call_is_recorded_…") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (variant, no_btf) in [("BTF raw tracepoint", false), ("raw tracepoint", true)] {
        let trace = dir.path().join(format!("{no_btf}.trace"));
        let mut cmd = record_cmd(&trace, &[]);
        if no_btf {
            cmd.env("GIL_TRACE_NO_BTF", "1");
        }
        let out = cmd
            .arg(workspace_bin("workload"))
            .args([
                "futex-storm",
                "--threads",
                "2",
                "--rate",
                "20000",
                "--seconds",
                "0.3",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let calls = made["calls"].as_u64().unwrap();
        assert!(calls >= 1_000, "{calls}");
        let (reader, events) = read_events(&trace);
        let tracepoints = &reader.meta().tracepoints;
        for tp in ["sys_enter", "sys_exit"] {
            let name = format!("raw_syscalls:{tp} ({variant})");
            assert!(tracepoints.contains(&name), "{name} not in {tracepoints:?}");
        }
        // The storm's own calls: FUTEX_WAKE (op 1 | private 128) of val 1, each with its exit.
        let storm_tids: HashSet<u32> = events
            .iter()
            .filter(|e| matches!(e.data, EventData::FutexEnter(c) if c.op == 129 && c.val == 1))
            .map(|e| e.tid)
            .collect();
        assert_eq!(storm_tids.len(), 2, "{variant}: {storm_tids:?}");
        // Each storm thread's word (a local of its own): the threads' runtime may make a wake
        // of its own on another (a thread's exit, its result's lock), which the storm does
        // not count.
        let mut by_word: HashMap<(u32, u64), u64> = HashMap::new();
        for e in &events {
            if let EventData::FutexEnter(c) = e.data {
                if storm_tids.contains(&e.tid) && c.op == 129 {
                    *by_word.entry((e.tid, c.uaddr)).or_default() += 1;
                }
            }
        }
        let mut word_of: HashMap<u32, (u64, u64)> = HashMap::new();
        for (&(tid, word), &n) in &by_word {
            let best = word_of.entry(tid).or_insert((word, n));
            if n > best.1 {
                *best = (word, n);
            }
        }
        let entries: u64 = word_of.values().map(|&(_, n)| n).sum();
        assert_eq!(
            entries, calls,
            "{variant}: futex entries on the storm's words"
        );
        // Each with its exit: the thread's next futex exit after an entry on its word.
        let mut in_call: HashSet<u32> = HashSet::new();
        let mut exits = 0u64;
        for e in &events {
            match e.data {
                EventData::FutexEnter(c) if word_of.get(&e.tid).is_some_and(|w| w.0 == c.uaddr) => {
                    in_call.insert(e.tid);
                }
                EventData::FutexExit { ret: 0, .. } if in_call.remove(&e.tid) => exits += 1,
                _ => {}
            }
        }
        assert_eq!(exits, calls, "{variant}: futex exits");
        assert_eq!(reader.trailer().lost.total, 0);
    }
}

/// Checks that every traced thread's syscalls nest properly in `events` (time order): each
/// exit closes an entry of the same family (futex, or the same I/O class) by the same thread,
/// no earlier than it, and no thread enters a call while inside one. Returns the calls
/// closed per thread.
fn assert_calls_pair_up(variant: &str, events: &[Event]) -> HashMap<u32, u64> {
    let mut open: HashMap<u32, (&'static str, u64)> = HashMap::new();
    let mut closed: HashMap<u32, u64> = HashMap::new();
    for e in events {
        let family = |class: IoClass| match class {
            IoClass::Recv => "recv",
            IoClass::Send => "send",
            IoClass::Poll => "poll",
        };
        match e.data {
            EventData::FutexEnter(_) | EventData::IoEnter { .. } => {
                let what = match e.data {
                    EventData::IoEnter { class, .. } => family(class),
                    _ => "futex",
                };
                let before = open.insert(e.tid, (what, e.ts_ns));
                assert!(
                    before.is_none(),
                    "{variant}: thread {} entered {what} at {} inside {before:?}",
                    e.tid,
                    e.ts_ns
                );
            }
            EventData::FutexExit { .. } | EventData::IoExit { .. } => {
                let what = match e.data {
                    EventData::IoExit { class, .. } => family(class),
                    _ => "futex",
                };
                let entered = open.remove(&e.tid);
                match entered {
                    Some((family, at)) if family == what && at <= e.ts_ns => {}
                    other => panic!(
                        "{variant}: thread {} left {what} at {} after {other:?}",
                        e.tid, e.ts_ns
                    ),
                }
                *closed.entry(e.tid).or_default() += 1;
            }
            _ => {}
        }
    }
    closed
}

#[test]
fn events_batched_or_not_and_calls_as_one_record_or_two_give_the_same_events() {
    // A syscall that does not leave its CPU is written as one ring record at its exit (entry
    // and exit together); GIL_TRACE_SPLIT_CALLS=1 writes the two as they happen. Each CPU
    // gathers its records and writes them several at a time; GIL_TRACE_NO_BATCH=1 writes each
    // at once. The trace must not tell them apart: every entry and exit, in order, with the
    // same meaning, and no event later than the recorder's holdback (the file in time order).
    if skip_without_privilege(
        "events_batched_or_not_and_calls_as_one_record_or_two_give_the_same_events",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut futex_calls = Vec::new();
    for (variant, env) in [
        ("batched, one record per call", None),
        ("one by one", Some("GIL_TRACE_NO_BATCH")),
        (
            "batched, two records per call",
            Some("GIL_TRACE_SPLIT_CALLS"),
        ),
    ] {
        let trace = dir.path().join(format!("{}.trace", futex_calls.len()));
        let mut cmd = record_cmd(&trace, &[]);
        if let Some(var) = env {
            cmd.env(var, "1");
        }
        let out = cmd
            .arg(workspace_bin("workload"))
            .args([
                "pingpong",
                "--lockers",
                "4",
                "--rounds",
                "200",
                "--datagrams",
                "100",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{variant}: {}", stderr(&out));
        let truth: PingPong = serde_json::from_str(stdout(&out).trim()).expect("pingpong report");
        let (reader, events) = read_events(&trace);
        assert_eq!(reader.trailer().lost.total, 0, "{variant}");
        let behind = events
            .windows(2)
            .filter(|w| w[1].ts_ns < w[0].ts_ns)
            .count();
        assert_eq!(behind, 0, "{variant}: events written out of time order");
        let closed = assert_calls_pair_up(variant, &events);
        let tid_of = |name: &str| truth.threads.iter().find(|t| t.name == name).unwrap().tid;
        // The datagram threads' calls, exactly: one send and one recv per datagram each way.
        for name in ["udp-server", "udp-client"] {
            let tid = tid_of(name);
            let count = |want: fn(&EventData) -> bool| {
                events
                    .iter()
                    .filter(|e| e.tid == tid && want(&e.data))
                    .count() as u64
            };
            let recv_enter = count(|d| {
                matches!(
                    d,
                    EventData::IoEnter {
                        class: IoClass::Recv,
                        ..
                    }
                )
            });
            let recv_exit = count(
                |d| matches!(d, EventData::IoExit { class: IoClass::Recv, ret, .. } if *ret == 512),
            );
            let sends = count(
                |d| matches!(d, EventData::IoExit { class: IoClass::Send, ret, .. } if *ret == 512),
            );
            let arrivals = count(|d| {
                matches!(
                    d,
                    EventData::NetRecv {
                        arrival_ns: Some(_),
                        ..
                    }
                )
            });
            assert_eq!(
                recv_enter, truth.datagrams,
                "{variant}: {name} recv entries"
            );
            assert_eq!(recv_exit, truth.datagrams, "{variant}: {name} recv exits");
            assert_eq!(sends, truth.datagrams, "{variant}: {name} sends");
            assert_eq!(
                arrivals, truth.datagrams,
                "{variant}: {name} timed arrivals"
            );
        }
        // The lockers' futex calls on the contended word all return.
        let lockers: Vec<u32> = truth
            .threads
            .iter()
            .filter(|t| t.name.starts_with("locker"))
            .map(|t| t.tid)
            .collect();
        let on_word = events
            .iter()
            .filter(|e| matches!(e.data, EventData::FutexEnter(c) if c.uaddr == truth.futex_addr))
            .count() as u64;
        let closed_by_lockers: u64 = lockers
            .iter()
            .map(|t| closed.get(t).copied().unwrap_or(0))
            .sum();
        assert!(on_word > 10, "{variant}: {on_word} calls on the word");
        assert!(
            closed_by_lockers >= on_word,
            "{variant}: {closed_by_lockers} calls closed by the lockers, {on_word} on the word"
        );
        futex_calls.push(on_word);
    }
    // The same run type makes the same order of calls every way (the lockers' contention
    // varies run to run, not tenfold).
    let (least, most) = (
        *futex_calls.iter().min().unwrap() as f64,
        *futex_calls.iter().max().unwrap() as f64,
    );
    assert!(most / least < 3.0, "{futex_calls:?}");
}

#[test]
fn dispatch_only_runs_every_program_and_records_nothing() {
    // The benchmark's "tracepoints alone" column: the same attachments as a recording, with
    // every program returning at once. It must really run the programs, and record nothing.
    if skip_without_privilege("dispatch_only_runs_every_program_and_records_nothing") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.trace");
    let out = record_cmd(&trace, &["--cost"])
        .env("GIL_TRACE_DISPATCH_ONLY", "1")
        .arg(workspace_bin("workload"))
        .args(["storm", "--seconds", "0.3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("GIL_TRACE_DISPATCH_ONLY is set"),
        "{}",
        stderr(&out)
    );
    let reader = TraceReader::open(&trace).unwrap();
    assert_eq!(reader.trailer().events, 0);
    assert_eq!(reader.trailer().lost.total, 0);
    let tracepoints = &reader.meta().tracepoints;
    for tp in [
        "sched:sched_switch",
        "sched:sched_waking",
        "raw_syscalls:sys_enter",
    ] {
        assert!(
            tracepoints.iter().any(|t| t.starts_with(tp)),
            "{tp} not in {tracepoints:?}"
        );
    }
    let cost = reader.trailer().capture_cost.clone().expect("capture_cost");
    for program in ["sched_sched_switch", "sched_sched_waking"] {
        let p = cost
            .bpf_programs
            .iter()
            .find(|p| p.program == program)
            .unwrap_or_else(|| panic!("{program} not timed: {cost:?}"));
        // The storm switches and wakes ~100 k times in 0.3 s.
        assert!(p.runs > 1_000, "{program}: {p:?}");
    }
}

#[derive(serde::Deserialize)]
struct Burst {
    receiver_tid: u32,
    received: u64,
    send_ns: Vec<u64>,
}

#[test]
fn a_burst_keeps_every_arrival_time_or_counts_it_as_lost() {
    if skip_without_privilege("a_burst_keeps_every_arrival_time_or_counts_it_as_lost") {
        return;
    }
    let kept = gil_trace_common::ARRIVAL_QUEUE_LEN;
    let dir = tempfile::tempdir().unwrap();
    // 200 fit the per-socket times; 300 do not: the last 44 are counted as lacking one.
    for n in [200usize, kept + 44] {
        let trace = dir.path().join(format!("burst-{n}.trace"));
        let out = record_workload(
            &trace,
            &[],
            &["burst", "--datagrams", &n.to_string(), "--work-us", "100"],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let burst: Burst = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(burst.received, n as u64, "the whole burst was received");
        let out = gil_trace()
            .args(["report", "--json", "--detail"])
            .arg(&trace)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let ops: Vec<&serde_json::Value> = report["io_ops"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["tid"] == burst.receiver_tid)
            .collect();
        assert_eq!(ops.len(), n, "every datagram of the burst is in the report");
        let lost = n.saturating_sub(kept);
        for (i, op) in ops.iter().enumerate() {
            // Its own time, not a neighbour's: sent, then delivered (synchronously, on
            // loopback) before the next send began.
            if let Some(arrival) = op["arrival_ns"].as_u64() {
                assert!(
                    i < n - lost,
                    "datagram {i} has a time, yet was over the limit"
                );
                assert!(
                    arrival >= burst.send_ns[i],
                    "datagram {i} arrived before it was sent"
                );
                if let Some(&next) = burst.send_ns.get(i + 1) {
                    assert!(arrival <= next, "datagram {i} has a later datagram's time");
                }
                assert_eq!(op["arrival_lost"], false);
            } else {
                assert!(i >= n - lost, "datagram {i} lost its time within the limit");
                assert_eq!(
                    op["arrival_lost"], true,
                    "datagram {i} lacks a time silently"
                );
            }
        }
        assert_eq!(report["io_stalls"]["arrival_lost"], lost as u64);
        let text = gil_trace().arg("report").arg(&trace).output().unwrap();
        let text = stdout(&text);
        if lost > 0 {
            assert!(
                text.contains(&format!("{lost} whose arrival was not kept")),
                "{text}"
            );
        }
    }
}

#[test]
fn files_made_as_another_user_are_theirs_and_the_rest_of_the_process_keeps_root() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED files_made_as_another_user_are_theirs_and_the_rest_of_the_process_keeps_root: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nobody = Identity {
        uid: Uid::from_raw(65534),
        gid: Gid::from_raw(65534),
        groups: vec![Gid::from_raw(65534)],
        user: "nobody".into(),
        home: "/".into(),
        shell: "/bin/sh".into(),
    };
    // A directory only root may write to: refused as nobody.
    let refused = as_user(Some(&nobody), || {
        std::fs::File::create(dir.path().join("x")).map(|_| ())
    })
    .unwrap();
    assert_eq!(
        refused.unwrap_err().kind(),
        std::io::ErrorKind::PermissionDenied
    );
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let path = dir.path().join("y");
    as_user(Some(&nobody), || std::fs::File::create(&path))
        .unwrap()
        .unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    // The calling thread is still root.
    std::fs::File::create(dir.path().join("z")).unwrap();
    assert_eq!(std::fs::metadata(dir.path().join("z")).unwrap().uid(), 0);
}

#[test]
fn a_signal_after_the_command_exited_stops_recording_and_signals_no_one() {
    if skip_without_privilege(
        "a_signal_after_the_command_exited_stops_recording_and_signals_no_one",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("t.trace");
    // The command leaves a descendant behind and exits at once; recording follows it.
    let mut rec = record_cmd(&trace, &[])
        .args(["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $$ $!"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(rec.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let pids: Vec<i32> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let (command, sleeper) = (pids[0], nix::unistd::Pid::from_raw(pids[1]));
    // The command (sh) has exited and been reaped by the recorder.
    let reaped = poll_until(std::time::Duration::from_secs(30), || {
        !std::path::Path::new(&format!("/proc/{command}")).exists()
    });
    assert!(reaped, "the command did not exit");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(rec.id() as i32), Signal::SIGTERM).unwrap();
    let done = poll_until(std::time::Duration::from_secs(30), || {
        rec.try_wait().unwrap().is_some()
    });
    let alive = nix::sys::signal::kill(sleeper, None).is_ok();
    let _ = nix::sys::signal::kill(sleeper, Signal::SIGKILL);
    assert!(done, "recording did not stop");
    assert!(alive, "a process other than the command was signalled");
    TraceReader::open(&trace).expect("a valid trace");
}

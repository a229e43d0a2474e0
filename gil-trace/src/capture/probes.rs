//! The eBPF programs: which tracepoints, their field offsets, loading and attaching.
use std::{collections::BTreeMap, path::Path};

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf, StackTraceMap},
    programs::{BtfTracePoint, RawTracePoint, TracePoint},
    Ebpf, EbpfLoader,
};
use gil_trace_common::{
    stack_hash, CallInFlight, EventKind, ProbeConfig, RawEvent, StackWalker, StagedEvents,
    SyscallClass, UserStacks, WalkedStack, DROP_SLOTS, DROP_SLOT_FILTER_FULL, DROP_SLOT_STACKS,
    RECORD_HEADER_LEN, RECORD_PREFIX_LEN, SCHED_SWITCH_LOAD_LEN, SCHED_WAKING_LOAD_LEN,
    SK_DATA_READY_LOAD_LEN, SOCK_RECV_LENGTH_LOAD_LEN,
};

use super::{tracefs, CaptureError};
use crate::trace::{format::ProgramCost, LostCounts};

/// One program and the tracepoint it attaches to.
pub struct Probe {
    pub program: &'static str,
    pub category: &'static str,
    pub name: &'static str,
    /// Without a required tracepoint recording refuses to start; an optional one only loses
    /// the data it gives (listed in the trace's `missing_tracepoints`).
    pub required: bool,
}

pub const PROBES: &[Probe] = &[
    Probe {
        program: "sched_sched_switch",
        category: "sched",
        name: "sched_switch",
        required: true,
    },
    Probe {
        program: "sched_sched_waking",
        category: "sched",
        name: "sched_waking",
        required: true,
    },
    Probe {
        program: "sched_sched_process_fork",
        category: "sched",
        name: "sched_process_fork",
        required: true,
    },
    Probe {
        program: "sched_sched_process_exit",
        category: "sched",
        name: "sched_process_exit",
        required: true,
    },
    Probe {
        program: "sched_sched_process_exec",
        category: "sched",
        name: "sched_process_exec",
        required: false,
    },
    Probe {
        program: "task_task_rename",
        category: "task",
        name: "task_rename",
        required: false,
    },
    Probe {
        program: "sock_sk_data_ready",
        category: "sock",
        name: "sk_data_ready",
        required: false,
    },
    Probe {
        program: "sock_sock_recv_length",
        category: "sock",
        name: "sock_recv_length",
        required: false,
    },
    // Records nothing: the timer interrupt bounds how long a busy CPU's events wait in its
    // staging slot. Without it, every record is written at once (`ProbeConfig::batch`).
    Probe {
        program: "timer_hrtimer_expire_entry",
        category: "timer",
        name: "hrtimer_expire_entry",
        required: false,
    },
];

/// The programs on the raw `sys_enter`/`sys_exit` tracepoints (BPF raw tracepoints: no
/// per-event record is built, so the many syscalls of untraced processes cost little):
/// (tracepoint, BTF-typed program, plain program). The BTF-typed one reads the saved
/// registers with plain loads instead of a helper call; the plain one needs no kernel BTF.
pub const SYSCALL_PROGRAMS: [(&str, &str, &str); 2] = [
    (
        "sys_enter",
        "btf_syscalls_sys_enter",
        "raw_syscalls_sys_enter",
    ),
    ("sys_exit", "btf_syscalls_sys_exit", "raw_syscalls_sys_exit"),
];

/// The syscalls gil-trace classifies on this architecture: (number, class).
pub fn syscall_table() -> Vec<(u32, SyscallClass)> {
    use SyscallClass::{Futex, FutexRequeue, FutexWait, FutexWaitv, FutexWake, Poll, Recv, Send};
    #[cfg(target_arch = "x86_64")]
    let table = vec![
        (202, Futex),
        (449, FutexWaitv),
        (454, FutexWake),
        (455, FutexWait),
        (456, FutexRequeue),
        (45, Recv),
        (47, Recv),
        (299, Recv),
        (44, Send),
        (46, Send),
        (307, Send),
        (7, Poll),
        (23, Poll),
        (271, Poll),
        (270, Poll),
        (232, Poll),
        (281, Poll),
        (441, Poll),
    ];
    #[cfg(target_arch = "aarch64")]
    let table = vec![
        (98, Futex),
        (449, FutexWaitv),
        (454, FutexWake),
        (455, FutexWait),
        (456, FutexRequeue),
        (207, Recv),
        (212, Recv),
        (243, Recv),
        (206, Send),
        (211, Send),
        (269, Send),
        (73, Poll),
        (72, Poll),
        (22, Poll),
        (441, Poll),
    ];
    table
}

/// Reads every tracepoint's layout into a [`ProbeConfig`]; returns it with the optional
/// tracepoints (or fields) this kernel lacks.
pub fn probe_config(root: &Path) -> Result<(ProbeConfig, Vec<String>), CaptureError> {
    let mut missing = Vec::new();
    let mut formats = std::collections::HashMap::new();
    for probe in PROBES {
        match tracefs::format(root, probe.category, probe.name) {
            Some(f) => {
                formats.insert(probe.name, f);
            }
            None if probe.required => {
                return Err(CaptureError::TracepointMissing {
                    name: format!("{}:{}", probe.category, probe.name),
                })
            }
            None => missing.push(format!("{}:{}", probe.category, probe.name)),
        }
    }
    // Required field of a present tracepoint; 0 for an absent optional tracepoint.
    let field = |tp: &'static str, name: &str| -> Result<u32, CaptureError> {
        match formats.get(tp) {
            None => Ok(0),
            Some(f) => f.offset(name).ok_or_else(|| CaptureError::FieldMissing {
                tracepoint: tp.to_string(),
                field: name.to_string(),
            }),
        }
    };
    // sched_process_exit.group_dead is recent; without it exits just say "not known".
    let group_dead = formats
        .get("sched_process_exit")
        .and_then(|f| f.offset("group_dead"))
        .unwrap_or_else(|| {
            missing.push("sched:sched_process_exit.group_dead".into());
            0
        });
    // Fields the hot programs pick out of the record start they load: (tracepoint, field,
    // bytes read). Each must be aligned to that width and lie inside what the program loads
    // (after the header).
    let prefix_fields: [(&str, &str, u32); 11] = [
        ("sched_switch", "prev_pid", 4),
        ("sched_switch", "next_pid", 4),
        ("sched_switch", "next_prio", 4),
        ("sched_waking", "pid", 4),
        ("sched_waking", "target_cpu", 4),
        ("sk_data_ready", "skaddr", 8),
        ("sk_data_ready", "protocol", 2),
        ("sock_recv_length", "sk", 8),
        ("sock_recv_length", "protocol", 2),
        ("sock_recv_length", "ret", 4),
        ("sock_recv_length", "flags", 4),
    ];
    let prev_state_size = formats
        .get("sched_switch")
        .and_then(|f| f.size("prev_state"))
        .unwrap_or(8);
    for (tp, name, size) in
        prefix_fields
            .into_iter()
            .chain([("sched_switch", "prev_state", prev_state_size)])
    {
        let Some(offset) = formats.get(tp).and_then(|f| f.offset(name)) else {
            continue; // absent optional tracepoint, or reported as missing below
        };
        let limit = load_len(tp);
        let align = size.min(8);
        let fits = offset as usize >= RECORD_HEADER_LEN && offset as usize + size as usize <= limit;
        if !fits || offset % align != 0 || ![1, 2, 4, 8, 48].contains(&size) {
            return Err(CaptureError::FieldLayout {
                tracepoint: tp.to_string(),
                field: name.to_string(),
                offset,
                size,
                limit,
            });
        }
    }
    // The hot programs load their record's start directly, which the kernel allows only
    // inside the record.
    for tp in [
        "sched_switch",
        "sched_waking",
        "sk_data_ready",
        "sock_recv_length",
    ] {
        let Some(len) = formats.get(tp).map(super::tracefs::Format::record_len) else {
            continue;
        };
        let needed = load_len(tp);
        if (len as usize) < needed {
            let category = PROBES
                .iter()
                .find(|p| p.name == tp)
                .map_or("", |p| p.category);
            return Err(CaptureError::RecordTooShort {
                tracepoint: format!("{category}:{tp}"),
                len,
                needed,
            });
        }
    }
    let config = ProbeConfig {
        sched_switch_prev_state_size: prev_state_size,
        sched_switch_prev_pid: field("sched_switch", "prev_pid")?,
        sched_switch_prev_state: field("sched_switch", "prev_state")?,
        sched_switch_next_pid: field("sched_switch", "next_pid")?,
        sched_switch_next_prio: field("sched_switch", "next_prio")?,
        sched_waking_pid: field("sched_waking", "pid")?,
        sched_waking_target_cpu: field("sched_waking", "target_cpu")?,
        fork_child_pid: field("sched_process_fork", "child_pid")?,
        exit_group_dead: group_dead,
        rename_pid: field("task_rename", "pid")?,
        rename_newcomm: field("task_rename", "newcomm")?,
        sk_data_ready_skaddr: field("sk_data_ready", "skaddr")?,
        sk_data_ready_protocol: field("sk_data_ready", "protocol")?,
        recv_length_sk: field("sock_recv_length", "sk")?,
        recv_length_protocol: field("sock_recv_length", "protocol")?,
        recv_length_ret: field("sock_recv_length", "ret")?,
        recv_length_flags: field("sock_recv_length", "flags")?,
        dispatch_only: 0,
        user_stacks: 0,
        split_calls: 0,
        stack_walker: 0,
        batch: 0,
    };
    Ok((config, missing))
}

/// Bytes of its record a hot program loads (`gil_trace_common::*_LOAD_LEN`).
fn load_len(tracepoint: &str) -> usize {
    match tracepoint {
        "sched_switch" => SCHED_SWITCH_LOAD_LEN,
        "sched_waking" => SCHED_WAKING_LOAD_LEN,
        "sk_data_ready" => SK_DATA_READY_LOAD_LEN,
        "sock_recv_length" => SOCK_RECV_LENGTH_LOAD_LEN,
        _ => RECORD_PREFIX_LEN,
    }
}

/// The kernel's highest pid + 1 (the fast filter's length); the largest possible value when
/// it cannot be read.
fn pid_max() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(PID_MAX_LIMIT)
        .clamp(1, PID_MAX_LIMIT)
}

/// PID_MAX_LIMIT on 64-bit kernels.
const PID_MAX_LIMIT: u32 = 4 * 1024 * 1024;

/// The embedded eBPF object, if this binary has one.
pub fn ebpf_object() -> Option<&'static [u8]> {
    #[cfg(gil_trace_embedded_ebpf)]
    {
        Some(aya::include_bytes_aligned!(concat!(
            env!("OUT_DIR"),
            "/gil-trace-ebpf.o"
        )))
    }
    #[cfg(not(gil_trace_embedded_ebpf))]
    {
        None
    }
}

/// One line for the user; the full verifier log only with GIL_TRACE_VERIFIER_LOG=1.
fn attach_error(tracepoint: &str, source: &aya::programs::ProgramError) -> CaptureError {
    let full = source.to_string();
    if std::env::var_os("GIL_TRACE_VERIFIER_LOG").is_some() {
        eprintln!("{full}");
    }
    let mut detail = full.lines().next().unwrap_or_default().to_string();
    if let Some(cut) = detail.find(". Verifier output") {
        detail.truncate(cut);
        detail.push_str(" (the verifier rejected it; GIL_TRACE_VERIFIER_LOG=1 prints its log)");
    }
    CaptureError::Attach {
        tracepoint: tracepoint.to_string(),
        detail,
    }
}

/// Loaded and attached programs with the maps userspace uses.
pub struct Probes {
    /// One per attached tracepoint; detached in parallel on drop (see `Drop`).
    links: Vec<Box<dyn std::any::Any + Send>>,
    /// Owns the programs and maps.
    ebpf: Ebpf,
    /// Held while the kernel times every program run (`--cost`); closing it stops that.
    run_time_stats: Option<std::os::fd::OwnedFd>,
    /// Taken by the recorder (it registers the fd with its event loop).
    pub ring: Option<RingBuf<MapData>>,
    traced: HashMap<MapData, u32, u32>,
    /// The same set as flags indexed by tid (the programs' fast filter).
    traced_flags: Array<MapData, u32>,
    drops: PerCpuArray<MapData, u64>,
    /// Each CPU's syscall in flight (see [`Probes::entries_in_flight`]).
    calls_in_flight: PerCpuArray<MapData, CallInFlight>,
    staged: PerCpuArray<MapData, StagedEvents>,
    /// The user stacks events refer to (`stack_ref`).
    stacks: UserStackTable,
    pub attached: Vec<String>,
    pub missing: Vec<String>,
}

/// Where the programs keep the user stacks, by who walked them ([`StackWalker`]).
enum UserStackTable {
    Kernel(StackTraceMap<MapData>),
    Walked(Array<MapData, WalkedStack>),
}

impl UserStackTable {
    fn get(&self, id: u32) -> Option<Vec<u64>> {
        match self {
            UserStackTable::Kernel(map) => {
                let stack = map.get(&id, 0).ok()?;
                Some(stack.frames().iter().map(|f| f.ip).collect())
            }
            UserStackTable::Walked(table) => {
                let slot = table.get(&id, 0).ok()?;
                let ips = slot.ips.get(..slot.len as usize)?;
                // A slot is written once, its hash last; one that does not hash to its own
                // frames was being filled (or torn by a racing claim): not named.
                (slot.hash == stack_hash::of(ips)).then(|| ips.to_vec())
            }
        }
    }
}

/// Who walks the user stacks: the programs themselves where the kernel has BTF (they need the
/// task's saved registers as a typed pointer) and `bpf_loop` (5.17), else the kernel. Not on
/// aarch64: return addresses there may carry pointer-authentication bits, which the kernel's
/// walk strips and the programs' does not. `GIL_TRACE_KERNEL_STACKS=1` asks for the kernel's
/// walker (the A/B of tests and benchmarks).
fn stack_walker(btf: bool) -> StackWalker {
    let has_bpf_loop = aya::util::KernelVersion::current()
        .is_ok_and(|v| v >= aya::util::KernelVersion::new(5, 17, 0));
    if cfg!(target_arch = "x86_64")
        && btf
        && has_bpf_loop
        && std::env::var_os("GIL_TRACE_KERNEL_STACKS").is_none()
    {
        StackWalker::FramePointers
    } else {
        StackWalker::Kernel
    }
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> CaptureError {
    move |source| CaptureError::Map { map, source }
}

impl Drop for Probes {
    fn drop(&mut self) {
        self.detach();
    }
}

/// How [`Probes::load`] sets the programs up.
#[derive(Clone, Copy, Debug)]
pub struct ProbeOptions {
    /// Ring-buffer size in bytes (a power of two, at least one page).
    pub buffer_size: u32,
    /// Have the kernel time every run of the programs (BPF_ENABLE_STATS: about two clock
    /// reads per run, so it is opt-in; recorded in the trailer's `capture_cost`).
    pub measure_cost: bool,
    /// Attach every program but have each return at once (records nothing): what the
    /// tracepoints alone cost the traced program, for `cargo xtask bench`.
    pub dispatch_only: bool,
    /// Which events carry the user stack (`record --stacks`).
    pub user_stacks: UserStacks,
    /// Write each syscall's entry and exit as two ring records, as they happen, instead of
    /// one at the exit (`ProbeConfig::split_calls`): the A/B of tests and benchmarks.
    pub split_calls: bool,
}

impl Probes {
    /// Loads the programs with this kernel's offsets, sizes the ring buffer, fills the syscall
    /// classifier and attaches every available tracepoint.
    pub fn load(options: ProbeOptions) -> Result<Probes, CaptureError> {
        let ProbeOptions {
            buffer_size,
            measure_cost,
            dispatch_only,
            user_stacks,
            split_calls,
        } = options;
        let object = ebpf_object().ok_or(CaptureError::NoEbpfObject)?;
        let root = tracefs::root()?;
        let (mut config, missing) = probe_config(&root)?;
        config.dispatch_only = u32::from(dispatch_only);
        config.user_stacks = user_stacks as u32;
        config.split_calls = u32::from(split_calls);
        // Events are written several at a time unless nothing bounds their wait (no timer
        // tracepoint) or GIL_TRACE_NO_BATCH=1 asks for one write per record (the A/B).
        config.batch = u32::from(
            !missing.iter().any(|m| m == "timer:hrtimer_expire_entry")
                && std::env::var_os("GIL_TRACE_NO_BATCH").is_none(),
        );
        // Without kernel BTF (or if the kernel refuses the typed program) the plain raw
        // tracepoint does the same job, a little slower. GIL_TRACE_NO_BTF=1 asks for it (to
        // rule the typed programs out when diagnosing, and for the tests of the fallback).
        let btf = match std::env::var_os("GIL_TRACE_NO_BTF") {
            Some(_) => None,
            None => aya::Btf::from_sys_fs().ok(),
        };
        let walker = stack_walker(btf.is_some());
        config.stack_walker = walker as u32;
        // The maps only the other walker uses are not needed: one entry each.
        let (unused_maps, used_table): (&[&str], _) = match walker {
            StackWalker::Kernel => (&["WALKED_STACKS", "WALKED_STACK_CLAIMS"], "STACKS"),
            StackWalker::FramePointers => (&["STACKS"], "WALKED_STACKS"),
        };
        // BPF memory is memcg-accounted on current kernels; raising the limit is best effort.
        let _ = nix::sys::resource::setrlimit(
            nix::sys::resource::Resource::RLIMIT_MEMLOCK,
            nix::sys::resource::RLIM_INFINITY,
            nix::sys::resource::RLIM_INFINITY,
        );
        let mut loader = EbpfLoader::new();
        loader
            .override_global("PROBE_CONFIG", &config, true)
            .map_max_entries("EVENTS", buffer_size)
            .map_max_entries("TRACED_FLAGS", pid_max());
        for &map in unused_maps {
            loader.map_max_entries(map, 1);
        }
        let mut ebpf = loader.load(object)?;

        let mut classes: Array<_, u8> =
            Array::try_from(ebpf.map_mut("SYSCALL_CLASS").expect("SYSCALL_CLASS map"))
                .map_err(map_err("SYSCALL_CLASS"))?;
        for (nr, class) in syscall_table() {
            classes
                .set(nr, class as u8, 0)
                .map_err(map_err("SYSCALL_CLASS"))?;
        }

        let mut attached = Vec::new();
        let mut links: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
        for probe in PROBES {
            let name = format!("{}:{}", probe.category, probe.name);
            if missing.contains(&name) {
                continue;
            }
            let attach_err = |source: aya::programs::ProgramError| attach_error(&name, &source);
            let program: &mut TracePoint = ebpf
                .program_mut(probe.program)
                .unwrap_or_else(|| panic!("eBPF object lacks program {}", probe.program))
                .try_into()
                .map_err(attach_err)?;
            program.load().map_err(attach_err)?;
            let link_id = program
                .attach(probe.category, probe.name)
                .map_err(attach_err)?;
            links.push(Box::new(program.take_link(link_id).map_err(attach_err)?));
            attached.push(name);
        }
        for (tp, btf_program, raw_program) in SYSCALL_PROGRAMS {
            if let Some(btf) = &btf {
                let mut typed = || -> Result<_, aya::programs::ProgramError> {
                    let program: &mut BtfTracePoint = ebpf
                        .program_mut(btf_program)
                        .unwrap_or_else(|| panic!("eBPF object lacks program {btf_program}"))
                        .try_into()?;
                    program.load(tp, btf)?;
                    let link_id = program.attach()?;
                    program.take_link(link_id)
                };
                match typed() {
                    Ok(link) => {
                        links.push(Box::new(link));
                        attached.push(format!("raw_syscalls:{tp} (BTF raw tracepoint)"));
                        continue;
                    }
                    // Not an error: the plain program below does the same job.
                    Err(e) => log::info!(
                        "the BTF-typed {tp} program was refused ({e}); using the plain raw tracepoint"
                    ),
                }
            }
            let name = format!("raw_syscalls:{tp} (raw tracepoint)");
            let attach_err = |source: aya::programs::ProgramError| attach_error(&name, &source);
            let program: &mut RawTracePoint = ebpf
                .program_mut(raw_program)
                .unwrap_or_else(|| panic!("eBPF object lacks program {raw_program}"))
                .try_into()
                .map_err(attach_err)?;
            program.load().map_err(attach_err)?;
            let link_id = program.attach(tp).map_err(attach_err)?;
            links.push(Box::new(program.take_link(link_id).map_err(attach_err)?));
            attached.push(name);
        }

        log::info!(
            "attached {} programs ({}); ring buffer {buffer_size} bytes",
            attached.len(),
            attached.join(", ")
        );
        if !missing.is_empty() {
            log::info!("tracepoints this kernel lacks: {}", missing.join(", "));
        }
        let ring = RingBuf::try_from(ebpf.take_map("EVENTS").expect("EVENTS map"))
            .map_err(map_err("EVENTS"))?;
        let traced = HashMap::try_from(ebpf.take_map("TRACED_TIDS").expect("TRACED_TIDS map"))
            .map_err(map_err("TRACED_TIDS"))?;
        let traced_flags =
            Array::try_from(ebpf.take_map("TRACED_FLAGS").expect("TRACED_FLAGS map"))
                .map_err(map_err("TRACED_FLAGS"))?;
        let drops = PerCpuArray::try_from(ebpf.take_map("DROPS").expect("DROPS map"))
            .map_err(map_err("DROPS"))?;
        let staged = PerCpuArray::try_from(ebpf.take_map("STAGED").expect("STAGED map"))
            .map_err(map_err("STAGED"))?;
        let calls_in_flight =
            PerCpuArray::try_from(ebpf.take_map("CALL_IN_FLIGHT").expect("CALL_IN_FLIGHT map"))
                .map_err(map_err("CALL_IN_FLIGHT"))?;
        let table = ebpf.take_map(used_table).expect("user stacks map");
        let stacks = match walker {
            StackWalker::Kernel => {
                UserStackTable::Kernel(StackTraceMap::try_from(table).map_err(map_err("STACKS"))?)
            }
            StackWalker::FramePointers => {
                UserStackTable::Walked(Array::try_from(table).map_err(map_err("WALKED_STACKS"))?)
            }
        };
        let run_time_stats = if measure_cost {
            Some(
                aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| CaptureError::Io {
                    what: "enabling BPF run-time statistics".into(),
                    source: e.io_error,
                })?,
            )
        } else {
            None
        };
        Ok(Probes {
            links,
            ebpf,
            run_time_stats,
            ring: Some(ring),
            traced,
            traced_flags,
            drops,
            calls_in_flight,
            staged,
            stacks,
            attached,
            missing,
        })
    }

    /// Adds a thread to the in-kernel filter.
    pub fn trace_thread(&mut self, tid: u32, tgid: u32) -> Result<(), CaptureError> {
        self.traced
            .insert(tid, tgid, 0)
            .map_err(map_err("TRACED_TIDS"))?;
        self.traced_flags
            .set(tid, 1, 0)
            .map_err(map_err("TRACED_FLAGS"))
    }

    fn untrace(&mut self, tid: u32) {
        let _ = self.traced_flags.set(tid, 0, 0);
        let _ = self.traced.remove(&tid);
    }

    /// Is any traced thread still alive? Drops entries whose thread is gone without an exit
    /// event (e.g. it died between a /proc listing and its insertion).
    pub fn anyone_traced(&mut self) -> bool {
        let tids: Vec<u32> = self.traced.keys().filter_map(Result::ok).collect();
        let mut alive = false;
        for tid in tids {
            if std::path::Path::new(&format!("/proc/{tid}")).exists() {
                alive = true;
            } else {
                self.untrace(tid);
            }
        }
        alive
    }

    /// Empties the filter: no new events from here on (used before the final drain).
    pub fn stop_tracing(&mut self) {
        let tids: Vec<u32> = self.traced.keys().filter_map(Result::ok).collect();
        for tid in tids {
            self.untrace(tid);
        }
    }

    /// Detaches every program: none runs once this returns. Detaching a tracepoint program
    /// waits for an RCU grace period (tens of ms on a VM); started together, the waits overlap
    /// where the kernel allows it (`record -- true` exits in 0.38 s instead of 0.66 s with
    /// aya's one-by-one drop).
    pub fn detach(&mut self) {
        let links = std::mem::take(&mut self.links);
        std::thread::scope(|scope| {
            for link in links {
                scope.spawn(move || drop(link));
            }
        });
    }

    /// The events still gathered in the CPUs' staging slots (`StagedEvents`): read once the
    /// programs are detached ([`Self::detach`]), when none writes them out any more.
    pub fn staged_events(&self) -> Vec<RawEvent> {
        let Ok(slots) = self.staged.get(&0, 0) else {
            return Vec::new();
        };
        slots
            .iter()
            .flat_map(|slot| slot.events.iter().take(slot.count as usize).copied())
            .collect()
    }

    /// The entries of syscalls still in flight, unwritten (a call that neither returned nor
    /// left its CPU): read once tracing has stopped ([`Self::stop_tracing`]), when no program
    /// changes the slots any more, so a trace ending mid-call still shows the call.
    pub fn entries_in_flight(&self) -> Vec<RawEvent> {
        let Ok(slots) = self.calls_in_flight.get(&0, 0) else {
            return Vec::new();
        };
        slots
            .iter()
            .filter(|slot| slot.pair.enter.tid != 0 && slot.entry_written == 0)
            .map(|slot| slot.pair.enter)
            .collect()
    }

    /// Per program, its run time and runs as timed by the kernel, when loaded with
    /// `measure_cost`.
    pub fn bpf_run_time(&self) -> Option<Vec<ProgramCost>> {
        self.run_time_stats.as_ref()?;
        let mut out = Vec::new();
        for (name, program) in self.ebpf.programs() {
            if let Ok(info) = program.info() {
                out.push(ProgramCost {
                    program: name.to_string(),
                    run_ns: info.run_time().as_nanos() as u64,
                    runs: info.run_count(),
                });
            }
        }
        Some(out)
    }

    /// The instruction pointers of user stack `id` (innermost first), if the map has it.
    pub fn user_stack(&self, id: u32) -> Option<Vec<u64>> {
        self.stacks.get(id)
    }

    /// Events lost in the kernel so far, per CPU and kind.
    pub fn lost(&self) -> LostCounts {
        let mut lost = LostCounts::default();
        for slot in 0..DROP_SLOTS {
            let Ok(per_cpu) = self.drops.get(&slot, 0) else {
                continue;
            };
            if lost.by_cpu.len() < per_cpu.len() {
                lost.by_cpu.resize(per_cpu.len(), BTreeMap::default());
            }
            for (cpu, &n) in per_cpu.iter().enumerate() {
                if n == 0 {
                    continue;
                }
                if slot == DROP_SLOT_FILTER_FULL {
                    lost.threads_not_followed += n;
                    continue;
                }
                if slot == DROP_SLOT_STACKS {
                    lost.stacks_not_recorded += n;
                    continue;
                }
                let name = EventKind::try_from(slot)
                    .map_or_else(|_| format!("kind_{slot}"), |k| k.name().to_string());
                *lost.by_kind.entry(name.clone()).or_default() += n;
                *lost.by_cpu[cpu].entry(name).or_default() += n;
                lost.total += n;
            }
        }
        lost
    }
}

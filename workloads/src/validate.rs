//! Checks gil-trace's analysis against the lab's ground truth.
//!
//! Inputs: the truth log of a run and `gil-trace report --json --detail` of its trace.
//! - Every contended acquisition in the truth must appear as a handoff event to the same
//!   thread close in time (≤ [`MATCH_TOLERANCE_NS`]).
//! - Every datagram the echo thread received must appear as an I/O operation, in order; its
//!   recv, lock re-acquisition and reply times are compared with the truth.
use serde::Serialize;
use serde_json::Value;

use crate::{stats::percentile, truth::TruthEvent};

/// A traced acquisition further than this from the truth does not count as the same one.
pub const MATCH_TOLERANCE_NS: u64 = 500_000;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Validation {
    pub contended_acquisitions: u64,
    pub matched_acquisitions: u64,
    pub acquisition_match_rate: f64,
    pub datagrams: u64,
    pub datagrams_matched: u64,
    /// |traced − truth| in ns: p50 and p99.
    pub acquire_err_p50_ns: u64,
    pub acquire_err_p99_ns: u64,
    pub recv_err_p50_ns: u64,
    pub recv_err_p99_ns: u64,
    pub io_acquire_err_p50_ns: u64,
    pub io_acquire_err_p99_ns: u64,
    pub reply_err_p50_ns: u64,
    pub reply_err_p99_ns: u64,
}

fn u(v: &Value) -> Option<u64> {
    v.as_u64()
}

fn errs(mut v: Vec<u64>) -> (u64, u64) {
    v.sort_unstable();
    (percentile(&v, 50.0), percentile(&v, 99.0))
}

pub fn compare(report: &Value, truth: &[TruthEvent]) -> Result<Validation, String> {
    let handoffs = report["handoff_events"]
        .as_array()
        .ok_or("report lacks handoff_events (use --json --detail)")?;
    let io_ops = report["io_ops"]
        .as_array()
        .ok_or("report lacks io_ops (use --json --detail)")?;
    let mut v = Validation::default();

    // Contended acquisitions, per thread, matched in time order to the nearest traced one.
    let mut traced: std::collections::HashMap<u32, Vec<(u64, bool)>> =
        std::collections::HashMap::new();
    for h in handoffs {
        if let (Some(to), Some(at)) = (u(&h["to_tid"]), u(&h["acquire_ns"])) {
            traced.entry(to as u32).or_default().push((at, false));
        }
    }
    for list in traced.values_mut() {
        list.sort_unstable();
    }
    let mut acquire_errs = Vec::new();
    for ev in truth {
        let TruthEvent::Acquire {
            ts_ns,
            tid,
            contended: true,
            ..
        } = *ev
        else {
            continue;
        };
        v.contended_acquisitions += 1;
        let Some(list) = traced.get_mut(&tid) else {
            continue;
        };
        let i = list.partition_point(|&(t, _)| t < ts_ns);
        let best = [i.checked_sub(1), Some(i)]
            .into_iter()
            .flatten()
            .filter(|&j| j < list.len() && !list[j].1)
            .min_by_key(|&j| list[j].0.abs_diff(ts_ns));
        if let Some(j) = best {
            let err = list[j].0.abs_diff(ts_ns);
            if err <= MATCH_TOLERANCE_NS {
                list[j].1 = true;
                v.matched_acquisitions += 1;
                acquire_errs.push(err);
            }
        }
    }
    v.acquisition_match_rate = if v.contended_acquisitions == 0 {
        1.0
    } else {
        v.matched_acquisitions as f64 / v.contended_acquisitions as f64
    };
    (v.acquire_err_p50_ns, v.acquire_err_p99_ns) = errs(acquire_errs);

    // Datagrams of the echo thread, in order.
    let echo = truth
        .iter()
        .find_map(|e| match e {
            TruthEvent::Thread { tid, role, .. } if role == "echo" => Some(*tid),
            _ => None,
        })
        .ok_or("truth has no echo thread")?;
    let ops: Vec<&Value> = io_ops
        .iter()
        .filter(|o| u(&o["tid"]) == Some(echo as u64) && u(&o["bytes"]) != Some(0))
        .collect();
    let mut truth_recvs = Vec::new();
    for (i, ev) in truth.iter().enumerate() {
        if let TruthEvent::Recv { ts_ns, tid, bytes } = *ev {
            if tid == echo && bytes > 0 {
                let acquire = truth[i..].iter().find_map(|e| match *e {
                    TruthEvent::Acquire { ts_ns, tid, .. } if tid == echo => Some(ts_ns),
                    _ => None,
                });
                let send = truth[i..].iter().find_map(|e| match *e {
                    TruthEvent::Send { ts_ns, tid, .. } if tid == echo => Some(ts_ns),
                    _ => None,
                });
                truth_recvs.push((ts_ns, acquire, send));
            }
        }
    }
    v.datagrams = truth_recvs.len() as u64;
    let (mut recv_errs, mut acq_errs, mut reply_errs) = (Vec::new(), Vec::new(), Vec::new());
    for ((recv, acquire, send), op) in truth_recvs.iter().zip(&ops) {
        let Some(exit) = u(&op["recv_exit_ns"]) else {
            continue;
        };
        let err = exit.abs_diff(*recv);
        if err > MATCH_TOLERANCE_NS {
            continue;
        }
        v.datagrams_matched += 1;
        recv_errs.push(err);
        if let (Some(a), Some(t)) = (u(&op["lock_acquired_ns"]), acquire) {
            acq_errs.push(a.abs_diff(*t));
        }
        if let (Some(done), Some(t)) = (u(&op["reply_done_ns"]), send) {
            // The truth is logged once user code runs again: anywhere from the syscall's
            // exit to the thread's resumption (it may be preempted on the way out).
            let resumed = u(&op["reply_resumed_ns"]).unwrap_or(done).max(done);
            let err = if *t < done {
                done - t
            } else {
                t.saturating_sub(resumed)
            };
            reply_errs.push(err);
        }
    }
    (v.recv_err_p50_ns, v.recv_err_p99_ns) = errs(recv_errs);
    (v.io_acquire_err_p50_ns, v.io_acquire_err_p99_ns) = errs(acq_errs);
    (v.reply_err_p50_ns, v.reply_err_p99_ns) = errs(reply_errs);
    Ok(v)
}

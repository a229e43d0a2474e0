"""Decodes a Perfetto trace with Perfetto's own published schema (the `perfetto` package on
PyPI ships perfetto_trace_pb2) and prints what it holds as JSON, for the tests to compare
with gil-trace's report.

    python3 pftrace_summary.py FILE.pftrace
"""
import collections
import json
import sys

from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb


def main():
    trace = pb.Trace()
    with open(sys.argv[1], "rb") as f:
        trace.ParseFromString(f.read())
    kinds = collections.Counter()
    ftrace = collections.Counter()
    per_cpu_sorted = True
    first_sched_ns, last_sched_ns = None, None
    tracks = {}
    slices = collections.defaultdict(list)  # track name -> [(begin ts, name)]
    open_slices = collections.defaultdict(int)
    instants = collections.Counter()
    flow_starts, flow_ends = set(), set()
    threads = {}
    processes = {}
    # The stack samples: interned names, frames and callstacks, and each sample's callstack.
    function_names, frames, callstacks = {}, {}, {}
    samples = []
    for packet in trace.packet:
        kind = packet.WhichOneof("data")
        kinds[kind] += 1
        if packet.HasField("interned_data"):
            d = packet.interned_data
            function_names.update({n.iid: n.str.decode() for n in d.function_names})
            frames.update({f.iid: f.function_name_id for f in d.frames})
            callstacks.update({c.iid: list(c.frame_ids) for c in d.callstacks})
        if kind == "perf_sample":
            needs = packet.sequence_flags & pb.TracePacket.SEQ_NEEDS_INCREMENTAL_STATE
            samples.append((packet.perf_sample.callstack_iid, bool(needs)))
        if kind == "ftrace_events":
            last = 0
            for event in packet.ftrace_events.event:
                which = event.WhichOneof("event")
                ftrace[which] += 1
                if event.timestamp < last:
                    per_cpu_sorted = False
                last = event.timestamp
                first_sched_ns = min(first_sched_ns or event.timestamp, event.timestamp)
                last_sched_ns = max(last_sched_ns or 0, event.timestamp)
        elif kind == "track_descriptor":
            d = packet.track_descriptor
            tracks[d.uuid] = d.name if d.HasField("name") else "thread %d" % d.thread.tid
        elif kind == "process_tree":
            for p in packet.process_tree.processes:
                processes[p.pid] = list(p.cmdline)
            for t in packet.process_tree.threads:
                threads[t.tid] = {"tgid": t.tgid, "name": t.name}
        elif kind == "track_event":
            e = packet.track_event
            track = tracks.get(e.track_uuid, "undescribed")
            if e.type == pb.TrackEvent.TYPE_SLICE_BEGIN:
                slices[track].append([packet.timestamp, e.name])
                open_slices[track] += 1
            elif e.type == pb.TrackEvent.TYPE_SLICE_END:
                open_slices[track] -= 1
            elif e.type == pb.TrackEvent.TYPE_INSTANT:
                instants[e.name.split(" ")[0]] += 1
            flow_starts.update(e.flow_ids)
            flow_ends.update(e.terminating_flow_ids)
    # A sample is resolved when its callstack and every frame's name were interned before it
    # (checked at the end here; the writer interns before the first use).
    resolved = [
        [function_names[frames[f]] for f in callstacks[iid]]
        for iid, needs in samples
        if needs and iid in callstacks and all(frames.get(f) in function_names for f in callstacks[iid])
    ]
    print(json.dumps({
        "stack_samples": len(samples),
        "resolved_stack_samples": len(resolved),
        "innermost_frames": sorted({stack[-1] for stack in resolved if stack}),
        "packets": dict(kinds),
        "ftrace": dict(ftrace),
        "per_cpu_sorted": per_cpu_sorted,
        "first_sched_ns": first_sched_ns,
        "last_sched_ns": last_sched_ns,
        "tracks": sorted(set(tracks.values())),
        "slices": slices,
        "unclosed": {k: v for k, v in open_slices.items() if v},
        "instants": dict(instants),
        "flows": [len(flow_starts), len(flow_ends), len(flow_starts & flow_ends)],
        "threads": {str(k): v for k, v in threads.items()},
        "processes": {str(k): v for k, v in processes.items()},
    }))


if __name__ == "__main__":
    main()

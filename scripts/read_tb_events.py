#!/usr/bin/env python3
"""Print the scalars of a run folder's TensorBoard events files, read by TensorBoard's own code.

    python scripts/read_tb_events.py RUN_DIR            # every events file of the folder
    python scripts/read_tb_events.py --file EVENTS_FILE # one file, record by record

Output: one JSON object {tag: [[step, value], ...]} on stdout, plus "file_version" (what the
first event says: the string in file mode, EventAccumulator's parse of it, 2.0, in folder mode). Folder mode uses EventAccumulator (what `tensorboard --logdir` builds on);
file mode uses event_file_loader, the lowest-level reader, which stops quietly at a torn last
record, as TensorBoard does for a file a killed writer left. Used by tests/tests/tensorboard.rs.
"""
import json
import sys

from tensorboard.backend.event_processing import event_accumulator, event_file_loader


def from_folder(run_dir):
    # size_guidance 0: keep every scalar (the default samples 10,000 of them).
    acc = event_accumulator.EventAccumulator(run_dir, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    out = {tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    out["file_version"] = acc.file_version
    return out


def from_file(path):
    out = {"file_version": None}
    for event in event_file_loader.LegacyEventFileLoader(path).Load():
        if event.HasField("file_version"):
            out["file_version"] = event.file_version
        for v in event.summary.value:
            out.setdefault(v.tag, []).append([event.step, v.simple_value])
    return out


def main(argv):
    if len(argv) == 2:
        result = from_folder(argv[1])
    elif len(argv) == 3 and argv[1] == "--file":
        result = from_file(argv[2])
    else:
        sys.exit(__doc__)
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main(sys.argv)

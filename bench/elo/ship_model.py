#!/usr/bin/python3
"""Copies a study run's optimizer into models/ for users: NAME.lopt with the
machine-local data paths (data_dir, data_path) removed from its embedded job,
so that `lopt eval --optimizer models/NAME.lopt` meta-tests on the default
dataset of the machine it runs on; NAME.job.textproto (that job) and
NAME.eval/ (the run's meta-test report and test curves).

  bench/elo/ship_model.py RUN_DIR NAME [EVAL_SUBDIR]     (EVAL_SUBDIR: eval_warmup)

Needs protoc and Debian's python3-protobuf (/usr/bin/python3).
"""
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def strip_paths(msg):
    """Clears every data_dir / data_path field in msg and its sub-messages."""
    for field, value in msg.ListFields():
        if field.name in ("data_dir", "data_path"):
            msg.ClearField(field.name)
        elif field.type == field.TYPE_MESSAGE:
            for sub in (value if field.label == field.LABEL_REPEATED else [value]):
                strip_paths(sub)


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    run, name = sys.argv[1], sys.argv[2]
    ev = sys.argv[3] if len(sys.argv) == 4 else "eval_warmup"
    with tempfile.TemporaryDirectory() as gen:
        subprocess.run(["protoc", f"-I{ROOT}/proto", f"--python_out={gen}",
                        "lopt/v1/job.proto", "lopt/v1/optimizer_file.proto"], check=True)
        sys.path.insert(0, gen)
        from lopt.v1 import optimizer_file_pb2  # noqa: E402
        from google.protobuf import text_format  # noqa: E402
        f = optimizer_file_pb2.OptimizerFile()
        with open(os.path.join(run, "optimizer.lopt"), "rb") as fh:
            f.ParseFromString(fh.read())
        strip_paths(f.job)
        models = os.path.join(ROOT, "models")
        with open(os.path.join(models, name + ".lopt"), "wb") as fh:
            fh.write(f.SerializeToString())
        with open(os.path.join(models, name + ".job.textproto"), "w") as fh:
            fh.write(f"# The job {name}.lopt was meta-trained with (bench/elo/, run {os.path.basename(run)}),\n"
                     f"# outer step {f.outer_step}; machine-local data paths removed.\n")
            fh.write(text_format.MessageToString(f.job))
    dst = os.path.join(models, name + ".eval")
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)
    for fn in ("report.json", "table.txt", "test_curves.csv", "curves.png"):
        src = os.path.join(run, ev, fn)
        if os.path.exists(src):
            shutil.copy(src, dst)
    print(f"models/{name}.lopt, {name}.job.textproto, {name}.eval/")


if __name__ == "__main__":
    main()

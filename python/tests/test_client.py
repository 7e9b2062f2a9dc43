"""lopt.client against real services on loopback: lopt-buffer, lopt-learner and a
lopt-worker as processes, a small ELO job submitted, watched, exported and cancelled."""
import os
import re
import secrets
import subprocess
import threading
import time

import grpc
import pytest
import torch

import lopt
from lopt.client import Client, state_name
from lopt.v1 import job_service_pb2
from conftest import binary

JOB = """name: "py_client"
seed: 11
task { fmnist_mlp { image_size: 8 hidden_sizes: 16 batch_size: 32 } }
pes { num_tasks: 2 truncation_length: 10 min_unroll_length: 20 max_unroll_length: 40 }
budget { outer_steps: %d checkpoint_every: 4 }
cluster { shards: 1 max_staleness: 0 }
"""


class Service:
    """A lopt service process; waits for its ready line and reads its gRPC port off it."""

    def __init__(self, argv, ready):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
        self.lines = []
        self.port = None
        found = threading.Event()

        def pump():
            for line in self.proc.stdout:
                self.lines.append(line)
                if ready in line and not found.is_set():
                    m = re.search(r"grpc_port=(\d+)", line)
                    self.port = int(m.group(1)) if m else None
                    found.set()
        threading.Thread(target=pump, daemon=True).start()
        if not found.wait(60):
            self.stop()
            raise RuntimeError(f"{argv[0]} did not print {ready!r}:\n" + "".join(self.lines))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def cluster(tmp_path):
    token = secrets.token_hex(16)
    (tmp_path / "token").write_text(token + "\n")
    common = ["--metrics-listen=127.0.0.1:0", f"--auth-token-file={tmp_path / 'token'}"]
    procs = []
    try:
        buf = Service([binary("buffer_server", "lopt-buffer"), "--listen=127.0.0.1:0",
                       f"--db-path={tmp_path / 'buffer'}"] + common, "msg=serving")
        procs.append(buf)
        learner = Service([binary("learner", "lopt-learner"), "--listen=127.0.0.1:0",
                           f"--state-dir={tmp_path / 'learner'}", "--threads=1",
                           f"--buffer=127.0.0.1:{buf.port}"] + common, "msg=serving")
        procs.append(learner)
        target = f"127.0.0.1:{learner.port}"
        worker = Service([binary("worker", "lopt-worker"), f"--learner={target}",
                          f"--buffer=127.0.0.1:{buf.port}", "--name=w1", "--threads=1"] + common,
                         "msg=connected")
        procs.append(worker)
        yield target, tmp_path
    finally:
        for p in reversed(procs):
            p.stop()


def test_submit_watch_export_list_cancel(cluster):
    target, tmp = cluster
    job = tmp / "job.textproto"
    job.write_text(JOB % 6)
    with Client(target, token_file=str(tmp / "token")) as c:
        job_id = c.submit(job)
        assert job_id
        statuses = list(c.watch(job_id, timeout=240))
        assert statuses[-1].state == job_service_pb2.SUCCEEDED, statuses[-1]
        assert state_name(statuses[-1].state) == "succeeded"
        assert statuses[-1].outer_step == 6 == statuses[-1].total_steps
        steps = [s.outer_step for s in statuses]
        assert steps == sorted(steps) and len(statuses) >= 2  # it saw progress, in order
        assert c.get(job_id).job.name == "py_client"  # Get carries the spec
        assert [s.job_id for s in c.list()] == [job_id]

        out = tmp / "trained.lopt"
        c.export(job_id, out)
        trained = lopt.load_optimizer_file(out)
        assert trained.file.outer_step == 6
        assert trained.file.job.name == "py_client"
        # The exported optimizer drives a PyTorch model.
        model = torch.nn.Linear(3, 2)
        before = model.weight.detach().clone()
        opt = lopt.LearnedOptimizer(model.parameters(), out)
        model(torch.randn(4, 3)).pow(2).sum().backward()
        opt.step()
        assert not torch.equal(before, model.weight)

        # A long job, cancelled while it runs.
        long_id = c.submit_text(JOB % 100000, source_name="long.textproto")
        for s in c.watch(long_id, timeout=120):
            if s.state == job_service_pb2.RUNNING:
                break
        assert c.cancel(long_id).job_id == long_id
        assert c.wait(long_id, timeout=60).state == job_service_pb2.CANCELLED

        # The learner's errors come back as grpc errors with its message.
        with pytest.raises(grpc.RpcError) as e:
            c.submit_text('name: "x"\npes { truncation_length: -3 }\n', source_name="bad.textproto")
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "truncation_length" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            c.get("no-such-job")
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_token_is_required(cluster):
    target, tmp = cluster
    with Client(target) as c, pytest.raises(grpc.RpcError) as e:
        c.list()
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with Client(target, token="wrong") as c, pytest.raises(grpc.RpcError) as e:
        c.list()
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(FileNotFoundError, match="token file"):
        Client(target, token_file=str(tmp / "missing"))
    with pytest.raises(ValueError, match="not PEM"):
        (tmp / "ca.pem").write_text("nope")
        Client(target, tls_ca_file=str(tmp / "ca.pem"))


def test_tls_with_the_learners_ca(tmp_path):
    d = tmp_path / "tls"
    d.mkdir()
    subprocess.run(
        "set -e; "
        "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=py-test-ca "
        "-keyout ca.key -out ca.pem; "
        "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=other-ca "
        "-keyout other.key -out other_ca.pem; "
        "openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr; "
        "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext.cnf; "
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
        "-extfile ext.cnf -out server.pem",
        shell=True, cwd=d, check=True, capture_output=True)
    learner = Service([binary("learner", "lopt-learner"), "--listen=127.0.0.1:0",
                       "--metrics-listen=127.0.0.1:0", f"--state-dir={tmp_path / 'learner'}",
                       "--threads=1", f"--tls-cert-file={d / 'server.pem'}",
                       f"--tls-key-file={d / 'server.key'}"], "msg=serving")
    try:
        # The address, not "localhost": the certificate names both, and a host
        # without /etc/hosts (a fresh chroot) cannot resolve the name.
        target = f"127.0.0.1:{learner.port}"
        with Client(target, tls_ca_file=str(d / "ca.pem")) as c:
            assert c.list() == []
        for client in (Client(target, timeout=3), Client(target, timeout=3,
                                                         tls_ca_file=str(d / "other_ca.pem"))):
            with client, pytest.raises(grpc.RpcError) as e:
                client.list()
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        learner.stop()

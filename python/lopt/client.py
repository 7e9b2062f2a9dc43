"""A client of lopt-learner's JobService (proto/lopt/v1/job_service.proto), as `loptctl`:

    from lopt.client import Client
    c = Client("localhost:50051")                       # token_file=..., tls_ca_file=...
    job_id = c.submit("deploy/jobs/fmnist8_cluster.textproto")
    for status in c.watch(job_id):                      # until the job ends
        print(status.outer_step, status.total_steps, status.meta_loss)
    c.export(job_id, "trained.lopt")                    # or controller.lhopt for LHOPT jobs

Options as loptctl's flags: `token` / `token_file` (--auth-token-file: a shared bearer
token, sent as "authorization: Bearer <token>"), `tls_ca_file` (--tls-ca-file: talk TLS and
verify the learner's certificate with these PEM roots; without it, plaintext), `timeout`
(--timeout-ms, in seconds: the deadline of each call; watch: of each status update).
Errors are grpc.RpcError with the learner's status code and message.
"""
import os
import zlib
from typing import Iterator, List, Optional, Union

import grpc

from lopt.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc

JobState = job_service_pb2.JobState
TERMINAL_STATES = (job_service_pb2.SUCCEEDED, job_service_pb2.FAILED, job_service_pb2.CANCELLED)


def state_name(state: int) -> str:
    """'running', 'succeeded', ... as loptctl prints them."""
    return job_service_pb2.JobState.Name(state).lower()


def _read_token(path: str) -> str:
    try:
        with open(path) as f:
            token = f.read().rstrip()
    except OSError as e:
        raise FileNotFoundError(f"cannot read token file {path}: {e.strerror}") from None
    if not token:
        raise ValueError(f"token file {path} is empty")
    return token


class Client:
    def __init__(self, learner: str = "localhost:50051", token: Optional[str] = None,
                 token_file: Optional[str] = None, tls_ca_file: Optional[str] = None,
                 timeout: float = 10.0):
        if token is not None and token_file is not None:
            raise ValueError("give token or token_file, not both")
        self.learner = learner
        self.timeout = float(timeout)
        self._token = _read_token(token_file) if token_file else token
        if tls_ca_file:
            try:
                with open(tls_ca_file, "rb") as f:
                    pem = f.read()
            except OSError as e:
                raise FileNotFoundError(f"tls_ca_file: cannot read {tls_ca_file}: "
                                        f"{e.strerror}") from None
            if b"-----BEGIN " not in pem:
                raise ValueError(f"tls_ca_file: {tls_ca_file} is not PEM")
            self._channel = grpc.secure_channel(learner, grpc.ssl_channel_credentials(pem))
        else:
            self._channel = grpc.insecure_channel(learner)
        self._stub = job_service_pb2_grpc.JobServiceStub(self._channel)

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _metadata(self):
        return (("authorization", "Bearer " + self._token),) if self._token else None

    def submit(self, job: Union[str, os.PathLike, job_pb2.JobSpec],
               source_name: Optional[str] = None) -> str:
        """Submits a job: a text-proto file path, or a JobSpec message. A file is sent as
        text, so the learner's errors name its line and column. Returns the job id."""
        req = job_service_pb2.SubmitJobRequest()
        if isinstance(job, job_pb2.JobSpec):
            req.job.CopyFrom(job)
        else:
            path = os.fspath(job)
            with open(path) as f:
                req.job_text = f.read()
            req.source_name = source_name or path
        return self._stub.Submit(req, timeout=self.timeout, metadata=self._metadata()).job_id

    def submit_text(self, text: str, source_name: str = "job") -> str:
        """Submits a job given as text-proto text."""
        req = job_service_pb2.SubmitJobRequest(job_text=text, source_name=source_name)
        return self._stub.Submit(req, timeout=self.timeout, metadata=self._metadata()).job_id

    def list(self) -> List[job_service_pb2.JobStatus]:
        return list(self._stub.List(job_service_pb2.ListJobsRequest(), timeout=self.timeout,
                                    metadata=self._metadata()).jobs)

    def get(self, job_id: str) -> job_service_pb2.JobStatus:
        """One job's status, with its spec (status.job)."""
        return self._stub.Get(job_service_pb2.GetJobRequest(job_id=job_id),
                              timeout=self.timeout, metadata=self._metadata())

    def cancel(self, job_id: str) -> job_service_pb2.JobStatus:
        return self._stub.Cancel(job_service_pb2.CancelJobRequest(job_id=job_id),
                                 timeout=self.timeout, metadata=self._metadata())

    def watch(self, job_id: str, timeout: Optional[float] = None
              ) -> Iterator[job_service_pb2.JobStatus]:
        """Yields the job's status at every change until it has ended (the last one
        yielded is terminal: succeeded, failed or cancelled). `timeout` bounds the whole
        watch (None: unbounded); a broken stream raises grpc.RpcError."""
        stream = self._stub.Watch(job_service_pb2.WatchJobRequest(job_id=job_id),
                                  timeout=timeout, metadata=self._metadata())
        try:
            for status in stream:
                yield status
                if status.state in TERMINAL_STATES:
                    return
        finally:
            stream.cancel()

    def wait(self, job_id: str, timeout: Optional[float] = None) -> job_service_pb2.JobStatus:
        """Watches until the job ends and returns its last status."""
        last = None
        for last in self.watch(job_id, timeout=timeout):
            pass
        return last

    def export(self, job_id: str, out: Union[str, os.PathLike]) -> str:
        """Writes the job's trained file (a .lopt, or an LHOPT job's controller) to `out`,
        as `loptctl export ID --out FILE`. Checks every chunk's offset and CRC32."""
        data = bytearray()
        stream = self._stub.ExportOptimizer(
            job_service_pb2.ExportOptimizerRequest(job_id=job_id),
            timeout=max(self.timeout, 60.0), metadata=self._metadata())
        for chunk in stream:
            if chunk.offset != len(data) or zlib.crc32(chunk.data) != chunk.crc32:
                raise IOError("export stream is corrupt (offset or checksum mismatch)")
            data += chunk.data
        out = os.fspath(out)
        tmp = out + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
        return out

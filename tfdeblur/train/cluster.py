"""Multi-worker runs that end: a bounded wait for the cluster, SIGTERM/SIGINT honoured,
peer loss turned into one line.

TensorFlow's own ``MultiWorkerMirroredStrategy()`` waits for every task of ``TF_CONFIG``
without a limit (its coordination service registers tasks with a one-hour default), and
during that wait and during training its preemption notifier takes over SIGTERM, so a
worker whose peer never started hangs and ignores ``kill``. Here:

* :func:`multi_worker_strategy` first meets the other tasks in Python
  (:func:`_rendezvous`): each task listens on its own ``TF_CONFIG`` port and connects to
  every other one until all answered, for at most ``timeout`` seconds, interruptible by
  SIGINT/SIGTERM like any Python loop. Only then does TensorFlow start its server on that
  port, with the coordination service's registration barrier bounded by the same
  ``timeout`` (for a task that answered and then died).
* :class:`SignalGuard` restores SIGTERM/SIGINT for the training that follows: the signal
  wakes a thread (``signal.set_wakeup_fd``, which works while the main thread is blocked
  in a collective), which runs the clean-up callbacks, prints one line and ends the
  process with ``128 + signal``. Checkpoints are then as after ``kill -9``, which
  ``--resume`` continues from.
* :func:`peer_lost` turns the error a collective raises when a peer dies into a
  :class:`ClusterError` with a hint to rerun with ``--resume``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

#: Default of ``--cluster-timeout``: seconds to wait for every task of the cluster.
DEFAULT_CLUSTER_TIMEOUT = 300.0


class ClusterError(RuntimeError):
    """The multi-worker cluster did not form, or lost a task; the message says what."""


def check_tf_config(text: str | None) -> dict[str, Any]:
    """The parsed ``TF_CONFIG`` of a multi-worker run, checked before TensorFlow reads it.

    It must be a JSON object with ``cluster`` (task type -> list of ``host:port``, with
    ``worker`` or ``chief`` tasks) and ``task`` (``type`` one of the cluster's task types,
    ``index`` an int within its list). TensorFlow itself would fail later with a bare
    JSON or key error, or wait for a task that does not exist.

    Raises:
        ValueError: naming ``TF_CONFIG`` and what is missing or malformed.
    """
    example = (
        '{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
        '"task": {"type": "worker", "index": 0}}'
    )
    if not text:
        raise ValueError(
            f"--strategy multi_worker needs the TF_CONFIG environment variable, e.g. {example}."
        )
    try:
        config = json.loads(text)
    except ValueError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON ({err}): {text[:200]!r}.") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not any(k in cluster for k in ("worker", "chief")):
        raise ValueError(
            f"TF_CONFIG needs a 'cluster' with 'worker' (or 'chief') tasks, e.g. {example}."
        )
    for kind, hosts in cluster.items():
        if (
            not isinstance(hosts, list)
            or not hosts
            or not all(isinstance(h, str) and ":" in h for h in hosts)
        ):
            raise ValueError(
                f"TF_CONFIG cluster[{kind!r}] must be a non-empty list of 'host:port', got {hosts!r}."
            )
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise ValueError(
            f"TF_CONFIG needs a 'task' whose 'type' is one of the cluster's "
            f"{sorted(cluster)}, got {task!r}."
        )
    index = task.get("index")
    if (
        not isinstance(index, int)
        or isinstance(index, bool)
        or not 0 <= index < len(cluster[task["type"]])
    ):
        raise ValueError(
            f"TF_CONFIG task index must be an int in [0, {len(cluster[task['type']])}) for "
            f"{task['type']!r}, got {index!r}."
        )
    return config


def _tf_config() -> dict:
    config = check_tf_config(os.environ.get("TF_CONFIG"))
    task = config["task"]
    return {"cluster": config["cluster"], "type": task["type"], "index": task["index"]}


def _address(spec: str) -> tuple[str, int]:
    host, _, port = spec.rpartition(":")
    try:
        return host.strip("[]") or "localhost", int(port)
    except ValueError:
        raise ValueError(f"TF_CONFIG: bad task address {spec!r} (want host:port).") from None


def _rendezvous(tasks: dict[str, str], me: str, timeout: float) -> None:
    """Wait until every task in ``tasks`` (name -> ``host:port``) answers on its port.

    Raises:
        ClusterError: some task did not answer within ``timeout`` seconds (named), or
            this task's own port is taken.
    """
    host, port = _address(tasks[me])
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("", port))
    except OSError as err:
        listener.close()
        raise ClusterError(f"Task {me} cannot listen on port {port} ({err}).") from None
    listener.listen(64)
    listener.settimeout(0.2)
    stop = threading.Event()

    def answer():
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = listener.accept()
                conn.close()

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    waiting = {name for name in tasks if name != me}
    print(
        f"Task {me}: waiting up to {timeout:g} s (--cluster-timeout) for "
        f"{', '.join(sorted(waiting))}.",
        file=sys.stderr,
        flush=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while waiting:
            for name in sorted(waiting):
                with contextlib.suppress(OSError):
                    socket.create_connection(_address(tasks[name]), timeout=1.0).close()
                    waiting.discard(name)
            if waiting and time.monotonic() > deadline:
                raise ClusterError(
                    f"--strategy multi_worker: {', '.join(sorted(waiting))} of TF_CONFIG's "
                    f"cluster did not start within --cluster-timeout {timeout:g} s; start "
                    "every worker (or raise --cluster-timeout)."
                )
            if waiting:
                time.sleep(0.2)
    finally:
        stop.set()
        thread.join()
        listener.close()


@contextlib.contextmanager
def _signals_raise():
    """SIGTERM raises KeyboardInterrupt inside the block (as SIGINT does), so a wait in
    Python can be stopped by ``kill`` whatever handler was installed before."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def multi_worker_strategy(timeout: float = DEFAULT_CLUSTER_TIMEOUT):
    """``tf.distribute.MultiWorkerMirroredStrategy`` from ``TF_CONFIG``, waiting at most
    ``timeout`` seconds for the other tasks (module docstring).

    Must run before anything initialises TensorFlow's runtime.

    Raises:
        ValueError: a malformed ``TF_CONFIG`` or a non-positive ``timeout``.
        ClusterError: the cluster did not form within ``timeout``.
        KeyboardInterrupt: SIGINT or SIGTERM while waiting.
    """
    import tensorflow as tf
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    if not timeout > 0:
        raise ValueError(f"--cluster-timeout must be positive, got {timeout!r}.")
    config = _tf_config()
    jobs = [job for job in ("chief", "worker") if job in config["cluster"]]
    tasks = {
        f"{job}:{index}": address
        for job in jobs
        for index, address in enumerate(config["cluster"][job])
    }
    me = f"{config['type']}:{config['index']}"
    if me in tasks:
        with _signals_raise():
            _rendezvous(tasks, me, timeout)
        cluster_spec = multi_worker_util.normalize_cluster_spec(config["cluster"])
        ctx = context.context()
        if ctx.coordination_service is None:
            # What TensorFlow configures itself, with the registration bounded.
            ctx.configure_coordination_service(
                service_type="standalone",
                service_leader=multi_worker_util.coordination_leader(cluster_spec),
                cluster_register_timeout_in_ms=int(timeout * 1000),
                coordinated_jobs=[
                    coordination_config_pb2.CoordinatedJob(
                        name=job, num_tasks=cluster_spec.num_tasks(job)
                    )
                    for job in jobs
                ],
            )
            ctx.coordination_service.cluster_register_with_barrier = True
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError) as err:
        raise ClusterError(
            f"--strategy multi_worker: the cluster of TF_CONFIG did not form within "
            f"--cluster-timeout {timeout:g} s ({_first_line(err)})."
        ) from None


def _first_line(err: BaseException) -> str:
    text = getattr(err, "message", None) or str(err)
    return text.strip().splitlines()[0][:200] if text.strip() else type(err).__name__


def peer_lost(err: BaseException) -> ClusterError:
    """The :class:`ClusterError` for a collective that failed because a peer died."""
    return ClusterError(
        f"a task of the multi-worker cluster was lost during training "
        f"({type(err).__name__}: {_first_line(err)}). Start every worker again with "
        "--resume to continue from the last checkpoint."
    )


class SignalGuard:
    """While active, SIGTERM and SIGINT end the process at once, after ``cleanups`` ran
    and one line was printed, with exit status ``128 + signal`` (module docstring)."""

    def __init__(self, prog: str = "train.py"):
        self.prog = prog
        self.cleanups: list[Callable[[], None]] = []
        self._previous = {}
        self._wakeup = None

    def __enter__(self):
        self._thread = None
        if threading.current_thread() is not threading.main_thread():
            return self  # signals are delivered to the main thread only
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, lambda *_: None)
        self._wakeup = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        self._fds = (read_fd, write_fd)
        self._thread = threading.Thread(target=self._watch, args=(read_fd,), daemon=True)
        self._thread.start()
        return self

    def _watch(self, read_fd: int) -> None:
        try:
            data = os.read(read_fd, 1)
        except OSError:
            return
        if not data or not data[0]:
            return  # closed by __exit__
        signum = data[0]
        for cleanup in self.cleanups:
            with contextlib.suppress(Exception):
                cleanup()
        name = signal.Signals(signum).name if signum in signal.valid_signals() else signum
        print(
            f"{self.prog}: stopped by {name}; start every worker again with --resume to "
            "continue from the last checkpoint.",
            file=sys.stderr,
            flush=True,
        )
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        os._exit(128 + signum)

    def __exit__(self, *exc):
        if self._thread is None:
            return False
        signal.set_wakeup_fd(self._wakeup)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        os.write(self._fds[1], b"\0")  # wakes the watcher, which ends
        self._thread.join(timeout=5)
        for fd in self._fds:
            os.close(fd)
        return False

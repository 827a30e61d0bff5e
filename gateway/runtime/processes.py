"""`[gateway] workers = N`: N processes serving the same SMTP and HTTP listeners.

One process runs one event loop on one core, and past about 1,300 requests/s that loop is
the limit (docs/benchmarks.md). The supervisor binds a pair of listeners per worker on the
same two ports (SO_REUSEPORT) and starts N `serve` processes that inherit them, so the
kernel spreads connections evenly across the workers. The workers share the store as
replicas do (SQLite's locks, or PostgreSQL), and their metrics are merged through
prometheus_client's multiprocess files, so any worker's `/metrics` shows them all.
SIGTERM and SIGHUP are passed on. If a worker dies, the others are stopped and the
supervisor exits with its status, for the service manager to restart the whole.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType

from prometheus_client.multiprocess import mark_process_dead

from gateway.config.settings import Config, ListenAddress
from gateway.runtime.connections import bind_listener
from gateway.runtime.logs import log_event
from gateway.runtime.metrics import MULTIPROCESS_DIRECTORY_ENV

log = logging.getLogger("gateway.runtime.processes")

LISTENERS_ENV = "GATEWAY_LISTEN_FDS"  # "smtp_fd,http_fd[,internal_fd]", for workers only
WORKER_INDEX_ENV = "GATEWAY_WORKER_INDEX"


class ListenError(Exception):
    """A configured listener that cannot be bound (its port taken, an address this host
    does not have, a privileged port): one line naming the setting, not a traceback."""


def configured_listeners(config: Config) -> list[tuple[str, ListenAddress]]:
    """Each listener's setting and address, in the order a worker inherits their sockets
    (`inherited_listeners`): SMTP, HTTP, then the internal HTTP one if configured."""
    listeners = [("smtp.listen", config.smtp.listen), ("http.listen", config.http.listen)]
    if config.http.internal_listen is not None:
        listeners.append(("http.internal_listen", config.http.internal_listen))
    return listeners


def bind_configured_listener(
    key: str, address: ListenAddress, *, reuse_port: bool = False
) -> socket.socket:
    """The listener of setting `key` (`smtp.listen`, `http.listen`); a failure names both
    the setting and the address."""
    try:
        return bind_listener(address.host, address.port, reuse_port=reuse_port)
    except OSError as exc:
        # The errno's own words: create_server appends the address, which is said already
        # (a name lookup's error has a negative errno and only its own text).
        reason = os.strerror(exc.errno) if exc.errno and exc.errno > 0 else exc.strerror
        raise ListenError(f"{key} {address}: cannot listen: {reason or exc}") from exc


def inherited_listeners() -> tuple[socket.socket, ...] | None:
    """In a worker: the SMTP, HTTP (and internal HTTP) listening sockets the supervisor
    bound."""
    descriptors = os.environ.get(LISTENERS_ENV)
    if not descriptors:
        return None
    return tuple(socket.socket(fileno=int(fd)) for fd in descriptors.split(","))


def is_first_worker() -> bool:
    """Periodic jobs (retention, store gauges) run in one worker, not in each."""
    return os.environ.get(WORKER_INDEX_ENV, "0") == "0"


def supervise(config: Config, serve_arguments: Sequence[str]) -> int:
    listeners = _listeners_per_worker(config)
    metrics_directory = config.data_dir / "metrics"
    shutil.rmtree(metrics_directory, ignore_errors=True)  # the last run's workers' values
    metrics_directory.mkdir(parents=True)
    environment = dict(os.environ, **{MULTIPROCESS_DIRECTORY_ENV: str(metrics_directory)})
    # A worker inherits an ignored SIGHUP until its own handler is in place: a reload asked
    # for while it starts must not kill it.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    workers = []
    for index, pair in enumerate(listeners):
        descriptors = tuple(listener.fileno() for listener in pair)
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", *serve_arguments],
            env=environment | {WORKER_INDEX_ENV: str(index),
                               LISTENERS_ENV: ",".join(map(str, descriptors))},
            pass_fds=descriptors,
        ))
    for pair in listeners:
        for listener in pair:
            listener.close()
    stopping = False

    def pass_on(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = stopping or signum != signal.SIGHUP
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM if signum == signal.SIGINT else signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, pass_on)
    log_event(log, "workers-started", workers=len(workers), pids=[w.pid for w in workers],
              smtp=f"{config.smtp.listen.host}:{config.smtp.listen.port}",
              http=f"{config.http.listen.host}:{config.http.listen.port}")
    return _wait(workers, lambda: stopping, metrics_directory)


def _wait(
    workers: list[subprocess.Popen[bytes]], stopping: Callable[[], bool], metrics_directory: Path
) -> int:
    """Until every worker is gone; the first to die unasked takes the others with it."""
    status = 0
    running = {worker.pid: worker for worker in workers}
    while running:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        worker = running.pop(pid, None)
        if worker is None:
            continue
        code = os.waitstatus_to_exitcode(wait_status)
        worker.returncode = code
        mark_process_dead(pid, str(metrics_directory))  # its in-progress gauges stop counting
        if not stopping() and status == 0:
            status = code if code > 0 else 1
            log_event(log, "worker-died", logging.ERROR, pid=pid, exit_code=code)
            for other in running.values():
                other.terminate()
        elif code not in (0, -signal.SIGTERM) and status == 0:  # SIGTERM before its handler
            status = code
    return status


def _listeners_per_worker(config: Config) -> list[tuple[socket.socket, ...]]:
    """An SMTP and an HTTP socket (and an internal HTTP one, if configured) for each
    worker, all bound with SO_REUSEPORT to the same ports (the first socket picks a port
    given as 0): the kernel then spreads new connections evenly over the workers, where
    sharing one socket lets whichever worker wakes first take most of them."""
    columns = []
    for key, address in configured_listeners(config):
        first = _bind(key, address)
        port = first.getsockname()[1]
        columns.append([first] + [_bind(key, replace(address, port=port))
                                   for _ in range(config.workers - 1)])
    return list(zip(*columns, strict=True))


def _bind(key: str, address: ListenAddress) -> socket.socket:
    listener = bind_configured_listener(key, address, reuse_port=True)
    listener.set_inheritable(True)
    return listener

"""A Dask distributed client for ``--scheduler``: a running cluster's address, or ``local:N``.

Every worker is set up like the process that submits the work (:func:`like_this_process`): the
same number of XLA host devices, and the same JAX compilation cache. The device count matters
for more than speed: a frame's MCMC draws are reproducible for a given device layout (``pmap``
over several host devices compiles another program than ``jit`` on one, and chains are chaotic
in the last bit), so workers laid out like this process give the draws this process would.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from bayes_smlm.errors import ConfigError

LOCAL_PREFIX = "local:"
CONNECT_TIMEOUT_S = 20


ENVIRONMENT = ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")


def like_this_process() -> Any:
    """Dask's ``Environ`` nanny plugin with this process's XLA flags and JAX cache folder: each
    worker restarts with them, so it imports JAX laid out like this process."""
    from distributed.diagnostics.plugin import Environ

    return Environ({k: os.environ[k] for k in ENVIRONMENT if k in os.environ})


SCHEMES = ("tcp://", "tls://")
MAX_LOCAL_WORKERS = 256


def check_scheduler(value: str) -> str:
    """``local:N`` (1 ≤ N ≤ 256 worker processes on this machine) or a scheduler address
    (``tcp://host:8786``, ``tls://host:8786``, ``host:8786``); a one-line error otherwise."""
    if value.startswith(LOCAL_PREFIX):
        count = value[len(LOCAL_PREFIX) :]
        if not count.isdigit() or not 1 <= int(count) <= MAX_LOCAL_WORKERS:
            raise ConfigError(
                "scheduler",
                f"local:N needs 1 <= N <= {MAX_LOCAL_WORKERS} worker processes (got {value!r})",
            )
        return value
    address = value
    for scheme in SCHEMES:
        if address.startswith(scheme):
            address = address[len(scheme) :]
            break
    host, _, port = address.rpartition(":")
    host = host.strip("[]")  # an IPv6 address in brackets
    if (
        not host
        or any(c.isspace() or c in "/?#@" for c in host)
        or not port.isdigit()
        or not 1 <= int(port) <= 65535
    ):
        raise ConfigError(
            "scheduler",
            f"must be local:N or a scheduler address host:port such "
            f"as tcp://host:8786, port 1-65535 (got {value!r})",
        )
    return value


@contextmanager
def _workers_ignore_interrupts() -> Iterator[None]:
    """Start processes that ignore Ctrl-C (SIGINT is inherited as ignored through fork and exec,
    and Python then installs no KeyboardInterrupt handler): the terminal sends it to every
    process of the job, and this process alone should answer it — by closing the cluster —
    rather than each worker printing its traceback."""
    import signal
    import sys
    import threading

    # workers stopped by an interrupt leave Dask's semaphores to multiprocessing's resource
    # tracker, which would warn about them on its way out: the tracker takes its warning
    # filters from this process's -W options when it starts
    quiet_tracker = "ignore::UserWarning:multiprocessing.resource_tracker"
    if quiet_tracker not in sys.warnoptions:
        sys.warnoptions.append(quiet_tracker)
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def dask_client(scheduler: str | None) -> Iterator[Any]:
    """Yield a ``distributed.Client`` for ``scheduler`` (None: yield None, work stays in this
    process). ``local:N`` starts a ``LocalCluster`` of N single-threaded worker processes for the
    duration; an address connects to a running scheduler (a one-line error if none answers)."""
    if scheduler is None:
        yield None
        return
    check_scheduler(scheduler)
    # distributed logs its workers' comings and goings (and tracebacks of closed connections
    # when workers restart); what matters reaches us as the tasks' results or exceptions
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "critical")
    from distributed import Client, LocalCluster

    cluster = None
    local = scheduler.startswith(LOCAL_PREFIX)
    # local workers (and those the plugin restarts) are started ignoring Ctrl-C
    with _workers_ignore_interrupts() if local else nullcontext():
        try:
            if local:
                cluster = LocalCluster(
                    n_workers=int(scheduler[len(LOCAL_PREFIX) :]),
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                )
                client = Client(cluster)
            else:
                client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as err:
            if cluster is not None:
                cluster.close()
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ConfigError(
                "scheduler",
                f"no Dask scheduler answered at {scheduler} within "
                f"{CONNECT_TIMEOUT_S} s ({reason})",
            ) from None
        try:
            client.register_plugin(like_this_process())  # restarts the workers
        except BaseException:
            client.close()
            if cluster is not None:
                cluster.close()
            raise
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()

"""Reaching a Dask cluster within bounded time: the scheduler, its workers, local workers.

Every wait on a peer has a limit, and every failure is one :class:`EdgesegError` line that
names the address:

* :func:`scheduler_address` refuses text that is not an address before any connection;
* :func:`check_scheduler` connects, completes Dask's handshake and asks the peer who it is,
  all within ``connect_timeout`` seconds: a refused or unroutable address, a silent peer, an
  HTTP server or a Dask worker (not the scheduler) fail here. ``distributed.Client`` bounds the
  TCP connection by its ``timeout`` but waits for the handshake's answer without limit;
* :func:`connect_client` opens the client after that check, with the same limit on its own
  calls (``Client(timeout=...)`` and ``distributed.comm.timeouts.connect``);
* :func:`wait_for_workers` bounds the wait for workers (``client.wait_for_workers``): the
  first to join an existing scheduler, or all of a local cluster;
* :func:`check_local_workers` refuses more local worker processes than
  :data:`WORKERS_PER_CORE` per core and warns above one per core.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable

from firmware_bridge.errors import EdgesegError, require

DEFAULT_CONNECT_TIMEOUT = 30.0
"""Seconds for the scheduler to accept the connection and answer (Dask's own default)."""
DEFAULT_WORKER_TIMEOUT = 60.0
"""Seconds for the first worker to join a scheduler, or for a local cluster's workers to start."""
WORKERS_PER_CORE = 4
"""Local worker processes allowed per core: each holds a model and competes for the cores."""
DEFAULT_SCHEDULER_PORT = 8786
_ADDRESS_HINT = f"give tcp://HOST:PORT, e.g. tcp://10.0.0.5:{DEFAULT_SCHEDULER_PORT}"


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, else the machine's count).

    Returns:
        At least 1.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def check_local_workers(workers: int, log: Callable[[str], None]) -> None:
    """Refuse an unreasonable number of local worker processes; warn above one per core.

    Args:
        workers: Worker processes asked for.
        log: Where the warning goes (one line).

    Raises:
        EdgesegError: For more than :data:`WORKERS_PER_CORE` processes per usable core.
    """
    cores = usable_cores()
    cap = WORKERS_PER_CORE * cores
    if workers > cap:
        raise EdgesegError(
            f"--workers {workers}: more than {cap} local worker processes ({WORKERS_PER_CORE} per "
            f"core, {cores} core(s) here); each process holds the model and they share the cores: "
            f"use at most {cores}, or --scheduler for a cluster of several machines")
    if workers > cores:
        log(f"warning: --workers {workers} on {cores} core(s): the worker processes share the "
            f"cores (no faster than {cores}) and each holds the model in memory")


def scheduler_address(address: str) -> str:
    """Check that ``address`` is a Dask scheduler address, before any connection.

    Args:
        address: What the user gave, e.g. ``tcp://10.0.0.5:8786`` or ``10.0.0.5:8786``.

    Returns:
        The address with its scheme (``tcp://`` when it had none).

    Raises:
        EdgesegError: For an empty text, an unknown scheme (``http://`` names a dashboard),
            a missing host or port, or a port outside 1-65535.
    """
    require("distributed", "cluster")
    from distributed.comm.addressing import parse_address, parse_host_port, unparse_address
    from distributed.comm.registry import get_backend

    text = address.strip()
    if not text:
        raise EdgesegError(f"the scheduler address is empty: {_ADDRESS_HINT}")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in ("http", "https"):
        raise EdgesegError(
            f"{address}: an {scheme}:// address is a web page (the dashboard), not a Dask "
            f"scheduler: give its tcp:// address (port {DEFAULT_SCHEDULER_PORT} by default)")
    try:
        scheme, location = parse_address(text)
        get_backend(scheme)
        if scheme in ("tcp", "tls", "ws", "wss"):
            host, port = parse_host_port(location)
            if not host:
                raise ValueError("no host")
            if not 0 < int(port) < 65536:
                raise ValueError(f"port {port} is not in 1-65535")
    except (ValueError, TypeError) as exc:
        raise EdgesegError(f"{address!r} is not a Dask scheduler address ({exc}): "
                           f"{_ADDRESS_HINT}") from None
    return unparse_address(scheme, location)


def _reason(exc: BaseException) -> str:
    """The operating system's words for a failed connection (``Connection refused``), if any."""
    chain = [exc]
    while True:
        link = chain[-1].__cause__ or chain[-1].__context__
        if link is None or link in chain:
            break
        chain.append(link)
    for seen in reversed(chain):
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
    deepest = chain[-1]
    if isinstance(deepest, asyncio.CancelledError | TimeoutError):
        return "no answer"
    text = str(deepest).rsplit(">: ", 1)[-1].strip()  # CommClosedError: "in <Connector ...>: why"
    return text or type(deepest).__name__


async def _identity(address: str, timeout: float) -> dict:
    """Connect (Dask's handshake included) and ask the peer for its identity.

    The connection gets nine tenths of ``timeout``: it fails with ``OSError`` before the
    caller's limit, so that a ``TimeoutError`` there means a peer that accepted the
    connection and then stayed silent.
    """
    from distributed.comm import connect

    comm = await connect(address, timeout=0.9 * timeout)
    try:
        await comm.write({"op": "identity", "reply": True})
        return await comm.read()
    finally:
        comm.abort()


def check_scheduler(address: str, timeout: float) -> None:
    """Check that a Dask scheduler answers at ``address`` within ``timeout`` seconds.

    The probe runs on its own short-lived event loop and thread, so that it also works from
    a program whose thread already runs one (a notebook); a peer that never answers costs
    ``timeout`` seconds, never more.

    Args:
        address: A checked address (:func:`scheduler_address`).
        timeout: Seconds for the connection, the handshake and the answer together.

    Raises:
        EdgesegError: When nothing accepts the connection (refused, unreachable, unknown
            host), when the peer does not speak Dask's protocol in time (a silent peer, an
            HTTP server), or when it is not a scheduler (a worker).
    """
    outcome: dict = {}

    def probe() -> None:
        try:
            outcome["identity"] = asyncio.run(
                asyncio.wait_for(_identity(address, timeout), timeout))
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            outcome["error"] = exc

    thread = threading.Thread(target=probe, name="edgeseg-scheduler-check", daemon=True)
    thread.start()
    thread.join(timeout + 5)  # the probe bounds itself; this only guards against a stuck loop
    error = outcome.get("error")
    not_dask = (f"is it the scheduler's address (port {DEFAULT_SCHEDULER_PORT} by default; the "
                "dashboard's port serves web pages)?")
    if thread.is_alive() or isinstance(error, TimeoutError):
        raise EdgesegError(f"{address} accepted the connection but did not answer as a Dask "
                           f"scheduler within {timeout:g} s: {not_dask} --connect-timeout "
                           "allows longer")
    if isinstance(error, OSError) and str(error).startswith("Timed out trying to connect"):
        raise EdgesegError(f"cannot reach a Dask scheduler at {address} within {timeout:g} s "
                           f"({_reason(error)}): check the address and that 'dask scheduler' "
                           "runs there; --connect-timeout allows longer")
    if error is not None:
        raise EdgesegError(f"{address} does not answer as a Dask scheduler ({_reason(error)}): "
                           f"{not_dask}")
    identity = outcome.get("identity")
    kind = identity.get("type") if isinstance(identity, dict) else None
    if kind != "Scheduler":
        raise EdgesegError(f"{address} is a Dask {kind or 'peer'}, not a scheduler: give the "
                           "address that 'dask scheduler' prints")


def connect_client(address: str, timeout: float):
    """A ``distributed.Client`` of the scheduler at ``address``, checked first.

    Args:
        address: A checked address (:func:`scheduler_address`).
        timeout: Seconds allowed to each connection to the scheduler.

    Returns:
        The connected client (the caller closes it).

    Raises:
        EdgesegError: As :func:`check_scheduler`, or when the client cannot connect.
    """
    distributed = require("distributed", "cluster")
    check_scheduler(address, timeout)
    try:
        return distributed.Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        raise EdgesegError(f"cannot connect to the Dask scheduler at {address} within "
                           f"{timeout:g} s ({_reason(exc)}); --connect-timeout allows longer"
                           ) from None


def wait_for_workers(client, n: int, timeout: float, local: bool = False) -> int:
    """Wait until ``n`` workers run on the client's cluster, at most ``timeout`` seconds.

    Args:
        client: A connected ``distributed.Client``.
        n: Workers to wait for.
        timeout: Seconds.
        local: The cluster is a ``LocalCluster`` this process started (changes the advice).

    Returns:
        The workers running once the wait ended (at least ``n``).

    Raises:
        EdgesegError: When fewer than ``n`` run after ``timeout`` seconds, or the scheduler
            went away.
    """
    address = client.scheduler.address
    try:
        client.wait_for_workers(n, timeout=timeout)
    except TimeoutError as exc:
        running = getattr(exc, "available_workers", 0)
        if local:
            raise EdgesegError(f"the local Dask cluster at {address} started {running} of {n} "
                               f"worker process(es) within {timeout:g} s: ask for fewer --workers "
                               "or allow longer with --worker-timeout") from None
        raise EdgesegError(f"no Dask worker joined the scheduler at {address} within "
                           f"{timeout:g} s: start workers with 'dask worker {address}' or allow "
                           "longer with --worker-timeout") from None
    except OSError as exc:
        raise EdgesegError(f"lost the Dask scheduler at {address} while waiting for workers "
                           f"({_reason(exc)})") from None
    return len(client.scheduler_info(n_workers=-1).get("workers", {}))

"""Where a sweep's runs go: local processes, Ray tasks or SLURM jobs (submitit). Each executor's ``run(function,
specs, deadline)`` yields ``(spec, result, error)`` as runs finish (error: None, or one line), starts no run past
``deadline`` (time.monotonic) once one has finished, and ``stop()`` ends every run still going. Each checks
``check_stop()`` before it waits again (at least every POLL_SECONDS), so a SIGTERM stops the sweep promptly
after the results already in hand are yielded.

Ray and submitit are optional (extras ``[ray]``, ``[slurm]``), imported only when chosen.
"""
import argparse
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
import traceback
from pathlib import Path

from zoo.bench.sweep import RunSpec, SweepInterrupted, check_stop, run_one

EXECUTORS = ("local", "ray", "submitit")
POLL_SECONDS = 0.5


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() > deadline


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0]


def _require(module: str, extra: str, executor: str):
    try:
        return __import__(module)
    except ModuleNotFoundError:
        raise SystemExit(f"error: --executor {executor} needs {module}: pip install -e '.{extra}'") from None


# ---- local: processes on this machine ---------------------------------------------------------------------------
def _worker_loop(connection, threads: int):
    """A worker process: run the specs it is sent, one at a time, until it is sent None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what a Ctrl-C stops
    while True:
        try:
            message = connection.recv()
        except EOFError:  # the parent is gone
            return
        if message is None:
            return
        function, spec = message
        try:
            connection.send((run_one(function, spec, threads), None))
        except Exception as error:  # noqa: BLE001  (reported to the parent as one line, the worker goes on)
            if getattr(error, "signum", None):  # the parent's stop reached the run (zoo.train's RunInterrupted)
                return
            traceback.print_exc()
            connection.send((None, _one_line(error)))


class LocalExecutor:
    """``workers`` spawned processes of ``threads`` intra-op threads each; one worker runs in this process."""

    def __init__(self, workers: int = 1, threads: int = 1):
        self.workers, self.threads = workers, threads
        self._processes = []

    def describe(self, pending: int) -> str:
        workers = max(1, min(self.workers, pending))
        where = "in this process" if workers == 1 else "processes"
        return f"local executor: {workers} worker(s) {where}, {self.threads} thread(s) each"

    def run(self, function, specs: list[RunSpec], deadline: float | None):
        if not specs:
            return
        workers = min(self.workers, len(specs))
        if workers == 1:
            for spec in specs:
                try:
                    yield spec, run_one(function, spec, self.threads), None
                except Exception as error:  # noqa: BLE001
                    if getattr(error, "signum", None):  # the run stopped on our signal (zoo.train's RunInterrupted)
                        raise SweepInterrupted(error.signum) from error
                    traceback.print_exc()
                    yield spec, None, _one_line(error)
                check_stop()
                if _past(deadline):
                    return
            return
        yield from self._run_in_processes(function, specs, workers, deadline)

    def _run_in_processes(self, function, specs, workers, deadline):
        context = multiprocessing.get_context("spawn")
        idle, busy = [], {}  # busy: connection -> (process, spec)
        for _ in range(workers):
            parent_end, child_end = context.Pipe()
            process = context.Process(target=_worker_loop, args=(child_end, self.threads), daemon=True)
            process.start()
            child_end.close()
            self._processes.append(process)
            idle.append((parent_end, process))
        queue = list(specs)
        started_any = False
        try:
            while queue or busy:
                check_stop()
                while idle and queue and not (started_any and _past(deadline)):
                    connection, process = idle.pop()
                    spec = queue.pop(0)
                    connection.send((function, spec))
                    busy[connection] = (process, spec)
                started_any = True
                if not busy:
                    return
                sentinels = {process.sentinel: connection for connection, (process, _) in busy.items()}
                ready = multiprocessing.connection.wait([*busy, *sentinels], timeout=POLL_SECONDS)
                for item in ready:
                    connection = sentinels.get(item, item)
                    if connection not in busy:
                        continue
                    process, spec = busy.pop(connection)
                    try:
                        result, error = connection.recv()
                    except (EOFError, OSError):  # the worker died mid-run (killed, out of memory)
                        result, error = None, f"worker process died (exit code {process.exitcode})"
                    else:
                        idle.append((connection, process))
                    yield spec, result, error
                if _past(deadline):
                    queue.clear()
        finally:
            self.stop()

    def stop(self):
        """End every worker: asked first, killed after a grace period; none survives this call."""
        for process in self._processes:
            if process.is_alive():
                process.terminate()
        for process in self._processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join()
        self._processes = []


# ---- runs handed to a scheduler (Ray, SLURM) --------------------------------------------------------------------
class _InFlight:
    """Specs submitted as handles (Ray refs, submitit jobs), at most ``limit`` at once, none new past the deadline
    once one has finished; yields (spec, result, error) as they finish."""

    def __init__(self, specs: list[RunSpec], limit: int | None, deadline: float | None):
        self.queue, self.limit, self.deadline = list(specs), limit or len(specs), deadline
        self.running = {}

    def handles(self) -> list:
        return list(self.running)

    def run(self, submit, finished, result):
        while self.queue or self.running:
            check_stop()
            while self.queue and len(self.running) < self.limit and not (self.running and _past(self.deadline)):
                spec = self.queue.pop(0)
                self.running[submit(spec)] = spec
            done = finished(list(self.running))
            for handle in done:
                spec = self.running.pop(handle)
                try:
                    yield spec, result(handle), None
                except Exception as error:  # noqa: BLE001  (Ray's RayTaskError wraps the run's own as .cause)
                    yield spec, None, _one_line(getattr(error, "cause", None) or error)
            if done and _past(self.deadline):
                self.queue.clear()


def _finished_jobs(jobs: list) -> list:
    done = [job for job in jobs if job.done()]
    if not done:
        time.sleep(POLL_SECONDS)
    return done


# ---- ray: each run a Ray task -------------------------------------------------------------------------------------
class RayExecutor:
    """Each run a Ray task of ``cpus`` CPUs and ``gpus`` GPUs; ``address`` joins a cluster ('auto': the one started
    with ``ray start`` here), None starts a local one for this sweep. ``in_flight`` caps the tasks submitted at once
    (default: every run, Ray queues them by resources)."""

    def __init__(self, address: str | None, cpus: float, gpus: float, threads: int, in_flight: int | None = None):
        self.address, self.cpus, self.gpus, self.threads, self.in_flight = address, cpus, gpus, threads, in_flight
        self._running = []
        self._started_here = False

    def describe(self, pending: int) -> str:
        where = f"cluster {self.address}" if self.address else "a local Ray instance"
        return f"ray executor on {where}: {self.cpus:g} CPU(s), {self.gpus:g} GPU(s), {self.threads} thread(s) per run"

    def run(self, function, specs: list[RunSpec], deadline: float | None):
        if not specs:
            return
        ray = _require("ray", "[ray]", "ray")
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR", configure_logging=True)
            self._started_here = True
        task = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0)(run_one)
        pending = _InFlight(specs, self.in_flight, deadline)
        try:
            yield from pending.run(submit=lambda spec: task.remote(function, spec, self.threads),
                                   finished=lambda refs: ray.wait(refs, num_returns=1, timeout=POLL_SECONDS)[0],
                                   result=ray.get)
        finally:
            self._running = pending.handles()
            self.stop()

    def stop(self):
        import ray
        for ref in self._running:
            ray.cancel(ref, force=True)
        self._running = []
        if self._started_here and ray.is_initialized():
            ray.shutdown()  # the local instance this sweep started, its worker processes with it
            self._started_here = False


# ---- submitit: each run a SLURM job -----------------------------------------------------------------------------
class SubmititExecutor:
    """Each run a SLURM job through submitit (its logs under ``folder``); ``cluster='local'`` runs the jobs as local
    processes through submitit's own local executor (for testing), None picks SLURM when it is there."""

    def __init__(self, folder, partition: str | None, minutes: int, gpus: int, threads: int,
                 in_flight: int | None = None, cluster: str | None = None):
        self.folder, self.partition, self.minutes, self.gpus = folder, partition, minutes, gpus
        self.threads, self.in_flight, self.cluster = threads, in_flight, cluster
        self._jobs = []

    def describe(self, pending: int) -> str:
        where = self.cluster or "SLURM (or local processes without sbatch)"
        partition = f", partition {self.partition}" if self.partition else ""
        return (f"submitit executor on {where}{partition}: {self.gpus} GPU(s), {self.threads} CPU(s), "
                f"{self.minutes} min per run")

    def _executor(self):
        submitit = _require("submitit", "[slurm]", "submitit")
        executor = submitit.AutoExecutor(folder=str(self.folder), cluster=self.cluster)
        options = {"timeout_min": self.minutes, "cpus_per_task": self.threads, "nodes": 1, "tasks_per_node": 1}
        if self.gpus:
            options["gpus_per_node"] = self.gpus
        if self.partition:
            options["slurm_partition"] = self.partition
        executor.update_parameters(**options)
        return executor

    def run(self, function, specs: list[RunSpec], deadline: float | None):
        if not specs:
            return
        executor = self._executor()
        pending = _InFlight(specs, self.in_flight, deadline)
        try:
            yield from pending.run(submit=lambda spec: executor.submit(run_one, function, spec, self.threads),
                                   finished=_finished_jobs, result=lambda job: job.result())
        finally:
            self._jobs = pending.handles()
            self.stop()

    def stop(self):
        for job in self._jobs:
            if not job.done():
                job.cancel(check=False)
        self._jobs = []


# ---- the command line -------------------------------------------------------------------------------------------
def add_executor_arguments(parser: argparse.ArgumentParser, default_workers: str = "one per CPU core"):
    group = parser.add_argument_group("where the runs go")
    group.add_argument("--executor", default="local", choices=EXECUTORS,
                       help="local: processes on this machine (default); ray: each run a Ray task; submitit: each "
                            "run a SLURM job")
    group.add_argument("--workers", type=int, default=None,
                       help=f"runs at once (local: processes; ray/submitit: runs in flight; default: {default_workers})")
    group.add_argument("--threads", type=int, default=1,
                       help="intra-op threads per run (default 1: --workers N never oversubscribes the cores)")
    group.add_argument("--stop-after", type=float, default=None, metavar="MINUTES",
                       help="start no new run after this many minutes (runs in flight finish; at least one run "
                            "trains); the same command later goes on where this one stopped")
    group.add_argument("--ray-address", default=None,
                       help="ray: a cluster to join ('auto': the one running here); none starts a local one")
    group.add_argument("--ray-cpus", type=float, default=None, help="ray: CPUs per run (default: --threads)")
    group.add_argument("--ray-gpus", type=float, default=0, help="ray: GPUs per run (fractions share a GPU)")
    group.add_argument("--slurm-partition", default=None, help="submitit: the SLURM partition")
    group.add_argument("--slurm-time", type=int, default=60, metavar="MINUTES", help="submitit: time limit per run")
    group.add_argument("--slurm-gpus", type=int, default=0, help="submitit: GPUs per run")
    group.add_argument("--slurm-cluster", default=None, choices=("slurm", "local", "debug"),
                       help="submitit: where jobs go (default: SLURM when sbatch is found, else local processes)")


def executor_from_args(args, out: Path, default_workers: int | None = None):
    """The executor named by ``--executor``; SystemExit with one line for a bad value or a missing extra."""
    if args.workers is not None and args.workers < 1:
        raise SystemExit(f"error: --workers must be a positive integer, got {args.workers}")
    if args.threads < 1:
        raise SystemExit(f"error: --threads must be a positive integer, got {args.threads}")
    workers = args.workers or default_workers or os.cpu_count() or 1
    if args.executor == "local":
        return LocalExecutor(workers, args.threads)
    if args.executor == "ray":
        _require("ray", "[ray]", "ray")  # checked before anything is written
        return RayExecutor(args.ray_address, args.ray_cpus or args.threads, args.ray_gpus, args.threads,
                                     args.workers)
    _require("submitit", "[slurm]", "submitit")
    return SubmititExecutor(Path(out) / "submitit", args.slurm_partition, args.slurm_time,
                                      args.slurm_gpus, args.threads, args.workers, args.slurm_cluster)

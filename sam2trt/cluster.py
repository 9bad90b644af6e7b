"""``sam2trt track --ray ADDRESS``: the batch's jobs on every GPU (or CPU node) of a Ray cluster.

Ray is imported only here, and only when a run starts (``pip install 'sam2trt[ray]'``).

- **Workers.** One Ray actor (:class:`TrackWorker`) per GPU (``num_gpus=1``); on a
  node without GPUs, or with ``--backend onnxruntime``, one per
  ``--ray-cpus-per-worker`` cores (default: all of the node's cores). A worker
  loads the model once, opens its runners at its first job that passes
  validation and keeps them; each job is :func:`sam2trt.batch.run_job`, the
  function the single-process batch runs (validation up front, exclusive
  temporaries moved into place at the end, ``.NAME.incomplete`` markers on
  partial outputs, SIGINT/SIGTERM closing the outputs). On a GPU the engines are
  checked against that GPU: a worker whose GPU has no matching engines (or
  that cannot open the model) reports the usual one-line error, as
  EnvironmentMissing (exit 5) unless ``--backend onnxruntime``; the driver prints it
  as a warning, retires the worker and hands the job to another one. Only when no
  usable worker is left do the jobs fail with that error.
- **Dispatch.** A worker gets the next job when it returns one, so uneven
  videos balance; results stream back as they finish.
- **Faults.** A job whose worker dies (process killed, node lost, out of
  memory), or is interrupted by a signal the driver did not send, runs again on
  another worker, up to ``retries`` more times; a replacement worker is started.
  A job's own error (input, runtime) is its result and is not retried.
- **Interrupt.** SIGINT/SIGTERM on the driver: no further job starts, each
  running job gets SIGINT in its worker and closes its outputs up to its last
  frame (status "interrupted"), then :class:`~sam2trt.errors.Interrupted` (exit 130).
- **Probe.** Before any job, one task per node checks that the model folder and
  every input the driver's jobs name are visible there (an input missing on all
  nodes is left to its job's own error) and that every output folder can be
  written; otherwise a one-line :class:`~sam2trt.errors.UsageError` names the
  node and the path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import sam2trt
from sam2trt.batch import JobSpec, run_job
from sam2trt.errors import EnvironmentMissing, InputError, Interrupted, RuntimeFailure, Sam2TrtError, UsageError
from sam2trt.fileio import PARTIAL, remove
from sam2trt.model_spec import load_model_spec
from sam2trt.pipeline import CANCEL_GRACE_S, TrackSummary
from sam2trt.runtime.select import choose_backend, open_runners
from sam2trt.signals import signal_guard
from sam2trt.tracker.prompts import build_prompts
from sam2trt.validation import _check_writable

DEFAULT_RETRIES = 2
"""``--retries``: further attempts of a job whose worker died."""

WORKER_START_TIMEOUT_S = 300.0
"""How long (seconds) the driver waits for a worker to start when no worker is alive to run the queued jobs."""

PROBE_TIMEOUT_S = 120.0
"""How long (seconds) the driver waits for the per-node probe tasks."""

STOP_TIMEOUT_S = CANCEL_GRACE_S + 30.0
"""After SIGINT/SIGTERM on the driver, how long (seconds) running jobs get to close their outputs."""

PROGRESS_INTERVAL_S = 0.5
"""How often (seconds) a worker reports its frame count for the driver's progress bar."""

_TEMP_ID = re.compile(r"[A-Za-z0-9_]{6,12}")


@dataclass
class RaySummary(TrackSummary):
    """A :class:`~sam2trt.pipeline.TrackSummary` with where and how often the job ran.

    ``worker``: ``{"node": IP, "gpu": GPU id or None, "pid": worker process id}``
    of the last attempt (``None`` when no worker ran it); ``attempts``: how many
    times a worker started the job (1 unless a worker was lost under it).
    ``worker_unusable`` (not in the JSON): the error is the worker's own (its model
    or runners could not be opened there), not the job's.
    """

    worker: dict | None = None
    attempts: int = 0
    worker_unusable: bool = False

    def as_dict(self) -> dict:
        """The JSON summary of :meth:`TrackSummary.as_dict` plus ``worker`` and ``attempts``."""
        d = super().as_dict()
        d["worker"], d["attempts"] = self.worker, self.attempts
        return d


def _ray():
    """Import Ray, or raise EnvironmentMissing (exit 5) with the install line."""
    try:
        import ray
    except ImportError:
        raise EnvironmentMissing("--ray needs Ray, which is not installed: pip install 'sam2trt[ray]'") from None
    return ray


# ------------------------------------------------------------------------------------------- node side
def remove_stale_temporaries(outputs: dict[str, str]) -> None:
    """Delete the exclusive temporaries an earlier attempt of the same job left next to its outputs.

    A worker killed mid-job (SIGKILL, node or memory loss) cannot clean up; its
    temporaries are hidden siblings of the outputs (``.STEM.partial-XXXXXXXX.EXT``
    for a file, ``.NAME.partial-XXXXXXXX`` for ``--masks-dir``, see
    :mod:`sam2trt.fileio`). Called before a retried attempt; never touches a final name.
    """
    for kind, raw in outputs.items():
        p = Path(str(raw).rstrip("/\\"))
        prefix, suffix = (f".{p.name}{PARTIAL}", "") if kind == "masks_dir" else (f".{p.stem}{PARTIAL}", p.suffix)
        with contextlib.suppress(OSError):
            for name in os.listdir(p.parent):
                if name.startswith(prefix) and name.endswith(suffix) and \
                        _TEMP_ID.fullmatch(name[len(prefix):len(name) - len(suffix)]):
                    remove(p.parent / name)


def probe_node(model: str, inputs: list[str], outputs: list[tuple[str, str]]) -> dict:
    """What one node sees (runs as a Ray task pinned to the node).

    Args:
        model: the model folder (absolute path).
        inputs: input paths (videos, frame folders, mask PNGs), absolute.
        outputs: ``(flag, path)`` pairs, one per distinct output folder (absolute).
    Returns:
        ``{"node": IP, "version": sam2trt version, "model": error or None,
        "missing": [input paths not found here], "unwritable": [one-line messages]}``.
    """
    import ray

    result = {"node": ray.util.get_node_ip_address(), "version": sam2trt.__version__, "model": None,
              "missing": [p for p in inputs if not os.path.exists(p)], "unwritable": []}
    try:
        load_model_spec(model, verify_files=False)
    except Sam2TrtError as e:
        result["model"] = str(e)
    for flag, path in outputs:
        try:
            _check_writable(Path(path), flag)
        except InputError as e:
            result["unwritable"].append(str(e))
    return result


def signal_process(pid: int, signum: int) -> bool:
    """Send ``signum`` to process ``pid`` on this node (a Ray task pinned to the worker's node); False if gone."""
    try:
        os.kill(pid, signum)
        return True
    except ProcessLookupError:
        return False


class ProgressBoard:
    """Ray actor (0 CPUs): the frames each running job has tracked, for the driver's progress bar."""

    def __init__(self):
        self.frames: dict[int, int] = {}

    def report(self, index: int, frames: int) -> None:
        """Job ``index`` has tracked ``frames`` frames so far (this attempt)."""
        self.frames[index] = frames

    def take(self) -> dict[int, int]:
        """``{job index: frames tracked}`` of every job that reported."""
        return dict(self.frames)


@contextlib.contextmanager
def _sigint_unblocked():
    """Unblock SIGINT in this thread (and the threads it starts) inside the block; a pending one is dropped
    first, as long as its handler is still SIG_IGN (see :class:`TrackWorker`)."""
    try:
        old = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    except (AttributeError, OSError, ValueError):  # no pthread_sigmask on this platform
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class TrackWorker:
    """Ray actor: one model, runners opened at the first valid job and kept, one job at a time.

    Methods run in the actor process's main thread, so :func:`sam2trt.signals.signal_guard`
    installs the SIGINT/SIGTERM handlers there during a job. Ray blocks SIGINT in its
    workers; a job unblocks it (the driver's interrupt is a SIGINT to the worker), and
    between jobs it is blocked and ignored, so a late one cannot stop the next job.

    Args:
        model: model folder (absolute path; the same on every node).
        backend: ``auto``, ``onnxruntime`` or ``tensorrt``. On a GPU worker ``auto``
            means TensorRT: its engines must match this worker's GPU.
        threads: ONNX Runtime intra-op threads (``None``: all cores).
        gpu: True for a worker holding a GPU (``num_gpus=1``).
        job_args: keyword arguments of :func:`~sam2trt.batch.run_job` for every job
            (``fill_hole_area``, ``skip_existing``, ``job_options``).
        board: a :class:`ProgressBoard` handle, or ``None`` (no live progress).
    """

    def __init__(self, model: str, backend: str, threads: int | None, gpu: bool, job_args: dict, board=None):
        import ray

        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        ids = ray.get_gpu_ids() if gpu else []
        self.where = {"node": ray.util.get_node_ip_address(), "gpu": str(ids[0]) if ids else None, "pid": os.getpid()}
        self.node_id = ray.get_runtime_context().get_node_id()
        self.backend, self.threads, self.gpu, self.job_args, self.board = backend, threads, gpu, job_args, board
        self.spec, self.error, self.runners = None, None, None
        self.stack = contextlib.ExitStack()
        try:
            self.spec = load_model_spec(model)
        except Sam2TrtError as e:
            self.error = e

    def info(self) -> dict:
        """``{"node", "gpu", "pid", "node_id"}`` of this worker."""
        return {**self.where, "node_id": self.node_id}

    def _open(self):
        """The runners, opened on first use; an error opening them is kept and raised for every later job."""
        if self.error is not None:
            raise self.error
        if self.runners is None:
            backend = self.backend
            try:
                if self.gpu and backend != "onnxruntime":
                    try:
                        choose_backend(self.spec, "tensorrt")
                    except Sam2TrtError as e:  # no TensorRT here, or engines for another GPU: this node's lack
                        raise EnvironmentMissing(str(e)) from None
                    backend = "tensorrt"
                self.runners = self.stack.enter_context(open_runners(self.spec, backend, threads=self.threads))
            except Sam2TrtError as e:
                self.error = e
                raise
        return self.runners

    def run(self, index: int, spec: JobSpec, attempt: int) -> RaySummary:
        """Run job ``index`` (attempt ``attempt``, from 1) with :func:`~sam2trt.batch.run_job`; never raises.

        Returns:
            Its :class:`RaySummary` (status ok, skipped, error or interrupted).
        """
        summary = RaySummary(video=spec.video, worker=dict(self.where), attempts=attempt, direction=spec.direction)
        with _sigint_unblocked(), signal_guard():
            try:
                if self.spec is None:
                    raise self.error
                if attempt > 1:
                    remove_stale_temporaries(spec.outputs)
                run_job(spec, self.spec, self._open, index=index, summary=summary, on_start=self._progress,
                        **self.job_args)
            except Sam2TrtError as e:  # the model or the runners could not be opened here
                summary.status, summary.error, summary.exit_code = "error", str(e), e.exit_code
                summary.worker_unusable = True
            except KeyboardInterrupt:
                e = Interrupted(f"interrupted at {spec.video}")
                summary.status, summary.error, summary.exit_code = "interrupted", str(e), e.exit_code
        return summary

    def _progress(self, index: int, job) -> Callable | None:
        if self.board is None:
            return None
        last = [0.0]

        def report(done: int, total: int | None) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL_S or (total is not None and done >= total):
                last[0] = now
                with contextlib.suppress(Exception):
                    self.board.report.remote(index, done)
        return report


# ---------------------------------------------------------------------------------------- driver side
@dataclass
class _Slot:
    """One worker to start: where, with which resources."""

    node_id: str
    node: str
    num_cpus: float
    num_gpus: int
    threads: int | None
    soft: bool = False


@dataclass
class _Worker:
    slot: _Slot
    actor: object
    ready: object  # the ref of its info() call until it answered
    info: dict = field(default_factory=dict)
    started: float = 0.0


def connect(address: str):
    """Connect to Ray: ``auto`` (a running cluster, ``RAY_ADDRESS``), ``local`` (a private instance here) or ``HOST:PORT``.

    Returns ``(ray, owned)``: ``owned`` is True when this call connected (the
    caller disconnects with ``ray.shutdown()``), False when the process was
    already connected (that connection is used as it is).
    Raises:
        UsageError: an empty address. EnvironmentMissing: Ray not installed, or
        no cluster at the address (exit 5).
    """
    ray = _ray()
    if ray.is_initialized():
        return ray, False
    if not address.strip():
        raise UsageError("--ray needs an address: auto, local or HOST:PORT")
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    try:
        if address == "local":
            ray.init(include_dashboard=False, **quiet)
        else:
            ray.init(address=address, **quiet)
    except Exception as e:  # ConnectionError, AuthenticationError, ValueError for a malformed address
        what = " ".join(str(e).split())[:200]
        where = "any running Ray cluster (auto)" if address == "auto" else f"the Ray cluster at {address}"
        raise EnvironmentMissing(f"cannot connect to {where} ({type(e).__name__}: {what}): start one with "
                                 "`ray start --head`, or give its HOST:PORT, or use --ray local") from None
    return ray, True


def plan_workers(nodes: list[dict], backend: str, cpus_per_worker: int | None, threads: int | None) -> list[_Slot]:
    """The workers to start, from ``ray.nodes()``: one per GPU, else one per ``cpus_per_worker`` cores.

    Nodes with GPUs get GPU workers (``num_gpus=1`` and a share of the node's
    CPUs, at most 1) unless ``backend`` is ``onnxruntime``; other nodes get CPU
    workers of ``cpus_per_worker`` cores (default: all of the node's cores)
    whose ONNX Runtime uses ``threads`` threads (default: the worker's cores).
    Slots are interleaved across nodes, so the first N are spread out.
    Raises:
        UsageError: no node can hold one worker (e.g. ``cpus_per_worker`` above every node's cores).
    """
    per_node: list[list[_Slot]] = []
    most = 0
    for n in nodes:
        if not n.get("Alive"):
            continue
        res = n.get("Resources") or {}
        cpus, gpus = int(res.get("CPU", 0)), int(res.get("GPU", 0))
        most = max(most, cpus)
        nid, ip = n["NodeID"], n.get("NodeManagerAddress", n["NodeID"][:8])
        if gpus and backend != "onnxruntime":
            share = min(1.0, cpus / gpus)
            per_node.append([_Slot(nid, ip, share, 1, threads) for _ in range(gpus)])
        else:
            size = cpus_per_worker or cpus
            count = cpus // size if size else 0
            per_node.append([_Slot(nid, ip, size, 0, threads or size) for _ in range(count)])
    slots = [s for group in _interleave(per_node) for s in group]
    if not slots:
        if cpus_per_worker:
            raise UsageError(f"--ray-cpus-per-worker {cpus_per_worker} is more than any node has (at most {most} "
                             "cores): lower it")
        raise UsageError("the Ray cluster has no node with a CPU or a GPU for a worker: add nodes (`ray start`)")
    return slots


def _interleave(groups: list[list]) -> list[list]:
    out, i = [], 0
    while any(i < len(g) for g in groups):
        out.append([g[i] for g in groups if i < len(g)])
        i += 1
    return out


def _absolute(s: JobSpec) -> JobSpec:
    """The job with every path absolute (workers do not share the driver's working directory)."""
    ab = os.path.abspath
    base = ab(s.base) if s.base else (os.getcwd() if s.masks else None)
    return dataclasses.replace(s, video=ab(s.video), outputs={k: ab(v) for k, v in s.outputs.items()}, base=base,
                               manifest=ab(s.manifest) if s.manifest else None)


def _mask_files(s: JobSpec) -> list[str]:
    """The mask PNG paths a job's prompts name (resolved like :meth:`JobSpec.to_track_job`)."""
    paths: list[str] = []

    def note(p: str):
        paths.append(str(Path(s.base) / p) if s.base else os.path.abspath(p))
        return None

    with contextlib.suppress(Sam2TrtError):
        build_prompts([], [], s.masks, s.prompt_frame, load_mask=note)
    return paths


_FLAGS = {"out": "--out", "masks_dir": "--masks-dir", "json": "--json", "coco": "--coco"}


def probe(ray, nodes: list[dict], model: str, specs: list[JobSpec]) -> None:
    """Run :func:`probe_node` once on every alive node; raise on the first problem.

    Raises:
        UsageError: a node that cannot read the model folder, cannot write an output
            folder, or does not see an input that another node sees (names the node and the path).
        EnvironmentMissing: a node where the probe cannot run (e.g. sam2trt not installed
            there) or runs another sam2trt version, or no answer within ``PROBE_TIMEOUT_S``.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    inputs = sorted({p for s in specs for p in [s.video, *_mask_files(s)]})
    folders: dict[str, tuple[str, str]] = {}
    for s in specs:
        for kind, path in s.outputs.items():
            folders.setdefault(str(Path(path).parent), (_FLAGS[kind], path))
    outputs = sorted(folders.values(), key=lambda fp: fp[1])
    task = ray.remote(num_cpus=0, max_retries=0)(probe_node)
    alive = [n for n in nodes if n.get("Alive")]
    refs = {task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
        model, inputs, outputs): n for n in alive}
    ready, pending = ray.wait(list(refs), num_returns=len(refs), timeout=PROBE_TIMEOUT_S)
    if pending:
        ip = refs[pending[0]].get("NodeManagerAddress")
        raise EnvironmentMissing(f"node {ip} did not answer the storage probe within {PROBE_TIMEOUT_S:.0f} s: "
                                 "check the node (`ray status`)")
    results = []
    for ref in refs:
        node = refs[ref]
        try:
            results.append(ray.get(ref))
        except Exception as e:
            what = " ".join(str(e).split())[-200:]
            raise EnvironmentMissing(f"node {node.get('NodeManagerAddress')} cannot run sam2trt "
                                     f"({type(e).__name__}: {what}): install sam2trt[ray] on every node") from None
    for r in results:
        if r["version"] != sam2trt.__version__:
            raise EnvironmentMissing(f"node {r['node']} runs sam2trt {r['version']}, this driver "
                                     f"{sam2trt.__version__}: install the same version on every node")
        if r["model"]:
            raise UsageError(f"node {r['node']}: {r['model']} (the model folder must be at the same path on "
                             "every node)")
        if r["unwritable"]:
            raise UsageError(f"node {r['node']}: {r['unwritable'][0]} (every node writes outputs there: use "
                             "storage all nodes share)")
    seen = {}
    for r in results:
        missing = set(r["missing"])
        seen.update({p: r["node"] for p in inputs if p not in missing and p not in seen})
    for r in results:
        if r["missing"]:
            for p in r["missing"]:
                if p in seen:
                    raise UsageError(f"node {r['node']} does not see the input {p}, which node {seen[p]} sees: "
                                     "put inputs on storage all nodes share, at the same path")


_DEATH_NAMES = ("RayActorError", "WorkerCrashedError", "OutOfMemoryError", "NodeDiedError", "ObjectLostError",
                "LocalRayletDiedError", "TaskCancelledError")


def _worker_lost(ray, exc: BaseException) -> bool:
    """True for the errors that mean the worker (process, node) was lost, not that the job failed."""
    return any(isinstance(exc, getattr(ray.exceptions, n, ())) for n in _DEATH_NAMES)


def _death_message(exc: BaseException) -> str:
    """One short line for a lost worker (the Ray error's type and the start of its text)."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"


class ClusterProgress:
    """A rich progress bar on stderr (nothing when quiet): videos done/total and frames per second across the cluster."""

    def __init__(self, quiet: bool, total: int, workers: int):
        self.quiet, self.total, self.workers, self.bar, self.task = quiet, total, workers, None, None

    def __enter__(self):
        if not self.quiet:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self.bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                                TextColumn("videos, {task.fields[fps]} fps"), TimeElapsedColumn(),
                                TimeRemainingColumn(), console=Console(stderr=True), transient=False,
                                redirect_stdout=False)  # --json-summary lines print while the bar is live
            self.bar.__enter__()
            self.task = self.bar.add_task(f"tracking on {self.workers} Ray workers", total=self.total, fps="-")
        return self

    def update(self, videos_done: int, frames: int, seconds: float) -> None:
        """``videos_done`` of the total finished; ``frames`` tracked in ``seconds`` by all workers together."""
        if self.bar is not None:
            fps = f"{frames / seconds:.2f}" if seconds > 0 else "-"
            self.bar.update(self.task, completed=videos_done, fps=fps)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)


def run_on_ray(specs: list[JobSpec], model: str | os.PathLike, *, address: str = "auto", backend: str = "auto",
               threads: int | None = None, cpus_per_worker: int | None = None, retries: int = DEFAULT_RETRIES,
               fill_hole_area: int | None = None, skip_existing: bool = False, job_options: dict | None = None,
               on_done: Callable[[RaySummary], None] | None = None,
               on_start: Callable[[int, JobSpec, dict], None] | None = None, quiet: bool = True) -> list[RaySummary]:
    """Run the jobs on a Ray cluster's workers (see the module docstring); the Ray twin of :func:`~sam2trt.batch.run_batch`.

    Args:
        specs: from :func:`~sam2trt.batch.plan_jobs` (paths are made absolute here).
        model: the model folder, at the same path on every node.
        address: ``auto``, ``local`` or ``HOST:PORT`` (see :func:`connect`).
        backend, threads: as ``sam2trt track`` (``threads`` per worker; default: its cores).
        cpus_per_worker: cores per worker on nodes without GPUs (default: all of a node's cores).
        retries: further attempts of a job whose worker was lost (>= 0).
        fill_hole_area, skip_existing, job_options: as :func:`~sam2trt.batch.run_batch`.
        on_done: called with each job's summary as soon as it is known (in finishing order).
        on_start: called as ``on_start(index, spec, worker)`` when a job is handed to a worker
            (``worker``: its ``node``, ``gpu``, ``pid``, ``node_id``).
        quiet: no progress bar.
    Returns:
        The summaries in job order (jobs never started after an interrupt are left out).
    Raises:
        UsageError: probe failures, no room for a worker. EnvironmentMissing: no Ray,
        no cluster. Interrupted: SIGINT/SIGTERM on the driver (after the running jobs
        closed their outputs).
    """
    if retries < 0:
        raise UsageError(f"--retries {retries} must be >= 0")
    if cpus_per_worker is not None and cpus_per_worker < 1:
        raise UsageError(f"--ray-cpus-per-worker {cpus_per_worker} must be at least 1")
    originals = list(specs)
    specs = [_absolute(s) for s in originals]
    model = os.path.abspath(model)
    ray, owned = connect(address)
    workers: list[_Worker] = []
    board = None
    try:
        nodes = ray.nodes()
        slots = plan_workers(nodes, backend, cpus_per_worker, threads)
        probe(ray, nodes, model, specs)
        job_args = {"fill_hole_area": fill_hole_area, "skip_existing": skip_existing, "job_options": job_options or {}}
        if not quiet:
            board = ray.remote(num_cpus=0, max_restarts=0)(ProgressBoard).remote()
        return _Dispatcher(ray, specs, originals, model, backend, job_args, board, retries, on_done, on_start,
                           quiet, workers).run(slots[:len(specs)])
    finally:
        for w in workers:
            with contextlib.suppress(Exception):
                ray.kill(w.actor, no_restart=True)
        if board is not None:
            with contextlib.suppress(Exception):
                ray.kill(board, no_restart=True)
        if owned:
            with contextlib.suppress(Exception):
                ray.shutdown()


class _Dispatcher:
    """The driver's loop: start workers, hand out jobs, retry lost ones, stream results, stop on a signal."""

    def __init__(self, ray, specs, originals, model, backend, job_args, board, retries, on_done, on_start, quiet,
                 workers):
        self.ray, self.specs, self.originals, self.model, self.backend = ray, specs, originals, model, backend
        self.job_args, self.board, self.retries, self.on_done, self.on_start = job_args, board, retries, on_done, on_start
        self.quiet, self.workers = quiet, workers
        self.actor_class = ray.remote(max_restarts=0, max_task_retries=0)(TrackWorker)
        self.queue = list(range(len(specs)))
        self.attempts = [0] * len(specs)
        self.results: dict[int, RaySummary] = {}
        self.running: dict = {}  # ref -> (worker, index)
        self.idle: list[_Worker] = []
        self.starting: dict = {}  # ready ref -> worker
        self.frames_done = 0
        self.live: dict[int, int] = {}
        self.board_ref = None
        self.last_death: str | None = None
        self.unusable: RaySummary | None = None  # the last worker's own error (engines, model)
        self.stopping = False
        self.board_polled = 0.0
        self.local_node = ray.get_runtime_context().get_node_id()

    # ---------------------------------------------------------------- workers
    def start(self, slot: _Slot) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        actor = self.actor_class.options(
            num_cpus=slot.num_cpus, num_gpus=slot.num_gpus,
            scheduling_strategy=NodeAffinitySchedulingStrategy(slot.node_id, soft=slot.soft),
        ).remote(self.model, self.backend, slot.threads, slot.num_gpus > 0, self.job_args, self.board)
        w = _Worker(slot, actor, actor.info.remote(), started=time.monotonic())
        self.workers.append(w)
        self.starting[w.ready] = w

    def lose(self, w: _Worker, exc: BaseException | None) -> None:
        """Forget a dead worker and start a replacement (same resources, preferably the same node)."""
        if exc is not None:
            self.last_death = _death_message(exc)
        with contextlib.suppress(Exception):
            self.ray.kill(w.actor, no_restart=True)
        if not self.stopping and (self.queue or self.running):
            self.start(dataclasses.replace(w.slot, soft=True))

    # ---------------------------------------------------------------- results
    def finish(self, i: int, summary: RaySummary) -> None:
        orig = self.originals[i]
        summary.video = orig.video  # as the user gave it, like the single-process summary
        summary.outputs = {k: orig.outputs.get(k, v) for k, v in summary.outputs.items()}
        self.results[i] = summary
        self.frames_done += summary.frames
        self.live.pop(i, None)
        if self.on_done:
            self.on_done(summary)

    def fail(self, i: int, err: Sam2TrtError, worker: dict | None) -> None:
        status = "interrupted" if isinstance(err, Interrupted) else "error"
        self.finish(i, RaySummary(video=self.specs[i].video, status=status, error=str(err),
                                  exit_code=err.exit_code, worker=worker, attempts=self.attempts[i],
                                  direction=self.specs[i].direction))

    def dispatch(self) -> None:
        while self.queue and self.idle:
            i, w = self.queue.pop(0), self.idle.pop(0)
            self.attempts[i] += 1
            if self.on_start:
                self.on_start(i, self.originals[i], dict(w.info))
            self.running[w.actor.run.remote(i, self.specs[i], self.attempts[i])] = (w, i)

    def collect(self, ref) -> None:
        """Take a finished job's result: record it, or requeue the job when its worker was lost."""
        w, i = self.running.pop(ref)
        stopping = self.stopping
        try:
            summary = self.ray.get(ref)
        except Exception as e:
            if not _worker_lost(self.ray, e):  # a bug in the job code: its result, not retried
                text = " ".join(str(e).split())[-300:]
                self.fail(i, Sam2TrtError(f"unexpected {type(e).__name__} in a Ray worker: {text}: please report it"),
                          w.info or None)
                self.idle.append(w)
                return
            self.lose(w, e)
            if stopping:
                self.fail(i, Interrupted(f"interrupted at {self.specs[i].video}; its worker was lost while stopping"),
                          w.info or None)
            elif self.attempts[i] <= self.retries:
                self.queue.insert(0, i)
                self.live.pop(i, None)
            else:
                self.fail(i, RuntimeFailure(f"{self.specs[i].video}: its Ray worker was lost {self.attempts[i]} times "
                                            f"(last: {self.last_death}): check the nodes' memory and logs, or "
                                            "raise --retries"), w.info or None)
            return
        if summary.worker_unusable:
            self.retire(w, summary)
            if not stopping and (self.idle or self.starting or self.running):
                self.queue.insert(0, i)  # another worker may be able to run it
                self.attempts[i] -= 1  # this worker never started the job
                return
            self.finish(i, summary)
            return
        if summary.status == "interrupted" and not stopping and self.attempts[i] <= self.retries:
            # a signal the driver did not send (node shutdown, preemption): like a lost worker
            self.last_death = summary.error
            self.queue.insert(0, i)
            self.idle.append(w)
            return
        self.idle.append(w)
        self.finish(i, summary)

    def retire(self, w: _Worker, summary: RaySummary) -> None:
        """Stop using a worker that cannot run any job (no matching engines, unreadable model); no replacement."""
        self.unusable = summary
        gpu = w.info.get("gpu")
        print(f"warning: the Ray worker on node {w.info.get('node')}{'' if gpu is None else f' GPU {gpu}'} cannot "
              f"track, no more jobs go to it: {summary.error}", file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):
            self.ray.kill(w.actor, no_restart=True)

    def poll_board(self) -> None:
        if self.board is None:
            return
        if self.board_ref is None:
            if time.monotonic() - self.board_polled < PROGRESS_INTERVAL_S:
                return
            self.board_polled = time.monotonic()
            self.board_ref = self.board.take.remote()
            return
        ready, _ = self.ray.wait([self.board_ref], timeout=0)
        if ready:
            with contextlib.suppress(Exception):
                snapshot = self.ray.get(self.board_ref)
                running = {i for _, i in self.running.values()}
                self.live = {i: n for i, n in snapshot.items() if i in running}
            self.board_ref = None

    # ---------------------------------------------------------------- the loop
    def run(self, slots: list[_Slot]) -> list[RaySummary]:
        for slot in slots:
            self.start(slot)
        t0 = time.monotonic()
        with signal_guard() as guard, ClusterProgress(self.quiet, len(self.specs), len(slots)) as bar:
            try:
                while self.queue or self.running:
                    if guard.pending:
                        raise KeyboardInterrupt
                    self.dispatch()
                    if not self.running and not self.idle and not self.starting:
                        self.give_up("no Ray worker is left")
                        break
                    refs = list(self.running) + list(self.starting)
                    ready, _ = self.ray.wait(refs, num_returns=1, timeout=0.25)
                    for ref in ready:
                        if ref in self.starting:
                            self.started(self.starting.pop(ref))
                        elif ref in self.running:
                            self.collect(ref)
                    if not self.running and not self.idle and self.starting and self.queue:
                        oldest = min(w.started for w in self.starting.values())
                        if time.monotonic() - oldest > WORKER_START_TIMEOUT_S:
                            self.give_up(f"no Ray worker started within {WORKER_START_TIMEOUT_S:.0f} s")
                            break
                    self.poll_board()
                    bar.update(len(self.results), self.frames_done + sum(self.live.values()), time.monotonic() - t0)
            except KeyboardInterrupt:
                with guard.disarmed():
                    self.stop()
                bar.update(len(self.results), self.frames_done, time.monotonic() - t0)
                stopped = sum(1 for s in self.results.values() if s.status == "interrupted")
                raise Interrupted(f"interrupted: {len(self.results) - stopped} of {len(self.specs)} videos finished, "
                                  f"{stopped} stopped with outputs up to their last frame, "
                                  f"{len(self.specs) - len(self.results)} not started") from None
            bar.update(len(self.results), self.frames_done, time.monotonic() - t0)
        return [self.results[i] for i in sorted(self.results)]

    def started(self, w: _Worker) -> None:
        try:
            w.info = self.ray.get(w.ready)
        except Exception as e:  # the worker could not start (its node left, or its process died)
            self.workers.remove(w)
            self.last_death = _death_message(e)
            return
        self.idle.append(w)

    def give_up(self, why: str) -> None:
        """No worker can run the queued jobs: each fails with the last worker's own error (engines, model:
        exit 5 or 3), else a RuntimeFailure (exit 4)."""
        if self.unusable is not None:
            for i in self.queue:
                u = self.unusable
                self.finish(i, RaySummary(video=self.specs[i].video, status="error", error=u.error,
                                          exit_code=u.exit_code, worker=u.worker, attempts=self.attempts[i],
                                          direction=self.specs[i].direction))
            self.queue = []
            return
        last = f" (last loss: {self.last_death})" if self.last_death else ""
        for i in self.queue:
            self.fail(i, RuntimeFailure(f"{self.specs[i].video}: not tracked, {why}{last}: check the cluster "
                                        "(`ray status`) and run again with --skip-existing"), None)
        self.queue = []

    def stop(self) -> None:
        """SIGINT each running job's worker, wait for their summaries (status interrupted), report them."""
        self.queue, self.stopping = [], True
        for w, _ in self.running.values():
            self.interrupt(w)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while self.running and time.monotonic() < deadline:
            ready, _ = self.ray.wait(list(self.running), num_returns=1, timeout=0.25)
            for ref in ready:
                self.collect(ref)
        for ref, (w, i) in list(self.running.items()):
            self.running.pop(ref)
            with contextlib.suppress(Exception):
                self.ray.kill(w.actor, no_restart=True)
            self.fail(i, Interrupted(f"interrupted at {self.specs[i].video}; its worker did not stop within "
                                     f"{STOP_TIMEOUT_S:.0f} s and was killed (outputs stay marked incomplete, if any)"),
                      w.info or None)

    def interrupt(self, w: _Worker) -> None:
        """SIGINT to a worker's process: directly on this node, else by a task pinned to its node."""
        pid, node_id = w.info.get("pid"), w.info.get("node_id")
        if not pid:
            return
        if node_id == self.local_node:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGINT)
                return
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        with contextlib.suppress(Exception):
            self.ray.remote(num_cpus=0, max_retries=0)(signal_process).options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote(pid, signal.SIGINT)

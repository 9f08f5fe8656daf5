"""Where training runs, decided once: the device, the precision and the process group (issue 17).

``torchrun --nproc_per_node=N -m pipeline run R.yaml`` starts N processes and sets RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT; a plain ``python -m pipeline run`` sets none of them
and is world size 1. ``session(train_cfg)`` reads that environment and ``train.device`` /
``train.precision``, joins the process group (NCCL on CUDA, gloo on CPU, with ``train.timeout_s``
so a rank that stops answering fails the run instead of hanging it) and makes the result
``current()``. Stages and the training loop ask ``current()``; nothing else reads the environment
or calls torch.distributed, so there is one code path for 1 and for N processes.

Rank 0 alone writes files; the other ranks join the training stages and wait for rank 0 to
finish the rest (``on_main``). Processes other than rank 0 are quiet: their progress and prints
would repeat rank 0's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
from datetime import timedelta
from typing import Any, Callable, Iterator, TypeVar

import torch
import torch.distributed as dist

from pipeline.errors import PipelineError

T = TypeVar("T")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclasses.dataclass(frozen=True)
class Placement:
    """One process's share of a run: its device, the training precision, its rank among ``world_size``."""

    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None  # "nccl" | "gloo" under torchrun, None alone
    sync_bn: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self, precision: str | None = None) -> torch.autocast:
        """Mixed precision for a training step (``precision`` overrides the run's, e.g. a frozen teacher's)."""
        precision = precision or self.precision
        return torch.autocast(self.device.type, dtype=DTYPES[precision], enabled=precision != "fp32")

    def grad_scaler(self, precision: str | None = None) -> torch.amp.GradScaler:
        """Loss scaling for fp16 (its narrow exponent underflows small gradients); a no-op otherwise."""
        return torch.amp.GradScaler(self.device.type, enabled=(precision or self.precision) == "fp16")

    def record(self) -> dict[str, Any]:
        """What a training stage's manifest records about where it ran."""
        return {"world_size": self.world_size, "backend": self.backend, "device": str(self.device),
                "precision": self.precision, "sync_bn": self.sync_bn and self.distributed}


_current = Placement()


def current() -> Placement:
    """The placement of the running stage (one CPU process in fp32 outside ``session``)."""
    return _current


def torchrun_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) as torchrun sets them; (0, 1, 0) for a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def resolve_device(spec: str, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """``train.device`` → a torch device; under torchrun each process takes ``cuda:LOCAL_RANK``."""
    if spec == "cpu" or (spec == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise PipelineError(f"train.device: '{spec}' asked, but torch sees no CUDA device "
                            f"(torch {torch.__version__}, torch.cuda.is_available() is False); use auto or cpu")
    if ":" in spec:
        if world_size > 1:
            raise PipelineError(f"train.device: '{spec}' names one GPU but torchrun started {world_size} processes; "
                                "use cuda or auto (process i takes cuda:LOCAL_RANK)")
        index = int(spec.split(":")[1])
    else:
        index = local_rank
    if index >= torch.cuda.device_count():
        if ":" not in spec:  # torchrun started more processes on this node than it has GPUs
            raise PipelineError(f"train.device: {spec}: process LOCAL_RANK {index} needs cuda:{index}, but this node has "
                                f"{torch.cuda.device_count()} CUDA device(s); start at most that many "
                                "(torchrun --nproc_per_node) or set train.device: cpu")
        raise PipelineError(f"train.device: cuda:{index} asked, but there are {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware (a GPU with bf16, a CPU with AVX512-BF16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    return any(getattr(cpu, probe, lambda: False)() for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def resolve_precision(spec: str, device: torch.device) -> str:
    """``auto`` → bf16 where the device runs it natively, else fp32; fp16 on a CPU is allowed but slow."""
    if spec != "auto":
        return spec
    return "bf16" if native_bf16(device) else "fp32"


@contextlib.contextmanager
def session(train_cfg) -> Iterator[Placement]:
    """Join the process group torchrun describes (if any) and make this process's placement current."""
    global _current
    rank, world, local_rank = torchrun_env()
    device = resolve_device(train_cfg.device, local_rank, world)
    if train_cfg.sync_bn and world > 1 and device.type != "cuda":
        raise PipelineError("train.sync_bn: torch's SyncBatchNorm runs on CUDA devices only; "
                            "set train.sync_bn: false for CPU processes")
    owned = False
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, timeout=timedelta(seconds=train_cfg.timeout_s),
                                **({"device_id": device} if device.type == "cuda" else {}))
        owned = True
    placement = Placement(device, train_cfg.precision, rank, world, local_rank,
                          dist.get_backend() if world > 1 else None, train_cfg.sync_bn)
    previous, _current = _current, placement
    try:
        with _quiet() if not placement.is_main else contextlib.nullcontext():
            yield placement
    except RuntimeError as exc:
        line = describe_failure(exc) if placement.distributed else None
        if line is None:
            raise
        raise PeersLost(line) from None
    finally:
        _current = previous
        if owned:
            dist.destroy_process_group()


@contextlib.contextmanager
def alone() -> Iterator[Placement]:
    """Rank 0 going on by itself (export, target, benchmark, report) after the other ranks left:
    no collectives, so nothing waits for processes that have finished."""
    global _current
    previous = _current
    _current = dataclasses.replace(previous, rank=0, world_size=1, backend=None)
    try:
        yield _current
    finally:
        _current = previous


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence a non-main rank's progress bars, console lines and prints (errors still reach stderr)."""
    from pipeline.console import console

    was_quiet, old_env = console.quiet, os.environ.get("TQDM_DISABLE")
    console.quiet, os.environ["TQDM_DISABLE"] = True, "1"
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        console.quiet = was_quiet
        if old_env is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old_env


class PeerFailed(PipelineError):
    """Raised on the other ranks when rank 0 failed inside ``on_main``: rank 0 prints the line, they stay silent."""

    exit_code = 1
    silent = True


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only; every rank returns its (picklable) result.

    The other ranks wait (a collective, bounded by ``train.timeout_s``). If ``fn`` fails on rank 0,
    rank 0 re-raises and the others raise ``PeerFailed`` quietly, so the run prints one line.
    """
    place = current()
    if not place.distributed:
        return fn()
    box: list[Any] = [None]
    error: BaseException | None = None
    if place.is_main:
        try:
            box[0] = ("ok", fn())
        except BaseException as exc:  # noqa: BLE001 (re-raised below, after the others are told)
            error = exc
            box[0] = ("failed", f"{type(exc).__name__}: {exc}", getattr(exc, "exit_code", 1))
    dist.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    if box[0][0] == "failed":
        exc = PeerFailed(f"rank 0 failed ({box[0][1]})")
        exc.exit_code = box[0][2]
        raise exc
    return box[0][1]


def all_gather(obj: T) -> list[T]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` alone."""
    place = current()
    if not place.distributed:
        return [obj]
    out: list[Any] = [None] * place.world_size
    dist.all_gather_object(out, obj)
    return out


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sum over the ranks (epoch totals such as images seen and loss)."""
    place = current()
    if not place.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=place.device if place.backend == "nccl" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


class PeersLost(PipelineError):
    """A collective failed: another rank died (its own error line is above) or stopped answering."""

    exit_code = 1


def describe_failure(exc: BaseException) -> str | None:
    """One line for a collective that failed because another rank died or stopped answering; None otherwise.

    torch raises DistError subclasses (NCCL, timeouts) but gloo a plain RuntimeError naming itself."""
    text = str(exc).strip()
    if not (isinstance(exc, dist.DistError) or any(k in text for k in ("gloo", "Connection closed by peer", "NCCL"))):
        return None
    first = re.sub(r"^\[[^\]]*\]\s*", "", (text.splitlines() or [type(exc).__name__])[0])  # drop "[…/pair.cc:561]"
    first = first.split(". This is typically")[0][:160]
    return (f"rank {current().rank}: lost the other training processes ({first}); another rank failed "
            "(its error is above) or stopped answering for train.timeout_s")

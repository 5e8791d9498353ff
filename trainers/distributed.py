"""The processes of one training job: who this process is, its device, the process group, and the few
collectives the trainer needs.

A job is launched when the environment says so:

* ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``: the deepspeed launcher,
  ``torchrun`` (``python -m torch.distributed.run``) and DeepSpeed's MPICH / Intel MPI runners set them;
* an MPI launcher's own variables (DeepSpeed's OpenMPI and MVAPICH runners start the script with
  ``mpirun`` directly): ``OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK}`` (OpenMPI), ``PMI_RANK``/``PMI_SIZE``
  with ``MPI_LOCALRANKID`` (MPICH, Intel MPI), ``MV2_COMM_WORLD_{RANK,SIZE,LOCAL_RANK}`` (MVAPICH). They are
  copied to ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; ``MASTER_ADDR``/``MASTER_PORT`` must then be exported to
  every process, or (DeepSpeed engine) mpi4py installed for DeepSpeed to find them.

Without either, the process is a job of one and nothing here communicates. The device is
``cuda:LOCAL_RANK`` where CUDA is available, else the CPU.

Collectives run on the process group's backend: gloo on the CPU, NCCL on CUDA (torch engine), or whatever
``deepspeed.init_distributed`` picks for its accelerator (NCCL on CUDA; gloo, or oneCCL where installed, on
the CPU). Every function taking a :class:`World` is a no-op (or the identity) in a job of one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import pickle
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import torch
from torch import Tensor, nn

from planner.errors import LaunchError, PeerError, PlannerError

__all__ = [
    "LaunchError",
    "PeerError",
    "World",
    "agree",
    "all_gather_objects",
    "average_",
    "average_gradients_",
    "barrier",
    "broadcast_",
    "broadcast_buffers_",
    "broadcast_object",
    "connect",
    "launched",
    "sum_floats",
    "world_from_env",
]

T = TypeVar("T")

# (rank, size, local rank) variables of the MPI launchers DeepSpeed's runners use, in the order tried.
_MPI_VARS = (
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),  # OpenMPI
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),  # MPICH / Intel MPI (Hydra)
    ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_LOCAL_RANK"),  # MVAPICH
)


@dataclass(frozen=True)
class World:
    """This process's place in the job.

    Attributes:
        rank: this process, ``0 <= rank < size``; rank 0 writes the run folder.
        size: the number of processes (1: not launched).
        local_rank: this process on its machine (which GPU it drives).
        device: where its model and batches live (``cuda:local_rank``, else the CPU).
        comm_device: where the backend takes tensors (the GPU for NCCL, else the CPU); set by :func:`connect`.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    comm_device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run folder (rank 0)."""
        return self.rank == 0


def launched(env: Mapping[str, str] | None = None) -> bool:
    """Whether a launcher started this process as one of several (``WORLD_SIZE`` or an MPI world size above 1;
    one that is not a number counts too, for :func:`world_from_env` to report). ``WORLD_SIZE=1``, which a job
    of one leaves in the environment of the processes it starts, does not."""
    env = os.environ if env is None else env
    sizes = [env.get("WORLD_SIZE"), *(env.get(size) for _, size, _ in _MPI_VARS)]
    return any(s is not None and (not s.strip().isdigit() or int(s) > 1) for s in sizes)


def _int(env: Mapping[str, str], name: str) -> int:
    value = env[name]
    try:
        return int(value)
    except ValueError:
        raise LaunchError(f"environment: {name}={value!r} is not an integer (set by the launcher; unset it to train "
                          "in one process)") from None  # fmt: skip


def world_from_env(env: MutableMapping[str, str] | None = None, *, cuda: bool | None = None) -> World:
    """This process's :class:`World` from the launcher's environment (see the module docstring).

    Variables of an MPI launcher are copied into ``env`` as ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (for
    torch and DeepSpeed to find); nothing else is changed.

    Args:
        env: the environment (default ``os.environ``).
        cuda: whether CUDA devices are used (default: ``torch.cuda.is_available()``).

    Raises:
        LaunchError: a variable that is not an integer, ``RANK`` outside ``[0, WORLD_SIZE)``, a launched job
            without ``RANK`` or (on CUDA) ``LOCAL_RANK``, or a ``LOCAL_RANK`` without its GPU.

    Example:
        >>> world_from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}, cuda=False)
        World(rank=1, size=2, local_rank=1, device=device(type='cpu'), comm_device=device(type='cpu'))
    """
    env = os.environ if env is None else env
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if "WORLD_SIZE" not in env:
        for rank_var, size_var, local_var in _MPI_VARS:
            if size_var in env:
                env["WORLD_SIZE"] = str(_int(env, size_var))
                if rank_var in env:
                    env.setdefault("RANK", str(_int(env, rank_var)))
                if local_var in env:
                    env.setdefault("LOCAL_RANK", str(_int(env, local_var)))
                break
    size = _int(env, "WORLD_SIZE") if "WORLD_SIZE" in env else 1
    if size < 1:
        raise LaunchError(f"environment: WORLD_SIZE={size} must be at least 1")
    if size == 1:
        local = _int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0
        return World(0, 1, local, _device(local, cuda))
    if "RANK" not in env:
        raise LaunchError(f"environment: WORLD_SIZE={size} but RANK is not set; start the job with a launcher that "
                          "sets both (deepspeed, torchrun) or unset WORLD_SIZE to train in one process")  # fmt: skip
    rank = _int(env, "RANK")
    if not 0 <= rank < size:
        raise LaunchError(f"environment: RANK={rank} is outside 0..{size - 1} (WORLD_SIZE={size})")
    if "LOCAL_RANK" in env:
        local = _int(env, "LOCAL_RANK")
    elif cuda:
        raise LaunchError("environment: LOCAL_RANK is not set, so this process cannot tell which GPU is its own; "
                          "start the job with deepspeed or torchrun, or export LOCAL_RANK")  # fmt: skip
    else:
        local = 0
    return World(rank, size, local, _device(local, cuda))


def _device(local_rank: int, cuda: bool) -> torch.device:
    if not cuda:
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if not 0 <= local_rank < count:
        raise LaunchError(f"environment: LOCAL_RANK={local_rank} but {count} CUDA device(s) are visible; start at "
                          "most one process per GPU (deepspeed --num_gpus N, torchrun --nproc-per-node N)")  # fmt: skip
    return torch.device("cuda", local_rank)


def connect(world: World, engine: Literal["torch", "deepspeed"]) -> World:
    """Joins the job's process group (once per process) and returns ``world`` with its ``comm_device``.

    The torch engine initializes torch's group from the environment (NCCL on CUDA, gloo on the CPU);
    DeepSpeed's engine lets ``deepspeed.init_distributed`` do it (its accelerator's backend, and MPI discovery
    where the launcher set no ``MASTER_ADDR``), so that ``deepspeed.initialize`` later finds it ready.

    Raises:
        LaunchError: no ``MASTER_ADDR``/``MASTER_PORT`` and no way to discover them.
    """
    if world.size == 1:
        return world
    import torch.distributed as dist

    if world.device.type == "cuda":
        torch.cuda.set_device(world.device)
    if not dist.is_initialized():
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
        mpi_discovery = engine == "deepspeed" and importlib.util.find_spec("mpi4py") is not None
        if missing and not mpi_discovery:
            raise LaunchError(f"environment: {' and '.join(missing)} not set; export the address and a free port of "
                              "rank 0's machine to every process (mpirun -x MASTER_ADDR=host0 -x MASTER_PORT=29500), "
                              "or start the job with deepspeed or torchrun, which set them")  # fmt: skip
        if engine == "deepspeed":
            import deepspeed

            deepspeed.init_distributed()
        else:
            dist.init_process_group("nccl" if world.device.type == "cuda" else "gloo")
    if dist.get_world_size() != world.size or dist.get_rank() != world.rank:
        raise LaunchError(f"environment: RANK={world.rank}, WORLD_SIZE={world.size}, but the process group has rank "
                          f"{dist.get_rank()} of {dist.get_world_size()}")  # fmt: skip
    nccl = dist.get_backend() == "nccl"
    return dataclasses.replace(world, comm_device=world.device if nccl else torch.device("cpu"))


def barrier(world: World) -> None:
    """Waits until every process got here."""
    if world.size > 1:
        import torch.distributed as dist

        dist.barrier()


def all_gather_objects(world: World, obj: T) -> list[T]:
    """Every process's ``obj`` (picklable), by rank."""
    if world.size == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(world: World, obj: T) -> T:
    """Rank 0's ``obj`` on every process."""
    if world.size == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree(world: World, fn: Callable[[], T]) -> T:
    """Runs ``fn`` in every process; if it raised a :class:`PlannerError` in any, every process raises.

    The lowest rank that failed raises its own error; the others raise a :class:`PeerError` with its message
    and exit code. So one process's bad input stops the whole job at once instead of leaving the others
    waiting in a collective. ``fn`` must not itself communicate.
    """
    error: PlannerError | None = None
    result: T | None = None
    try:
        result = fn()
    except PlannerError as err:
        error = err
    if world.size == 1:
        if error is not None:
            raise error
        return result  # type: ignore[return-value]
    outcomes = all_gather_objects(world, None if error is None else (str(error), error.exit_code))
    failed = [(rank, o) for rank, o in enumerate(outcomes) if o is not None]
    if failed:
        rank, (message, code) = failed[0]
        if rank == world.rank and error is not None:
            raise error
        peer = PeerError(message)
        peer.exit_code = code
        raise peer
    return result  # type: ignore[return-value]


def sum_floats(world: World, values: Sequence[float]) -> list[float]:
    """The sum over processes of each value (in float64: a sum of float32 values of up to 2^29 processes is
    exact)."""
    if world.size == 1:
        return [float(v) for v in values]
    import torch.distributed as dist

    t = torch.tensor(list(values), dtype=torch.float64, device=world.comm_device)
    dist.all_reduce(t)
    return t.tolist()


def _flat_groups(tensors: Sequence[Tensor]) -> dict[torch.dtype, list[Tensor]]:
    groups: dict[torch.dtype, list[Tensor]] = {}
    for t in tensors:
        groups.setdefault(t.dtype, []).append(t)
    return groups


def broadcast_(world: World, tensors: Sequence[Tensor]) -> None:
    """Copies rank 0's values of ``tensors`` into every process's, one broadcast per dtype (bools travel as
    bytes: gloo has no bool)."""
    if world.size == 1:
        return
    import torch.distributed as dist

    for dtype, group in _flat_groups(tensors).items():
        wire = torch.uint8 if dtype == torch.bool else dtype
        flat = torch.cat([b.detach().reshape(-1).to(world.comm_device, wire) for b in group])
        dist.broadcast(flat, src=0)
        offset = 0
        for b in group:
            b.data.copy_(flat[offset : offset + b.numel()].reshape(b.shape).to(b.device, dtype))
            offset += b.numel()


def broadcast_buffers_(world: World, module: nn.Module) -> None:
    """Copies rank 0's buffers (quantizer observers, N:M masks, flags, BatchNorm statistics) to every process."""
    broadcast_(world, list(module.buffers()))


def average_gradients_(world: World, params: Sequence[nn.Parameter]) -> None:
    """Replaces each parameter's gradient by its mean over the processes (sum, then divide).

    A parameter without a gradient in every process keeps ``grad`` None, as in one process (a projection
    head the loss does not use, say); one with a gradient in some processes only counts zeros for the
    others. One all-reduce of the "has a gradient" flags, then one per dtype of the gradients.
    """
    if world.size == 1:
        return
    import torch.distributed as dist

    flags = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=world.comm_device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    used = [p for p, flag in zip(params, flags.tolist()) if flag]
    for p in used:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    for group in _flat_groups([p.grad for p in used]).values():
        flat = torch.cat([g.reshape(-1) for g in group]).to(world.comm_device)
        dist.all_reduce(flat)
        flat /= world.size
        offset = 0
        for g in group:
            g.copy_(flat[offset : offset + g.numel()].reshape(g.shape))
            offset += g.numel()


def _fingerprint(indices: Sequence[int]) -> int:
    digest = hashlib.sha256(pickle.dumps(sorted(indices))).digest()
    return int.from_bytes(digest[:7], "little")  # 56 bits: exact in int64 and after negation


def average_(world: World, indices: Sequence[int], values: Sequence[Tensor]) -> list[Tensor]:
    """Averages over processes the values of tensors that each process identifies by the same indices.

    For parameters a forward pass changed in place (BiT's ``alpha``, set from the batch): each process set
    them from its own batch. Every process calls this every step (with no indices where nothing changed); the
    index sets are compared first (one small all-reduce), and the values, float32 or wider, are summed in one
    buffer and divided by the number of processes.

    Raises:
        RuntimeError: the processes changed different tensors (in every process, so none is left waiting).
    """
    if world.size == 1:
        return [v.clone() for v in values]
    import torch.distributed as dist

    key = [len(indices), _fingerprint(indices)]
    check = torch.tensor(key + [-k for k in key], dtype=torch.int64, device=world.comm_device)
    dist.all_reduce(check, op=dist.ReduceOp.MAX)
    high, low = check[:2].tolist(), [-k for k in check[2:].tolist()]
    if high != low:
        raise RuntimeError(f"rank {world.rank}: the forward pass changed parameters in place in some processes but "
                           "not in others (a data-dependent update that cannot be averaged)")  # fmt: skip
    if not values:
        return []
    flat = torch.cat([v.detach().reshape(-1).to(world.comm_device, torch.float64) for v in values])
    dist.all_reduce(flat)
    flat /= world.size
    out, offset = [], 0
    for v in values:
        out.append(flat[offset : offset + v.numel()].reshape(v.shape).to(v.device, v.dtype))
        offset += v.numel()
    return out

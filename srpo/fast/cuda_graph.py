"""One training update captured as a CUDA graph and replayed: the fast path's GPU half.

A small-MLP update (random draws, forward, backward, optimizer, target EMA, metric
sums) is a few hundred kernels of microseconds each, so on a GPU the eager loop is
bound by the host launching them, not by the arithmetic; batching seeds
(:mod:`srpo.fast.seed_batch`) gives each launch more work, and a CUDA graph launches the
whole update as one unit.

What capture asks of an update, and how the seed-batched stages provide it:

- fixed addresses: parameters, optimizer state, data and metric sums
  (:class:`srpo.stage_loop.RunningMeans`) are updated in place; gradients are allocated
  once, during capture, in the graph's memory pool, and every replay overwrites them;
- nothing on the host: no ``.item()``, the optimizer ``capturable`` with its step count
  and learning rate as device tensors (:func:`capturable_optimizer`); a learning-rate
  schedule steps outside the graph and writes the device tensor (:class:`DeviceLr`);
- the seeds' generators registered with the graph, so each replay draws fresh numbers
  and advances each generator as the eager update would.

The first ``warmup`` updates run eagerly on a side stream (cuBLAS handles, autograd's
streams and lazily allocated state are made then, outside the capture); they are real
updates of the run, so a graphed run does the same updates as an eager one.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor


class CaptureTurns:
    """Warm-up and capture of the updates of several threads, one thread at a time.

    Two stages trained side by side, each in its own thread on its own stream
    (:func:`srpo.fast.seed_batch.side_by_side`), replay their graphs concurrently, but must not
    set up, warm up or capture at the same time: model construction forks the global RNG,
    ``torch.compile`` is not thread-safe while it compiles (the first warm-up call), and a
    capture must not record the other thread's launches. A thread holds its turn
    (:meth:`turn`) from its start until its first capture (or its end: on a CPU, where
    nothing is captured, the threads run one after the other); until every thread has had
    its turn, each graphed call of a thread that has captured waits for the turn as well.
    """

    def __init__(self, threads: int) -> None:
        self._gate = threading.RLock()
        self._waiting = threads
        self._local = threading.local()

    @property
    def settled(self) -> bool:
        """Every thread has captured (or finished): replays need no turn."""
        return self._waiting == 0

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """The calling thread's turn, from here until its first capture or the block's end."""
        self._gate.acquire()
        self._local.holding = True
        try:
            yield
        finally:
            self.end_turn()

    def end_turn(self) -> None:
        if getattr(self._local, "holding", False):
            self._local.holding = False
            self._waiting -= 1
            self._gate.release()

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        """One graphed call before every thread has captured: run it in the turn."""
        with self._gate:
            yield


class GraphedUpdate:
    """``update()`` run eagerly ``warmup`` times, then captured once and replayed on every later call.

    With ``turns`` (threads training side by side) each call before all threads have
    captured waits for the turn, and the capture is thread-local, on the thread's own stream.
    """

    def __init__(
        self,
        update: Callable[[], None],
        generators: Sequence[torch.Generator],
        warmup: int = 3,
        turns: CaptureTurns | None = None,
    ) -> None:
        self.update, self.generators, self.warmup, self.turns = update, list(generators), warmup, turns
        self.calls = 0
        self.graph: Any = None

    def __call__(self) -> None:
        if self.turns is None or self.turns.settled:
            self._call()
            return
        with self.turns.call():
            self._call()
            if self.graph is not None:
                self.turns.end_turn()  # a no-op past this thread's turn

    def _call(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        elif self.calls < self.warmup:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.update()
            torch.cuda.current_stream().wait_stream(side)
        else:
            graph = torch.cuda.CUDAGraph()
            if self.generators and not hasattr(graph, "register_generator_state"):
                raise RuntimeError(
                    f"torch {torch.__version__} cannot capture draws from the seeds' own generators "
                    "in a CUDA graph; upgrade torch, or train with cuda_graphs=False"
                )
            for g in self.generators:
                graph.register_generator_state(g)
            # Beside other threads: record only this thread's launches, on its own stream (not torch's one
            # shared capture stream).
            side_by_side = (
                {}
                if self.turns is None
                else {"stream": torch.cuda.current_stream(), "capture_error_mode": "thread_local"}
            )
            with torch.cuda.graph(graph, **side_by_side):
                self.update()
            self.graph = graph
            graph.replay()  # capturing records the update without running it
        self.calls += 1


def graphed(
    update: Callable[[], None],
    generators: Sequence[torch.Generator],
    device: torch.device,
    enabled: bool = True,
    turns: CaptureTurns | None = None,
) -> Callable[[], None]:
    """``update`` as a :class:`GraphedUpdate` on a CUDA device when ``enabled``, else unchanged."""
    return GraphedUpdate(update, generators, turns=turns) if enabled and device.type == "cuda" else update


def capturable_optimizer(
    kind: type[torch.optim.Optimizer],
    params: list[Tensor],
    device: torch.device,
    graphs: bool,
    lr: float,
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """The fused implementation (one kernel over all tensors) where torch has it for the device.

    For a graphed update the optimizer must be ``capturable`` and its learning rate a device
    tensor: a float would be baked into the captured kernels.
    """
    fused = device.type in ("cpu", "cuda")
    if graphs and device.type == "cuda":
        return kind(params, lr=torch.tensor(lr, device=device), fused=True, capturable=True, **kwargs)
    return kind(params, lr=lr, fused=fused, **kwargs)


class DeviceLr:
    """A learning-rate schedule for an optimizer whose ``lr`` is a device tensor.

    torch's schedulers read a tensor ``lr`` back to the host on every step (a sync per
    update). The schedule runs instead on a one-parameter mirror optimizer with a float
    ``lr`` - so its ``state_dict`` is the reference loop's - and each step writes the new
    value into the device tensor without a sync.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        lr: float,
        make_scheduler: Callable[[torch.optim.Optimizer], Any],
    ) -> None:
        self.lr: Tensor = optimizer.param_groups[0]["lr"]
        self.mirror = torch.optim.SGD(
            [torch.zeros(1)], lr=lr
        )  # the config's float, not the tensor's rounding
        self.scheduler = make_scheduler(self.mirror)

    def step(self) -> None:
        self.mirror.step()  # a no-op (no gradient) that tells the scheduler the optimizer stepped first
        self.scheduler.step()
        self.lr.fill_(self.mirror.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(sd)

    def sync_from_optimizer(self) -> None:
        """After a resume restored the scheduler: continue the schedule from its last value.

        The scheduler's record is the float the reference loop holds; the device tensor is
        its float32 rounding, and a recursive schedule (cosine) would carry that rounding on.
        """
        self.mirror.param_groups[0]["lr"] = self.scheduler.get_last_lr()[0]
        self.lr.fill_(self.mirror.param_groups[0]["lr"])

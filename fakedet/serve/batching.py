"""Dynamic batching: one thread owns the model; requests queue their images, and the thread
scores them together, as many as `max_batch` per call, waiting at most `max_wait_s` after the
first one for company.

One model call on a batch of 16 costs far less than 16 calls on one image each (on CPU as on a
GPU), and concurrent requests arrive one image at a time, so gathering them is where a server's
throughput comes from. The wait bound caps what a lone request pays for it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from fakedet.data.transforms import pixels_to_float
from fakedet.inference.predictor import score_views


class QueueFull(Exception):
    """More images are waiting than the server holds (`max_queue`): the client should retry."""


@dataclass
class Job:
    """Images of one upload: (3, S, S) or (V, 3, S, S) uint8 views scored as one image
    (`score_views`), or, when `each_view`, (N, 3, S, S) crops scored one by one (heatmaps)."""

    pixels: torch.Tensor
    each_view: bool = False
    future: Future[list[float]] = field(default_factory=Future)

    @property
    def cost(self) -> int:
        """Model inputs this job adds to a batch."""
        return len(self.pixels) if self.each_view else 1


_STOP = object()


class Batcher:
    """The model's only caller. `submit` from any thread; `start` once, `stop` drains and joins."""

    def __init__(
        self,
        model: Callable[[torch.Tensor], dict[str, torch.Tensor]],
        device: torch.device,
        max_batch: int,
        max_wait_s: float,
        max_queue: int,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.model = model
        self.device = device
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch  # (images in the batch, seconds the model took)
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_queue)
        self._held: Job | None = None  # taken from the queue but over the last batch's bound
        self._thread = threading.Thread(target=self._run, name="fakedet-batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Score everything queued so far, then end the thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    def submit(self, job: Job) -> Future[list[float]]:
        """Queue `job`; its future gives the raw realness of the image (a list of one), or of
        each crop when `each_view`.

        Raises:
            QueueFull: `max_queue` images are already waiting.
        """
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull from None
        return job.future

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    def _run(self) -> None:
        while True:
            batch, stopping = self._gather()
            if batch:
                self._score(batch)
            if stopping:
                return

    def _gather(self) -> tuple[list[Job], bool]:
        first = self._held if self._held is not None else self._queue.get()
        self._held = None
        if first is _STOP:
            return [], True
        assert isinstance(first, Job)
        batch, size = [first], first.cost
        deadline = time.monotonic() + self.max_wait_s
        while size < self.max_batch:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            assert isinstance(item, Job)
            if size + item.cost > self.max_batch:
                self._held = item
                break
            batch.append(item)
            size += item.cost
        return batch, False

    @torch.no_grad()
    def _score(self, batch: list[Job]) -> None:
        # A request whose client went away has cancelled its future: skip its images. The rest
        # are marked running, after which a late cancel can no longer void their results.
        batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
        if not batch:
            return
        started = time.perf_counter()
        try:
            results = self._forward(batch)
        except Exception as exc:  # the model failed: every waiting request hears why
            for job in batch:
                job.future.set_exception(exc)
            return
        if self.on_batch is not None:
            self.on_batch(sum(job.cost for job in batch), time.perf_counter() - started)
        for job, scores in zip(batch, results, strict=True):
            job.future.set_result(scores)

    def _forward(self, batch: list[Job]) -> list[list[float]]:
        results: dict[int, list[float]] = {}
        whole = [index for index, job in enumerate(batch) if not job.each_view]
        if whole:
            pixels = torch.stack([batch[index].pixels for index in whole])  # (B, [V,] 3, S, S)
            scores = score_views(self.model, pixels_to_float(pixels, self.device)).cpu().tolist()
            results.update({index: [score] for index, score in zip(whole, scores, strict=True)})
        crops = [index for index, job in enumerate(batch) if job.each_view]
        if crops:
            pixels = torch.cat([batch[index].pixels for index in crops])  # (sum N, 3, S, S)
            scores = score_views(self.model, pixels_to_float(pixels, self.device)).cpu().tolist()
            for index in crops:
                count = len(batch[index].pixels)
                results[index], scores = scores[:count], scores[count:]
        return [results[index] for index in range(len(batch))]

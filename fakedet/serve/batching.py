"""Dynamic batching: one thread owns the model; requests queue their images, and the thread
scores them together, as many as `max_batch` per call, waiting at most `max_wait_s` after the
first one for company. Heatmaps (`explain_maps`) run on the same thread, after the batch's
scores are out.

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
from typing import Any

import torch

from fakedet.data.dataset import stack_images
from fakedet.data.transforms import pixels_to_float
from fakedet.inference.explain import explain_maps
from fakedet.inference.predictor import score_views


class QueueFull(Exception):
    """More images are waiting than the server holds (`max_queue`): the client should retry."""


@dataclass
class Job:
    """One upload's work: its (3, S, S) or (V, 3, S, S) uint8 view(s), scored as one image
    (`score_views`), giving [raw realness]; or, when `explain`, the whole (3, H, W) uint8 image,
    giving its patch-score map (`explain_maps`, patches of `patch` every `stride` pixels)."""

    pixels: torch.Tensor
    explain: bool = False
    future: Future[Any] = field(default_factory=Future)


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
        patch: int = 64,
        stride: int = 32,
    ) -> None:
        self.model = model
        self.device = device
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch  # (images in the batch, seconds the model took)
        self.patch = patch
        self.stride = stride
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="fakedet-batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Score everything queued so far, then end the thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    def submit(self, job: Job) -> Future[Any]:
        """Queue `job`; its future gives [raw realness] of the image, or its (h, w) patch map
        when `job.explain`.

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
        first = self._queue.get()
        if first is _STOP:
            return [], True
        assert isinstance(first, Job)
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            assert isinstance(item, Job)
            batch.append(item)
        return batch, False

    @torch.no_grad()
    def _score(self, batch: list[Job]) -> None:
        # A request whose client went away has cancelled its future: skip its images. The rest
        # are marked running, after which a late cancel can no longer void their results.
        batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
        whole = [job for job in batch if not job.explain]
        if whole:
            self._run_jobs(whole, self._views)
        for job in batch:  # a heatmap is many patches: scored after the batch's verdicts are out
            if job.explain:
                self._run_jobs([job], self._patch_map)

    def _run_jobs(self, jobs: list[Job], work: Callable[[list[Job]], list[Any]]) -> None:
        started = time.perf_counter()
        try:
            results = work(jobs)
        except Exception as exc:  # the model failed: every waiting request hears why
            for job in jobs:
                job.future.set_exception(exc)
            return
        if self.on_batch is not None:
            self.on_batch(len(jobs), time.perf_counter() - started)
        for job, result in zip(jobs, results, strict=True):
            job.future.set_result(result)

    def _views(self, jobs: list[Job]) -> list[list[float]]:
        # (B, [V,] 3, S, S) uint8, or a list where an image smaller than S is at its own size
        pixels = stack_images([job.pixels for job in jobs])
        scores = score_views(self.model, pixels_to_float(pixels, self.device)).cpu().tolist()
        return [[score] for score in scores]

    def _patch_map(self, jobs: list[Job]) -> list[Any]:
        image = pixels_to_float(jobs[0].pixels[None], self.device)  # (1, 3, H, W)
        maps = explain_maps(self.model, image, self.patch, self.stride, self.max_batch)
        return [maps[0]]

"""The one GPU sampler every question uses: utilisation (%) and memory used (MiB) of the GPUs,
every `interval_s` seconds, from NVML if pynvml imports, else from `nvidia-smi -lms`.

    with GpuSampler("cuda") as gpus:
        ...                          # the thing measured
    gpus.to_json(launch)             # series per GPU, times from `launch`
    gpus.peak_mem_gib                # the largest memory in use on any sampled GPU

By default only the GPUs in CUDA_VISIBLE_DEVICES are sampled; `all_gpus=True` samples every GPU
of the machine (the contenders' peak memory, which then also counts other processes).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time

SAMPLE_S = 0.5


class GpuSampler:
    """Series per GPU (epoch times); nothing is sampled for `device` other than cuda."""

    def __init__(self, device: str, interval_s: float = SAMPLE_S, all_gpus: bool = False) -> None:
        self.interval_s = interval_s
        self.series: dict[int, dict[str, list]] = {}
        self.source: str | None = None
        self.note = ""
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._smi: subprocess.Popen | None = None
        self.only: set[int] | None = None
        if device != "cuda":
            self.note = f"no GPU sampled: --device {device}"
            return
        if not all_gpus:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
            self.only = {int(x) for x in visible.split(",") if x.strip().isdigit()} or None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            count = pynvml.nvmlDeviceGetCount()
            self.handles = {
                i: pynvml.nvmlDeviceGetHandleByIndex(i)
                for i in range(count)
                if self.only is None or i in self.only
            }
            self.source = "pynvml"
        except Exception as e:  # no pynvml, or no driver it can talk to
            self.source = "nvidia-smi"
            self.note = f"pynvml unavailable ({type(e).__name__}): nvidia-smi"

    def __enter__(self) -> GpuSampler:
        if self.source == "pynvml":
            self._threads.append(threading.Thread(target=self._poll_nvml, daemon=True))
        elif self.source == "nvidia-smi":
            try:
                self._smi = subprocess.Popen(
                    [
                        "nvidia-smi",
                        "--query-gpu=index,utilization.gpu,memory.used",
                        "--format=csv,noheader,nounits",
                        f"-lms={int(self.interval_s * 1000)}",
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            except OSError as e:
                self.source, self.note = None, f"no GPU sampled: {e}"
                return self
            self._threads.append(threading.Thread(target=self._read_smi, daemon=True))
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._smi:
            self._smi.terminate()
            self._smi.wait()
        for t in self._threads:
            t.join(timeout=5)

    def _add(self, gpu: int, t: float, util: float, mem: float) -> None:
        s = self.series.setdefault(gpu, {"t": [], "util": [], "mem_mib": []})
        s["t"].append(t)
        s["util"].append(util)
        s["mem_mib"].append(mem)

    def _poll_nvml(self) -> None:
        while not self._stop.is_set():
            t = time.time()
            for i, h in self.handles.items():
                util = self.nvml.nvmlDeviceGetUtilizationRates(h).gpu
                mem = self.nvml.nvmlDeviceGetMemoryInfo(h).used / 2**20
                self._add(i, t, float(util), round(mem))
            self._stop.wait(self.interval_s)

    def _read_smi(self) -> None:
        for line in self._smi.stdout:
            parts = [x.strip() for x in line.split(",")]
            if len(parts) != 3 or not parts[0].isdigit():
                continue
            i = int(parts[0])
            if self.only is None or i in self.only:
                try:
                    self._add(i, time.time(), float(parts[1]), float(parts[2]))
                except ValueError:  # "[N/A]"
                    continue

    @property
    def peak_mem_gib(self) -> float | None:
        """The largest memory in use on any sampled GPU (all processes), None if none was."""
        peaks = [max(s["mem_mib"]) for s in self.series.values() if s["mem_mib"]]
        return round(max(peaks) / 1024, 1) if peaks else None

    def to_json(self, launch: float) -> dict:
        """Times relative to the launch, for the JSON and the plot."""
        return {
            "source": self.source,
            "interval_s": self.interval_s if self.source else None,
            "note": self.note,
            "gpus": {
                str(i): {
                    "t": [round(t - launch, 2) for t in s["t"]],
                    "util": s["util"],
                    "mem_mib": s["mem_mib"],
                }
                for i, s in sorted(self.series.items())
            },
        }

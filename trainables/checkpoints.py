"""Each trial's own checkpoints, kept on the storage path under its trial id: the project's record of progress.

    <storage-path>/checkpoints/<trial_id>/state-000000007.pt

The store says which trials are done; a trial's newest *whole* checkpoint here
says how far an unfinished one got. Nothing depends on Tune's saved experiment
state: any run of the sweep, fresh or restarted, continues every unfinished
trial from here. A checkpoint is written whole or not at all (a temp file
renamed into place, or one object put), and loaded with `weights_only=True`:
it holds only tensors and plain Python values, so a file planted on shared
storage cannot run code on the workers. A file that fails to load (partial,
foreign, or unsafe) is skipped for the one before it.
"""
from __future__ import annotations

import io
import random
import re
import uuid
from typing import Any, Dict, List, Optional

import numpy as np
import pyarrow.fs as pafs
import torch

from results_store import filesystem_for

KEEP = 2  # newest checkpoints kept per trial: the one being written can never be the only one
_NAME = re.compile(r"^state-(\d{9})\.pt$")


def rng_state() -> Dict[str, Any]:
    """Every RNG a trial touches, as tensors and plain values (loadable with weights_only=True)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: Dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


class TrialCheckpoints:
    """The checkpoints of one trial under `<root>/<trial_id>/`; `root` is a local path or a pyarrow URI."""

    def __init__(self, root: str, trial_id: str) -> None:
        self.fs, base = filesystem_for(root)
        self.directory = f"{base.rstrip('/')}/{trial_id}"
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.skipped: List[str] = []  # files that failed to load, newest first, with why

    def _steps(self) -> List[int]:
        """Steps of the visible checkpoint files, newest first."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.directory, allow_not_found=True))
        steps = [int(m.group(1)) for i in infos if i.type == pafs.FileType.File and (m := _NAME.match(i.base_name))]
        return sorted(steps, reverse=True)

    def _path(self, step: int) -> str:
        return f"{self.directory}/state-{step:09d}.pt"

    def newest(self, device: torch.device | str = "cpu") -> Optional[Dict[str, Any]]:
        """The newest checkpoint that loads safely, or None (a fresh start)."""
        for step in self._steps():
            try:
                with self.fs.open_input_file(self._path(step)) as stream:
                    payload = stream.read()
                state = torch.load(io.BytesIO(payload), map_location=device, weights_only=True)
            except Exception as exc:  # noqa: BLE001 - partial, foreign or unsafe: fall back to the one before
                self.skipped.append(f"state-{step:09d}.pt: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                continue
            if isinstance(state, dict) and state.get("step") == step:
                return state
            self.skipped.append(f"state-{step:09d}.pt: not a checkpoint of this project")
        return None

    def save(self, state: Dict[str, Any]) -> None:
        """Write `state` (which carries its own increasing `step`) whole, then drop all but the newest KEEP."""
        step = state["step"]
        buffer = io.BytesIO()
        torch.save(state, buffer)
        target = self._path(step)
        self.fs.create_dir(self.directory, recursive=True)
        if self.local:
            temp = f"{self.directory}/.tmp-{uuid.uuid4().hex}"
            try:
                with self.fs.open_output_stream(temp) as stream:
                    stream.write(buffer.getvalue())
                self.fs.move(temp, target)  # rename(2): the file appears whole or not at all
            except BaseException:
                try:
                    self.fs.delete_file(temp)
                except (FileNotFoundError, OSError):
                    pass
                raise
        else:
            with self.fs.open_output_stream(target) as stream:  # one put: an object appears whole
                stream.write(buffer.getvalue())
        for old in self._steps()[KEEP:]:
            try:
                self.fs.delete_file(self._path(old))
            except (FileNotFoundError, OSError):
                pass

    def delete_all(self) -> None:
        """Free a finished trial's checkpoints (hundreds of GB over a paper-scale sweep); best effort."""
        try:
            self.fs.delete_dir(self.directory)
        except (FileNotFoundError, OSError):
            pass

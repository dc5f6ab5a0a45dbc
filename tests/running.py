"""`memberflow up` as a subprocess, as an operator starts it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tests.support import wait_until


def command() -> list[str]:
    script = Path(sys.executable).with_name("memberflow")
    return [str(script)] if script.exists() else [sys.executable, "-m", "memberflow"]


class RunningUp:
    """`memberflow up --data-dir DIR --http-port 0` as a subprocess."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.log = data_dir.parent / f"{data_dir.name}-up.log"
        env = {k: v for k, v in os.environ.items()
               if k not in ("MEMBERFLOW_KAFKA", "MEMBERFLOW_DATABASE_URL")}
        self.proc = subprocess.Popen(
            [*command(), "up", "--data-dir", str(data_dir), "--http-port", "0"],
            stdout=subprocess.PIPE, stderr=self.log.open("ab"), stdin=subprocess.DEVNULL,
            env=env, text=True)
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        stdout = self.proc.stdout
        threading.Thread(target=lambda: self.lines.extend(iter(stdout.readline, "")),
                         daemon=True).start()

    def wait_up(self, deadline_s: float = 90.0) -> str:
        """Wait for the 'memberflow up:' line; returns the ingest base URL."""
        def ready() -> str | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"up exited with {self.proc.returncode}:\n"
                                     + "".join(self.lines) + self.log.read_text())
            line = next((x for x in self.lines if x.startswith("memberflow up:")), None)
            return None if line is None else line.split("ingest ")[1].split("/v1/")[0]
        url: str = wait_until(ready, deadline_s=deadline_s, what="memberflow up to start",
                              interval=0.05)
        return url

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def interrupt(self) -> int:
        """Ctrl-C, as an operator stops it; its exit code."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(90)

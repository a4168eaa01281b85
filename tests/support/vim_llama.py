"""Drive the real llama.vim plugin (../shared/clients/llama.vim, MIT) in Vim inside a detached
tmux session, against a running server, and read back what it shows."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

PLUGIN = Path(__file__).resolve().parents[3] / "shared" / "clients" / "llama.vim"


def available() -> str | None:
    """Why the plugin test cannot run here (None when it can)."""
    for tool in ("vim", "tmux", "curl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not (PLUGIN / "autoload" / "llama.vim").exists():
        return f"llama.vim is not at {PLUGIN}"
    return None


class VimSession:
    """Vim with llama.vim pointed at `endpoint`, editing `path`, in a 100x30 tmux pane."""

    def __init__(self, endpoint: str, path: Path, workdir: Path) -> None:
        self.name = "bcvim-" + uuid.uuid4().hex[:8]
        self.path = path
        vimrc = workdir / "vimrc"
        vimrc.write_text(
            "set nocompatible noswapfile nobackup noautoindent\n"
            "filetype plugin indent off\n"
            f"set runtimepath^={PLUGIN}\n"
            # show_info 0: only the suggestion is drawn; ring_update_ms: context chunks go out fast
            f"let g:llama_config = {{'endpoint_fim': '{endpoint}', 'show_info': 0, 'ring_update_ms': 200}}\n"
        )
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", "100", "-y", "30", f"vim -N -u {vimrc} -i NONE {path}"], check=True)

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], check=True, capture_output=True, text=True).stdout

    def wait_for(self, needle: str, timeout: float) -> str:
        """The screen once it shows `needle` (the last screen if it never does)."""
        deadline = time.monotonic() + timeout
        shown = self.screen()
        while needle not in shown and time.monotonic() < deadline:
            time.sleep(0.3)
            shown = self.screen()
        return shown

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], check=False, capture_output=True)

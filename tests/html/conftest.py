"""A real headless Chromium, driven over the DevTools protocol, for the HTML report tests.

The browser is Debian's ``chromium`` (``.ci/run`` installs it where it can); tests that need it
are skipped with the reason when it is not there.  The client is deliberately small: open a
``file://`` page, evaluate JavaScript in it, collect console errors and take a screenshot.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--remote-debugging-port=0", "--window-size=1280,1600",
]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserPage:
    """One tab: navigate, evaluate, and the console errors and exceptions seen so far."""

    def __init__(self, ws_url: str) -> None:
        import websocket  # websocket-client, from the test extra

        self._ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self._next = 0
        self.errors: list[str] = []
        for method in ("Page.enable", "Runtime.enable", "Log.enable"):
            self._call(method)

    def _call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next += 1
        ident = self._next
        self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._event(message)

    def _event(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            self.errors.append(str(params.get("exceptionDetails", {}).get("text")))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(" ".join(str(a.get("value")) for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            self.errors.append(str(params["entry"].get("text")))
        elif method == "Page.loadEventFired":
            self._loaded = True

    def open(self, path: Path) -> None:
        self._loaded = False
        self.errors.clear()
        self._call("Page.navigate", url=Path(path).resolve().as_uri())
        deadline = time.monotonic() + 60
        while not self._loaded and time.monotonic() < deadline:
            self._event(json.loads(self._ws.recv()))
        assert self._loaded, f"{path} did not finish loading"

    def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` evaluated in the page."""
        result = self._call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, target: Path) -> None:
        data = self._call("Page.captureScreenshot", format="png", captureBeyondViewport=False)["data"]
        target.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        self._ws.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[BrowserPage]:
    executable = _chromium()
    if executable is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium); the HTML pages were not opened in a browser")
    try:
        import websocket  # noqa: F401
    except ImportError:
        pytest.skip("websocket-client is not installed (pip install -e '.[test]')")
    profile = tempfile.mkdtemp(prefix="uncert-chromium-")
    process = subprocess.Popen([executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line and process.poll() is not None:
                break
            if "DevTools listening on ws://" in line:
                port = int(line.split("ws://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        if port is None:
            pytest.skip("Chromium did not start a DevTools endpoint on this machine")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as response:
            tabs = [t for t in json.load(response) if t.get("type") == "page"]
        page = BrowserPage(tabs[0]["webSocketDebuggerUrl"])
        yield page
        page.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(profile, ignore_errors=True)

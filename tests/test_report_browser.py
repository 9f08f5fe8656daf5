"""report.html in a real browser (headless Chromium, Debian's `chromium` package): it renders, and asks the network for nothing.

Chromium is pointed at a local proxy that records every request; a page that loads anything from
outside (a font, a script, an image URL) would show up there, as the control page proves. Chromium
itself calls a few Google services whatever the page (measured with a blank page: component updates,
sign-in, network time); those hosts are the browser's, not the report's, and are set aside.
Skipped where Chromium is not installed (`apt-get install -y chromium`).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading

import numpy as np
import pytest
from report_fakes import device_results, export_metrics, make_results, target_metrics

from pipeline.report.build import RunRecords, build_report
from pipeline.report.write import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (apt-get install -y chromium)")
# Chromium's own calls, made for a blank page too (Debian's Chromium 150 adds www.google.com): not the page's
BROWSER_OWN = {"update.googleapis.com", "accounts.google.com", "clients2.google.com", "www.google.com"}


class RecordingProxy:
    """An HTTP proxy that answers nothing and remembers every request line it was sent."""

    def __init__(self):
        self.requests: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    line = conn.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace")
                except OSError:
                    line = "(unreadable)"
                self.requests.append(line)
                conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    def hosts(self) -> set[str]:
        """Hosts asked for: 'CONNECT h:443 …' or 'GET http://h/… …'."""
        out = set()
        for line in filter(None, self.requests):  # an empty line: a connection opened and closed, no request
            target = line.split(" ")[1] if " " in line else line
            out.add(target.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0])
        return out

    def close(self):
        self.sock.close()


def screenshot(page, png, proxy: RecordingProxy) -> None:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-default-apps",
           "--disable-domain-reliability", "--disable-client-side-phishing-detection", "--no-default-browser-check",
           f"--proxy-server=http://127.0.0.1:{proxy.port}", "--proxy-bypass-list=<-loopback>", "--window-size=1280,1400",
           f"--screenshot={png}", page.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and png.is_file(), done.stderr[-2000:]


@pytest.fixture
def proxy():
    p = RecordingProxy()
    yield p
    p.close()


def test_report_html_renders_in_chromium_with_no_external_request(tmp_path, proxy):
    from PIL import Image

    records = RunRecords(folder="runs/demo", export=export_metrics(), target=target_metrics())
    write_report(build_report(make_results(), [device_results()], records=records), tmp_path, ["html"])
    png = tmp_path / "shot.png"
    screenshot(tmp_path / "report.html", png, proxy)
    assert proxy.hosts() - BROWSER_OWN == set(), proxy.requests
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (1400, 1280) and pixels.std() > 20  # not a blank page
    red = (np.abs(pixels - [207, 34, 46]).sum(axis=2) < 60).sum()  # the .fail colour of "FAIL" in the verdict at the top
    assert red > 200, red


def test_the_proxy_sees_a_page_that_loads_from_outside(tmp_path, proxy):
    page = tmp_path / "leaky.html"
    page.write_text('<!DOCTYPE html><html><body><img src="http://example.invalid/pixel.png">leak</body></html>')
    screenshot(page, tmp_path / "leaky.png", proxy)
    assert proxy.hosts() - BROWSER_OWN == {"example.invalid"}, proxy.requests

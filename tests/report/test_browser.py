"""report.html in real headless Chromium: every embedded image decodes (naturalWidth > 0), offline, and is
shown at the page's width."""

from __future__ import annotations

import html as html_lib
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from t2po_cli.cli.app import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Appended to a copy of the report: after load, write each image's state into the DOM, which
# --dump-dom then prints. The shipped report.html itself carries no script.
PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = Array.from(document.images).map(function (i) {
    return {complete: i.complete, w: i.naturalWidth, h: i.naturalHeight, src: i.src.slice(0, 22),
            shown: i.getBoundingClientRect().width, page: i.closest('section').getBoundingClientRect().width};
  });
  var pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify(imgs);
  document.body.appendChild(pre);
});
</script>"""


def _root_conftest():
    """tests/conftest.py, loaded by path: both conftest files are top-level modules named ``conftest``
    (no __init__.py), so ``from conftest import require_service`` could resolve to the wrong one."""
    spec = importlib.util.spec_from_file_location("t2po_tests_root_conftest", Path(__file__).parents[1] / "conftest.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


require_service = _root_conftest().require_service


@pytest.mark.browser
def test_report_images_load_in_chromium(experiment_dir: Path, tmp_path: Path, capsys) -> None:
    require_service(CHROMIUM is not None, "chromium not installed (bash scripts/install_browser.sh)")
    assert main(["report", str(experiment_dir)]) == 0
    capsys.readouterr()
    html = (experiment_dir / "report" / "report.html").read_text()
    probe_page = tmp_path / "probe.html"  # a different folder: the page cannot lean on sibling PNGs
    probe_page.write_text(html.replace("</body>", PROBE + "</body>"))
    cmd = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
        "--dump-dom", probe_page.as_uri(),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    match = re.search(r'<pre id="probe">(.*?)</pre>', r.stdout, re.S)
    assert match, f"probe did not run (rc {r.returncode}): {r.stderr[-2000:]}"
    images = json.loads(html_lib.unescape(match.group(1)))
    assert len(images) == 6
    for img in images:
        assert img["complete"] and img["w"] > 0 and img["h"] > 0, img
        assert img["src"].startswith("data:image/png;base64")
        assert img["shown"] >= 0.95 * img["page"], img  # plots fill the page width, not a narrow column

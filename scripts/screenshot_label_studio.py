#!/usr/bin/env python3
"""Screenshot of Label Studio showing a camcut brush-mask prediction (for the README).

Starts a throw-away Label Studio 1.23.2 (``tests.e2e.label_studio.LabelStudioServer``:
headless, loopback, SQLite in a temp dir) and the camcut backend under gunicorn, creates a
project (RectangleLabels + BrushLabels + Choices for dog/cat/person), uploads real VOC 2012
images, imports their VOC boxes as predictions, connects the backend and runs the Data
Manager action "Retrieve predictions", so each task gets a camcut brush mask. Then headless
Chromium (Selenium) logs in as the harness's admin user, opens the labelling view of the
first task with the camcut prediction loaded, and saves a PNG. Everything is stopped at the
end, also on errors.

Run it (from the repository root)::

    apt-get install -y chromium chromium-driver      # Debian: /usr/bin/chromium, /usr/bin/chromedriver
    scripts/install_label_studio.sh                  # Label Studio 1.23.2 into .venv-ls (once)
    .venv/bin/pip install -r requirements-screenshot.txt
    .venv/bin/python scripts/screenshot_label_studio.py [--out docs/img/label_studio_mask.png]

Takes about 20 s on 2 busy CPU cores (more on the very first run, which builds the migrated
Label Studio DB template, ~30 s). Needs no internet: Label Studio runs with analytics off.
Logs go to ``out/screenshot/`` (label-studio.log, backend.log).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.e2e.label_studio import (  # noqa: E402
    DEMO_LABEL_CONFIG,
    DEMO_LABELS,
    VOC_ROOT,
    CamcutBackend,
    LabelStudioError,
    LabelStudioServer,
    create_voc_project,
    ensure_installed,
)

VOC, LABELS, LABEL_CONFIG = VOC_ROOT, DEMO_LABELS, DEMO_LABEL_CONFIG
DEFAULT_STEMS = ("2007_000063", "2007_000549")  # dog (+ a chair, not a label), cat
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def log(msg: str) -> None:
    print(f"[screenshot {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- backend


# --------------------------------------------------------------------------- project


def setup_project(ls: LabelStudioServer, backend_url: str, stems: list[str]) -> dict[str, Any]:
    """Project + images + VOC box predictions + camcut predictions. Returns ids and the
    camcut prediction of the first stem's task."""
    proj, by_stem = create_voc_project(ls, "camcut demo", stems)
    pid = proj["id"]
    ml = ls.connect_ml_backend(pid, backend_url, title="camcut", is_interactive=True, timeout=300)
    t0 = time.monotonic()
    ls.retrieve_predictions(pid)
    log(f"retrieved predictions in {time.monotonic() - t0:.1f}s")
    task_id = by_stem[stems[0]]
    ours = [p for p in ls.list_predictions(task_id) if str(p.get("model_version", "")).startswith("camcut-")]
    if not ours or not any(r.get("type") == "brushlabels" for r in ours[0]["result"]):
        raise RuntimeError(f"no camcut brush prediction for task {task_id}: {ls.list_predictions(task_id)}")
    pred = ours[0]
    # The labelling view shows, for a task without annotations, the prediction whose
    # model_version equals the project's model_version (else the first one, here the VOC
    # boxes). connect_ml_backend set it to the backend title; point it at our version.
    ls.update_project(pid, model_version=pred["model_version"], show_collab_predictions=True)
    return {"project": pid, "tasks": by_stem, "task": task_id, "ml": ml, "prediction": pred}


# --------------------------------------------------------------------------- browser


def make_driver(width: int, height: int, profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(arg)
    # no selenium-manager: use Debian's driver
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(120)
    # --window-size includes the (invisible) browser chrome: pin the page viewport itself
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    return driver


def login(driver, ls: LabelStudioServer, timeout: float = 60.0) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{ls.url}/user/login/")
    wait = WebDriverWait(driver, timeout)
    email = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "input[name=email]")))
    email.clear()
    email.send_keys(ls.username)
    pw = driver.find_element(By.CSS_SELECTOR, "input[name=password]")
    pw.clear()
    pw.send_keys(ls.password)
    pw.submit()
    wait.until(lambda d: "/user/login" not in d.current_url)


def open_task(driver, ls: LabelStudioServer, project_id: int, task_id: int, timeout: float = 120.0) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{ls.url}/projects/{project_id}/data?task={task_id}")
    # the image is loaded, its Konva stage has canvases (the brush region is drawn on one)
    # and the Regions panel lists a brush region (the prediction was loaded)
    WebDriverWait(driver, timeout, poll_frequency=0.5).until(
        lambda d: d.execute_script(
            """
            const imgs = [...document.querySelectorAll('img')].filter(
                i => i.complete && i.naturalWidth > 100 && (i.src || '').includes('/data/upload/'));
            const canv = document.querySelectorAll('.konvajs-content canvas');
            const brush = document.querySelectorAll('.lsf-tree__node_type_brushregion');
            return imgs.length > 0 && canv.length > 0 && brush.length > 0;
            """
        )
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "img" / "label_studio_mask.png")
    ap.add_argument("--stems", nargs="+", default=list(DEFAULT_STEMS), help="VOC image ids; the first is shown")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=900)
    ap.add_argument("--settle", type=float, default=4.0, help="seconds to wait after the page has rendered")
    ap.add_argument("--log-dir", type=Path, default=REPO_ROOT / "out" / "screenshot")
    ap.add_argument("--debug-dir", type=Path, default=None, help="also dump page HTML and extra screenshots here")
    args = ap.parse_args(argv)

    t_start = time.monotonic()
    args.log_dir.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for s in args.stems:
        for p in (VOC / "JPEGImages" / f"{s}.jpg", VOC / "Annotations" / f"{s}.xml"):
            if not p.exists():
                ap.error(f"missing {p}")
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not Path(exe).exists():
            ap.error(f"{exe} not found: apt-get install -y chromium chromium-driver")

    ensure_installed()
    ls = LabelStudioServer(log_path=args.log_dir / "label-studio.log")
    backend: CamcutBackend | None = None
    model_dir = Path(tempfile.mkdtemp(prefix="camcut-screenshot-model-"))
    driver = None
    profile = Path(tempfile.mkdtemp(prefix="camcut-chromium-"))
    try:
        ls.start()
        log(f"Label Studio up at {ls.url} in {ls.startup_seconds:.1f}s")
        backend = CamcutBackend(ls, args.log_dir / "backend.log", model_dir / "model_dir")
        backend.start()
        log(f"backend up at {backend.url}")
        info = setup_project(ls, backend.url, args.stems)
        pred = info["prediction"]
        log(
            f"project {info['project']}, task {info['task']}: prediction {pred['model_version']} "
            f"with {len(pred['result'])} region(s) {[r['value'].get('brushlabels') for r in pred['result']]}"
        )

        driver = make_driver(args.width, args.height, profile)
        login(driver, ls)
        log("logged in")
        open_task(driver, ls, info["project"], info["task"])
        time.sleep(args.settle)
        if args.debug_dir:
            args.debug_dir.mkdir(parents=True, exist_ok=True)
            (args.debug_dir / "page.html").write_text(driver.page_source)
        png = driver.get_screenshot_as_png()
        try:  # re-encode smaller (lossless) if Pillow is there
            import io

            from PIL import Image

            with Image.open(io.BytesIO(png)) as im:
                im.save(args.out, optimize=True)
        except ImportError:
            args.out.write_bytes(png)
        log(f"saved {args.out} ({time.monotonic() - t_start:.0f}s in all)")
        return 0
    finally:
        if driver is not None:
            try:
                driver.quit()
            except Exception as exc:
                log(f"driver.quit failed: {exc}")
        shutil.rmtree(profile, ignore_errors=True)
        if backend is not None:
            backend.stop()
        shutil.rmtree(model_dir, ignore_errors=True)
        ls.stop()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (LabelStudioError, RuntimeError) as exc:
        log(f"FAILED: {exc}")
        sys.exit(1)

"""browser -- headless Chromium for the project's page tests, and a static file server to
serve test pages from an origin of their own.

Debian's chromium, chromium-driver and python3-selenium (scripts/deps.sh test installs
them); nothing is downloaded. Chromium runs as this machine's root needs it: no sandbox,
no GPU, no background network (this sandbox refuses it, and Chromium would retry), a
fresh profile per browser. Every wait is bounded.

    with StaticServer(PAGES_DIR) as pages, Browser() as b:
        b.open(pages.url + "/cors.html")
        result = b.run_async("callApi(arguments[0], arguments[1]).then(done)", url, init)
        b.screenshot("/tmp/page.png")
"""
import functools
import http.server
import os
import shutil
import tempfile
import threading

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

import wptest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--no-proxy-server", "--window-size=1280,900")


class Browser:
    """Headless Chromium driven by chromedriver, as a context manager."""

    def __init__(self, timeout_s=20):
        self.timeout_s = timeout_s
        self.profile = None
        self.driver = None

    def __enter__(self):
        self.profile = tempfile.mkdtemp(prefix="warmpool-chromium-")
        opts = Options()
        opts.binary_location = CHROMIUM
        for f in FLAGS:
            opts.add_argument(f)
        opts.add_argument("--user-data-dir=" + self.profile)
        service = Service(executable_path=CHROMEDRIVER,
                          log_path=os.path.join(self.profile, "chromedriver.log"))
        self.driver = webdriver.Chrome(service=service, options=opts)
        self.driver.set_page_load_timeout(self.timeout_s)
        self.driver.set_script_timeout(self.timeout_s)
        return self

    def __exit__(self, *exc):
        if self.driver is not None:
            self.driver.quit()
        shutil.rmtree(self.profile, ignore_errors=True)
        return False

    def open(self, url):
        self.driver.get(url)

    def run_async(self, body, *args):
        """Runs body as an async script: the page's JS sees arguments[0..] and calls
        done(value) to return value (bounded by timeout_s)."""
        script = "const done = arguments[arguments.length - 1];\n" + body
        return self.driver.execute_async_script(script, *args)

    def screenshot(self, path):
        """A PNG of the page as it is now."""
        if not self.driver.save_screenshot(path):
            raise RuntimeError("no screenshot written to " + path)
        return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class StaticServer:
    """Serves a directory on 127.0.0.1 (a free port) from a thread. url is
    http://127.0.0.1:PORT; the same pages at http://localhost:PORT are another origin."""

    def __init__(self, directory):
        self.directory = directory
        self.port = wptest.free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.httpd = None
        self.thread = None

    def __enter__(self):
        handler = functools.partial(_QuietHandler, directory=self.directory)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
        return False

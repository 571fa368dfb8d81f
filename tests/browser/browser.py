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


class PrefixProxy:
    """A reverse proxy that serves http://127.0.0.1:UPSTREAM/ under a path prefix, as a
    site would put warmpool behind nginx (`location /prefix/ { proxy_pass ...; }`):
    GET /prefix/x goes upstream as GET /x; anything outside the prefix is a 404. One
    request per connection (Connection: close both ways); answers, event streams
    included, are passed through as they come. `.url` is http://127.0.0.1:PORT/prefix/."""

    def __init__(self, upstream_port, prefix="/warmpool"):
        self.upstream_port, self.prefix = upstream_port, prefix.rstrip("/")
        self.port = wptest.free_port()
        self.url = "http://127.0.0.1:%d%s/" % (self.port, self.prefix)
        self.paths = []                 # every path asked for, as the browser sent it
        self.sock = None
        self.thread = None

    def __enter__(self):
        import socket
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(64)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.sock.close()
        return False

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        import socket
        try:
            conn.settimeout(20)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            head, body = head.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method, path, version = lines[0].split(" ", 2)
            self.paths.append(path)
            if not (path == self.prefix or path.startswith(self.prefix + "/")):
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n")
                return
            inner = path[len(self.prefix):] or "/"
            hdrs = [h for h in lines[1:] if not h.lower().startswith(("connection:", "host:"))]
            length = 0
            for h in hdrs:
                if h.lower().startswith("content-length:"):
                    length = int(h.split(":", 1)[1])
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                body += chunk
            up = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=20)
            req = "%s %s %s\r\n" % (method, inner, version) + "\r\n".join(
                hdrs + ["Host: 127.0.0.1:%d" % self.upstream_port, "Connection: close"])
            up.sendall(req.encode("latin-1") + b"\r\n\r\n" + body)
            up.settimeout(None)         # an event stream may be quiet for a while
            conn.settimeout(None)
            while True:
                chunk = up.recv(65536)
                if not chunk:
                    break
                conn.sendall(chunk)
            up.close()
        except OSError:
            pass
        finally:
            conn.close()

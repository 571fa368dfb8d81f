"""test_examples.py -- the example exec kinds end to end, through wp-exec-drive (warmpool's
side of the protocol in C): examples/python/table_kind.py, examples/python/dict_kind.py
(the Python helper) and examples/node/zygote.js (the protocol by hand in JavaScript).

    test_examples.py WP_EXEC_DRIVE [unittest arguments, e.g. Node]    (ctest: exec.*)
"""
import hashlib
import os
import random
import select
import signal
import subprocess
import sys
import time
import unittest
from array import array

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DRIVE = None
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
WAIT = 60.0


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):   # gone, or being reaped now
        return False


def wait_gone(pid, timeout=10.0):
    end = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < end:
        time.sleep(0.01)
    return not alive(pid)


class Drive:
    """wp-exec-drive running one zygote; cmd() sends a line and returns the answer."""

    def __init__(self, command, config=None, task_timeout_ms=30000):
        args = [DRIVE, "--task-timeout-ms", str(task_timeout_ms)]
        if config is not None:
            args += ["--config", config]
        self.p = subprocess.Popen(args + ["--"] + command, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, bufsize=1)
        self.ready = self.line().split()

    def line(self):
        r, _, _ = select.select([self.p.stdout], [], [], WAIT)
        if not r:
            self.p.kill()
            raise AssertionError("wp-exec-drive did not answer in %.0f s" % WAIT)
        return self.p.stdout.readline().rstrip("\n")

    def cmd(self, text):
        self.p.stdin.write(text + "\n")
        self.p.stdin.flush()
        return self.line()

    def spawn(self):
        words = self.cmd("spawn").split()
        assert words[0] == "spawned", words
        return int(words[1]), int(words[2])

    def quit(self):
        out = self.cmd("quit")
        self.p.wait(WAIT)
        return out

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        self.p.stdin.close()
        self.p.stdout.close()


class Base(unittest.TestCase):
    def setUp(self):
        self.drives = []

    def tearDown(self):
        for d in self.drives:
            d.kill()

    def drive(self, *a, **kw):
        d = Drive(*a, **kw)
        self.drives.append(d)
        return d


class Python(Base):
    TABLE = [PYTHON, os.path.join(ROOT, "examples", "python", "table_kind.py")]
    DICT = [PYTHON, os.path.join(ROOT, "examples", "python", "dict_kind.py")]

    def test_table(self):
        d = self.drive(self.TABLE, config="mb=8,seed=7")
        self.assertEqual(d.ready[0], "ready", d.ready)
        self.assertEqual(int(d.ready[2]), 8 << 20)      # context_bytes
        self.assertEqual(d.ready[4], "1")               # it validates
        n0, pid0 = d.spawn()
        n1, pid1 = d.spawn()
        self.assertNotEqual(pid0, pid1)
        # the same table, built here
        rng, table = random.Random(7), array("q")
        table.frombytes(rng.randbytes(8 << 20))
        self.assertEqual(d.cmd('task 0 {"index": 3}'),
                         'result 0 {"index":3,"value":%d}' % table[3])
        self.assertEqual(d.cmd('task 1 {"op": "digest"}'),
                         'result 1 {"sha256":"%s","bytes":%d}'
                         % (hashlib.sha256(table).hexdigest(), 8 << 20))
        per = len(table) // 4
        self.assertEqual(d.cmd('task 1 {"op": "sum", "slice": 2, "of": 4}'),
                         'result 1 {"sum":%d,"items":%d}'
                         % (sum(table[2 * per:3 * per]) % (1 << 63), per))
        self.assertEqual(d.cmd('validate 0 {"index": -1}'),
                         "invalid 0 index must be an integer in 0..%d" % (len(table) - 1))
        self.assertEqual(d.cmd('task 0 {"op": "nothing"}'),
                         "error 0 invalid_input 0 give index, or op: sum or digest")
        self.assertEqual(d.cmd("kill 0"), "killed 0")
        self.assertTrue(wait_gone(pid0))
        self.assertEqual(d.cmd("close 1"), "closed 1 exited")
        self.assertEqual(d.quit(), "exit 0")
        self.assertTrue(wait_gone(int(d.ready[1])))

    def test_table_bad_config(self):
        d = self.drive(self.TABLE, config="gb=1")
        self.assertEqual(" ".join(d.ready[:2]), "not_ready refused")
        self.assertIn("ValueError: unknown option 'gb'", " ".join(d.ready))

    def test_dict(self):
        d = self.drive(self.DICT, config="entries=20000,len=50")
        self.assertEqual(d.ready[0], "ready", d.ready)
        self.assertGreater(int(d.ready[2]), 20000 * 50)
        d.spawn()
        self.assertRegex(d.cmd('task 0 {"key": "k00000042"}'),
                         r'^result 0 \{"key":"k00000042","value":"[a-z0-9]{50}"\}$')
        self.assertRegex(d.cmd('task 0 {"op": "scan"}'),
                         r'^result 0 \{"entries":20000,"chars":1180000,"sha256":"[0-9a-f]{64}"\}$')
        self.assertEqual(d.quit(), "exit 0")

    def test_timeout_kills_the_child_only(self):
        d = self.drive(self.TABLE, config="mb=1", task_timeout_ms=300)
        _, pid = d.spawn()
        self.assertEqual(d.cmd('task 0 {"op": "sum"}').split()[0], "result")
        # a task cannot be made slow in table_kind; stop the child instead, so it misses
        # its deadline, and see it killed while the zygote serves on
        os.kill(pid, signal.SIGSTOP)
        self.assertEqual(d.cmd('task 0 {"index": 1}'), "fail 0 timeout child %d: no answer "
                         "in time" % pid)
        self.assertTrue(wait_gone(pid))
        n, pid2 = d.spawn()
        self.assertEqual(n, 0)
        self.assertEqual(d.cmd('task 0 {"index": 0}').split()[0], "result")
        self.assertEqual(d.quit(), "exit 0")


class Node(Base):       # node comes from scripts/deps.sh test: no skip when it is missing
    ZYGOTE = ["node", os.path.join(ROOT, "examples", "node", "zygote.js")]

    def test_node_zygote(self):
        d = self.drive(self.ZYGOTE, config="n=1000")
        self.assertEqual(d.ready[0], "ready", d.ready)
        self.assertEqual(int(d.ready[2]), 8000)         # 1000 doubles
        zpid = int(d.ready[1])
        _, pid0 = d.spawn()
        _, pid1 = d.spawn()
        self.assertEqual(d.cmd('task 0 {"index": 12}'), 'result 0 {"index":12,"square":144}')
        self.assertEqual(d.cmd('task 1 {"op": "sum"}'), 'result 1 {"sum":332833500}')
        self.assertEqual(d.cmd('task 1 {"fail": "no"}'), "error 1 bad_input 0 Error: no")
        self.assertEqual(d.cmd('task 0 {"retry": "later"}'), "error 0 retry 1 Error: later")
        self.assertEqual(d.cmd("validate 0 [1]"), "invalid 0 the input must be an object")
        self.assertEqual(d.cmd("validate 1 {}"), "valid 1")
        self.assertEqual(d.cmd('task 0 "text\\nwith a newline \\u00e9"'),
                         "error 0 bad_input 0 Error: the input must be an object")
        with open("/proc/%d/stat" % pid0) as f:          # spawned by the zygote
            self.assertEqual(int(f.read().rsplit(")", 1)[1].split()[1]), zpid)
        self.assertEqual(d.cmd("kill 0"), "killed 0")
        self.assertTrue(wait_gone(pid0))
        os.kill(pid1, signal.SIGTERM)                   # idle: it leaves
        self.assertTrue(wait_gone(pid1))
        self.assertEqual(d.cmd("task 1 {}").split()[:3], ["fail", "1", "eof"])
        _, pid2 = d.spawn()
        self.assertEqual(d.cmd('task 0 {"index": 2}'), 'result 0 {"index":2,"square":4}')
        self.assertEqual(d.quit(), "exit 0")
        self.assertTrue(wait_gone(pid2))
        self.assertTrue(wait_gone(zpid))

    def test_node_bad_config(self):
        d = self.drive(self.ZYGOTE, config="n=0")
        self.assertEqual(" ".join(d.ready), "not_ready refused Error: n must be at least 1")


if __name__ == "__main__":
    DRIVE = os.path.abspath(sys.argv.pop(1))
    unittest.main()

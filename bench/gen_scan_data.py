#!/usr/bin/python3
"""gen_scan_data.py -- deterministic inputs of the "preload" benchmark.

    gen_scan_data.py DEFAULT_RULES OUTDIR [--iocs 20000] [--texts 2000] [--bytes 4096]

Writes OUTDIR/bench.rules: the default rules followed by N extra literal indicators
(`ioc-00001<TAB>` + 32 lowercase hex characters, derived from sha256), and
OUTDIR/texts/NNNN.txt: log-like text of about --bytes bytes each, with a few FAKE
secrets embedded (random strings in the shape of tokens; AKIA...EXAMPLE-style keys,
never a real credential) and, in some texts, one of the indicators.
Same arguments -> byte-identical files (fixed seeds).
"""
import argparse
import hashlib
import os
import random
import string

WORDS = ("request handled user session cache miss hit upstream latency retry queue "
         "worker started finished payload header config deploy build artifact commit "
         "branch merge token refresh scheduler timeout connection pool database index "
         "shard replica leader follower snapshot compaction metrics gauge counter").split()
ALNUM = string.ascii_letters + string.digits
B32 = string.ascii_uppercase + "234567"


def ioc(i):
    return hashlib.sha256(b"warmpool-bench-ioc-%d" % i).hexdigest()[:32]


def fake_secret(rng, iocs):
    """One fake secret line (random characters in a token's shape)."""
    kind = rng.randrange(8)
    r = lambda alphabet, n: "".join(rng.choice(alphabet) for _ in range(n))
    if kind == 0:
        return "aws_access_key_id = AKIA%s" % r(B32, 16)
    if kind == 1:
        return "export GITHUB_TOKEN=ghp_%s" % r(ALNUM, 36)
    if kind == 2:
        return "-----BEGIN RSA PRIVATE KEY-----"
    if kind == 3:
        return 'db.password = "%s"' % r(ALNUM, 14)
    if kind == 4:
        return "Authorization: Bearer eyJ%s.eyJ%s.%s" % (r(ALNUM, 20), r(ALNUM, 30), r(ALNUM, 24))
    if kind == 5:
        return "slack xoxb-%s-%s-%s" % (r(string.digits, 11), r(string.digits, 12), r(ALNUM, 24))
    if kind == 6:
        return "npm_config //registry/:_authToken=npm_%s" % r(ALNUM, 36)
    return "indicator seen: %s" % iocs[rng.randrange(len(iocs))]


def text(rng, size, iocs):
    lines, n, t = [], 0, 1767225600
    secrets = rng.randrange(1, 4)
    slots = set(rng.randrange(size // 80) for _ in range(secrets))
    while n < size:
        if len(lines) in slots:
            line = fake_secret(rng, iocs)
        else:
            t += rng.randrange(1, 5)
            line = "%d level=%s svc=%s req=%06d msg=\"%s\"" % (
                t, rng.choice(("info", "warn", "debug")), rng.choice(WORDS),
                rng.randrange(10 ** 6), " ".join(rng.choice(WORDS) for _ in range(rng.randrange(4, 10))))
        lines.append(line)
        n += len(line) + 1
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("default_rules")
    ap.add_argument("outdir")
    ap.add_argument("--iocs", type=int, default=20000)
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--bytes", type=int, default=4096)
    a = ap.parse_args()
    os.makedirs(os.path.join(a.outdir, "texts"), exist_ok=True)
    iocs = [ioc(i) for i in range(1, a.iocs + 1)]
    with open(a.default_rules, "rb") as f:
        default = f.read()
    with open(os.path.join(a.outdir, "bench.rules"), "wb") as f:
        f.write(default)
        if not default.endswith(b"\n"):
            f.write(b"\n")
        f.write(b"# --- %d generated literal indicators (bench/gen_scan_data.py) ---\n" % a.iocs)
        for i, h in enumerate(iocs, 1):
            f.write(b"ioc-%05d\t%s\n" % (i, h.encode()))
    rng = random.Random(20260101)
    for i in range(a.texts):
        with open(os.path.join(a.outdir, "texts", "%04d.txt" % i), "w") as f:
            f.write(text(rng, a.bytes, iocs))


if __name__ == "__main__":
    main()

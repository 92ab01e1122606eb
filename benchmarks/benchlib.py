"""Process helpers the benchmark scripts share: start a server, wait until it answers, stop what was
started (by its own pid, nothing else), and read the CPU time a process tree has used."""
import os, signal, subprocess, tempfile, time, urllib.request

_procs = []


def start(args, ready_url=None, cwd=None, ready_tries=100):
    """Starts `args`; with `ready_url`, waits (up to ready_tries x 0.1 s) until it answers there.
    Its stderr goes to a temporary file, not a pipe: a server that logs a lot (MLServer writes a
    traceback per 500) would fill a pipe nobody reads and stop answering."""
    log = tempfile.TemporaryFile()
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, cwd=cwd)
    p.log = log
    _procs.append(p)
    if ready_url:
        for _ in range(ready_tries):
            try:
                urllib.request.urlopen(ready_url, timeout=1).read()
                return p
            except Exception:
                time.sleep(0.1)
        stop_all()
        log.seek(0)
        raise SystemExit(f"{args[0]} did not become ready at {ready_url}: {log.read().decode()[-2000:]}")
    return p


def stop_all():
    """SIGTERM to everything started here, then waits (kills after 10 s)."""
    for p in _procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in _procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    _procs.clear()


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def descendants(pid):
    """`pid` and every process below it (MLServer's workers, nginx's), from /proc."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def cpu_seconds(pids):
    """User + system CPU seconds of `pids` (every thread of each), from /proc/PID/stat; a process that
    has gone counts 0."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLOCK_TICKS

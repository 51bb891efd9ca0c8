"""Shutdown while a client has stopped reading: the gateway must still exit
promptly (it lingers a few seconds to deliver the last bytes, then gives up)."""
import signal
import time

from harness import PASSWORD, USER, RawConn, cstr, msg


def test_sigterm_with_a_client_that_never_reads(riffq):
    c = RawConn.tcp(riffq.host, riffq.port)
    c.startup(USER, PASSWORD)
    # far more output than socket buffers hold, and never read
    c.send(msg(b"Q", cstr("SHOW ALL")) * 5000)
    time.sleep(1.0)
    assert riffq.alive
    start = time.time()
    riffq.proc.send_signal(signal.SIGTERM)
    rc = riffq.proc.wait(timeout=15)
    assert rc == 0
    assert time.time() - start < 10
    c.close()

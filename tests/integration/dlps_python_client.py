"""Rank 1 of a 2-worker job through the Python module; rank 0 is the C client (dlps_clients_test.sh)."""
import sys

import numpy as np

import dlps


def main():
    try:
        dlps.Client(servers=["127.0.0.1:1"], rank=0, num_workers=1, connect_timeout=1)
        sys.exit("python client: connecting to a closed port did not fail")
    except dlps.Error as e:
        assert "127.0.0.1:1" in str(e) and e.code == "unavailable", (str(e), e.code)

    c = dlps.Client()
    assert (c.rank, c.num_workers) == (1, 2), (c.rank, c.num_workers)
    c.init(1, np.zeros(4, np.float32), optimizer="sgd", lr=0.5)
    out = np.zeros(4, np.float32)
    grad = np.full(4, 2.0, np.float32)
    c.wait(c.pushpull(1, grad, out))  # out is filled in place
    np.testing.assert_array_equal(out, np.array([-0.5, 0.5, 1.5, 2.5], np.float32))
    for bad, kind in [(np.zeros(4), TypeError), (np.zeros((4, 2), np.float32)[:, 0], TypeError)]:
        try:
            c.pull(1, bad)
            sys.exit("python client: a %s array was accepted" % bad.dtype)
        except kind:
            pass
    readonly = np.zeros(4, np.float32)
    readonly.setflags(write=False)
    try:
        c.pull(1, readonly)
        sys.exit("python client: a read-only out was accepted")
    except ValueError:
        pass
    try:
        c.wait(c.pull(99, out))
        sys.exit("python client: a pull of an unknown key did not fail")
    except dlps.Error as e:
        assert "key 99 is not initialised" in str(e), str(e)
    c.barrier()
    c.close()
    print("python client: ok")


main()

"""The chaos proxy's connection threads end quietly when the socket they serve is already
closed (a test tearing the network down while a handshake is in flight): no thread may die
with an exception, which pytest reports as a warning and which hides real failures."""
import socket
import threading

from minoots.chaos.netproxy import Network
from minoots.raft.testing import free_ports


def _proxy():
    a, b = free_ports(2, "127.0.0.1")
    net = Network()
    return net, net.add("n1", f"127.0.0.1:{a}", f"127.0.0.1:{b}")


def _closed_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.close()
    return s


def test_reading_a_handshake_from_a_closed_socket_is_eof_not_an_exception():
    net, proxy = _proxy()
    try:
        assert proxy._read_frame(_closed_socket()) == (None, None)
    finally:
        proxy.close()


def test_serving_a_closed_connection_ends_the_thread_without_an_exception():
    net, proxy = _proxy()
    raised = []
    old = threading.excepthook
    threading.excepthook = lambda args: raised.append(args.exc_value)
    try:
        t = threading.Thread(target=proxy._serve, args=(_closed_socket(),))
        t.start()
        t.join(10)
        assert not t.is_alive()
        assert raised == []
        assert proxy._conns == []
    finally:
        threading.excepthook = old
        proxy.close()

"""The emulator's count of open connections, which test_exactly_once's drain() waits to reach 0:
it must count every connection a client made (the kernel's too), end at 0 whatever the client
did, and never go below 0."""

from __future__ import annotations

import select
import socket
import struct
import threading
import time

from provisioner.emulator import Emulator
from tests.run_checks import wait_until

WAIT_LIMIT = 5.0  # seconds another thread may take to get somewhere before the test fails
CLIENTS = 40  # connections of each kind, opened at once
REQUEST = b"GET /v1/ParticipantConversations?Identity=x HTTP/1.1\r\nHost: h\r\n\r\n"


def connect(emulator: Emulator) -> socket.socket:
    host, port = emulator.url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=WAIT_LIMIT)


def reset(sock: socket.socket) -> None:
    """Close with a RST, as a killed process's unread connection ends."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_a_connection_the_kernel_holds_for_the_emulator_is_counted() -> None:
    emulator = Emulator()  # listening, not yet accepting: as when its thread is slow to run
    client = connect(emulator)
    client.sendall(REQUEST)
    try:
        # drain() would take this for a drained emulator, and the request is still to come.
        assert emulator.open_connections == 1
        emulator.start()
        assert client.recv(1024).startswith(b"HTTP/1.1 ")
    finally:
        client.close()
        emulator.shutdown()
    assert emulator.open_connections == 0  # and nothing to ask of a closed socket


def test_the_count_ends_at_zero_and_never_below_whatever_clients_do() -> None:
    with Emulator() as emulator:
        lowest = [0]
        watching = threading.Event()

        def watch() -> None:
            while not watching.is_set():
                lowest[0] = min(lowest[0], emulator.open_connections)
                time.sleep(0)  # let the server run

        watcher = threading.Thread(target=watch)
        watcher.start()
        sockets = []
        try:
            for _ in range(CLIENTS):
                silent = connect(emulator)  # connects, never sends, goes
                half = connect(emulator)
                half.sendall(REQUEST[:20])  # half a request line, then gone
                garbled = connect(emulator)
                garbled.sendall(b"\x16\x03\x01 not http\r\n\r\n")  # the server's own 400
                huge = connect(emulator)
                huge.sendall(b"POST /v2/WebChats HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n")
                sockets += [silent, half, garbled, huge]
            for sock in sockets[::2]:
                reset(sock)
            for sock in sockets[1::2]:
                sock.close()

            wait_until(lambda: emulator.open_connections == 0)
        finally:
            watching.set()
            watcher.join()
    assert lowest[0] == 0


def test_a_burst_of_connections_is_taken_at_once_not_after_the_kernel_s_retries() -> None:
    # socketserver listens with a queue of 5: the kernel drops the SYNs of a sixth connection
    # made before the emulator's thread accepts, and the client tries again a second later,
    # its request counted nowhere meanwhile (a run's pool opens many connections at once).
    emulator = Emulator()  # listening, not yet accepting: as when its thread is slow to run
    host, port = emulator.url.removeprefix("http://").rsplit(":", 1)
    clients = []
    try:
        for _ in range(CLIENTS):
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex((host, int(port)))
            clients.append(client)
        _, writable, _ = select.select([], clients, [], 0.5)  # far under the kernel's 1 s retry

        assert len(writable) == CLIENTS
    finally:
        for client in clients:
            client.close()
        emulator.shutdown()

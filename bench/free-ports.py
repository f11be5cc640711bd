#!/usr/bin/env python3
"""Free loopback ports for the bench scripts, below the ephemeral range.

    free-ports.py LOW HIGH CHECK PRINT

Picks a random base B in [LOW, HIGH) such that every port B+c (c in the comma list
CHECK) is free for both TCP and UDP on 127.0.0.1 right now, and prints B+p for each p in
the comma list PRINT, space-separated. Prints nothing after 200 tries (the caller fails
loudly). A port free now may still be taken before its user binds it: callers keep to a
range no outgoing connection draws from.
"""
import random
import socket
import sys


def free(port):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def main():
    low, high = int(sys.argv[1]), int(sys.argv[2])
    check = [int(x) for x in sys.argv[3].split(",")]
    show = [int(x) for x in sys.argv[4].split(",")]
    for _ in range(200):
        base = random.randrange(low, high)
        if all(free(base + c) for c in check):
            print(" ".join(str(base + p) for p in show))
            return


main()

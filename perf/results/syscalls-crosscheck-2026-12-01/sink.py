# A sink router: accepts on a Unix socket, answers the RawSocket handshake, reads and drops
# everything; writes the bytes received so far to a file every 50 ms.
import os, socket, sys, threading, time
path, out = sys.argv[1], sys.argv[2]
try: os.unlink(path)
except FileNotFoundError: pass
l = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); l.bind(path); l.listen(16)
total = [0]
def conn(c):
    hs = b""
    while len(hs) < 4:
        d = c.recv(4 - len(hs))
        if not d: return
        hs += d
    c.sendall(bytes([0x7f, 0xf0 | (hs[1] & 0x0f), 0, 0]))
    buf = bytearray(1 << 20)
    while True:
        n = c.recv_into(buf)
        if n == 0: return
        total[0] += n
def report():
    while True:
        with open(out + ".tmp", "w") as f: f.write(str(total[0]))
        os.replace(out + ".tmp", out)
        time.sleep(0.05)
threading.Thread(target=report, daemon=True).start()
while True:
    c, _ = l.accept()
    threading.Thread(target=conn, args=(c,), daemon=True).start()
